"""`registry import|show|history` and `token create --site` through the real CLI, offline (no
server), on a state whose fleet holds GPUs, on SQLite and on PostgreSQL: the registry is the
truth the fleet is judged against, and every import is a version."""

from __future__ import annotations

import getpass
import json
import secrets
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from tests.verifier.helpers import Chain
from tests.verifier.store import helpers as store_helpers
from tests.verifier.store.conftest import PG_ADMIN, pg_schema_url
from tests.verifier.test_cli import _enroll_direct
from verifier.cli import main
from verifier.config import load_config
from verifier.exits import VerifierExit
from verifier.server import open_configured_store

REGISTRY = """
[[entity]]
id = "acme"
name = "Acme Cloud Inc."
hq_country = "US"
veu = "uveu"

[[entity]]
id = "beta"
name = "Beta GmbH"
hq_country = "DE"
veu = "none"

[[site]]
id = "acme-fra1"
entity = "acme"
country = "DE"
lat = 50.11
lon = 8.68
offline_deadline = "7d"

[[site]]
id = "beta-muc1"
entity = "beta"
country = "DE"
lat = 48.14
lon = 11.58

[[authorization]]
id = "L-1"
holder = "acme"
kind = "licence"
countries = ["DE"]
valid_from = 2025-01-01
valid_until = 2099-12-31
"""
WITHOUT_BETA = (
    REGISTRY[: REGISTRY.index('[[entity]]\nid = "beta"')]
    + REGISTRY[
        REGISTRY.index('[[site]]\nid = "acme-fra1"') : REGISTRY.index('[[site]]\nid = "beta-muc1"')
    ]
    + REGISTRY[REGISTRY.index("[[authorization]]") :]
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def config(request: pytest.FixtureRequest, config_file: Path, tmp_path: Path) -> Iterator[Path]:
    """The CLI's config on the default SQLite database, or on a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield config_file
        return
    schema = "t_" + secrets.token_hex(6)
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    path = tmp_path / "verifier-pg.toml"
    path.write_text(
        f'state_dir = "{tmp_path / "state"}"\ndatabase = "{pg_schema_url(schema)}"\n'
        'listen = "0.0.0.0:0"\nmetrics_listen = ""\n'
    )
    try:
        yield path
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def cli(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--config", str(config), *args])
    said = capsys.readouterr()
    return code, said.out, said.err


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def hold_gpus(config: Path, site: str, count: int) -> None:
    """An agent enrolled at `site` whose accepted evidence lists `count` present GPUs."""
    store = open_configured_store(load_config(config))
    try:
        now = datetime.now(UTC)
        store_helpers.enroll(store, f"agent-{site}", site=site, now=now)
        inventory = store_helpers.gpus(*(f"GPU-{site}-{i}" for i in range(count)))
        chain = store_helpers.Chain(f"agent-{site}", inventory=inventory)
        [outcome] = store.accept([chain.next(now)], now)
        assert not isinstance(outcome, Exception)
    finally:
        store.close()


def test_token_site_is_checked_against_the_registry_once_one_is_imported(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    code, out, err = cli(capsys, config, "token", "create", "--site", "nowhere")
    assert code == VerifierExit.OK and out.startswith("gat1_")
    assert "warning: no registry imported yet, site 'nowhere' is not checked" in err
    assert cli(capsys, config, "registry", "import", write(tmp_path, "r.toml", REGISTRY))[0] == 0
    code, out, err = cli(capsys, config, "token", "create", "--site", "nowhere")
    assert (code, out) == (VerifierExit.REFUSED, "")
    assert err == (
        "gpu-attest-verifier: site-unknown: unknown site 'nowhere': not in the registry "
        "(`registry show` lists its sites)\n"
    )
    code, out, err = cli(capsys, config, "token", "create", "--site", "beta-muc1")
    assert code == VerifierExit.OK and out.startswith("gat1_") and err == ""


def test_dry_run_shows_the_change_and_stores_nothing(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    first = write(tmp_path, "r1.toml", REGISTRY)
    code, out, _ = cli(capsys, config, "registry", "import", first, "--dry-run", "--json")
    shown = json.loads(out)
    assert code == VerifierExit.OK and shown["dry_run"] is True and shown["warnings"] == []
    assert shown["changes"]["sites"] == {
        "added": ["acme-fra1", "beta-muc1"],
        "removed": [],
        "changed": [],
    }
    assert cli(capsys, config, "registry", "history", "--json")[1] == "[]\n"
    assert cli(capsys, config, "registry", "import", first)[0] == 0
    changed = write(tmp_path, "r2.toml", REGISTRY.replace("lat = 48.14", "lat = 48.15"))
    code, out, _ = cli(capsys, config, "registry", "import", changed, "--dry-run")
    assert out == "sites: 0 added, 0 removed, 1 changed\n  ~ beta-muc1\ndry run: nothing stored\n"
    code, out, _ = cli(capsys, config, "registry", "import", first, "--dry-run")
    assert out == "no change\ndry run: nothing stored\n"


def test_removing_a_site_holding_gpus_needs_force(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    assert cli(capsys, config, "registry", "import", write(tmp_path, "r.toml", REGISTRY))[0] == 0
    hold_gpus(config, "beta-muc1", 3)
    smaller = write(tmp_path, "small.toml", WITHOUT_BETA)
    code, out, err = cli(capsys, config, "registry", "import", smaller, "--dry-run", "--json")
    shown = json.loads(out)
    assert code == VerifierExit.OK and shown["needs_force"] is True
    assert shown["warnings"] == [
        "site beta-muc1 is removed but holds 3 GPU(s)",
        "entity beta is removed but its sites hold 3 GPU(s)",
    ]
    code, out, err = cli(capsys, config, "registry", "import", smaller)
    assert (code, out) == (VerifierExit.REFUSED, "")
    assert err.splitlines() == [
        "gpu-attest-verifier: warning: site beta-muc1 is removed but holds 3 GPU(s)",
        "gpu-attest-verifier: warning: entity beta is removed but its sites hold 3 GPU(s)",
        (
            "gpu-attest-verifier: registry-change-refused: 2 warning(s) above: nothing imported; "
            "check the change with --dry-run and import with --force if it is meant"
        ),
    ]
    assert len(json.loads(cli(capsys, config, "registry", "history", "--json")[1])) == 1
    code, out, _ = cli(
        capsys, config, "registry", "import", smaller, "--force", "--by", "carol", "--json"
    )
    shown = json.loads(out)
    assert code == VerifierExit.OK and (shown["version"], shown["forced"]) == (2, True)
    history = json.loads(cli(capsys, config, "registry", "history", "--json")[1])
    assert [(v["version"], v["sites"]) for v in history] == [(1, 2), (2, 1)]
    assert history[1]["imported_by"] == "carol" and len(history[1]["sha256"]) == 64
    assert history[0]["imported_by"] == getpass.getuser()  # without --by: the OS user


def test_an_authorization_already_expired_needs_force(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    expired = REGISTRY.replace("valid_until = 2099-12-31", f"valid_until = {yesterday}")
    code, _, err = cli(capsys, config, "registry", "import", write(tmp_path, "e.toml", expired))
    assert code == VerifierExit.REFUSED
    assert f"warning: authorization L-1 expired on {yesterday}" in err
    today = REGISTRY.replace(
        "valid_until = 2099-12-31", f"valid_until = {yesterday + timedelta(1)}"
    )
    assert cli(capsys, config, "registry", "import", write(tmp_path, "t.toml", today))[0] == 0


def test_show_at_a_date_and_history(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    assert cli(capsys, config, "token", "create", "--site", "s")[0] == 0  # creates state
    code, out, _ = cli(capsys, config, "registry", "history")
    assert (code, out) == (VerifierExit.OK, "no registry imported\n")
    code, out, _ = cli(capsys, config, "registry", "import", write(tmp_path, "r.toml", REGISTRY))
    assert code == VerifierExit.OK and out.splitlines()[0] == (
        "imported version 1: 2 entities, 2 sites, 1 authorizations, 0 landmarks"
    )
    today = datetime.now(UTC).date()
    shown = json.loads(cli(capsys, config, "registry", "show", "--json")[1])
    assert [s["offline_deadline"] for s in shown["sites"]] == ["7d", None]
    at_today = cli(capsys, config, "registry", "show", "--json", "--at", today.isoformat())
    assert json.loads(at_today[1]) == shown
    before = json.loads(
        cli(capsys, config, "registry", "show", "--json", "--at", str(date(2020, 1, 1)))[1]
    )
    assert before["sites"] == [] and before["entities"] == []
    _code, out, _ = cli(capsys, config, "registry", "history")
    assert out.startswith("version 1  ") and "2 entities, 2 sites, 1 authorizations" in out
    assert main(["--config", str(config), "registry", "show", "--at", "yesterday"]) == (
        VerifierExit.USAGE
    )


def test_ingested_evidence_claiming_another_site_is_kept_at_the_token_site(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    """Real signed envelopes through `ingest`, offline: the claim is recorded as a finding,
    the host stays at its token's site, and the finding resolves when the claim agrees."""
    agent_id, signer = _enroll_direct(config)  # token for site-a
    chain, now = Chain(agent_id, signer), datetime.now(UTC)
    files = []
    for index, claim in enumerate(("site-b", "site-a")):
        path = tmp_path / f"e{index}.dsse"
        path.write_bytes(chain.next(b"", now - timedelta(minutes=5 - index), site_id=claim))
        files.append(str(path))
    code, out, _ = cli(capsys, config, "ingest", "--json", files[0])
    assert code == VerifierExit.OK and json.loads(out)[0]["result"] == "accepted"
    [finding] = json.loads(cli(capsys, config, "findings", "--json")[1])
    assert (finding["rule"], finding["subject"]) == ("site-claim-mismatch", f"agent:{agent_id}")
    assert "claims site 'site-b' but enrolled at site 'site-a'" in finding["message"]
    [host] = json.loads(cli(capsys, config, "fleet", "--json")[1])
    assert host["site_id"] == "site-a"
    assert cli(capsys, config, "ingest", files[1])[0] == VerifierExit.OK
    assert json.loads(cli(capsys, config, "findings", "--json")[1]) == []
