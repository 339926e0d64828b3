"""One agent's envelope that the database refuses (PostgreSQL: NUL in a GPU UUID; SQLite: an
integer beyond 64 bits) fails alone: its batch neighbours are accepted, it gets a typed
StoreError of its own, and the log names its agent and seq. Both backends."""

from __future__ import annotations

import asyncio
import logging

import pytest

from attest.errors import GapError, StoreError
from tests.verifier.store.conftest import Backend
from tests.verifier.store.helpers import H100, T0, Chain, enroll, gpus
from verifier.model import Accepted, GpuClaim, NonceRecord
from verifier.store.batch import GroupCommitter

HONEST = 40


def _poison(backend: Backend) -> tuple[GpuClaim, ...]:
    """A GPU list the backend refuses to store (each accepts the other's)."""
    if backend.name == "postgres":
        return (GpuClaim(uuid="GPU-\x00evil", name="x", pci_device_id=H100),)
    return (GpuClaim(uuid="GPU-evil", name="x", pci_device_id=2**64),)


def _refused_in_log(caplog: pytest.LogCaptureFixture, agent_id: str, seq: int) -> bool:
    return any(
        agent_id in r.getMessage() and f"seq {seq}" in r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING
    )


def test_a_refused_item_fails_alone_in_its_batch(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    store = backend.open()
    chains = [Chain(f"h{i:02}", inventory=gpus(f"GPU-h{i:02}")) for i in range(HONEST)]
    evil = Chain("evil", inventory=_poison(backend))
    for chain in [*chains, evil]:
        enroll(store, chain.agent_id)
    # The hostile item sits in the middle; its successor and an honest agent's two seqs
    # straddle it, so bisection must keep each agent's items in order.
    batch = [c.next(T0) for c in chains[:20]]
    batch += [evil.next(T0), evil.next(T0), chains[0].next(T0)]
    batch += [c.next(T0) for c in chains[20:]]
    issued = [NonceRecord(bytes([i]) * 32, T0, T0, "r", "h00") for i in range(3)]
    with caplog.at_level(logging.WARNING):
        outcomes = store.accept(batch, T0, issued)
    by_agent = {(item.agent_id, item.seq): o for item, o in zip(batch, outcomes, strict=True)}
    refused = by_agent.pop(("evil", 1))
    assert type(refused) is StoreError  # the item's own error, not "unavailable"
    assert isinstance(by_agent.pop(("evil", 2)), GapError)  # seq 1 was never accepted
    assert all(isinstance(o, Accepted) for o in by_agent.values()), by_agent
    indices = sorted(o.log_index for o in by_agent.values() if isinstance(o, Accepted))
    assert indices == list(range(HONEST + 1))
    assert store.log_size() == HONEST + 1
    assert all(store.get_nonce(n.nonce) is not None for n in issued)
    record = store.get_agent("evil")
    assert record is not None and record.last_seq == 0
    assert backend.query("SELECT COUNT(*) FROM gpu_sightings WHERE agent_id = 'evil'") == [(0,)]
    assert _refused_in_log(caplog, "evil", 1)


async def test_honest_submitters_are_answered_when_a_neighbour_is_refused(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """The group committer, as the server uses it: every concurrent caller gets its own
    outcome, and the hostile one's failure is logged with its agent."""
    store = backend.open()
    chains = [Chain(f"h{i:02}", inventory=gpus(f"GPU-h{i:02}")) for i in range(HONEST)]
    evil = Chain("evil", inventory=_poison(backend))
    for chain in [*chains, evil]:
        enroll(store, chain.agent_id)
    enroll(store, "warm")
    committer = GroupCommitter(store, max_batch=64, min_interval=0.5)
    await committer.start()
    # After one commit the next transaction waits out the interval, so the submits below
    # share it (what matters is only that they can; the outcomes hold either way).
    assert isinstance(await committer.submit(Chain("warm").next(T0)), Accepted)
    with caplog.at_level(logging.WARNING):
        submits = [committer.submit(c.next(T0)) for c in chains]
        outcomes = await asyncio.gather(
            committer.submit(evil.next(T0)), *submits, return_exceptions=True
        )
    await committer.close()
    assert type(outcomes[0]) is StoreError
    assert all(isinstance(o, Accepted) for o in outcomes[1:]), outcomes
    assert await asyncio.to_thread(store.log_size) == HONEST + 1
    assert _refused_in_log(caplog, "evil", 1)
