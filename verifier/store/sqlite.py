"""The embedded store: one SQLite file in WAL mode with synchronous=FULL, so a COMMIT that
returned is on disk. One writer connection behind a lock (SQLite has one writer anyway);
readers get a connection per thread and never wait for the writer. The WAL is checkpointed every
32 MiB rather than SQLite's 1000 pages: pages rewritten by every commit (agent heads, the
tails of indexes and of the log) then reach the database file once per checkpoint instead of
several times (measured: -15% bytes written per attestation).

A new database gets 1 KiB pages instead of SQLite's 4 KiB. A commit writes every page it
dirtied into the WAL whole, and at a fleet's pace a commit carries a few envelopes, each
dirtying a page or two at its own place (its agent's row, its attestation row under the agent's
key), so the bytes written per envelope follow the page size: 21.8 -> 10.9 KB per heartbeat
(docs/performance.md §15). Reads pay little for the deeper trees: proofs over 10^6 entries took
the same time, a report of 200,000 GPUs 7% longer. A database keeps the page size it was created
with (docs/operators.md says how to convert one).

Several processes may write one file (`serve --workers N`, docs/design.md §9): each write
transaction first takes an exclusive flock(2) on `<db>-writer.lock`, a queue the kernel wakes
in turn, before SQLite's own lock. SQLite alone makes a waiting writer poll (sleeps of up to
100 ms), so a worker committing back to back starved the others for seconds (measured: 3.1 s
waits, 959 against 2,612 commits in 6 s; with the flock 152-247 ms and 1,256 against 1,283)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from attest.errors import StoreError, StoreUnavailableError
from verifier.store.api import StoreOptions
from verifier.store.core import SqlStore
from verifier.store.sqlbase import SQLITE, Db

T = TypeVar("T")

log = logging.getLogger(__name__)

_BUSY_TIMEOUT_MS = 10_000
#: The page size of a new database, and the WAL size at which the writer checkpoints.
PAGE_SIZE = 1024
_CHECKPOINT_BYTES = 32 << 20


class SqliteStore(SqlStore):
    """A `Store` in one SQLite file. Schema migrations are applied when it opens."""

    def __init__(self, path: Path, options: StoreOptions | None = None) -> None:
        super().__init__(options or StoreOptions())
        self.path = path
        self._write_lock = threading.Lock()
        self._readers_lock = threading.Lock()
        self._readers: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._closed = False
        # Transactions in flight: `close` waits for them, since closing a connection another
        # thread is stepping crashes the process (a background task's thread may still be in
        # a read when `serve` shuts down).
        self._inflight = 0
        self._idle = threading.Condition()
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # SQLite creates the file (and its -wal and -shm, which copy its mode) under the
            # umask: 0644 would let every local user read the evidence. Create it 0600 first.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            self._writer_lock_fd = os.open(
                f"{path}-writer.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            self._writer = self._connect()
            # Takes effect only while the file is empty: an existing database keeps its own.
            self._writer.execute(f"PRAGMA page_size={PAGE_SIZE}")
            _switch_to_wal(self._writer)
            page_size = int(self._writer.execute("PRAGMA page_size").fetchone()[0])
            self._writer.execute(f"PRAGMA wal_autocheckpoint={_CHECKPOINT_BYTES // page_size}")
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailableError(f"cannot open SQLite store {path}: {exc}") from exc
        self._migrate(datetime.now(UTC))

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves; the module's implicit
        # transactions would otherwise open and close them behind our back.
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=_BUSY_TIMEOUT_MS / 1000,
        )
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _transact(self, body: Callable[[Db], T], *, write: bool) -> T:
        with self._idle:
            if self._closed:
                raise StoreError("store is closed")
            self._inflight += 1
        try:
            with _store_errors():
                if write:
                    with self._write_lock, self._other_processes_out():
                        return _run(self._writer, "BEGIN IMMEDIATE", body)
                return _run(self._reader(), "BEGIN", body)
        finally:
            with self._idle:
                self._inflight -= 1
                self._idle.notify_all()

    @contextlib.contextmanager
    def _other_processes_out(self) -> Iterator[None]:
        # Blocking: the holder runs one transaction, itself bounded by SQLite's busy timeout
        # (or a hung disk, which every writer would wait for anyway); a killed holder's lock
        # is released by the kernel.
        fcntl.flock(self._writer_lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._writer_lock_fd, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[Callable[[Callable[[Db], T]], T]]:
        # A connection of its own: the thread's reader may be wanted for other reads meanwhile.
        if self._closed:
            raise StoreError("store is closed")
        with _store_errors():
            conn = self._connect()

        def read(body: Callable[[Db], T]) -> T:
            with _store_errors():
                return body(Db(conn.cursor(), SQLITE))

        try:
            read(lambda db: db.run("BEGIN"))  # deferred: the first read takes the snapshot
            yield read
        finally:
            conn.close()  # ends the read transaction; nothing was written

    def close(self) -> None:
        with self._idle:
            if self._closed:
                return
            self._closed = True
            # New transactions are refused from here on; wait for the ones in flight (bounded:
            # a transaction waits at most the busy timeout for a lock).
            idle = self._idle.wait_for(
                lambda: self._inflight == 0, timeout=2 * _BUSY_TIMEOUT_MS / 1000
            )
        if not idle:
            # Closing under a running statement would crash the process; leave the
            # connections to the process's exit instead.
            log.warning("SQLite store closed with a transaction still running; connections kept")
            return
        with self._write_lock:
            self._writer.close()
            os.close(self._writer_lock_fd)
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    """Driver errors as the Store contract names them: a locked or unreachable database is
    StoreUnavailableError (callers may retry), any other failure StoreError."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise StoreUnavailableError(f"SQLite store unavailable: {exc}") from exc
    except sqlite3.Error as exc:
        raise StoreError(f"SQLite store failed: {type(exc).__name__}: {exc}") from exc
    except (OverflowError, UnicodeError) as exc:
        # A value the driver cannot bind (an integer beyond 64 bits, a lone surrogate): the
        # item's fault, which the accept path isolates (verifier/store/core.py), not a bug.
        raise StoreError(f"SQLite store cannot take a value: {type(exc).__name__}") from exc


def _switch_to_wal(conn: sqlite3.Connection) -> None:
    """Set WAL mode, waiting out another opener. The change (or the check that it is made)
    can fail with "database is locked" at once, without the busy handler, while a second
    process opens the same new file; so it is retried up to the busy timeout."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
        else:
            return


def _run(conn: sqlite3.Connection, begin: str, body: Callable[[Db], T]) -> T:
    conn.execute(begin)
    try:
        result = body(Db(conn.cursor(), SQLITE))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result
