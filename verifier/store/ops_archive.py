"""Transaction bodies of `log archive` (docs/design.md §9): which envelopes an archive run
moves, the step that indexes a durable segment and deletes its blobs, and where an archived
envelope lies. The segment files themselves are verifier/store/segments.py."""

from __future__ import annotations

from verifier.store.segments import Placement
from verifier.store.sqlbase import Db

_IN_CHUNK = 500


def blobs_before(db: Db, before_us: int, limit: int) -> list[tuple[bytes, bytes]]:
    """Up to `limit` (hash, envelope bytes) of envelopes received before `before_us` still in
    the hot table, by agent and seq (a host's consecutive envelopes compress together). The
    same call on the same database answers the same: a rerun after a crash rebuilds the same
    segment, byte for byte."""
    rows = db.all(
        "SELECT b.hash, b.body FROM attestations a JOIN blobs b ON b.hash = a.envelope_hash "
        "WHERE a.received_at < ? ORDER BY a.agent_id, a.seq LIMIT ?",
        (before_us, limit),
    )
    return [(bytes(h), bytes(body)) for h, body in rows]


def mark_archived(db: Db, placements: list[Placement]) -> int:
    """Index the envelopes of a segment already durable on disk and delete them from `blobs`,
    inside the caller's transaction; return how many blob rows were deleted. Re-runnable: an
    envelope indexed already keeps its first placement (both segments hold it)."""
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
    hashes = [p.envelope_hash for p in placements]
    for start in range(0, len(hashes), _IN_CHUNK):
        chunk = hashes[start : start + _IN_CHUNK]
        db.run(f"DELETE FROM blobs WHERE hash IN {db.in_list(len(chunk))}", chunk)
        deleted += db.rowcount
    return deleted


def blob_or_placement(db: Db, envelope_hash: bytes) -> bytes | Placement | None:
    """The envelope bytes from the hot table, else where the archive holds them, else None."""
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
