"""Opening stores: URL schemes, and an unreachable PostgreSQL reported as unavailable."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from attest.errors import ConfigError, StoreError, StoreUnavailableError
from verifier.store import open_store
from verifier.store.api import StoreOptions
from verifier.store.postgres import PostgresStore
from verifier.store.sqlbase import Db
from verifier.store.sqlite import SqliteStore

from .conftest import pg_schema_url


def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        open_store("mysql://localhost/x")


def test_sqlite_urls_follow_sqlalchemy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = open_store(f"sqlite:///{tmp_path}/abs.db")
    assert isinstance(absolute, SqliteStore)
    assert absolute.path == tmp_path / "abs.db"
    absolute.close()
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///sub/rel.db")
    assert isinstance(relative, SqliteStore)
    assert (tmp_path / "sub" / "rel.db").exists()
    relative.close()
    with pytest.raises(StoreError):
        relative.log_size()


def test_unreachable_postgresql_is_unavailable() -> None:
    options = StoreOptions(unavailable_timeout=timedelta(seconds=0.3))
    with pytest.raises(StoreUnavailableError):
        open_store("postgresql://postgres@127.0.0.1:1/test?connect_timeout=1", options)


@pytest.mark.postgres
def test_postgresql_plans_every_call_for_its_values(pg_schema: str) -> None:
    """A statement used over and over (psycopg prepares it on the server) is planned for each
    call's values and the table's size then, never frozen into a plan made for an empty table."""
    store = PostgresStore(pg_schema_url(pg_schema))
    lookup = "SELECT uuid FROM gpu_sightings WHERE present = 1 AND agent_id <> ? AND uuid IN (?, ?)"

    def body(db: Db) -> list[tuple[object, ...]]:
        for i in range(20):
            db.all(lookup, ("agt-a", f"GPU-{i}", "GPU-x"))
        return db.all(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE starts_with(statement, ?)",
            ("SELECT uuid FROM gpu_sightings",),
        )

    try:
        [(generic, custom)] = store._transact(body, write=False)
    finally:
        store.close()
    assert generic == 0
    assert isinstance(custom, int) and custom >= 10
