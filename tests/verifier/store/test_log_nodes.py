"""The transparency log's stored Merkle nodes (migration 0009, verifier/store/ops_log.py): roots,
proofs and frontiers read from them equal attest.merkle's computed from every leaf; the node
table is exactly the perfect subtrees of the committed log, after any sequence of batches, a
batch the database rolled back, a SIGKILL mid-stream, and the backfill of a log written before
the migration. Both backends."""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attest import merkle
from attest.errors import ProofError, StoreError
from tests.verifier.store.conftest import PG_ADMIN, Backend, pg_schema_url
from tests.verifier.store.helpers import H100, T0, Chain, enroll, gpus
from verifier.model import Accepted, GpuClaim
from verifier.store.api import Store
from verifier.store.ops_log import STORED_LEVEL

ROOT = Path(__file__).resolve().parents[3]
AGENTS = 5


def _leaves(store: Store) -> list[bytes]:
    return [entry.leaf_hash for entry in store.log_entries(0, store.log_size())]


def _expected_nodes(leaves: list[bytes]) -> set[tuple[int, int, bytes]]:
    """Every perfect subtree of level >= STORED_LEVEL of these leaves (the store hashes those
    below from their leaves), as attest.merkle computes them."""
    tree, expected = merkle.Frontier(), set()
    for leaf in leaves:
        tree, nodes = tree.append_with_nodes(leaf)
        expected |= {(n.level, n.index, n.hash) for n in nodes if n.level >= STORED_LEVEL}
    return expected


def _stored_nodes(backend: Backend) -> set[tuple[int, int, bytes]]:
    rows = backend.query("SELECT level, tree_size, hash FROM log_nodes")
    # Keyed by the tree size at which the subtree became complete (migration 0014).
    return {(int(r[0]), (int(r[1]) >> int(r[0])) - 1, bytes(r[2])) for r in rows}


def _append(store: Store, chains: list[Chain], count: int) -> None:
    """One accept transaction of `count` items, spread over the chains (consecutive seqs of
    one agent may share the batch)."""
    batch = [chains[i % len(chains)].next(T0) for i in range(count)]
    outcomes = store.accept(batch, T0)
    assert all(isinstance(o, Accepted) for o in outcomes), outcomes


def _chains(store: Store, count: int = AGENTS, prefix: str = "t") -> list[Chain]:
    chains = [Chain(f"{prefix}{i}", inventory=gpus(f"GPU-{prefix}{i}")) for i in range(count)]
    for chain in chains:
        enroll(store, chain.agent_id)
    return chains


def _check_reads(store: Store, leaves: list[bytes], size: int, index: int, old: int) -> None:
    """Everything the store reads from its nodes at `size` equals the math over the leaves."""
    prefix = leaves[:size]
    assert store.log_root(size) == merkle.root(prefix)
    assert store.log_frontier(size) == merkle.Frontier(size, _frontier_hashes(prefix))
    assert store.log_consistency_proof(old, size) == merkle.consistency_proof(old, size, prefix)
    if size:
        assert store.log_inclusion_proof(index, size) == merkle.inclusion_proof(index, size, prefix)


def _frontier_hashes(leaves: list[bytes]) -> tuple[bytes, ...]:
    tree = merkle.Frontier()
    for leaf in leaves:
        tree = tree.append(leaf)
    return tree.hashes


@contextlib.contextmanager
def _fresh_store(backend: Backend, tmp_path: Path) -> Iterator[tuple[Store, Backend]]:
    """A new empty store of the backend's kind, for one hypothesis example."""
    if backend.name == "sqlite":
        fresh = Backend("sqlite", f"sqlite:///{tmp_path / secrets.token_hex(6)}.db")
        try:
            yield fresh.open(), fresh
        finally:
            fresh.close_all()
        return
    schema = "t_" + secrets.token_hex(6)
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    fresh = Backend("postgres", pg_schema_url(schema))
    try:
        yield fresh.open(), fresh
    finally:
        fresh.close_all()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    points=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)), max_size=6),
)
def test_stored_nodes_match_the_leaves_after_any_batches(
    backend: Backend,
    tmp_path: Path,
    batches: list[int],
    points: list[tuple[float, float, float]],
) -> None:
    # Batches of drawn sizes start at every kind of frontier; reads are then checked at drawn
    # sizes, indices and older sizes (fractions of the log, so every draw is valid).
    with _fresh_store(backend, tmp_path) as (store, fresh):
        chains = _chains(store)
        for count in batches:
            _append(store, chains, count)
        leaves = _leaves(store)
        assert _stored_nodes(fresh) == _expected_nodes(leaves)
        for size_at, index_at, old_at in [(1.0, 1.0, 0.5), *points]:
            size = round(size_at * len(leaves))
            index = min(int(index_at * size), max(0, size - 1))
            _check_reads(store, leaves, size, index, round(old_at * size))
            if size:
                proof = store.log_inclusion_proof(index, size)
                merkle.verify_inclusion(leaves[index], index, size, proof, store.log_root(size))


