"""Every command that offers `--json`, of all three programs, on a populated state: stdout is one
JSON document, whatever the command found (issue 12, item 14; `token create --json` used to
crash after storing the token, `gpu-attest-report --json verify` printed no JSON)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main as agent_main
from attest.report_cli import main as report_main
from tests.verifier.helpers import Chain
from tests.verifier.store import helpers as store_helpers
from tests.verifier.test_cli import _enroll_direct
from verifier.cli import main as verifier_main
from verifier.config import load_config
from verifier.model import FindingDraft, Severity
from verifier.server import open_configured_store

ROOT = Path(__file__).resolve().parents[2]


def _json(capsys: pytest.CaptureFixture[str], code: int, expected: int = 0) -> Any:
    out = capsys.readouterr().out
    assert code == expected, out
    return json.loads(out)


def test_every_json_output_parses(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    def verifier(*args: str, expected: int = 0) -> Any:
        return _json(capsys, verifier_main(["--config", str(config_file), *args]), expected)

    token = verifier("token", "create", "--site", "acme-fra1", "--json")
    assert isinstance(token, dict) and token["token"].startswith("gat1_")
    assert (
        verifier_main(
            [
                "--config",
                str(config_file),
                "registry",
                "import",
                str(ROOT / "examples/registry.toml"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    agent_id, signer = _enroll_direct(config_file)
    chain, now = Chain(agent_id, signer), datetime.now(UTC)
    envelopes = []
    for index in range(2):
        path = tmp_path / f"e{index}.dsse"
        path.write_bytes(chain.next(b"", now - timedelta(minutes=5 - index)))
        envelopes.append(str(path))
    store = open_configured_store(load_config(config_file))
    try:
        draft = FindingDraft("evidence-gap", Severity.HIGH, f"agent:{agent_id}", "a finding")
        store.upsert_findings([draft], store_helpers.T0)
    finally:
        store.close()

    rows = verifier("ingest", "--json", *envelopes)
    assert [r["result"] for r in rows] == ["accepted", "accepted"]
    rows = verifier("ingest", "--json", envelopes[0])
    assert [r["result"] for r in rows] == ["already-accepted"]
    assert len(verifier("agents", "--json")) == 1
    [host] = verifier("fleet", "--json")
    assert {"state", "model", "serial", "board_part_number"} <= set(host["gpus"][0])
    assert verifier("fleet", "--json", "--site", "acme-iad1") == []  # in the registry, empty
    assert len(verifier("findings", "--json", "--all")) == 1
    assert len(verifier("findings", "--json", "--fail-on", "high", expected=5)) == 1
    assert verifier("findings", "--json", "--fail-on", "critical") != []
    [gap] = verifier("findings", "--json")
    acked = verifier("findings", "ack", str(gap["id"]), "--by", "ops", "--reason", "r", "--json")
    assert (acked["state"], acked["already_acknowledged"]) == ("acknowledged", False)
    assert verifier("registry", "show", "--json")["sites"]
    for by in ("site", "country", "entity", "authorization", "model"):
        assert verifier("holdings", "--by", by, "--json")["by"] == by
    past = verifier("reconcile", "--at", "2025-02-01", "--json")  # before any evidence
    assert (past["findings"], past["stored"]) == ([], False)
    # site-a is not in the registry: its GPU needs a licence it does not have
    assert verifier("reconcile", "--json", expected=5)["findings"]
    assert verifier("registry", "show", "--json", "--at", "2020-01-01")["sites"] == []
    assert [v["version"] for v in verifier("registry", "history", "--json")] == [1]
    dry = ROOT / "examples/registry.toml"
    assert verifier("registry", "import", "--dry-run", "--json", str(dry))["warnings"] == []

    key, checkpoint, proof = tmp_path / "log.pub", tmp_path / "log.cp", tmp_path / "e.tlog-proof"
    for args in (["log", "key", "--out", str(key)], ["log", "checkpoint", "--out", str(checkpoint)],
                 ["log", "proof", "--index", "1", "--out", str(proof)]):  # fmt: skip
        assert verifier_main(["--config", str(config_file), *args]) == 0

    def report(*args: str, expected: int = 0) -> dict[str, object]:
        shown = _json(capsys, report_main(["--json", *args]), expected)
        assert isinstance(shown, dict)
        return shown

    assert report("checkpoint", "verify", str(checkpoint), "--key", str(key))["valid"] is True
    assert report("proof", "verify", str(proof), "--key", str(key))["valid"] is True
    assert report("verify", "r.json", "--key", str(key), expected=2)["valid"] is False

    machine = ROOT / "examples" / "machines" / "h100-node.toml"
    inventory = _json(capsys, agent_main(["inventory", "--json", "--simulate", str(machine)]))
    assert isinstance(inventory, dict)
