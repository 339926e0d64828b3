"""Versioned migrations: applied once, recorded, idempotent on reopen, safe for concurrent
openers (replicas starting together)."""

from __future__ import annotations

import threading

from tests.verifier.store.conftest import Backend
from tests.verifier.store.helpers import T0, Chain, enroll
from verifier.store.api import Store
from verifier.store.migrations import load_migrations, statements


def test_migrations_are_numbered_from_one_in_order() -> None:
    # Gaps are allowed: work on several migrations at once reserves their numbers, and a store
    # applies whatever it lacks in version order.
    versions = [m.version for m in load_migrations()]
    assert versions[0] == 1 and versions == sorted(set(versions))


def test_statements_drop_comments_and_split() -> None:
    sql = (
        "-- header; not a statement\n"
        "CREATE TABLE a (x INTEGER); -- trailing\n\n"
        "INSERT INTO a VALUES (1);\n"
    )
    assert statements(sql) == ["CREATE TABLE a (x INTEGER)", "INSERT INTO a VALUES (1)"]


def test_reopening_applies_nothing_twice_and_keeps_data(backend: Backend) -> None:
    first = backend.open()
    enroll(first, "a1")
    first.accept([Chain("a1").next(T0)], T0)
    first.close()
    backend.opened.remove(first)
    again: Store = backend.open()
    assert again.log_size() == 1
    rows = backend.query("SELECT version FROM schema_version ORDER BY version")
    assert [r[0] for r in rows] == [m.version for m in load_migrations()]


def test_concurrent_openers_agree(backend: Backend) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def open_one() -> None:
        try:
            barrier.wait()
            backend.open()
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert backend.query("SELECT COUNT(*) FROM schema_version") == [(len(load_migrations()),)]
