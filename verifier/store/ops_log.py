"""Transaction bodies for the transparency log's Merkle tree (docs/design.md §9): roots, proofs
and frontiers read in O(log n) rows, and the interior nodes written as leaves are appended.

Level 0 of the tree is the leaf hashes on the `attestations` rows (migration 0017);
`log_nodes` (migrations 0009, 0014, 0016) holds the hash of every complete aligned subtree of
level >= STORED_LEVEL, inserted in the accept transaction that appends the leaf completing it,
and keyed by the tree size at which it became complete, (index + 1) << level, then level: in
the order the nodes are written, so a commit's nodes share the table's last page. The table is
therefore always exactly the perfect subtrees of those levels of the committed log: a batch
that rolls back takes its nodes with it.
A subtree below STORED_LEVEL is hashed from its at most 2^(STORED_LEVEL - 1) leaves when read:
storing levels 1-3 cost seven nodes in eight (~41 bytes an entry), and a proof reads at most
about 30 more leaf hashes for them, from the same query. A read runs the proof math of
`attest.merkle` twice: once over a source that only records which (level, index) subtrees it
asks for, then over those subtrees fetched in one query (about 2·log2 n rows and at most ~30
leaves, whatever the log size).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from attest import merkle
from attest.errors import ProofError, StoreError
from verifier.store.sqlbase import Db

T = TypeVar("T")

_NODE_COLUMNS = (("tree_size", "bigint"), ("level", "integer"), ("hash", "bytea"))
#: The lowest level `log_nodes` holds; the levels between the leaves and it are hashed on read.
STORED_LEVEL = 4
#: Leaves read per query while backfilling, and node rows per insert.
_BACKFILL_CHUNK = 8192
_PLACEHOLDER = bytes(merkle.HASH_LEN)


@dataclass
class _Wanted:
    """A `merkle.HashSource` that answers zeros and records which subtrees were asked for."""

    keys: set[tuple[int, int]] = field(default_factory=set)

    def subtree(self, level: int, index: int) -> bytes:
        self.keys.add((level, index))
        return _PLACEHOLDER


@dataclass(frozen=True)
class _Fetched:
    """A `merkle.HashSource` over the subtrees one query returned."""

    hashes: dict[tuple[int, int], bytes]

    def subtree(self, level: int, index: int) -> bytes:
        return self.hashes[level, index]


def _fetch(db: Db, keys: Iterable[tuple[int, int]]) -> tuple[int, dict[tuple[int, int], bytes]]:
    """The log's size and the hashes of these subtrees (level 0: leaf hashes), in one
    statement: a proof costs one round trip inside its transaction, whatever the log size."""
    wanted = sorted(set(keys))
    low = [(level, index) for level, index in wanted if 0 < level < STORED_LEVEL]
    leaves = sorted(
        {index for level, index in wanted if level == 0}
        | {leaf for level, index in low for leaf in range(index << level, (index + 1) << level)}
    )
    nodes = [(level, index) for level, index in wanted if level >= STORED_LEVEL]
    parts = ["SELECT -1, size, NULL FROM log_head WHERE id = 1"]
    params: list[object] = []
    if leaves:
        parts.append(
            "SELECT 0, log_index, leaf_hash FROM attestations "
            f"WHERE log_index IN {db.in_list(len(leaves))}"
        )
        params += leaves
    if nodes:
        # PostgreSQL plans a long OR slowly and SQLite scans the table for a row-value IN:
        # each gets the form it answers with one primary-key lookup per node.
        if db.dialect.name == "postgres":
            pairs = ", ".join(["(?, ?)"] * len(nodes))
            where = f"(tree_size, level) IN (VALUES {pairs})"
        else:
            where = " OR ".join(["(tree_size = ? AND level = ?)"] * len(nodes))
        parts.append(f"SELECT level, tree_size, hash FROM log_nodes WHERE {where}")
        params += [value for level, index in nodes for value in (_tree_size(level, index), level)]
    size: int | None = None
    found: dict[tuple[int, int], bytes] = {}
    for level, key, hashed in db.all(" UNION ALL ".join(parts), params):
        if level == -1:
            size = int(key)
        elif level == 0:
            found[0, int(key)] = bytes(hashed)
        else:
            found[int(level), (int(key) >> int(level)) - 1] = bytes(hashed)
    if size is None:
        raise StoreError("log head row is missing")
    for level, index in low:
        hashed = _subtree_from_leaves(found, level, index)
        if hashed is not None:
            found[level, index] = hashed
    return size, found


def _subtree_from_leaves(
    found: dict[tuple[int, int], bytes], level: int, index: int
) -> bytes | None:
    """MTH of the perfect subtree (level, index) from its leaves in `found`; None when one is
    missing (the caller then reports the subtree as missing)."""
    first = index << level
    try:
        return merkle.root([found[0, leaf] for leaf in range(first, first + (1 << level))])
    except KeyError:
        return None


def _tree_size(level: int, index: int) -> int:
    """The key of subtree (level, index): the log size at which its last leaf was appended."""
    return (index + 1) << level


def _complete(
    wanted: Iterable[tuple[int, int]], found: dict[tuple[int, int], bytes]
) -> dict[tuple[int, int], bytes]:
    """`found`, or StoreError when it lacks a wanted subtree (a log whose nodes were not
    written is refused, never guessed at)."""
    missing = sorted(key for key in set(wanted) if key not in found)
    if missing:
        level, index = missing[0]
        raise StoreError(
            f"the log's Merkle tree lacks {len(missing)} stored subtree(s), first "
            f"level {level} index {index}: the node table does not match the log"
        )
    return found


def _over_stored(db: Db, size: int, what: str, compute: Callable[[merkle.HashSource], T]) -> T:
    """`compute` over the stored subtrees it asks for, once `size` is known to be within the
    log (ProofError otherwise)."""
    if size < 0:
        raise ProofError(f"{what}: tree size {size} is negative")
    wanted = _Wanted()
    compute(wanted)
    current, found = _fetch(db, wanted.keys)
    if size > current:
        raise ProofError(f"{what}: tree size {size} is beyond the log (size {current})")
    return compute(_Fetched(_complete(wanted.keys, found)))


def _log_size(db: Db) -> int:
    row = db.one("SELECT size FROM log_head WHERE id = 1")
    if row is None:
        raise StoreError("log head row is missing")
    return int(row[0])


def _peaks(size: int) -> list[tuple[int, int]]:
    """The (level, index) of the perfect subtrees of the compact range [0, size), largest
    first: one per set bit of size."""
    peaks: list[tuple[int, int]] = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            peaks.append((level, start >> level))
            start += 1 << level
    return peaks


def _peaks_source(size: int) -> Callable[[merkle.HashSource], merkle.Frontier]:
    def read(source: merkle.HashSource) -> merkle.Frontier:
        return merkle.Frontier(size, tuple(source.subtree(*key) for key in _peaks(size)))

    return read


def frontier(db: Db, size: int) -> merkle.Frontier:
    """The compact range of the log's first `size` entries (popcount(size) rows read).

    Raises ProofError when size is negative or beyond the log."""
    return _over_stored(db, size, "log frontier", _peaks_source(size))


def root(db: Db, size: int) -> bytes:
    """MTH of the log's first `size` entries. Raises ProofError when size is out of range."""
    return frontier(db, size).root()


