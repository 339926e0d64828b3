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
        rows = [(h, raw) for index, h, raw in self._envelopes() if index < below]
        self._many(
            "INSERT INTO blobs (hash, body) VALUES (?, ?)",
            rows,
            then=f"DELETE FROM envelopes WHERE log_index < {int(below)}",
        )

    def _envelopes(self) -> list[tuple[int, bytes, bytes]]:
        """(log index, envelope hash, envelope bytes) of the envelopes in `envelopes`."""
        return [
            (int(i), bytes(h), bodies.expand(bytes(body), bodies.Link(agent, bytes(prev or b""))))
            for i, h, body, agent, prev in self.query(
                "SELECT e.log_index, a.envelope_hash, e.body, g.agent_id, p.envelope_hash "
                "FROM envelopes e JOIN attestations a ON a.log_index = e.log_index "
                "JOIN agents g ON g.agent_no = a.agent_no "
                "LEFT JOIN attestations p ON p.log_index = a.prev_index"
            )
        ]

    def _many(self, sql: str, rows: list[tuple[Any, ...]], then: str = "") -> None:
        """`sql` (with ? marks) for each row, then the statement `then`, in one transaction."""
        if self.name == "sqlite":
            with sqlite3.connect(self.url.removeprefix("sqlite:///")) as lite:
                lite.executemany(sql, rows)
                if then:
                    lite.execute(then)
            return
        with psycopg.connect(self.url) as pg:  # one transaction, committed on exit
            pg.cursor().executemany(sql.replace("?", "%s"), rows)
            if then:
                pg.execute(then)

    def back_to_version_16(self) -> None:
        """Rewrite the database into the layout a verifier before migration 0017 left: the
        log's leaves in `log_entries`, attestations and nonces naming their agent by id (and
        the verdict by name), agents without numbers, every nonce with its issue time
        (time-led ones read it from their first 8 bytes), and envelopes in the unlinked forms
        (bodies.py), as a verifier before 0017 wrote them."""
        self._unlink_bodies()
        sqlite = self.name == "sqlite"
        blob, rowid, key = (
            ("BLOB", " WITHOUT ROWID", "INTEGER PRIMARY KEY")
            if sqlite
            else ("BYTEA", "", "BIGINT PRIMARY KEY")
        )
        nonces = [
            (n, int.from_bytes(bytes(n)[:8], "big") if issued is None else issued, *rest)
            for n, issued, *rest in self.query(
                "SELECT n.nonce, n.issued_at, n.expires_at, n.replica, n.consumed_at, a.agent_id "
                "FROM nonces n LEFT JOIN agents a ON a.agent_no = n.agent_no"
            )
        ]
        self.execute(
            f"CREATE TABLE log_entries (log_index BIGINT PRIMARY KEY, leaf_hash {blob} NOT NULL, "
            f"envelope_hash {blob} NOT NULL){rowid}; "
            "INSERT INTO log_entries SELECT log_index, leaf_hash, envelope_hash FROM attestations; "
            f"CREATE TABLE old_att (log_index {key}, agent_id TEXT NOT NULL, seq BIGINT NOT NULL, "
            f"prev_index BIGINT, envelope_hash {blob} NOT NULL, payload_digest {blob} NOT NULL, "
            "freshness TEXT NOT NULL, created_at BIGINT NOT NULL, received_at BIGINT NOT NULL); "
            "INSERT INTO old_att SELECT t.log_index, a.agent_id, t.seq, t.prev_index, "
            "t.envelope_hash, t.payload_digest, "
            "CASE t.fresh WHEN 1 THEN 'nonce' ELSE 'offline' END, t.created_at, t.received_at "
            "FROM attestations t JOIN agents a ON a.agent_no = t.agent_no; "
            "DROP TABLE attestations; ALTER TABLE old_att RENAME TO attestations; "
            "CREATE UNIQUE INDEX attestations_agent_seq ON attestations (agent_id, seq) "
            "WHERE (seq & 63) = 0; "
            f"DROP TABLE nonces; CREATE TABLE nonces (nonce {blob} PRIMARY KEY, "
            "issued_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, replica TEXT NOT NULL, "
            f"consumed_at BIGINT, agent_id TEXT){rowid}; "
            "DROP INDEX agents_no; ALTER TABLE agents DROP COLUMN agent_no; "
            "DELETE FROM schema_version WHERE version = 17"
        )
        self._many("INSERT INTO nonces VALUES (?, ?, ?, ?, ?, ?)", nonces)

    def _unlink_bodies(self) -> None:
        """Store every linked envelope body again in the form it had before migration 0017."""
        rows = [(bodies.compact(raw), index) for index, _, raw in self._envelopes()]
        self._many("UPDATE envelopes SET body = ? WHERE log_index = ?", rows)

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