def test_reads_outside_the_log_are_refused(store: Store) -> None:
    chains = _chains(store, 2)
    _append(store, chains, 6)
    for call in (
        lambda: store.log_root(7),
        lambda: store.log_root(-1),
        lambda: store.log_frontier(7),
        lambda: store.log_inclusion_proof(6, 6),
        lambda: store.log_inclusion_proof(0, 0),
        lambda: store.log_inclusion_proof(-1, 6),
        lambda: store.log_inclusion_proof(0, 7),
        lambda: store.log_consistency_proof(4, 3),
        lambda: store.log_consistency_proof(-1, 3),
        lambda: store.log_consistency_proof(3, 7),
    ):
        with pytest.raises(ProofError):
            call()
    assert store.log_root(0) == merkle.EMPTY_ROOT
    assert store.log_consistency_proof(0, 6) == ()
    assert store.log_frontier(0) == merkle.Frontier()


@pytest.mark.parametrize("damage", ["node", "leaf"])
def test_a_missing_node_or_leaf_fails_closed(backend: Backend, damage: str) -> None:
    """A stored node missing, or a leaf under a subtree hashed from its leaves (level 3 of
    entries 32-39): every read that needs it is refused, never answered with a guess."""
    store = backend.open()
    chains = _chains(store, 2)
    _append(store, chains, 40)
    if damage == "node":
        backend.execute(f"DELETE FROM log_nodes WHERE level >= {STORED_LEVEL}")
        old, index = 3, 0
    else:
        backend.execute("DELETE FROM attestations WHERE log_index = 35")
        old, index = 33, 36
    with pytest.raises(StoreError, match="lacks"):
        store.log_root(40)
    with pytest.raises(StoreError, match="lacks"):
        store.log_frontier(40)
    with pytest.raises(StoreError, match="lacks"):
        store.log_consistency_proof(old, 40)
    with pytest.raises(StoreError, match="lacks"):
        store.log_inclusion_proof(index, 40)
    # An append needs the frontier it continues from: refused, nothing written.
    outcomes = store.accept([chains[0].next(T0)], T0)
    assert type(outcomes[0]) is StoreError
    assert store.log_size() == 40


def _poison(backend: Backend) -> tuple[GpuClaim, ...]:
    """A GPU list the backend refuses to store, after the batch's log rows were written."""
    if backend.name == "postgres":
        return (GpuClaim(uuid="GPU-\x00evil", name="x", pci_device_id=H100),)
    return (GpuClaim(uuid="GPU-evil", name="x", pci_device_id=2**64),)


def test_a_rolled_back_batch_leaves_no_nodes(backend: Backend) -> None:
    """The database refuses one item after the batch's leaves and nodes were inserted: the
    transaction rolls back whole, and the retry without it appends other leaves at the same
    indices. A node left from the first attempt would collide with or contradict them."""
    store = backend.open()
    chains = _chains(store, 8)
    evil = Chain("evil", inventory=_poison(backend))
    enroll(store, "evil")
    _append(store, chains, 5)  # the batch starts at a frontier of three peaks
    batch = [c.next(T0) for c in chains[:4]] + [evil.next(T0)] + [c.next(T0) for c in chains[4:]]
    outcomes = store.accept(batch, T0)
    assert type(outcomes[4]) is StoreError
    assert sum(isinstance(o, Accepted) for o in outcomes) == 8
    leaves = _leaves(store)
    assert len(leaves) == 13
    assert _stored_nodes(backend) == _expected_nodes(leaves)
    _check_reads(store, leaves, 13, 12, 5)


@pytest.mark.slow
def test_sigkill_mid_stream_leaves_nodes_of_exactly_the_committed_log(backend: Backend) -> None:
    store = backend.open()
    agents = [f"k{i}" for i in range(8)]
    for agent in agents:
        enroll(store, agent)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.verifier.store.commit_worker", backend.url, *agents],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for count, _ in enumerate(proc.stdout):
            if count >= 400:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    leaves = _leaves(store)
    assert len(leaves) >= 400
    assert _stored_nodes(backend) == _expected_nodes(leaves)
    # The log goes on from what the killed process committed.
    _append(store, _chains(store, 2), 3)
    leaves = _leaves(store)
    assert _stored_nodes(backend) == _expected_nodes(leaves)
    _check_reads(store, leaves, len(leaves), len(leaves) - 1, 400)


def _forget_migration_9(backend: Backend) -> None:
    """Make the database what a verifier before migration 0009 left: no node table (nor the
    later tables that 0014 adds; the envelope bytes are not read here)."""
    backend.back_to_version_16()
    backend.execute(
        "DROP TABLE log_nodes; DROP TABLE envelopes; "
        "DELETE FROM schema_version WHERE version IN (9, 14)",
    )


