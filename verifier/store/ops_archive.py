"""Transaction bodies of `log archive` (docs/design.md §9): which envelopes an archive run
moves, the step that indexes a durable segment and deletes its blobs, and where an archived
envelope lies. The segment files themselves are verifier/store/segments.py."""

from __future__ import annotations

import hashlib
import hmac

from attest.errors import StoreError
from verifier.store import bodies
from verifier.store.segments import Placement
from verifier.store.sqlbase import Db, Row

_IN_CHUNK = 500


def envelopes_before(
    db: Db, before_us: int, start: int, stop: int, limit: int
) -> list[tuple[bytes, bytes, int]]:
    """Up to `limit` (hash, envelope bytes, log index) of the entries start <= log index < stop
    received before `before_us` whose bytes are still in the hot tables (`envelopes`, or
    `blobs` for those accepted before migration 0014), by agent and seq (a host's consecutive
    envelopes compress together). The same call on the same database answers the same: a
    rerun after a crash rebuilds the same segment, byte for byte."""
    rows = db.all(
        f"SELECT {_LINKED_FIELDS}, b.body FROM attestations a {_LINKED_JOINS} "
        "LEFT JOIN blobs b ON b.hash = a.envelope_hash "
        "WHERE a.log_index >= ? AND a.log_index < ? AND a.received_at < ? "
        "AND (e.log_index IS NOT NULL OR b.hash IS NOT NULL) "
        "ORDER BY a.agent_no, a.seq LIMIT ?",
        (start, stop, before_us, limit),
    )
    # Segments hold the envelopes verbatim; `envelopes` may hold them compact (bodies.py).
    return [
        (bytes(row[0]), _hot(row) if row[1] is not None else bytes(row[5]), int(row[2]))
        for row in rows
    ]


#: An attestation's envelope hash, stored body and log index, with the link its body may
#: have been stored against (bodies.py: the agent's id, the previous envelope's hash).
_LINKED_FIELDS = "a.envelope_hash, e.body, a.log_index, g.agent_id, p.envelope_hash"
_LINKED_JOINS = (
    "LEFT JOIN envelopes e ON e.log_index = a.log_index "
    "LEFT JOIN agents g ON g.agent_no = a.agent_no "
    "LEFT JOIN attestations p ON p.log_index = a.prev_index"
)


def _hot(row: Row) -> bytes:
    """The envelope bytes of a row of `_LINKED_FIELDS` whose body is in `envelopes`, checked
    against the row's envelope hash: a body read with a wrong link, or damaged into other
    valid bytes, is a StoreError, never an envelope the log did not accept."""
    envelope_hash, body, index, agent_id, prev_hash = row[:5]
    link = bodies.Link(agent_id or "", b"" if prev_hash is None else bytes(prev_hash))
    raw = bodies.expand(bytes(body), link)
    if not hmac.compare_digest(hashlib.sha256(raw).digest(), bytes(envelope_hash)):
        raise StoreError(f"the stored envelope of log entry {index} does not match its hash")
    return raw


def mark_archived(db: Db, placements: list[Placement], log_indices: list[int]) -> int:
    """Index the envelopes of a segment already durable on disk and delete them from the hot
    tables (`envelopes` by log index, `blobs` by hash), inside the caller's transaction; return
    how many hot rows were deleted. Re-runnable: an envelope indexed already keeps its first
    placement (both segments hold it)."""
    db.insert_rows(
        "blob_archive",
        (
            ("hash", "bytea"),
            ("segment", "bytea"),
            ("frame_offset", "bigint"),
            ("frame_length", "bigint"),
        ),
        [(p.envelope_hash, p.segment, p.frame_offset, p.frame_length) for p in placements],
        " ON CONFLICT (hash) DO NOTHING",
    )
    deleted = 0
    for table, column, keys in (
        ("envelopes", "log_index", list(log_indices)),
        ("blobs", "hash", [p.envelope_hash for p in placements]),
    ):
        for start in range(0, len(keys), _IN_CHUNK):
            chunk = keys[start : start + _IN_CHUNK]
            db.run(f"DELETE FROM {table} WHERE {column} IN {db.in_list(len(chunk))}", chunk)
            deleted += db.rowcount
    return deleted


def envelope_or_placement(db: Db, log_index: int) -> bytes | Placement | None:
    """The bytes of log entry `log_index`'s envelope from the hot tables, else where the
    archive holds them, else None (no such entry, or its bytes are lost)."""
    row = db.one(
        f"SELECT {_LINKED_FIELDS} FROM attestations a {_LINKED_JOINS} WHERE a.log_index = ?",
        (log_index,),
    )
    if row is None:
        return None
    if row[1] is not None:
        return _hot(row)
    return blob_or_placement(db, bytes(row[0]))


def blob_or_placement(db: Db, envelope_hash: bytes) -> bytes | Placement | None:
    """The bytes of an envelope accepted before migration 0014 from `blobs`, else where the
    archive holds them, else None."""
    row = db.one("SELECT body FROM blobs WHERE hash = ?", (envelope_hash,))
    if row is not None:
        return bytes(row[0])
    row = db.one(
        "SELECT segment, frame_offset, frame_length FROM blob_archive WHERE hash = ?",
        (envelope_hash,),
    )
    if row is None:
        return None
    return Placement(envelope_hash, bytes(row[0]), int(row[1]), int(row[2]))
