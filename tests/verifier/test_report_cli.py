"""`report key` and `report create` on a real state directory (SQLite, then PostgreSQL): the
example registry imported, envelopes made by `gpu-attest-agent once` ingested; the report then
verified offline by `gpu-attest-report verify` (attest/report_verify.py)."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from attest.report_cli import main as report_main
from tests.verifier.store.conftest import PG_ADMIN, pg_schema_url
from tests.verifier.test_compliance_cli import ROOT, agent_envelopes, verifier
from verifier.cli import main


def _world(capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path, count: int) -> None:
    registry = str(ROOT / "examples/registry.toml")
    assert main(["--config", str(config), "registry", "import", registry]) == 0
    capsys.readouterr()
    rows = verifier(capsys, config, "ingest", "--json", *agent_envelopes(tmp_path, config, count))
    assert {r["result"] for r in rows} == {"accepted"}


def _create(
    capsys: pytest.CaptureFixture[str], config: Path, out: Path, *extra: str
) -> dict[str, object]:
    month = datetime.now(UTC).strftime("%Y-%m")
    argv = ["report", "create", "--entity", "acme", "--period", month, "--out", str(out)]
    verifier(capsys, config, *argv, *extra)
    document = json.loads(out.read_text())
    statement = json.loads(base64.b64decode(document["payload"]))
    return dict(statement["predicate"])


def _verify(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code = report_main(["--json", "verify", *argv])
    return code, json.loads(capsys.readouterr().out)


def report_session(capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path) -> None:
    _world(capsys, config, tmp_path, 2)
    key = tmp_path / "report.pub"
    verifier(capsys, config, "report", "key", "--out", str(key))
    first = tmp_path / "r1.json"
    page = tmp_path / "r1.html"
    predicate = _create(capsys, config, first, "--html", str(page))
    sites = {s["id"]: s for s in predicate["sites"]}  # type: ignore[attr-defined]
    site = sites["acme-fra1"]
    assert all(s["units"] == 0 for k, s in sites.items() if k != "acme-fra1")
    assert (site["id"], site["country"], site["units"]) == ("acme-fra1", "DE", 8)
    assert site["attested_last_day"] == {"gpus": 8, "of": 8}
    assert site["location"]["status"] == "unverified"
    assert [m["model"] for m in site["models"]] == ["H100-SXM"]
    assert len(predicate["samples"]) == 1  # type: ignore[arg-type]
    assert any("trust" in t for t in predicate["trust_model"])  # type: ignore[attr-defined]
    assert "<svg" in page.read_text()
    code, result = _verify(capsys, str(first), "--key", str(key))
    assert code == 0, result
    assert result["valid"] is True and result["entity"] == "acme"

    # The log grows; the next report proves it only grew since the first.
    (tmp_path / "b").mkdir()
    rows = verifier(capsys, config, "ingest", "--json", *agent_envelopes(tmp_path / "b", config, 1))
    assert rows[0]["result"] == "accepted"
    second = tmp_path / "r2.json"
    later = _create(capsys, config, second, "--previous", str(first))
    assert later["log"]["previous"] is not None  # type: ignore[index]
    # The second host reports the first one's GPUs: the duplicates are the entity's findings.
    found = {(f["rule"], f["state"]) for f in later["findings"]}  # type: ignore[attr-defined]
    assert found == {("duplicate-gpu", "open")}, later["findings"]
    code, result = _verify(capsys, str(second), "--key", str(key), "--since-checkpoint", str(first))
    assert code == 0, result
    # The same checks by docs/verify_report.py, which imports nothing of this project.
    script = [sys.executable, str(ROOT / "docs/verify_report.py"), str(second), str(key)]
    done = subprocess.run(script, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert (done.returncode, done.stdout.split(":")[0]) == (0, "OK"), done.stdout + done.stderr
    # A report changed after signing fails, with a line that says what failed.
    document = json.loads(second.read_text())
    statement = json.loads(base64.b64decode(document["payload"]))
    statement["predicate"]["sites"][0]["units"] += 1
    document["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(document))
    code, result = _verify(capsys, str(forged), "--key", str(key))
    assert code == 1
    assert result["failures"][0]["check"] == "report-signature"  # type: ignore[index]
    script = [sys.executable, str(ROOT / "docs/verify_report.py"), str(forged), str(key)]
    done = subprocess.run(script, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert (done.returncode, done.stdout.strip()) == (1, "report signature fails")


def test_report_create_and_verify_on_sqlite(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    report_session(capsys, config_file, tmp_path)


@pytest.mark.postgres
def test_report_create_and_verify_on_postgresql(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    schema = "t_" + secrets.token_hex(6)
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    config = tmp_path / "verifier.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\ndatabase = "{pg_schema_url(schema)}"\n'
        'listen = "0.0.0.0:0"\nmetrics_listen = ""\n'
    )
    try:
        report_session(capsys, config, tmp_path)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--entity", "nobody", "--period", "2026H1"], 1, "no entity 'nobody'"),
        (["--entity", "acme", "--period", "2026H3"], 2, "is not a period"),
        (["--entity", "acme", "--from", "2026-01-01"], 1, "--from needs --to"),
        (["--entity", "acme", "--from", "2026-02-01", "--to", "2026-01-01"], 1, "before it"),
        (["--entity", "acme", "--period", "2099Q1"], 1, "has not begun"),
        (["--entity", "acme", "--period", "{month}", "--previous", "/nonexistent"], 1, "cannot"),
    ],
)
def test_report_create_mistakes_say_what_is_wrong(
    capsys: pytest.CaptureFixture[str],
    config_file: Path,
    tmp_path: Path,
    args: list[str],
    code: int,
    says: str,
) -> None:
    _world(capsys, config_file, tmp_path, 1)
    out = tmp_path / "r.json"
    month = datetime.now(UTC).strftime("%Y-%m")
    args = [a.format(month=month) for a in args]
    argv = ["--config", str(config_file), "report", "create", *args, "--out", str(out)]
    assert main(argv) == code
    assert says in capsys.readouterr().err
    assert not out.exists()


def test_a_previous_report_by_another_key_is_refused(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    _world(capsys, config_file, tmp_path, 1)
    first = tmp_path / "r1.json"
    _create(capsys, config_file, first)
    (tmp_path / "state" / "report.key").unlink()  # a new report key from now on
    month = datetime.now(UTC).strftime("%Y-%m")
    argv = ["report", "create", "--entity", "acme", "--period", month]
    argv += ["--out", str(tmp_path / "r2.json"), "--previous", str(first)]
    assert main(["--config", str(config_file), *argv]) == 1
    assert "no signature by the report key" in capsys.readouterr().err
