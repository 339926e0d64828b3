"""`gpu-attest-verifier log archive --before DATE` (docs/design.md §9): after it, `log proof`
and report creation read the archived envelopes as before, and both verify offline."""

from __future__ import annotations

import base64
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from attest.exits import ReportExit
from attest.report_cli import main as report_main
from tests.verifier.test_compliance_cli import ROOT, agent_envelopes, verifier
from tests.verifier.test_report_heartbeats import heartbeats
from verifier.cli import main
from verifier.exits import VerifierExit


def test_archive_then_prove_and_report(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    config = str(config_file)
    assert (
        main(["--config", config, "registry", "import", str(ROOT / "examples/registry.toml")]) == 0
    )
    capsys.readouterr()
    [full] = agent_envelopes(tmp_path, config_file, 1)
    rows = verifier(
        capsys, config_file, "ingest", "--json", full, *heartbeats(tmp_path, Path(full), 2)
    )
    assert [r["result"] for r in rows] == ["accepted"] * 3
    # Nothing was received before today: nothing moves.
    today = datetime.now(UTC).date()
    moved = verifier(capsys, config_file, "log", "archive", "--before", today.isoformat(), "--json")
    assert (moved["envelopes"], moved["segments"]) == (0, [])
    tomorrow = (today + timedelta(days=1)).isoformat()
    moved = verifier(capsys, config_file, "log", "archive", "--before", tomorrow, "--json")
    assert moved["envelopes"] == 3 and len(moved["segments"]) == 1
    directory = Path(moved["directory"])
    assert (directory / moved["segments"][0]).is_file()
    database = tmp_path / "v.db"
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT COUNT(*) FROM blobs").fetchone() == (0,)
    # Proofs: the logged envelope comes back from the segment, and verifies offline.
    key = tmp_path / "log.pub"
    assert main(["--config", config, "log", "key", "--out", str(key)]) == VerifierExit.OK
    for index in range(3):
        proof = tmp_path / f"{index}.tlog-proof"
        args = ["--config", config, "log", "proof", "--index", str(index), "--out", str(proof)]
        assert main(args) == VerifierExit.OK
        assert report_main(["proof", "verify", str(proof), "--key", str(key)]) == ReportExit.VALID
    # A report samples and embeds an archived entry; it verifies offline.
    report_key = tmp_path / "report.pub"
    verifier(capsys, config_file, "report", "key", "--out", str(report_key))
    out = tmp_path / "r.json"
    month = datetime.now(UTC).strftime("%Y-%m")
    verifier(
        capsys,
        config_file,
        "report",
        "create",
        "--entity",
        "acme",
        "--period",
        month,
        "--out",
        str(out),
    )
    predicate = json.loads(base64.b64decode(json.loads(out.read_text())["payload"]))["predicate"]
    assert predicate["samples"][0]["log_index"] == 0
    capsys.readouterr()
    assert report_main(["--json", "verify", str(out), "--key", str(report_key)]) == 0
    assert json.loads(capsys.readouterr().out)["valid"] is True
    # An unreadable segment is a clear one-line store error, never a traceback or a wrong proof.
    (directory / moved["segments"][0]).unlink()
    args = ["--config", config, "log", "proof", "--index", "0"]
    assert main(args) == VerifierExit.STORE
    err = capsys.readouterr().err
    assert err.startswith("gpu-attest-verifier: store: ") and err.count("\n") == 1, err


def test_archive_refuses_a_malformed_date(
    capsys: pytest.CaptureFixture[str], config_file: Path
) -> None:
    args = ["--config", str(config_file), "log", "archive", "--before", "2026-13-01"]
    assert main(args) == VerifierExit.USAGE
    assert "2026-13-01" in capsys.readouterr().err
