"""A report over a log that holds heartbeats (docs/protocol.md §4.1, docs/design.md §15): its
sample is always a full evidence entry, whose GPUs support the totals, and both
`gpu-attest-report verify` and docs/verify_report.py accept it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.identity import KEY_FILE
from attest.envelope import HEARTBEAT_PAYLOAD_TYPE, envelope_hash, sign
from attest.keys import load_or_create_private_key
from attest.model import Heartbeat
from attest.report_cli import main as report_main
from attest.wire import decode_envelope, decode_evidence, encode_envelope, encode_heartbeat
from tests.verifier.test_compliance_cli import ROOT, agent_envelopes, verifier
from verifier.cli import main


def heartbeats(tmp_path: Path, full_path: Path, count: int) -> list[str]:
    """`count` heartbeats signed by the agent's key, chained after and naming `full_path`'s
    envelope, written as offline files (ingest runs the pipeline they would meet online)."""
    signer = load_or_create_private_key(tmp_path / "agent-state" / KEY_FILE)
    full = full_path.read_bytes()
    evidence = decode_evidence(decode_envelope(full).payload)
    base = prev = envelope_hash(full)
    paths = []
    for index in range(count):
        beat = Heartbeat(
            agent_id=evidence.agent_id, seq=evidence.seq + 1 + index, prev_hash=prev, nonce=b"",
            created_at=datetime.now(UTC) + timedelta(milliseconds=index), agent_version="test",
            site_id=evidence.site_id, base=base,
        )  # fmt: skip
        raw = encode_envelope(sign(HEARTBEAT_PAYLOAD_TYPE, encode_heartbeat(beat), [signer]))
        prev = envelope_hash(raw)
        out = tmp_path / f"heartbeat-{index}.dsse"
        out.write_bytes(raw)
        paths.append(str(out))
    return paths


def test_a_report_samples_full_evidence_and_verifies_with_heartbeats_in_the_log(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    config = config_file
    assert (
        main(["--config", str(config), "registry", "import", str(ROOT / "examples/registry.toml")])
        == 0
    )
    capsys.readouterr()
    [full] = agent_envelopes(tmp_path, config, 1)
    beats = heartbeats(tmp_path, Path(full), 3)
    rows = verifier(capsys, config, "ingest", "--json", full, *beats)
    assert [r["result"] for r in rows] == ["accepted"] * 4
    key = tmp_path / "report.pub"
    verifier(capsys, config, "report", "key", "--out", str(key))
    out = tmp_path / "r.json"
    month = datetime.now(UTC).strftime("%Y-%m")
    argv = ["report", "create", "--entity", "acme", "--period", month, "--out", str(out)]
    verifier(capsys, config, *argv)
    predicate = json.loads(base64.b64decode(json.loads(out.read_text())["payload"]))["predicate"]
    [site] = [s for s in predicate["sites"] if s["id"] == "acme-fra1"]
    assert site["units"] == 8
    assert site["evidence_candidates"] == [0]  # the full evidence, never a heartbeat
    [sample] = predicate["samples"]
    assert sample["log_index"] == 0
    assert report_main(["--json", "verify", str(out), "--key", str(key)]) == 0
    assert json.loads(capsys.readouterr().out)["valid"] is True
    script = [sys.executable, str(ROOT / "docs/verify_report.py"), str(out), str(key)]
    done = subprocess.run(script, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert (done.returncode, done.stdout.split(":")[0]) == (0, "OK"), done.stdout + done.stderr
