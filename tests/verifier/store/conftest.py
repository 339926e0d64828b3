"""Store fixtures: every store test runs against SQLite (in tmp_path) and PostgreSQL (a fresh
schema in database `test` on 127.0.0.1:5432, dropped afterwards)."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from verifier.store import bodies, open_store
from verifier.store.api import Store, StoreOptions

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass
class Backend:
    """Opens stores (several may share one database, like replicas) and peeks at raw rows."""

    name: str
    url: str
    opened: list[Store] = field(default_factory=list)

    def open(self, options: StoreOptions | None = None) -> Store:
        store = open_store(self.url, options)
        self.opened.append(store)
        return store

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Raw SQL for assertions about how state is stored (e.g. compaction)."""
        if self.name == "sqlite":
            with sqlite3.connect(self.url.removeprefix("sqlite:///")) as conn:
                return list(conn.execute(sql).fetchall())
        with psycopg.connect(self.url, autocommit=True) as conn:
            return list(conn.execute(sql).fetchall())

    def execute(self, sql: str) -> None:
        """Raw statements: what damage or an older verifier leaves."""
        if self.name == "sqlite":
            with sqlite3.connect(self.url.removeprefix("sqlite:///")) as conn:
                conn.executescript(sql)
            return
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql)

    def envelopes_to_blobs(self, below: int) -> None:
        """Move the envelopes of log indices below `below` back where a verifier before
        migration 0014 kept them: verbatim in `blobs`, by hash."""
        rows = [
            (bytes(h), bodies.expand(bytes(body)))
            for h, body in self.query(
                "SELECT l.envelope_hash, e.body FROM envelopes e JOIN log_entries l "
                f"ON l.log_index = e.log_index WHERE e.log_index < {int(below)}"
            )
        ]
        insert = "INSERT INTO blobs (hash, body) VALUES (?, ?)"
        delete = f"DELETE FROM envelopes WHERE log_index < {int(below)}"
        if self.name == "sqlite":
            with sqlite3.connect(self.url.removeprefix("sqlite:///")) as lite:
                lite.executemany(insert, rows)
                lite.execute(delete)
            return
        with psycopg.connect(self.url) as pg:  # one transaction, committed on exit
            pg.cursor().executemany(insert.replace("?", "%s"), rows)
            pg.execute(delete)

    def close_all(self) -> None:
        for store in self.opened:
            store.close()
        self.opened.clear()


def pg_schema_url(schema: str) -> str:
    return f"{PG_ADMIN}?options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_schema() -> Iterator[str]:
    schema = "t_" + secrets.token_hex(6)
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        found = Backend("sqlite", f"sqlite:///{tmp_path / 'store.db'}")
    else:
        schema = request.getfixturevalue("pg_schema")
        found = Backend("postgres", pg_schema_url(schema))
    try:
        yield found
    finally:
        found.close_all()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()


StoreFactory = Callable[[StoreOptions | None], Store]
