"""Versioned migrations: applied once, recorded, idempotent on reopen, safe for concurrent
openers (replicas starting together)."""

from __future__ import annotations

import secrets
import threading
from datetime import timedelta

import pytest

from attest.errors import ReplayError, StoreError
from tests.verifier.store.conftest import Backend
from tests.verifier.store.helpers import T0, Chain, accept_heartbeats, enroll, nonce
from verifier.model import Accepted, NonceRecord
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


def _back_to_version_13(backend: Backend) -> None:
    """Rewrite the database into the layout a verifier before migration 0014 left: envelope
    bytes in `blobs` by hash, attestations keyed by (agent, seq), nodes by (level, index)."""
    sqlite = backend.name == "sqlite"
    blob, rowid = ("BLOB", " WITHOUT ROWID") if sqlite else ("BYTEA", "")
    backend.envelopes_to_blobs(below=2**62)
    backend.back_to_version_16()
    backend.execute(
        "DROP TABLE envelopes; "
        "CREATE TABLE old_att (agent_id TEXT NOT NULL, seq BIGINT NOT NULL, "
        f"envelope_hash {blob} NOT NULL, payload_digest {blob} NOT NULL, "
        "freshness TEXT NOT NULL, created_at BIGINT NOT NULL, received_at BIGINT NOT NULL, "
        f"log_index BIGINT NOT NULL, PRIMARY KEY (agent_id, seq)){rowid}; "
        "INSERT INTO old_att SELECT agent_id, seq, envelope_hash, payload_digest, freshness, "
        "created_at, received_at, log_index FROM attestations; DROP TABLE attestations; "
        "ALTER TABLE old_att RENAME TO attestations; "
        "CREATE TABLE old_nodes (level INTEGER NOT NULL, node_index BIGINT NOT NULL, "
        f"hash {blob} NOT NULL, PRIMARY KEY (level, node_index)){rowid}; "
        "INSERT INTO old_nodes SELECT level, (tree_size >> level) - 1, hash FROM log_nodes; "
        "DROP TABLE log_nodes; ALTER TABLE old_nodes RENAME TO log_nodes; "
        "DELETE FROM schema_version WHERE version = 14"
    )


def test_migration_14_keeps_every_attestation_envelope_and_proof(backend: Backend) -> None:
    """A log written before migration 0014 reads back the same after it: every attestation by
    (agent, seq), every envelope by log index (from `blobs`), every root; a replayed envelope
    is still recognised, and the chains go on."""
    store = backend.open()
    chains = [Chain(f"m{i}") for i in range(3)]
    for chain in chains:
        enroll(store, chain.agent_id)
    sent = [chain.next(T0) for _ in range(4) for chain in chains]
    for item in sent:
        store.accept([item], T0)
    records = {(i.agent_id, i.seq): store.get_attestation(i.agent_id, i.seq) for i in sent}
    roots = [store.log_root(size) for size in range(1, len(sent) + 1)]
    store.close()
    backend.opened.remove(store)
    _back_to_version_13(backend)
    again = backend.open()
    assert backend.query("SELECT COUNT(*) FROM blobs") == [(len(sent),)]
    for index, item in enumerate(sent):
        assert again.get_attestation(item.agent_id, item.seq) == records[item.agent_id, item.seq]
        assert again.get_envelope(index) == item.envelope
    assert [again.log_root(size) for size in range(1, len(sent) + 1)] == roots
    (replayed,) = again.accept([sent[0]], T0)
    assert isinstance(replayed, ReplayError), replayed
    (later,) = again.accept([chains[0].next(T0)], T0)
    assert isinstance(later, Accepted) and later.log_index == len(sent)
    assert again.get_attestation(chains[0].agent_id, 5) is not None


def test_migration_15_purges_by_key_and_drops_the_untimed_nonces_no_range_reaches(
    backend: Backend,
) -> None:
    """Before migration 0015 nonces had an expiry index, and before 2026-11-28 they were
    random. Afterwards the index is gone, time-led nonces and random ones led by 0x01 or more
    stay (the purge's ranges reach them), and random ones led by 0x00 are deleted."""
    store = backend.open()
    enroll(store, "m15")
    timed = nonce(store, "m15")
    untimed_high = b"\x05" + secrets.token_bytes(31)
    untimed_low = b"\x00\xff" + secrets.token_bytes(30)
    store.issue_nonces(
        [
            NonceRecord(n, T0, T0 + timedelta(minutes=5), "replica-old", "m15")
            for n in (untimed_high, untimed_low)
        ]
    )
    store.close()
    backend.opened.remove(store)
    backend.back_to_version_16()  # every nonce with its issue time, as before 0017
    backend.execute(
        "CREATE INDEX nonces_expires ON nonces (expires_at); "
        "DELETE FROM schema_version WHERE version = 15"
    )
    again = backend.open()
    assert again.get_nonce(timed) is not None and again.get_nonce(untimed_high) is not None
    assert again.get_nonce(untimed_low) is None
    if backend.name == "sqlite":
        indexes = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'nonces'"
    else:
        indexes = "SELECT indexname FROM pg_indexes WHERE tablename = 'nonces'"
    assert "nonces_expires" not in {name for (name,) in backend.query(indexes)}
    assert again.purge_nonces(T0 + timedelta(minutes=6)) == 2