def _append_raw(backend: Backend, start: int, count: int) -> None:
    """Entries a verifier before migration 0009 appended, one agent's chain: leaves,
    attestations and the head, no nodes."""
    zero = _hex(backend, bytes(32))
    rows = ", ".join(
        f"({i}, {_hex(backend, secrets.token_bytes(32))}, {zero})"
        for i in range(start, start + count)
    )
    attestations = ", ".join(
        f"({i}, 'raw', {i - start + 1}, {zero}, {zero}, 'offline', 0, 0)"
        for i in range(start, start + count)
    )
    backend.execute(
        "INSERT INTO agents (agent_id, site_id, hostname, machine_id, status, token_hash, "
        f"enrolled_at, last_seq, last_hash, next_due, inventory_fp) VALUES ('raw', 's', 'h', "
        f"'m', 'active', {zero}, 0, {count}, {zero}, 0, {zero}); "
        f"INSERT INTO log_entries (log_index, leaf_hash, envelope_hash) VALUES {rows}; "
        "INSERT INTO attestations (log_index, agent_id, seq, envelope_hash, payload_digest, "
        f"freshness, created_at, received_at) VALUES {attestations}; "
        f"UPDATE log_head SET size = {start + count} WHERE id = 1",
    )


def _hex(backend: Backend, value: bytes) -> str:
    return f"X'{value.hex()}'" if backend.name == "sqlite" else f"'\\x{value.hex()}'::bytea"


def test_migration_backfills_the_nodes_of_an_existing_log(backend: Backend) -> None:
    store = backend.open()
    _append(store, _chains(store), 21)
    store.close()
    backend.opened.remove(store)
    _forget_migration_9(backend)
    # More than one backfill chunk (8192 leaves), ending in a partial subtree.
    _append_raw(backend, 21, 9000)
    reopened = backend.open()
    leaves = _leaves(reopened)
    assert len(leaves) == 9021
    assert _stored_nodes(backend) == _expected_nodes(leaves)
    assert len(_expected_nodes(leaves)) == sum(9021 >> level for level in range(STORED_LEVEL, 14))
    rng = random.Random(9021)
    for _ in range(20):
        size = rng.randint(1, 9021)
        _check_reads(reopened, leaves, size, rng.randrange(size), rng.randint(0, size))
    # Appends continue from the backfilled frontier.
    _append(reopened, _chains(reopened, 2, "late"), 7)
    assert _stored_nodes(backend) == _expected_nodes(_leaves(reopened))


def test_migration_on_an_empty_log_writes_nothing(backend: Backend) -> None:
    backend.open()
    assert backend.query("SELECT COUNT(*) FROM log_nodes") == [(0,)]


def test_migration_14_rekeys_the_nodes_of_an_existing_log(backend: Backend) -> None:
    """A log whose nodes were written under migration 0009's key (level, node_index) keeps
    every node, and its proofs, once 0014 keys them by the tree size that completed them."""
    store = backend.open()
    _append(store, _chains(store), 45)
    leaves = _leaves(store)
    store.close()
    backend.opened.remove(store)
    blob = "BLOB" if backend.name == "sqlite" else "BYTEA"
    suffix = " WITHOUT ROWID" if backend.name == "sqlite" else ""
    backend.back_to_version_16()
    backend.execute(
        f"CREATE TABLE old_nodes (level INTEGER NOT NULL, node_index BIGINT NOT NULL, "
        f"hash {blob} NOT NULL, PRIMARY KEY (level, node_index)){suffix}; "
        "INSERT INTO old_nodes SELECT level, (tree_size >> level) - 1, hash FROM log_nodes; "
        "DROP TABLE log_nodes; ALTER TABLE old_nodes RENAME TO log_nodes; "
        "DROP TABLE envelopes; DELETE FROM schema_version WHERE version = 14"
    )
    reopened = backend.open()
    assert _stored_nodes(backend) == _expected_nodes(leaves)
    for size in (1, 2, 17, 32, 45):
        _check_reads(reopened, leaves, size, size - 1, size // 2)
    _append(reopened, _chains(reopened, 2, "late"), 5)
    assert _stored_nodes(backend) == _expected_nodes(_leaves(reopened))


def test_migration_16_drops_the_low_levels_and_every_read_stays(backend: Backend) -> None:
    """A log whose nodes of levels 1-3 were stored (before migration 0016) loses them, and
    every root, frontier and proof reads the same from the leaves; appends go on."""
    store = backend.open()
    _append(store, _chains(store), 45)
    leaves = _leaves(store)
    store.close()
    backend.opened.remove(store)
    tree, low = merkle.Frontier(), []
    for leaf in leaves:
        tree, nodes = tree.append_with_nodes(leaf)
        low += [n for n in nodes if 0 < n.level < STORED_LEVEL]
    values = ", ".join(
        f"({(n.index + 1) << n.level}, {n.level}, {_hex(backend, n.hash)})" for n in low
    )
    backend.execute(
        f"INSERT INTO log_nodes (tree_size, level, hash) VALUES {values}; "
        "DELETE FROM schema_version WHERE version = 16"
    )
    assert backend.query(f"SELECT COUNT(*) FROM log_nodes WHERE level < {STORED_LEVEL}") == [
        (len(low),)
    ]
    reopened = backend.open()
    assert _stored_nodes(backend) == _expected_nodes(leaves)
    for size in (1, 2, 7, 16, 17, 32, 45):
        _check_reads(reopened, leaves, size, size - 1, size // 3)
    _append(reopened, _chains(reopened, 2, "late"), 5)
    assert _stored_nodes(backend) == _expected_nodes(_leaves(reopened))
