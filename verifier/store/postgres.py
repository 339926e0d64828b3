"""The scale-out store: PostgreSQL through a psycopg 3 connection pool, shared by several
verifier replicas. Commits are durable under PostgreSQL's default synchronous_commit.

It survives a database restart by itself: a body that fails on a broken connection is retried
on a fresh one with exponential backoff until `StoreOptions.unavailable_timeout`, after which the
call raises StoreUnavailableError (the servicer maps it to UNAVAILABLE and agents retry).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from attest.errors import StoreError, StoreUnavailableError
from verifier.store.api import StoreOptions
from verifier.store.core import SqlStore
from verifier.store.migrations import apply_migrations
from verifier.store.sqlbase import POSTGRES, Db, to_micros

T = TypeVar("T")
log = logging.getLogger(__name__)

_FIRST_BACKOFF_S = 0.05
_MAX_BACKOFF_S = 1.0
# Serializes schema migrations of replicas that open the same database at once.
_MIGRATION_LOCK = 0x67_70_75_61
#: Failures of the connection rather than of the statement: retried by `_transact`.
_UNREACHABLE = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)


def _configure(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Session settings of every pooled connection (new ones after a restart too).

    psycopg prepares a statement on the server after its fifth use, and PostgreSQL then keeps
    one generic plan for it when that looks as cheap as planning each call. A plan chosen while
    a table was still small (a new deployment; a database whose autovacuum is off, so nothing is
    ever re-analysed) outlives the table's growth: measured at 10,000 agents, the duplicate-GPU
    lookup kept a sequential scan of gpu_sightings (20+ ms a call; 65 attestations/s with p50
    64 s, against 166/s and 4 ms on SQLite). Custom plans see each call's values and the
    table's current size; the statements stay prepared, so only planning is repeated.

    JIT compilation is off: the store runs short indexed statements, and a keyset page whose
    cost the planner overestimates (the postures as of a date) was compiled anew on every
    page, 120 ms of JIT for 4 ms of execution, 125 pages for a 125,000-host fleet."""
    conn.execute("SET plan_cache_mode = force_custom_plan")
    conn.execute("SET jit = off")


class PostgresStore(SqlStore):
    """A `Store` on PostgreSQL; `conninfo` is a libpq URL or key=value string."""

    def __init__(self, conninfo: str, options: StoreOptions | None = None) -> None:
        super().__init__(options or StoreOptions())
        self._pool: ConnectionPool[psycopg.Connection[tuple[object, ...]]] = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=max(1, self.options.pool_size),
            kwargs={"autocommit": True},
            configure=_configure,
            open=False,
            name="gpu-attest-store",
        )
        self._pool.open(wait=False)
        try:
            self._transact(self._migrate_locked, write=True)
        except BaseException:
            self._pool.close()
            raise

    @staticmethod
    def _migrate_locked(db: Db) -> list[int]:
        db.run("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
        return apply_migrations(db, to_micros(datetime.now(UTC)))

    def _transact(self, body: Callable[[Db], T], *, write: bool) -> T:
        # `write` needs nothing extra here: PostgreSQL takes row locks as statements run.
        del write
        timeout = self.options.unavailable_timeout.total_seconds()
        deadline = time.monotonic() + timeout
        backoff = _FIRST_BACKOFF_S
        while True:
            remaining = max(0.01, deadline - time.monotonic())
            try:
                with (
                    self._pool.connection(timeout=remaining) as conn,
                    conn.transaction(),
                    conn.cursor() as cursor,
                ):
                    return body(Db(cursor, POSTGRES))
            except _UNREACHABLE as exc:
                if time.monotonic() + backoff >= deadline:
                    raise StoreUnavailableError(f"PostgreSQL unavailable: {exc}") from exc
                log.warning("PostgreSQL call failed (%s); retrying in %.2fs", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
            except psycopg.Error as exc:
                raise StoreError(f"PostgreSQL failed: {type(exc).__name__}: {exc}") from exc
            except (OverflowError, UnicodeError) as exc:
                # A value the driver cannot send (a lone surrogate): the item's fault, which
                # the accept path isolates (verifier/store/core.py), not a bug.
                raise StoreError(f"PostgreSQL cannot take a value: {type(exc).__name__}") from exc

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[Callable[[Callable[[Db], T]], T]]:
        timeout = self.options.unavailable_timeout.total_seconds()
        try:
            with (
                self._pool.connection(timeout=timeout) as conn,
                conn.transaction(),
                conn.cursor() as cursor,
            ):
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                db = Db(cursor, POSTGRES)
                yield lambda body: body(db)
        except _UNREACHABLE as exc:
            raise StoreUnavailableError(f"PostgreSQL unavailable: {exc}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL failed: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self._pool.close()
