"""The evidence spool: signed envelopes that are never lost, in SQLite (WAL, synchronous=FULL).

Invariants:
- The chain head (seq, hash of the last envelope) advances in the SAME transaction that stores
  the new signed envelope, and that transaction commits (fsync) before anything is sent. A crash
  at any instant leaves either both or neither.
- An entry leaves the spool only when the verifier's verified receipt for it arrives (the receipt
  is kept), or when the verifier's challenge says its chain head already covers it.
- Pending entries are read back in seq order.
- A full disk or the configured size cap (enforced by SQLite itself through max_page_count)
  makes `append` raise SpoolFullError and roll back; what was stored stays intact and readable,
  and acknowledgements (deletes) keep working so the spool can drain.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from attest.envelope import envelope_hash
from attest.errors import SpoolFullError, StoreError
from attest.files import fsync_dir

SPOOL_FILE = "spool.sqlite3"
RECEIPTS_KEPT = 1000
_SQLITE_FULL = 13
_SQLITE_IOERR_WRITE = 778
_LOW_SPACE_BYTES = 1024 * 1024
_STORE_RECEIPT = (
    "INSERT OR REPLACE INTO receipts (seq, envelope_hash, receipt, received_at) "
    "SELECT seq, hash, ?, ? FROM entries WHERE seq = ?"
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS chain (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq INTEGER NOT NULL,
    last_hash BLOB NOT NULL
);
INSERT OR IGNORE INTO chain (id, last_seq, last_hash) VALUES (1, 0, x'');
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    hash BLOB NOT NULL,
    envelope BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS receipts (
    seq INTEGER PRIMARY KEY,
    envelope_hash BLOB NOT NULL,
    receipt BLOB NOT NULL,
    received_at TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class ChainHead:
    seq: int
    hash: bytes


@dataclass(frozen=True)
class SpoolEntry:
    seq: int
    hash: bytes  # SHA-256 of `envelope`, the next entry's prev_hash
    envelope: bytes


@dataclass(frozen=True)
class KeptReceipt:
    """A receipt kept after its entry left the spool: verified when it arrived."""

    seq: int
    envelope_hash: bytes
    receipt: bytes  # serialized ReceiptBody (attest.receipts; docs/protocol.md §5)
    received_at: str  # ISO 8601, the agent's clock


def is_disk_full(exc: sqlite3.Error) -> bool:
    """True when SQLite reports SQLITE_FULL (disk full, or max_page_count reached)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code == _SQLITE_FULL or "disk is full" in str(exc) or "No space left" in str(exc)


