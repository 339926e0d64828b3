"""The registry's round trip through both store backends, and its history: every import kept
as a version that `load_registry(at=...)` reads back (the parser is tested in
tests/verifier/test_registry.py)."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from datetime import UTC, date, datetime, timedelta

import psycopg

from tests.verifier.store.conftest import Backend
from tests.verifier.store.helpers import Chain, enroll, gpus
from tests.verifier.test_registry import EXAMPLE
from verifier.model import AuditKind
from verifier.registry import parse_registry
from verifier.registry_model import Entity, Registry, Site, VeuStatus
from verifier.store.api import Store
from verifier.store.migrations import load_migrations, statements
from verifier.store.ops_registry import BEFORE_HISTORY
from verifier.store.sqlbase import POSTGRES, SQLITE


def test_registry_round_trips_through_the_store(store: Store) -> None:
    assert store.load_registry() == Registry()
    registry = parse_registry(EXAMPLE)
    store.import_registry(registry)
    assert store.load_registry() == registry
    store.import_registry(Registry(entities=registry.entities))
    assert store.load_registry() == Registry(entities=registry.entities)


def test_an_offline_deadline_round_trips(store: Store) -> None:
    text = EXAMPLE.replace("facility_power_kw = 12000", 'offline_deadline = "7d"')
    registry = parse_registry(text)
    assert registry.sites[0].offline_deadline == timedelta(days=7)
    store.import_registry(registry, datetime(2026, 1, 1, tzinfo=UTC))
    assert store.load_registry() == registry
    assert store.load_registry(date(2026, 1, 1)) == registry


def test_each_import_is_a_version_read_back_by_date(store: Store) -> None:
    first = parse_registry(EXAMPLE)
    second = Registry(entities=first.entities)
    # Imported on 3 March at the last microsecond of the day, then at midnight on 5 March.
    at_1 = datetime(2026, 3, 3, 23, 59, 59, 999999, tzinfo=UTC)
    at_2 = datetime(2026, 3, 5, tzinfo=UTC)
    assert store.import_registry(first, at_1, by="alice", source=b"file one") == 1
    assert store.import_registry(second, at_2, by="bob", source=b"file two") == 2
    assert store.load_registry(date(2026, 3, 2)) == Registry()  # before any import
    assert store.load_registry(date(2026, 3, 3)) == first  # on its last microsecond
    assert store.load_registry(date(2026, 3, 4)) == first
    assert store.load_registry(date(2026, 3, 5)) == second  # from midnight on
    assert store.load_registry() == second
    history = store.registry_history()
    assert [(v.version, v.imported_by, v.imported_at) for v in history] == [
        (1, "alice", at_1),
        (2, "bob", at_2),
    ]
    assert history[0].digest == hashlib.sha256(b"file one").digest()
    assert (history[0].entities, history[0].sites, history[0].authorizations) == (1, 1, 1)
    assert (history[1].entities, history[1].sites, history[1].landmarks) == (1, 0, 0)
    audited = [a for a in store.list_audit() if a.kind is AuditKind.REGISTRY]
    assert [a.message.split(",")[0] for a in audited] == [
        "registry version 2 imported by bob",
        "registry version 1 imported by alice",
    ]


def test_present_gpus_are_counted_by_the_agents_site(store: Store) -> None:
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    enroll(store, "a1", site="fra", now=now)
    enroll(store, "a2", site="fra", now=now)
    enroll(store, "a3", site="iad", now=now)
    enroll(store, "a4", site="sin", now=now)
    # fra: 2 + 1 GPUs; iad: 1; sin: its agent is revoked, so its GPU is not held.
    for agent, inventory in (("a1", gpus("g1", "g2")), ("a2", gpus("g3")), ("a3", gpus("g4")),
                             ("a4", gpus("g5"))):  # fmt: skip
        [outcome] = store.accept([Chain(agent).next(now, inventory=inventory)], now)
        assert not isinstance(outcome, Exception)
    store.revoke_agent("a4", now, "test")
    assert store.present_gpus_by_site() == {"fra": 3, "iad": 1}


def _run_raw(backend: Backend, sql: list[str]) -> None:
    """Statements on the backend's database without the store (building an older schema)."""
    if backend.name == "sqlite":
        with contextlib.closing(sqlite3.connect(backend.url.removeprefix("sqlite:///"))) as db:
            for statement in sql:
                db.execute(statement)
            db.commit()
        return
    with psycopg.connect(backend.url, autocommit=True) as conn:
        for statement in sql:
            conn.execute(statement)


def test_a_registry_imported_before_history_becomes_the_first_version(backend: Backend) -> None:
    """A store at schema 4 holding a registry: migration 0005 keeps it as version 1, dated at
    the migration, so today reads it and an earlier date reads none (its import date is not
    known; fail closed)."""
    dialect = SQLITE if backend.name == "sqlite" else POSTGRES
    schema_version = (
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
        "applied_at BIGINT NOT NULL)"
    )
    sql = [schema_version]
    for migration in [m for m in load_migrations() if m.version < 5]:
        sql += [
            s.format(bytes=dialect.bytes_type, auto_id=dialect.auto_id,
                     without_rowid=dialect.without_rowid)
            for s in statements(migration.sql)
        ]  # fmt: skip
        sql.append(f"INSERT INTO schema_version VALUES ({migration.version}, 'm', 0)")
    sql += [
        "INSERT INTO reg_entities VALUES ('acme', 'Acme', 'US', 'US', 'none')",
        "INSERT INTO reg_sites VALUES ('fra', 'acme', 'DE', 50.5, 8.5, NULL)",
    ]
    _run_raw(backend, sql)
    before = datetime.now(UTC).date() - timedelta(days=1)
    store = backend.open()
    current = Registry(
        entities=(Entity("acme", "Acme", "US", "US", VeuStatus.NONE),),
        sites=(Site("fra", "acme", "DE", 50.5, 8.5),),
    )
    assert store.load_registry() == current
    [version] = store.registry_history()
    assert (version.version, version.imported_by, version.sites) == (1, BEFORE_HISTORY, 1)
    assert store.load_registry(version.imported_at.date()) == current
    assert store.load_registry(before) == Registry()
    # The next import is version 2.
    assert store.import_registry(Registry()) == 2
