"""Heartbeats in the accept transaction (docs/protocol.md §4.1): accepted only when they name the
agent's current full evidence, and they leave inventory, holdings and posture as that full
evidence set them. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from attest.errors import HeartbeatBaseError
from tests.verifier.store.conftest import Backend
from tests.verifier.store.helpers import T0, Chain, enroll, gpus
from verifier.model import Accepted, VerifiedAttestation
from verifier.store.api import Store
from verifier.store.ops_accept import MAX_BASE_AGE

POSTURE = (("secure-boot", "pass"),)


def full(chain: Chain, seconds: int, *uuids: str) -> VerifiedAttestation:
    item = chain.next(T0 + timedelta(seconds=seconds), inventory=gpus(*uuids))
    return replace(item, posture=POSTURE)


def heartbeat(chain: Chain, seconds: int, base: bytes) -> VerifiedAttestation:
    """The chain's next link as a heartbeat: no GPUs, no posture, the base it repeats."""
    kept = chain.inventory
    item = chain.next(T0 + timedelta(seconds=seconds), inventory=())
    chain.inventory = kept
    return replace(item, base=base)


def accepted(outcome: object) -> Accepted:
    assert isinstance(outcome, Accepted), outcome
    return outcome


def test_a_heartbeat_naming_the_current_full_evidence_keeps_what_it_set(
    backend: Backend,
) -> None:
    store = backend.open()
    enroll(store, "a1")
    chain = Chain("a1")
    first = full(chain, 0, "GPU-1", "GPU-2")
    index = accepted(store.accept([first], T0)[0]).log_index
    holdings = list(store.holdings())
    postures = list(store.postures())
    beat = heartbeat(chain, 60, first.envelope_hash)
    done = accepted(store.accept([beat], T0 + timedelta(seconds=60))[0])
    assert done.log_index == index + 1
    # The GPUs are still held, their evidence is still the full envelope's log index, and the
    # posture is the full evidence's: an empty GPU list in a heartbeat means "unchanged".
    assert list(store.holdings()) == holdings
    assert holdings[0].count == 2 and holdings[0].evidence == (index,)
    assert list(store.postures()) == postures
    assert postures[0].checks == dict(POSTURE)
    assert store.get_envelope(done.log_index) == beat.envelope
    assert backend.query("SELECT COUNT(*) FROM gpu_presence") == [(2,)]
    agent = store.get_agent("a1")
    assert agent is not None and agent.last_seq == 2
    # The chain goes on with heartbeats, then a full evidence that changes the inventory.
    accepted(store.accept([heartbeat(chain, 120, first.envelope_hash)], T0)[0])
    second = full(chain, 180, "GPU-1")
    accepted(store.accept([second], T0 + timedelta(seconds=180))[0])
    assert [h.count for h in store.holdings()] == [1]


def test_a_heartbeat_naming_anything_else_is_refused_and_leaves_nothing(store: Store) -> None:
    enroll(store, "a1")
    chain = Chain("a1")
    old = full(chain, 0, "GPU-1")
    accepted(store.accept([old], T0)[0])
    new = full(chain, 30, "GPU-1", "GPU-2")
    accepted(store.accept([new], T0)[0])
    size = store.log_size()
    for base in (old.envelope_hash, b"\x00" * 32, new.prev_hash):
        stale = heartbeat(chain, 60, base)
        chain.seq, chain.last_hash = stale.seq - 1, stale.prev_hash  # not accepted: rewind
        (outcome,) = store.accept([stale], T0 + timedelta(seconds=60))
        assert isinstance(outcome, HeartbeatBaseError), outcome
        assert outcome.code == "heartbeat-base-unknown"
        assert store.log_size() == size
        assert store.get_envelope(size) is None
    # The agent then sends its full evidence at that seq, and heartbeats on it are welcome.
    again = full(chain, 61, "GPU-1", "GPU-2")
    accepted(store.accept([again], T0 + timedelta(seconds=61))[0])
    accepted(store.accept([heartbeat(chain, 90, again.envelope_hash)], T0)[0])


def test_a_heartbeat_before_any_full_evidence_is_refused(store: Store) -> None:
    enroll(store, "a1")
    chain = Chain("a1")
    beat = heartbeat(chain, 0, b"\x01" * 32)
    (outcome,) = store.accept([beat], T0)
    assert isinstance(outcome, HeartbeatBaseError)


def test_a_full_evidence_and_its_heartbeat_in_one_batch(store: Store) -> None:
    """The base is decided in the batch's memory, as the chain head is."""
    enroll(store, "a1")
    chain = Chain("a1")
    first = full(chain, 0, "GPU-1")
    items = [first, heartbeat(chain, 1, first.envelope_hash), heartbeat(chain, 2, b"\x02" * 32)]
    outcomes = store.accept(items, T0)
    assert [type(o) for o in outcomes] == [Accepted, Accepted, HeartbeatBaseError]


@pytest.mark.parametrize("heartbeats", [0, 3])
def test_a_store_written_before_heartbeats_takes_its_chain_head_as_the_full_evidence(
    backend: Backend, heartbeats: int
) -> None:
    """Migration 0011 sets full_hash to the chain head: every envelope accepted before
    heartbeats existed was full evidence."""
    store = backend.open()
    enroll(store, "a1")
    chain = Chain("a1")
    last = full(chain, 0, "GPU-1")
    accepted(store.accept([last], T0)[0])
    backend.query("UPDATE agents SET full_hash = NULL, full_log_index = NULL RETURNING agent_id")
    backend.query(
        "UPDATE agents SET full_hash = last_hash, full_log_index = last_log_index "
        "WHERE last_seq > 0 RETURNING agent_id"
    )  # the migration's statement, as shipped
    for i in range(heartbeats):
        accepted(store.accept([heartbeat(chain, 10 + i, last.envelope_hash)], T0)[0])
    assert backend.query("SELECT full_hash, full_log_index FROM agents") == [
        (last.envelope_hash, 0)
    ]


def test_a_heartbeat_may_repeat_a_full_evidence_for_at_most_25_hours(store: Store) -> None:
    """Measured on the agent's own clock along its chain (created_at), so a spool replayed
    after an outage is judged as it was produced."""
    enroll(store, "a1")
    chain = Chain("a1")
    first = full(chain, 0, "GPU-1")
    accepted(store.accept([first], T0)[0])
    limit = int(MAX_BASE_AGE.total_seconds())
    accepted(store.accept([heartbeat(chain, limit, first.envelope_hash)], T0)[0])
    late = heartbeat(chain, limit + 1, first.envelope_hash)
    (outcome,) = store.accept([late], T0)
    assert isinstance(outcome, HeartbeatBaseError) and "older than" in str(outcome)
