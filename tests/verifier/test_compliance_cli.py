"""`holdings` and `reconcile` offline, as a compliance engineer runs them: a verifier state
directory and no server, the example registry imported, envelopes made by
`gpu-attest-agent once` ingested; then against PostgreSQL the same way."""

from __future__ import annotations

import argparse
import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from agent.cli import main as agent_main
from agent.exits import AgentExit
from agent.identity import KEY_FILE
from attest.keys import load_or_create_private_key
from tests.agent.helpers import MACHINE_8X_H100, enrolled_state_dir, machine_file
from tests.verifier.rpc import csr_for
from tests.verifier.store.conftest import PG_ADMIN, pg_schema_url
from verifier import enroll
from verifier.ca import load_or_create_ca
from verifier.cli import main
from verifier.compliance_cli import parse_date
from verifier.config import load_config
from verifier.exits import VerifierExit
from verifier.registry_cli import parse_day
from verifier.server import open_configured_store

ROOT = Path(__file__).resolve().parents[2]
H100_SXM_TPP = 15_832  # 989.5 dense TOPS x 16 bit (aidr-2025 catalogue), worked by hand


def verifier(
    capsys: pytest.CaptureFixture[str], config: Path, *args: str, expected: int = 0
) -> Any:
    code = main(["--config", str(config), *args])
    out = capsys.readouterr().out
    assert code == expected, out
    return json.loads(out) if "--json" in args else out


def agent_envelopes(tmp_path: Path, config: Path, count: int) -> list[str]:
    """Enroll an agent at acme-fra1 (8 x H100 SXM) and write `count` envelopes with
    `gpu-attest-agent once --simulate`, as an offline site carries them over."""
    state = tmp_path / "agent-state"
    state.mkdir(mode=0o700)
    signer = load_or_create_private_key(state / KEY_FILE)
    settings = load_config(config)
    now = datetime.now(UTC)
    store = open_configured_store(settings)
    try:
        ca = load_or_create_ca(settings.state_dir, now)
        token = enroll.create_token(store, "acme-fra1", timedelta(hours=1), now)
        request = enroll.EnrollInput(token, signer.public_key.spki_der, csr_for(signer), "n", "m")
        agent_id = enroll.enroll(store, ca, request, now, 90).agent_id
    finally:
        store.close()
    enrolled_state_dir(state, agent_id)
    (tmp_path / "agent.toml").write_text(f'state_dir = "{state}"\n')
    machine = machine_file(tmp_path, MACHINE_8X_H100)
    paths = []
    for index in range(count):
        out = tmp_path / f"once-{index}.dsse"
        argv = ["once", "--config", str(tmp_path / "agent.toml"), "--simulate", str(machine)]
        assert agent_main([*argv, "--out", str(out)]) == AgentExit.OK
        paths.append(str(out))
    return paths


