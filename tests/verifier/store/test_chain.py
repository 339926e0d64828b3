"""Finding an attestation by (agent, seq) when only every 64th seq is indexed (migration 0014,
verifier/store/ops_chain.py): every seq of long interleaved chains reads back, replays and
forks at any depth are still told apart, and the lookup uses the partial index. Both backends."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import timedelta

from attest.errors import ForkError, ReplayError
from tests.verifier.store.conftest import Backend
from tests.verifier.store.helpers import T0, Chain, enroll
from verifier.model import Accepted, VerifiedAttestation
from verifier.store.api import Store
from verifier.store.ops_chain import STRIDE

LENGTH = 2 * STRIDE + 9  # two indexed seqs, and a tail above the last one


def _chains(store: Store) -> tuple[list[Chain], list[VerifiedAttestation]]:
    """Three agents whose envelopes interleave in the log, in batches of seven."""
    chains = [Chain(f"c{i}") for i in range(3)]
    for chain in chains:
        enroll(store, chain.agent_id)
    sent = [c.next(T0 + timedelta(seconds=s)) for s in range(LENGTH) for c in chains]
    for start in range(0, len(sent), 7):
        outcomes = store.accept(sent[start : start + 7], T0)
        assert all(isinstance(o, Accepted) for o in outcomes), outcomes
    return chains, sent


def test_every_seq_of_every_chain_reads_back(store: Store) -> None:
    chains, sent = _chains(store)
    for index, item in enumerate(sent):
        record = store.get_attestation(item.agent_id, item.seq)
        assert record is not None, (item.agent_id, item.seq)
        assert (record.log_index, record.envelope_hash) == (index, item.envelope_hash)
        assert record.payload_digest == item.payload_digest
    for chain in chains:
        assert store.get_attestation(chain.agent_id, 0) is None
        assert store.get_attestation(chain.agent_id, LENGTH + 1) is None
    assert store.get_attestation("nobody", 1) is None


def test_replays_and_forks_are_told_apart_at_any_depth(store: Store) -> None:
    chains, sent = _chains(store)
    size = store.log_size()
    ours = [i for i in sent if i.agent_id == chains[1].agent_id]
    for seq in (1, 2, STRIDE - 1, STRIDE, STRIDE + 1, 2 * STRIDE, LENGTH - 1, LENGTH):
        original = ours[seq - 1]
        (replayed,) = store.accept([original], T0)
        assert isinstance(replayed, ReplayError), (seq, replayed)
        other = hashlib.sha256(b"other" + original.payload_digest).digest()
        forked = dataclasses.replace(original, payload_digest=other)
        (outcome,) = store.accept([forked], T0)
        assert isinstance(outcome, ForkError), (seq, outcome)
    assert store.log_size() == size


def test_the_lookup_uses_the_partial_index(backend: Backend, store: Store) -> None:
    _chains(store)
    query = "SELECT log_index FROM attestations WHERE agent_no = 2 AND seq = 128 AND (seq & 63) = 0"
    if backend.name == "sqlite":
        plan = " ".join(str(r) for r in backend.query(f"EXPLAIN QUERY PLAN {query}"))
    else:
        plan = " ".join(str(r) for r in backend.query(f"EXPLAIN {query}"))
    assert "attestations_agent_seq" in plan, plan
    assert backend.query("SELECT COUNT(*) FROM attestations WHERE (seq & 63) = 0") == [
        (3 * (LENGTH // STRIDE),)
    ]
