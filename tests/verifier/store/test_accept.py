"""The accept transaction: chain compare-and-set, nonces, blobs, log, compaction; both backends."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from datetime import datetime, timedelta

from attest.errors import (
    AgentUnknownError,
    ForkError,
    GapError,
    NonceMismatchError,
    NonceReplayedError,
    NonceUnknownError,
    ReplayError,
)
from attest.model import Freshness
from tests.verifier.store.conftest import Backend
from tests.verifier.store.helpers import T0, Chain, enroll, gpus, nonce
from verifier.model import Accepted, NonceRecord
from verifier.nonces import new_nonce
from verifier.store.api import Store, StoreOptions


def _accepted(outcome: object) -> Accepted:
    assert isinstance(outcome, Accepted), outcome
    return outcome


def test_accept_stores_evidence_verbatim_and_appends_to_the_log(store: Store) -> None:
    enroll(store, "a1")
    chain = Chain("a1", inventory=gpus("GPU-1", "GPU-2"))
    n = nonce(store, "a1")
    item = chain.next(T0, nonce=n)
    done = _accepted(store.accept([item], T0 + timedelta(seconds=1))[0])
    assert (done.seq, done.log_index, done.freshness) == (1, 0, Freshness.NONCE)
    assert done.leaf_hash == hashlib.sha256(b"\x00" + item.envelope).digest()
    assert store.get_envelope(done.log_index) == item.envelope
    assert store.log_size() == 1
    [entry] = store.log_entries(0, 10)
    assert (entry.log_index, entry.leaf_hash, entry.envelope_hash) == (
        0,
        done.leaf_hash,
        item.envelope_hash,
    )
    record = store.get_attestation("a1", 1)
    assert record is not None
    assert (record.payload_digest, record.log_index) == (item.payload_digest, 0)
    agent = store.get_agent("a1")
    assert agent is not None
    assert (agent.last_seq, agent.last_hash) == (1, item.envelope_hash)
    assert agent.first_attested_at == T0 + timedelta(seconds=1)
    assert agent.next_due == T0 + StoreOptions().attestation_deadline
    issued = store.get_nonce(n)
    assert issued is not None
    assert issued.consumed_at == T0 + timedelta(seconds=1)


def test_one_batch_carries_consecutive_seqs_and_many_agents(store: Store) -> None:
    chains = [Chain(f"a{i}", inventory=gpus(f"GPU-{i}")) for i in range(3)]
    for chain in chains:
        enroll(store, chain.agent_id)
    items = [c.next(T0 + timedelta(seconds=s)) for s in range(3) for c in chains]
    outcomes = store.accept(items, T0)
    assert [_accepted(o).log_index for o in outcomes] == list(range(9))
    assert [_accepted(o).seq for o in outcomes] == [1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_a_failing_item_does_not_poison_the_batch(store: Store) -> None:
    enroll(store, "a1")
    enroll(store, "a2")
    a1, a2 = Chain("a1"), Chain("a2")
    first = a1.next(T0)
    assert isinstance(store.accept([first], T0)[0], Accepted)
    used = nonce(store, "a2")
    store.accept([a2.next(T0, nonce=used)], T0)
    batch = [
        first,  # replay
        a1.next(T0, salt=b"x", advance=False),  # fine (seq 2)
        Chain("ghost").next(T0),  # unknown agent
        a2.next(T0, nonce=used, advance=False),  # nonce already used
        a2.next(T0, nonce=b"\x01" * 32, advance=False),  # nonce never issued
        a2.next(T0),  # fine (seq 2)
    ]
    outcomes = store.accept(batch, T0)
    assert [type(o) for o in outcomes] == [
        ReplayError,
        Accepted,
        AgentUnknownError,
        NonceReplayedError,
        NonceUnknownError,
        Accepted,
    ]
    assert [_accepted(outcomes[i]).log_index for i in (1, 5)] == [2, 3]
    assert store.log_size() == 4
    assert [e.log_index for e in store.log_entries(0, 100)] == [0, 1, 2, 3]


def test_replay_fork_and_gaps_are_typed(store: Store) -> None:
    enroll(store, "a1")
    chain = Chain("a1")
    one = chain.next(T0)
    two = chain.next(T0 + timedelta(minutes=1))
    assert all(isinstance(o, Accepted) for o in store.accept([one, two], T0))
    fork = Chain("a1", seq=0).next(T0, salt=b"other payload")
    skip = Chain("a1", seq=3, last_hash=two.envelope_hash).next(T0)
    broken = Chain("a1", seq=2, last_hash=b"\x00" * 32).next(T0)
    outcomes = store.accept([one, fork, skip, broken], T0)
    assert [type(o) for o in outcomes] == [ReplayError, ForkError, GapError, GapError]
    assert store.log_size() == 2
    agent = store.get_agent("a1")
    assert agent is not None
    assert agent.last_seq == 2


def test_offline_evidence_keeps_the_deadline(store: Store) -> None:
    enroll(store, "a1")
    chain = Chain("a1")
    late = T0 + timedelta(hours=3)
    done = _accepted(store.accept([chain.next(T0 + timedelta(minutes=1))], late)[0])
    assert done.freshness is Freshness.OFFLINE
    agent = store.get_agent("a1")
    assert agent is not None
    assert agent.next_due == T0 + StoreOptions().attestation_deadline
    assert agent.last_fresh_at is None
    assert agent.last_seen_at == T0 + timedelta(minutes=1)


def test_each_log_entry_keeps_its_envelope_bytes_by_log_index(
    backend: Backend, store: Store
) -> None:
    """Envelope bytes are stored by log index (migration 0014), one row per entry, even for
    identical bytes (which the pipeline never passes for two agents: the payload names one)."""
    enroll(store, "a1")
    enroll(store, "a2")
    a = Chain("a1").next(T0)
    b = Chain("a2").next(T0)
    same_bytes = dataclasses.replace(b, envelope=a.envelope, envelope_hash=a.envelope_hash)
    outcomes = store.accept([a, same_bytes], T0)
    assert [_accepted(o).log_index for o in outcomes] == [0, 1]
    assert backend.query("SELECT log_index FROM envelopes ORDER BY 1") == [(0,), (1,)]
    assert backend.query("SELECT COUNT(*) FROM blobs") == [(0,)]
    assert store.get_envelope(0) == store.get_envelope(1) == a.envelope
    assert store.get_envelope(2) is None


def test_unchanged_heartbeat_rewrites_no_gpu_row(backend: Backend, store: Store) -> None:
    enroll(store, "a1")
    chain = Chain("a1", inventory=gpus(*(f"GPU-{i}" for i in range(8))))
    store.accept([chain.next(T0, nonce=nonce(store, chain.agent_id))], T0)
    rows = "SELECT uuid, last_seen, last_log_index FROM gpu_sightings ORDER BY uuid"
    before = backend.query(rows)
    later = T0 + timedelta(minutes=1)
    store.accept([chain.next(later, nonce=nonce(store, chain.agent_id))], later)
    after = backend.query(rows)
    assert before == after  # O(1): only the agent row moved
    [host] = store.iter_fleet()
    assert {g.last_seen for g in host.gpus} == {later}
    assert {g.first_seen for g in host.gpus} == {T0}


def test_changed_inventory_updates_sightings(store: Store) -> None:
    enroll(store, "a1", site="fra1")
    chain = Chain("a1", inventory=gpus("GPU-1", "GPU-2"))
    store.accept([chain.next(T0)], T0)
    t1 = T0 + timedelta(minutes=1)
    store.accept([chain.next(t1, inventory=gpus("GPU-2", "GPU-3"))], t1)
    [host] = store.iter_fleet("fra1")
    by_uuid = {g.uuid: g for g in host.gpus}
    assert {u: g.present for u, g in by_uuid.items()} == {
        "GPU-1": False,
        "GPU-2": True,
        "GPU-3": True,
    }
    assert by_uuid["GPU-1"].last_seen == T0
    assert by_uuid["GPU-2"].first_seen == T0
    assert by_uuid["GPU-3"].first_seen == t1
    assert by_uuid["GPU-2"].site_id == "fra1"
    assert by_uuid["GPU-2"].pci_device_id == 0x233010DE
    assert list(store.iter_fleet("elsewhere")) == []
    assert [s.agent_id for s in store.gpu_sightings("GPU-2")] == ["a1"]


def test_purge_nonces(store: Store) -> None:
    n = nonce(store, "a1", ttl=timedelta(minutes=5))
    assert store.purge_nonces(T0) == 0
    assert store.purge_nonces(T0 + timedelta(hours=1)) == 1
    assert store.get_nonce(n) is None


def test_purge_deletes_exactly_the_expired_nonces_by_key_range(store: Store) -> None:
    """Purge reads the primary key's range below the cut-off's issue-time prefix (migration
    0015): every expired nonce goes, whatever its TTL, every unexpired one stays, and random
    nonces from before time-led ones (led by 0x01 or more) are purged once expired too."""
    issued: dict[bytes, datetime] = {}
    for minute in range(0, 60, 3):
        at = T0 + timedelta(minutes=minute)
        for ttl in (timedelta(seconds=10), timedelta(minutes=5), timedelta(minutes=40)):
            issued[nonce(store, "a1", at=at, ttl=ttl)] = at + ttl
    for lead in (0x01, 0x7F, 0xFF):
        for expires in (T0 + timedelta(minutes=10), T0 + timedelta(hours=3)):
            value = bytes([lead]) + secrets.token_bytes(31)
            store.issue_nonces([NonceRecord(value, T0, expires, "replica-old", "a1")])
            issued[value] = expires
    cutoff = T0 + timedelta(minutes=30)
    expired = {n for n, expires in issued.items() if expires < cutoff}
    assert 0 < len(expired) < len(issued)
    assert store.purge_nonces(cutoff) == len(expired)
    assert {n for n in issued if store.get_nonce(n) is None} == expired


def test_empty_batch(store: Store) -> None:
    assert store.accept([], T0) == []


def test_issue_nonces_in_one_call_and_idempotently(store: Store) -> None:
    for i in range(4):
        enroll(store, f"a{i}")
    records = [
        NonceRecord(bytes([i]) * 32, T0, T0 + timedelta(minutes=5), f"r{i}", f"a{i}")
        for i in range(4)
    ]
    store.issue_nonces(records)
    store.issue_nonces(records[:2])  # a retried call after a lost answer changes nothing
    store.issue_nonces([])
    for record in records:
        assert store.get_nonce(record.nonce) == record


def test_a_nonce_issued_to_no_enrolled_agent_is_unbound(store: Store) -> None:
    """The store probe's nonces name an id no agent has: stored, they bind to nobody, so no
    agent's evidence can be made fresh by one (migration 0017)."""
    enroll(store, "a1")
    probe = NonceRecord(new_nonce(T0), T0, T0 + timedelta(minutes=5), "r", "-store-probe-")
    store.issue_nonces([probe])
    assert store.get_nonce(probe.nonce) == dataclasses.replace(probe, agent_id="")
    chain = Chain("a1")
    (outcome,) = store.accept([chain.next(T0, nonce=probe.nonce)], T0)
    assert isinstance(outcome, NonceMismatchError), outcome
