"""The gpu-attest-verifier CLI in-process: exit codes and the --json contract."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from attest.keys import SoftwareSigner
from tests.verifier.helpers import Chain
from tests.verifier.rpc import csr_for
from tests.verifier.store import helpers as store_helpers
from verifier import enroll
from verifier.ca import load_or_create_ca
from verifier.cli import main, parse_duration
from verifier.config import load_config
from verifier.exits import VerifierExit
from verifier.findings_cli import fleet_catalogue
from verifier.model import FindingDraft, Severity
from verifier.server import open_configured_store
from verifier.views import finding_view, host_view


def run(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str]:
    code = main(["--config", str(config), *args])
    return code, capsys.readouterr().out


def _enroll_direct(config_file: Path) -> tuple[str, SoftwareSigner]:
    config = load_config(config_file)
    now = datetime.now(UTC)
    store = open_configured_store(config)
    try:
        ca = load_or_create_ca(config.state_dir, now)
        token = enroll.create_token(store, "site-a", timedelta(hours=1), now)
        signer = SoftwareSigner.generate()
        request = enroll.EnrollInput(token, signer.public_key.spki_der, csr_for(signer), "n", "m")
        result = enroll.enroll(store, ca, request, now, 90)
    finally:
        store.close()
    return result.agent_id, signer


def test_duration_parser() -> None:
    assert parse_duration("24h") == timedelta(hours=24)
    assert parse_duration("7d") == timedelta(days=7)


def test_token_agents_fleet_findings(capsys: pytest.CaptureFixture[str], config_file: Path) -> None:
    code, out = run(capsys, config_file, "token", "create", "--site", "site-a", "--ttl", "2h")
    assert code == VerifierExit.OK and out.strip().startswith("gat1_")
    agent_id, _ = _enroll_direct(config_file)
    code, out = run(capsys, config_file, "agents", "--json")
    agents = json.loads(out)
    assert code == VerifierExit.OK and [a["agent_id"] for a in agents] == [agent_id]
    assert {"status", "site_id", "last_seq", "keyids"} <= set(agents[0])
    code, out = run(capsys, config_file, "fleet", "--json")
    assert code == VerifierExit.OK and json.loads(out)[0]["agent_id"] == agent_id
    code, out = run(capsys, config_file, "findings", "--json", "--all")
    assert code == VerifierExit.OK and json.loads(out) == []
    code, _ = run(capsys, config_file, "agent", "revoke", agent_id)
    assert code == VerifierExit.OK
    code, out = run(capsys, config_file, "agents", "--json")
    assert json.loads(out)[0]["status"] == "revoked"
    code, _ = run(capsys, config_file, "agent", "revoke", "agt-nosuch")
    assert code == VerifierExit.REFUSED


def test_ingest_offline_envelopes(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    agent_id, signer = _enroll_direct(config_file)
    chain = Chain(agent_id, signer)
    now = datetime.now(UTC)
    paths = []
    for index in range(3):
        path = tmp_path / f"env-{index}.bin"
        path.write_bytes(chain.next(b"", now - timedelta(hours=3 - index)))
        paths.append(str(path))
    # Given out of order: ingest applies them in seq order.
    code, out = run(capsys, config_file, "ingest", "--json", paths[2], paths[0], paths[1])
    rows = json.loads(out)
    assert code == VerifierExit.OK, rows
    assert [r["seq"] for r in rows] == [3, 1, 2]
    assert {r["freshness"] for r in rows} == {"offline"}
    # The same file again (a re-run after a crash) is already accepted, not a refusal.
    code, out = run(capsys, config_file, "ingest", "--json", paths[1])
    assert code == VerifierExit.OK and json.loads(out)[0]["result"] == "already-accepted"
    forged = tmp_path / "forged.bin"
    forged.write_bytes(Chain(agent_id, SoftwareSigner.generate(), 3, chain.prev).next(b"", now))
    code, out = run(capsys, config_file, "ingest", "--json", str(forged))
    assert code == VerifierExit.REFUSED and json.loads(out)[0]["code"] == "signature-unknown-key"


def test_ingest_of_an_envelope_whose_nonce_was_purged(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    """An agent's spool can hold an envelope that answered a challenge and was never receipted;
    after a long outage the nonce's row is purged. Carried over by `ingest`, it is accepted as
    offline evidence, not refused for good. A recent envelope with a nonce this fleet never
    issued is still refused: its row would exist."""
    agent_id, signer = _enroll_direct(config_file)
    chain = Chain(agent_id, signer)
    now = datetime.now(UTC)
    old, recent = tmp_path / "old.bin", tmp_path / "recent.bin"
    old.write_bytes(chain.next(b"\x09" * 32, now - timedelta(hours=2)))
    recent.write_bytes(chain.next(b"\x0a" * 32, now))
    code, out = run(capsys, config_file, "ingest", "--json", str(old))
    rows = json.loads(out)
    assert code == VerifierExit.OK and rows[0]["freshness"] == "offline", rows
    code, out = run(capsys, config_file, "ingest", "--json", str(recent))
    assert code == VerifierExit.REFUSED and json.loads(out)[0]["code"] == "nonce-unknown"


def test_ca_export(capsys: pytest.CaptureFixture[str], config_file: Path) -> None:
    code, out = run(capsys, config_file, "ca", "export")
    assert code == VerifierExit.OK and out.startswith("-----BEGIN CERTIFICATE-----")
    assert run(capsys, config_file, "ca", "export")[1] == out  # created once, then kept


def test_serve_insecure_plaintext_refused_off_loopback(
    capsys: pytest.CaptureFixture[str], config_file: Path
) -> None:
    code = main(["--config", str(config_file), "serve", "--insecure-plaintext"])
    assert code == VerifierExit.CONFIG
    assert "loopback" in capsys.readouterr().err


def test_config_accepted_after_the_subcommand(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    """docs/design.md §8 writes `serve [--config F]`; the option works on either side of it."""
    before = main(["--config", str(config_file), "ca", "export"])
    first = capsys.readouterr().out
    after = main(["ca", "export", "--config", str(config_file)])
    assert before == after == VerifierExit.OK and capsys.readouterr().out == first
    code = main(["serve", "--insecure-plaintext", "--config", str(config_file)])
    assert code == VerifierExit.CONFIG and "loopback" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("lisen = 'x'\n")
    # A value after the subcommand wins over one before it.
    assert (
        main(["--config", str(config_file), "agents", "--config", str(bad)]) == VerifierExit.CONFIG
    )


def test_unknown_config_key_exits_3(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("lisen = 'x'\n")
    assert run(capsys, bad, "agents")[0] == VerifierExit.CONFIG


def test_registry_import_and_show(capsys: pytest.CaptureFixture[str], config_file: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "registry.toml"
    code, out = run(capsys, config_file, "registry", "import", str(example))
    assert code == VerifierExit.OK and out.startswith("imported")
    code, out = run(capsys, config_file, "registry", "show", "--json")
    shown = json.loads(out)
    assert code == VerifierExit.OK and shown["entities"] and shown["sites"]
    bad = config_file.parent / "bad-registry.toml"
    bad.write_text("[[site]]\nid = 'x'\nentity = 'nosuch'\n")
    assert run(capsys, config_file, "registry", "import", str(bad))[0] == VerifierExit.CONFIG


def test_fleet_and_findings_are_streamed_as_the_documented_documents(
    capsys: pytest.CaptureFixture[str], config_file: Path
) -> None:
    store = open_configured_store(load_config(config_file))
    try:
        for i in range(4):
            store_helpers.enroll(store, f"a{i}", site="fra1" if i % 2 else "ams1")
            inventory = store_helpers.gpus(*(f"GPU-{i}-{j}" for j in range(i)))
            at = store_helpers.T0
            store.accept([store_helpers.Chain(f"a{i}", inventory=inventory).next(at)], at)
        draft = FindingDraft("evidence-gap", Severity.HIGH, "agent:a1", 'a "quoted"\nmessage')
        store.upsert_findings([draft], store_helpers.T0)
        catalogue = fleet_catalogue(datetime.now(UTC).date())  # what `fleet` classifies by
        # No registry: no site is judged for location (docs/design.md §16).
        hosts = [{**host_view(h, catalogue), "location": None} for h in store.iter_fleet()]
        findings = [finding_view(f) for f in store.iter_findings()]
    finally:
        store.close()
    # --json is still one JSON array, byte for byte what printing the whole list wrote.
    code, out = run(capsys, config_file, "fleet", "--json")
    assert code == VerifierExit.OK and out == json.dumps(hosts, indent=2, sort_keys=True) + "\n"
    # A site nobody knows is a mistake, not an empty site.
    assert main(["--config", str(config_file), "fleet", "--json", "--site", "nowhere"]) == (
        VerifierExit.REFUSED
    )
    said = capsys.readouterr()
    assert said.out == "" and said.err.startswith("gpu-attest-verifier: site-unknown: unknown site")
    code, out = run(capsys, config_file, "findings", "--json")
    assert code == VerifierExit.OK and out == json.dumps(findings, indent=2, sort_keys=True) + "\n"
    # Text: each host's line, then its GPUs.
    code, out = run(capsys, config_file, "fleet", "--site", "fra1")
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["host-a1", "GPU-1-0", "host-a3"] + [
        f"GPU-3-{j}" for j in range(3)
    ]
    assert lines[0].endswith("gpus=1") and lines[2].endswith("gpus=3")
