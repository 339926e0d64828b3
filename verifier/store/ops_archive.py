"""Transaction bodies of `log archive` (docs/design.md §9): which envelopes an archive run
moves, the step that indexes a durable segment and deletes its blobs, and where an archived
envelope lies. The segment files themselves are verifier/store/segments.py."""

from __future__ import annotations

from verifier.store import bodies
from verifier.store.segments import Placement
from verifier.store.sqlbase import Db

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
        "SELECT a.envelope_hash, e.body, b.body, a.log_index FROM attestations a "
        "LEFT JOIN envelopes e ON e.log_index = a.log_index "
        "LEFT JOIN blobs b ON b.hash = a.envelope_hash "
        "WHERE a.log_index >= ? AND a.log_index < ? AND a.received_at < ? "
        "AND (e.log_index IS NOT NULL OR b.hash IS NOT NULL) "
        "ORDER BY a.agent_no, a.seq LIMIT ?",
        (start, stop, before_us, limit),
    )
    # Segments hold the envelopes verbatim; `envelopes` may hold them compact (bodies.py).
    return [
        (bytes(h), bodies.expand(bytes(hot)) if hot is not None else bytes(old), int(index))
        for h, hot, old, index in rows
    ]


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
        "SELECT a.envelope_hash, e.body FROM attestations a "
        "LEFT JOIN envelopes e ON e.log_index = a.log_index WHERE a.log_index = ?",
        (log_index,),
    )
    if row is None:
        return None
    if row[1] is not None:
        return bodies.expand(bytes(row[1]))
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