class Spool:
    """One agent's spool file. Not thread-safe: use it from one thread (the event loop)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        fresh = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
            self.set_max_bytes(max_bytes)
        except sqlite3.Error as exc:
            if is_disk_full(exc):
                raise SpoolFullError(f"spool {path}: disk full while opening") from exc
            raise StoreError(f"spool {path} cannot be opened: {exc}") from exc
        if fresh:
            path.chmod(0o600)
            fsync_dir(path.parent)

    @classmethod
    def open(cls, state_dir: Path, max_bytes: int) -> Spool:
        return cls(state_dir / SPOOL_FILE, max_bytes)

    def set_max_bytes(self, max_bytes: int) -> None:
        """Cap the database size; SQLite refuses to grow past it with SQLITE_FULL."""
        page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        self._db.execute(f"PRAGMA max_page_count = {max(max_bytes // page_size, 8)}")

    def close(self) -> None:
        self._db.close()

    def head(self) -> ChainHead:
        row = self._db.execute("SELECT last_seq, last_hash FROM chain WHERE id = 1").fetchone()
        return ChainHead(int(row[0]), bytes(row[1]))

    def append(self, build: Callable[[int, bytes], bytes], now: datetime) -> SpoolEntry:
        """Build the next envelope and store it with the advanced chain head, atomically.

        `build(seq, prev_hash)` returns the signed envelope bytes; it runs inside the write
        transaction so no other writer can take the same seq. Raises SpoolFullError when the
        disk or the size cap is full (nothing is changed), StoreError for other SQLite failures.
        """
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._error(exc, "begin") from exc
        try:
            head = self.head()
            seq = head.seq + 1
            envelope = build(seq, head.hash)
            digest = envelope_hash(envelope)
            self._db.execute(
                "INSERT INTO entries (seq, hash, envelope, created_at) VALUES (?, ?, ?, ?)",
                (seq, digest, envelope, now.isoformat()),
            )
            self._db.execute(
                "UPDATE chain SET last_seq = ?, last_hash = ? WHERE id = 1", (seq, digest)
            )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise self._error(exc, f"append seq {head.seq + 1}") from exc
        except BaseException:
            self._rollback()
            raise
        return SpoolEntry(seq=seq, hash=digest, envelope=envelope)

    def pending(self, after_seq: int = 0, limit: int = 1000) -> list[SpoolEntry]:
        """Unacknowledged entries with seq > after_seq, in seq order."""
        rows = self._db.execute(
            "SELECT seq, hash, envelope FROM entries WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        return [SpoolEntry(int(r[0]), bytes(r[1]), bytes(r[2])) for r in rows]

    def get(self, seq: int) -> SpoolEntry | None:
        row = self._db.execute(
            "SELECT seq, hash, envelope FROM entries WHERE seq = ?", (seq,)
        ).fetchone()
        return None if row is None else SpoolEntry(int(row[0]), bytes(row[1]), bytes(row[2]))

    def depth(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM entries").fetchone()[0])

    def acknowledge(self, seq: int, receipt: bytes, now: datetime) -> None:
        """Remove entry `seq` and keep its (already verified) receipt, in one transaction."""
        self._write(
            [
                (
                    _STORE_RECEIPT,
                    (receipt, now.isoformat(), seq),
                ),
                ("DELETE FROM entries WHERE seq = ?", (seq,)),
                ("DELETE FROM receipts WHERE seq <= ?", (seq - RECEIPTS_KEPT,)),
            ],
            f"acknowledge seq {seq}",
        )

    def drop_through(self, seq: int) -> int:
        """Remove entries the verifier already holds (its chain head is `seq`); return how many."""
        before = self.depth()
        self._write([("DELETE FROM entries WHERE seq <= ?", (seq,))], f"drop through {seq}")
        return before - self.depth()

    def adopt_head(self, head: ChainHead) -> None:
        """Continue the chain from the verifier's head when ours is behind and nothing is pending.

        Used when the state dir was restored from an old backup: producing from the old head
        would only make forks. Raises StoreError if entries are pending.
        """
        if self.depth():
            raise StoreError("cannot adopt the verifier's chain head while entries are pending")
        self._write(
            [("UPDATE chain SET last_seq = ?, last_hash = ? WHERE id = 1", (head.seq, head.hash))],
            "adopt head",
        )

    def discard_pending(self, head: ChainHead) -> int:
        """Drop every pending entry after the verifier's head `head` and continue the chain from
        it, in one transaction; return how many were dropped.

        Only for entries the verifier refused for good as a chain: heartbeats naming a full
        evidence it does not hold, and what was chained onto them (docs/protocol.md §4.1). The
        agent then sends full evidence, which says everything they did and more recently.
        """
        before = self.depth()
        self._write(
            [
                ("DELETE FROM entries WHERE seq > ?", (head.seq,)),
                (
                    "UPDATE chain SET last_seq = ?, last_hash = ? WHERE id = 1",
                    (head.seq, head.hash),
                ),
            ],
            f"discard entries after {head.seq}",
        )
        return before - self.depth()

    def receipt(self, seq: int) -> bytes | None:
        row = self._db.execute("SELECT receipt FROM receipts WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else bytes(row[0])

    def receipts(self) -> list[KeptReceipt]:
        """The kept receipts (at most RECEIPTS_KEPT, the newest seqs), in seq order."""
        try:
            rows = self._db.execute(
                "SELECT seq, envelope_hash, receipt, received_at FROM receipts ORDER BY seq"
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"spool {self.path}: cannot read receipts: {exc}") from exc
        return [KeptReceipt(int(r[0]), bytes(r[1]), bytes(r[2]), str(r[3])) for r in rows]

    def integrity_ok(self) -> bool:
        return bool(self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")

    def _write(self, statements: list[tuple[str, tuple[object, ...]]], what: str) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                self._db.execute(sql, params)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise self._error(exc, what) from exc

    def _rollback(self) -> None:
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                # SQLite may already have rolled back on SQLITE_FULL; nothing else to undo.
                return

    def _error(self, exc: sqlite3.Error, what: str) -> StoreError:
        if is_disk_full(exc) or (_is_write_error(exc) and _disk_nearly_full(self.path.parent)):
            return SpoolFullError(
                f"spool {self.path} is full ({what}): no new evidence until the verifier "
                "acknowledges pending entries or space is freed"
            )
        return StoreError(f"spool {self.path}: {what} failed: {exc}")


def _is_write_error(exc: sqlite3.Error) -> bool:
    # SQLite maps ENOSPC to SQLITE_FULL, but some file systems report a full disk as EIO/EDQUOT,
    # which SQLite calls SQLITE_IOERR_WRITE; the free space then tells the two apart.
    return getattr(exc, "sqlite_errorcode", None) == _SQLITE_IOERR_WRITE


def _disk_nearly_full(directory: Path) -> bool:
    try:
        info = os.statvfs(directory)
    except OSError:
        return False
    return info.f_bavail * info.f_frsize < _LOW_SPACE_BYTES
