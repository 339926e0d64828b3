"""Versioned migrations: applied once, recorded, idempotent on reopen, safe for concurrent
openers (replicas starting together)."""

from __future__ import annotations

import secrets
import threading
from datetime import timedelta

from attest.errors import ReplayError
from tests.verifier.store.conftest import Backend
from tests.verifier.store.helpers import T0, Chain, enroll, nonce
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
