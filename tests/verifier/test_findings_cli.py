"""`gpu-attest-verifier findings ack` and the lifecycle as the CLI shows it, in-process."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from tests.verifier.store import helpers as store_helpers
from tests.verifier.test_cli import _enroll_direct, run
from verifier.cli import main
from verifier.config import load_config
from verifier.exits import VerifierExit
from verifier.model import FindingDraft, Severity
from verifier.server import open_configured_store


def _raise(config_file: Path, *drafts: FindingDraft) -> None:
    store = open_configured_store(load_config(config_file))
    try:
        store.upsert_findings(drafts, store_helpers.T0)
    finally:
        store.close()


def test_ack_lists_acknowledged_and_is_idempotent(
    capsys: pytest.CaptureFixture[str], config_file: Path
) -> None:
    agent_id, _ = _enroll_direct(config_file)
    _raise(config_file, FindingDraft("evidence-gap", Severity.HIGH, f"agent:{agent_id}", "gap"))
    code, out = run(capsys, config_file, "findings", "--json")
    [finding] = json.loads(out)
    assert code == VerifierExit.OK and finding["state"] == "open"
    assert {"id", "rule", "severity", "subject", "message", "evidence", "opened_at"} <= set(finding)
    fid = str(finding["id"])
    code, out = run(capsys, config_file, "findings")
    assert f"id={fid} [high] evidence-gap" in out
    code, out = run(capsys, config_file, "findings", "ack", fid, "--by", "alice", "--reason", "ok")
    assert code == VerifierExit.OK and "acknowledged by alice" in out
    code, out = run(capsys, config_file, "findings", "ack", fid, "--by", "bob", "--reason", "x")
    assert code == VerifierExit.OK and out.startswith("already acknowledged")
    assert "by alice" in out and "bob" not in out
    code, out = run(capsys, config_file, "findings", "--json")
    [acked] = json.loads(out)
    assert (acked["state"], acked["acknowledged_by"], acked["ack_reason"]) == (
        "acknowledged",
        "alice",
        "ok",
    )
    # An acknowledged finding no longer trips --fail-on: it is known and owned.
    code, _ = run(capsys, config_file, "findings", "--fail-on", "high")
    assert code == VerifierExit.OK


def test_ack_of_an_unknown_id_is_refused_with_one_line(
    capsys: pytest.CaptureFixture[str], config_file: Path
) -> None:
    _enroll_direct(config_file)
    capsys.readouterr()
    code = main(
        ["--config", str(config_file), "findings", "ack", "77", "--by", "a", "--reason", "r"]
    )
    out, err = capsys.readouterr()
    assert (code, out) == (VerifierExit.REFUSED, "")
    assert err == "gpu-attest-verifier: finding-unknown: no finding with id 77\n"
    code, _ = run(capsys, config_file, "findings", "ack", "x1", "--by", "a", "--reason", "r")
    assert code == VerifierExit.USAGE


def test_ack_needs_by_and_reason(config_file: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "verifier.cli",
            "--config",
            str(config_file),
            "findings",
            "ack",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == VerifierExit.USAGE and "--by" in done.stderr


def test_gpu_missing_is_listed_one_line_per_host(
    capsys: pytest.CaptureFixture[str], config_file: Path
) -> None:
    agent_id, _ = _enroll_direct(config_file)
    t0 = store_helpers.T0
    store = open_configured_store(load_config(config_file))
    try:
        chain = store_helpers.Chain(
            agent_id, inventory=store_helpers.gpus("G-a", "G-b", "G-c", "G-d")
        )
        store.accept([chain.next(t0)], t0)
        store.accept([chain.next(t0 + timedelta(seconds=1), inventory=())], t0)
        store.sweep(t0 + timedelta(hours=2), timedelta(minutes=30))
        ids = {f.subject: f.id for f in store.iter_findings() if f.rule == "gpu-missing"}
    finally:
        store.close()
    code, out = run(capsys, config_file, "findings")
    missing = [line for line in out.splitlines() if "gpu-missing" in line]
    assert code == VerifierExit.OK and len(missing) == 1
    assert missing[0] == (
        f"[high] gpu-missing  host=n  site=site-a  agent={agent_id}: 4 GPUs missing: "
        f"G-a (id={ids['gpu:G-a']}), G-b (id={ids['gpu:G-b']}), G-c (id={ids['gpu:G-c']}), ..."
    )
    code, out = run(capsys, config_file, "findings", "--json")
    assert len([f for f in json.loads(out) if f["rule"] == "gpu-missing"]) == 4