def inclusion_proof(db: Db, index: int, size: int) -> tuple[bytes, ...]:
    """PATH(index, D[size]) over the stored tree. Raises ProofError unless
    0 <= index < size <= the log's size."""
    if not 0 <= index < size:
        raise ProofError(f"inclusion proof: log index {index} is outside the log (size {size})")
    return _over_stored(
        db, size, "inclusion proof", lambda source: merkle.inclusion_proof(index, size, source)
    )


def consistency_proof(db: Db, old_size: int, new_size: int) -> tuple[bytes, ...]:
    """PROOF(old_size, D[new_size]) over the stored tree (empty when old_size is 0 or equal).
    Raises ProofError unless 0 <= old_size <= new_size <= the log's size."""
    if not 0 <= old_size <= new_size:
        raise ProofError(f"consistency proof: sizes {old_size} -> {new_size} are not in order")
    return _over_stored(
        db,
        new_size,
        "consistency proof",
        lambda source: merkle.consistency_proof(old_size, new_size, source),
    )


def append_leaves(db: Db, start: int, leaves: Sequence[bytes]) -> None:
    """Insert the interior nodes that appending `leaves` at log indices start, start+1, ...
    completes; the caller inserts the leaves themselves, in the same transaction. Reads the
    frontier of `start` from stored nodes (O(log n) rows)."""
    if not leaves:
        return
    tree = _over_stored(db, start, "log append", _peaks_source(start))
    _insert_nodes(db, _completed(tree, leaves)[1])


def _completed(
    tree: merkle.Frontier, leaves: Iterable[bytes]
) -> tuple[merkle.Frontier, list[tuple[int, int, bytes]]]:
    """`Frontier.append_with_nodes` over many leaves without a Frontier value per leaf (it
    checks its hashes when made): the tree after them, and the nodes of level >= 1 they
    complete as (tree size, level, hash) rows, in key order (`_insert_nodes` keeps those of
    STORED_LEVEL and above)."""
    hashes, size = list(tree.hashes), tree.size
    rows: list[tuple[int, int, bytes]] = []
    for leaf in leaves:
        merged, level = leaf, 0
        while size >> level & 1:
            merged = merkle.node_hash(hashes.pop(), merged)
            level += 1
            rows.append((size + 1, level, merged))
        hashes.append(merged)
        size += 1
    return merkle.Frontier(size, tuple(hashes)), rows


def _insert_nodes(db: Db, rows: Sequence[tuple[int, int, bytes]]) -> None:
    db.insert_rows("log_nodes", _NODE_COLUMNS, [r for r in rows if r[1] >= STORED_LEVEL])


def backfill_nodes(db: Db, applied_at_micros: int) -> None:
    """Data step of migration 0009: the nodes of a log written before it, from its leaves,
    `_BACKFILL_CHUNK` leaves at a time (memory stays O(chunk + log n))."""
    del applied_at_micros  # the nodes do not depend on when they were derived
    size = _log_size(db)
    tree = merkle.Frontier()
    while tree.size < size:
        rows = db.all(
            "SELECT log_index, leaf_hash FROM attestations WHERE log_index >= ? "
            "ORDER BY log_index LIMIT ?",
            (tree.size, min(_BACKFILL_CHUNK, size - tree.size)),
        )
        if not rows or int(rows[0][0]) != tree.size:
            raise StoreError(f"the log has no entry {tree.size} below its size {size}")
        if int(rows[-1][0]) != tree.size + len(rows) - 1:
            raise StoreError(f"the log has a gap after entry {tree.size}")
        tree, nodes = _completed(tree, (bytes(r[1]) for r in rows))
        _insert_nodes(db, nodes)
