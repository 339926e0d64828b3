"""Opening stores: URL schemes, and an unreachable PostgreSQL reported as unavailable."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from attest.errors import ConfigError, StoreError, StoreUnavailableError
from verifier.model import NonceRecord
from verifier.store import open_store
from verifier.store.api import StoreOptions
from verifier.store.postgres import PostgresStore
from verifier.store.sqlbase import Db
from verifier.store.sqlite import PAGE_SIZE, SqliteStore

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


def _nonce() -> NonceRecord:
    at = datetime(2026, 12, 5, tzinfo=UTC)
    return NonceRecord(bytes(range(32)), at, at + timedelta(minutes=5), "r1", "a1")


def _pragma(path: Path, name: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute(f"PRAGMA {name}").fetchone()[0])


def test_a_new_sqlite_database_has_small_pages_and_an_old_one_keeps_its_own(
    tmp_path: Path,
) -> None:
    """New files get 1 KiB pages (fewer bytes written per commit); a file made with 4 KiB
    pages opens, works and keeps them, and the conversion docs/operators.md gives turns it
    into the new layout with every row kept."""
    new = SqliteStore(tmp_path / "new.db")
    assert _pragma(new.path, "page_size") == PAGE_SIZE == 1024
    new.close()
    old_path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(old_path)) as conn:
        conn.execute("PRAGMA page_size=4096")
        conn.execute("CREATE TABLE t (x)")  # the file now exists with its page size fixed
        conn.execute("DROP TABLE t")
    old = SqliteStore(old_path)
    assert _pragma(old_path, "page_size") == 4096
    old.issue_nonces([_nonce()])
    old.close()
    with contextlib.closing(sqlite3.connect(old_path, isolation_level=None)) as conn:
        for statement in (
            "PRAGMA journal_mode=DELETE", "PRAGMA page_size=1024", "VACUUM",
            "PRAGMA journal_mode=WAL",
        ):  # fmt: skip
            conn.execute(statement)
    assert _pragma(old_path, "page_size") == 1024
    converted = SqliteStore(old_path)
    assert converted.get_nonce(_nonce().nonce) is not None
    converted.close()