def offline_session(capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path) -> None:
    registry = str(ROOT / "examples/registry.toml")
    assert main(["--config", str(config), "registry", "import", registry]) == 0
    capsys.readouterr()
    envelopes = agent_envelopes(tmp_path, config, 2)
    rows = verifier(capsys, config, "ingest", "--json", *envelopes)
    assert [r["result"] for r in rows] == ["accepted", "accepted"]

    today = datetime.now(UTC).date()
    held = verifier(capsys, config, "holdings", "--by", "country", "--json")
    assert held["at"] == today.isoformat()
    # 8 x H100 SXM at acme-fra1 in DE (tier 1 under the pack in force today)
    [de] = held["rows"]
    assert (de["country"], de["units"], de["tpp"]) == ("DE", 8, 8 * H100_SXM_TPP)
    assert de["tier"] == 1
    by_site = verifier(capsys, config, "holdings", "--by", "site", "--json")["rows"]
    assert [(r["site"], r["country"], r["units"]) for r in by_site] == [("acme-fra1", "DE", 8)]
    for by in ("entity", "authorization", "model"):
        assert verifier(capsys, config, "holdings", "--by", by, "--json")["by"] == by
    text = verifier(capsys, config, "holdings", "--by", "authorization")
    assert "UVEU-2025-0001 (uveu, acme, valid): 8 GPUs, 126,656 TPP; at most 100,000 GPUs" in text

    # The day before: the evidence was received today, so nothing was held.
    yesterday = (today - timedelta(days=1)).isoformat()
    before = verifier(capsys, config, "reconcile", "--at", yesterday, "--json")
    assert (before["totals"]["units"], before["findings"], before["stored"]) == (0, [], False)
    assert verifier(capsys, config, "holdings", "--at", yesterday, "--json")["rows"] == []

    # The pack in force today (baseline-2025-05: enforcement stopped) raises nothing.
    now = verifier(capsys, config, "reconcile", "--at", today.isoformat(), "--json")
    assert (now["pack"], now["totals"]["units"], now["findings"]) == ("baseline-2025-05", 8, [])
    # Under the AI Diffusion rule as published, a US-headquartered UVEU holding everything in
    # Germany is below the 50% it must hold in the US.
    code, aidr = VerifierExit.FINDINGS, ("--policy", "aidr-2025")
    tried = verifier(capsys, config, "reconcile", *aidr, "--json", expected=code)
    # Another pack than the one in force only reports: trying a pack never rewrites the stored
    # findings' history.
    assert tried["stored"] is False and "not the pack in force" in tried["not_stored_because"]
    assert verifier(capsys, config, "findings", "--json") == []
    # A team that runs under the published rule says so in its configuration.
    plain = config.read_text()
    config.write_text('policy = "aidr-2025"\n' + plain)
    now = verifier(capsys, config, "reconcile", "--json", expected=code)
    assert now["totals"]["units"] == 8 and now["stored"] is True
    assert now["findings"] == tried["findings"]
    raised = {(f["rule"], f["subject"]) for f in now["findings"]}
    assert ("uveu-us-share", "entity:acme@US") in raised, now["findings"]
    for f in now["findings"]:
        assert {"rule", "severity", "subject", "message", "evidence"} <= set(f)
    stored = {(f["rule"], f["subject"]) for f in verifier(capsys, config, "findings", "--json")}
    assert raised <= stored
    again = verifier(capsys, config, "reconcile", "--json", expected=code)  # no duplicate
    assert again["findings"] == now["findings"] and again["resolved"] == []
    assert len(verifier(capsys, config, "findings", "--json")) == len(stored)
    text = verifier(capsys, config, "reconcile", "--at", yesterday, *aidr)
    assert "reported only" in text and "no findings" in text
    # Back under the built-in pack in force: the compliance findings no longer hold.
    config.write_text(plain)
    cleared = verifier(capsys, config, "reconcile", "--json")
    assert {(r["rule"], r["subject"]) for r in cleared["resolved"]} == raised
    assert verifier(capsys, config, "findings", "--json") == []


def test_holdings_and_reconcile_offline_on_sqlite(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    offline_session(capsys, config_file, tmp_path)


@pytest.mark.postgres
def test_holdings_and_reconcile_offline_on_postgresql(
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
        offline_session(capsys, config, tmp_path)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_a_date_after_today_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], config_file: Path
) -> None:
    tomorrow = (datetime.now(UTC).date() + timedelta(days=2)).isoformat()
    assert main(["--config", str(config_file), "reconcile", "--at", tomorrow]) == 2
    assert main(["--config", str(config_file), "holdings", "--at", "2026-13-01"]) == 2
    capsys.readouterr()


@pytest.mark.parametrize(
    ("text", "why"),
    [("20250630", "YYYY-MM-DD"), ("2025-W26-1", "YYYY-MM-DD"), ("2025-02-30", "calendar date")],
)
def test_at_takes_calendar_dates_written_yyyy_mm_dd_only(text: str, why: str) -> None:
    """date.fromisoformat alone takes 20250630 and ISO week dates, which the help does not
    promise; an impossible day names itself as such, not as a format error."""
    with pytest.raises(argparse.ArgumentTypeError, match=why):
        parse_date(text)
    with pytest.raises(argparse.ArgumentTypeError, match=why):
        parse_day(text)
