"""A property test of the accept transaction against a tiny model of the chain rules: any mix
of fresh, replayed, forked, skipping, mislinked and nonce-reusing envelopes, cut into batches
at random, gets exactly the outcomes the model predicts, and the log stays gapless. Nonces are
issued to one agent each; another agent's use of one is refused and does not consume it."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from attest.errors import (
    ForkError,
    GapError,
    NonceMismatchError,
    NonceReplayedError,
    NonceUnknownError,
    ReplayError,
)
from attest.model import Freshness
from tests.verifier.store.helpers import T0, enroll
from verifier.model import Accepted, NonceRecord, VerifiedAttestation
from verifier.store.sqlite import SqliteStore

AGENTS = ("a", "b")
NONCES = tuple(bytes([i]) * 32 for i in range(3))  # issued; bytes 0xff.. is never issued
NEVER_ISSUED = b"\xff" * 32
OWNER = {nonce: AGENTS[i % len(AGENTS)] for i, nonce in enumerate(NONCES)}

operation = st.tuples(
    st.sampled_from(["next", "replay", "fork", "gap", "badlink"]),
    st.sampled_from(AGENTS),
    st.integers(0, 5),  # which earlier seq (replay/fork)
    st.sampled_from([b"", *NONCES, NEVER_ISSUED]),
)


@dataclass
class Model:
    """Each agent's accepted chain (seq -> payload, envelope hash) and the used nonces."""

    chains: dict[str, list[tuple[bytes, bytes]]] = field(
        default_factory=lambda: {a: [] for a in AGENTS}
    )
    used: set[bytes] = field(default_factory=set)
    counter: int = 0

    def build(self, op: tuple[str, str, int, bytes]) -> tuple[VerifiedAttestation, type]:
        kind, agent, back, nonce = op
        chain = self.chains[agent]
        self.counter += 1
        payload = b"p%d" % self.counter
        seq, prev = len(chain) + 1, (chain[-1][1] if chain else b"")
        if kind in ("replay", "fork") and chain:
            seq = max(1, len(chain) - back % len(chain))
            prev = chain[seq - 2][1] if seq > 1 else b""
            if kind == "replay":
                payload = chain[seq - 1][0]
        elif kind == "gap":
            seq += 1
        elif kind == "badlink":
            prev = b"\x00" * 32
        envelope = b"env|" + agent.encode() + b"|" + payload
        item = VerifiedAttestation(
            agent_id=agent,
            seq=seq,
            prev_hash=prev,
            envelope=envelope,
            envelope_hash=hashlib.sha256(envelope).digest(),
            payload_digest=hashlib.sha256(payload).digest(),
            nonce=nonce,
            freshness=Freshness.NONCE if nonce else Freshness.OFFLINE,
            created_at=T0,
            received_at=T0,
            gpus=(),
        )
        return item, self._expect(item, payload)

    def _expect(self, item: VerifiedAttestation, payload: bytes) -> type:
        chain = self.chains[item.agent_id]
        if item.seq <= len(chain):
            same = hashlib.sha256(chain[item.seq - 1][0]).digest() == item.payload_digest
            return ReplayError if same else ForkError
        if item.seq != len(chain) + 1 or item.prev_hash != (chain[-1][1] if chain else b""):
            return GapError
        if item.nonce == NEVER_ISSUED:
            return NonceUnknownError
        if item.nonce and OWNER[item.nonce] != item.agent_id:
            return NonceMismatchError
        if item.nonce in self.used:
            return NonceReplayedError
        if item.nonce:
            self.used.add(item.nonce)
        chain.append((payload, item.envelope_hash))
        return Accepted


@settings(max_examples=40, deadline=None)
@given(st.lists(operation, min_size=1, max_size=25), st.lists(st.integers(1, 6), min_size=1))
def test_accept_matches_the_model(ops: list[tuple[str, str, int, bytes]], cuts: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "model.db")
        try:
            for agent in AGENTS:
                enroll(store, agent)
            store.issue_nonces(
                [
                    NonceRecord(nonce, T0, T0 + timedelta(minutes=5), "r", OWNER[nonce])
                    for nonce in NONCES
                ]
            )
            model = Model()
            built = [model.build(op) for op in ops]
            outcomes = []
            start, cut = 0, 0
            while start < len(built):
                size = cuts[cut % len(cuts)]
                batch = [item for item, _ in built[start : start + size]]
                outcomes += store.accept(batch, T0)
                start, cut = start + size, cut + 1
            assert [type(o) for o in outcomes] == [expected for _, expected in built]
            indices = [o.log_index for o in outcomes if isinstance(o, Accepted)]
            assert indices == list(range(len(indices)))
            assert store.log_size() == len(indices)
            for agent in AGENTS:
                record = store.get_agent(agent)
                assert record is not None
                assert record.last_seq == len(model.chains[agent])
        finally:
            store.close()