def _tables(backend: Backend) -> set[str]:
    if backend.name == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    else:
        sql = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    return {name for (name,) in backend.query(sql)}


def test_migration_17_moves_the_log_into_the_attestation_rows(backend: Backend) -> None:
    """A store written before migration 0017 (log entries in their own table, every nonce
    with its issue time, envelopes in the unlinked forms) reads back the same after it: every
    attestation, log entry, root, proof, envelope and nonce; its chains go on, nonces issued
    afterwards store no issue time of their own yet read back with it, and a nonce bound to an
    id no agent has (the store probe's) is unbound."""
    store = backend.open()
    chains = [Chain(f"m17-{i}") for i in range(3)]
    for chain in chains:
        enroll(store, chain.agent_id)
    sent = [chain.next(T0) for _ in range(5) for chain in chains]
    store.accept(sent[:7], T0)
    store.accept(sent[7:], T0)
    beats = accept_heartbeats(store, chains[2], 3)  # real ones: stored compact, then linked
    timed = nonce(store, chains[0].agent_id)
    untimed = b"\x05" + secrets.token_bytes(31)
    store.issue_nonces([NonceRecord(untimed, T0, T0 + timedelta(minutes=5), "old", "m17-0")])
    size = store.log_size()
    records = {(i.agent_id, i.seq): store.get_attestation(i.agent_id, i.seq) for i in sent}
    entries = store.log_entries(0, size)
    roots = [store.log_root(n) for n in range(1, size + 1)]
    proofs = [store.log_inclusion_proof(i, size) for i in range(size)]
    nonces = {n: store.get_nonce(n) for n in (timed, untimed)}
    store.close()
    backend.opened.remove(store)
    backend.back_to_version_16()
    assert "log_entries" in _tables(backend)
    forms = {bytes(b)[0] for (b,) in backend.query("SELECT body FROM envelopes")}
    assert 0x02 not in forms and 0x01 in forms
    probe = secrets.token_bytes(32)
    backend.execute(
        "INSERT INTO nonces (nonce, issued_at, expires_at, replica, agent_id) VALUES "
        f"({_hex(backend, probe)}, 0, 0, 'r', '-store-probe-')"
    )
    again = backend.open()
    assert "log_entries" not in _tables(backend)
    assert again.log_entries(0, size) == entries
    assert [again.log_root(n) for n in range(1, size + 1)] == roots
    assert [again.log_inclusion_proof(i, size) for i in range(size)] == proofs
    for index, item in enumerate(sent):
        assert again.get_attestation(item.agent_id, item.seq) == records[item.agent_id, item.seq]
        assert again.get_envelope(index) == item.envelope
    assert [again.get_envelope(len(sent) + i) for i in range(3)] == beats
    assert {n: again.get_nonce(n) for n in nonces} == nonces
    unbound = again.get_nonce(probe)
    assert unbound is not None and unbound.agent_id == ""
    (replayed,) = again.accept([sent[0]], T0)
    assert isinstance(replayed, ReplayError), replayed
    (later,) = again.accept([chains[0].next(T0)], T0)
    assert isinstance(later, Accepted) and later.log_index == size
    # Agents are numbered in enrollment order, and the next enrolled takes the next number.
    enroll(again, "m17-late")
    numbered = backend.query("SELECT agent_id, agent_no FROM agents ORDER BY agent_no")
    assert numbered == [(c.agent_id, i + 1) for i, c in enumerate(chains)] + [("m17-late", 4)]
    fresh = nonce(again, chains[1].agent_id)
    record = again.get_nonce(fresh)
    assert record is not None and record.issued_at == T0 and record.agent_id == "m17-1"
    stored = {
        bytes(n): issued for n, issued in backend.query("SELECT nonce, issued_at FROM nonces")
    }
    assert stored[fresh] is None and stored[untimed] is not None


@pytest.mark.parametrize(
    "damage",
    [
        "DELETE FROM attestations WHERE log_index = 1",
        "DELETE FROM log_entries WHERE log_index = 1",
        "DELETE FROM agents WHERE agent_id = 'm17-lost'",
        "UPDATE attestations SET freshness = 'stale' WHERE log_index = 2",
    ],
    ids=["no-attestation", "no-log-entry", "no-agent", "unknown-verdict"],
)
def test_migration_17_refuses_entries_it_cannot_carry(backend: Backend, damage: str) -> None:
    """An entry whose attestation row is missing, an attestation whose entry is, an
    attestation of no enrolled agent, or a verdict of neither kind (no verifier wrote any of
    them) fails the migration, which then leaves the database as it found it."""
    store = backend.open()
    chain = Chain("m17-lost")
    enroll(store, chain.agent_id)
    store.accept([chain.next(T0) for _ in range(3)], T0)
    store.close()
    backend.opened.remove(store)
    backend.back_to_version_16()
    backend.execute(damage)
    counts = "SELECT (SELECT COUNT(*) FROM log_entries), (SELECT COUNT(*) FROM attestations)"
    before = backend.query(counts)
    with pytest.raises(StoreError):
        backend.open()
    assert backend.query(counts) == before
    assert backend.query("SELECT MAX(version) FROM schema_version") == [(16,)]


def _hex(backend: Backend, value: bytes) -> str:
    return f"X'{value.hex()}'" if backend.name == "sqlite" else f"'\\x{value.hex()}'::bytea"
