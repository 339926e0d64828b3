"""Group commit: many callers share a transaction, each learns its own outcome, and nothing
acknowledged is lost when the process is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from attest.errors import ReplayError, StoreError
from tests.verifier.store.conftest import Backend
from tests.verifier.store.helpers import T0, Chain, enroll, gpus
from verifier.model import Accepted
from verifier.store.api import Store
from verifier.store.batch import GroupCommitter

ROOT = Path(__file__).resolve().parents[3]


async def test_concurrent_submits_share_transactions(store: Store) -> None:
    chains = [Chain(f"a{i:02}", inventory=gpus(f"GPU-{i}")) for i in range(40)]
    for chain in chains:
        enroll(store, chain.agent_id)
    committer = GroupCommitter(store, max_batch=64)
    await committer.start()

    async def run(chain: Chain) -> list[Accepted]:
        return [await committer.submit(chain.next(T0)) for _ in range(5)]

    results = await asyncio.gather(*(run(c) for c in chains))
    await committer.close()
    indices = sorted(a.log_index for r in results for a in r)
    assert indices == list(range(200))
    assert committer.items == 200
    assert committer.batches < committer.items
    assert await asyncio.to_thread(store.log_size) == 200


@pytest.mark.parametrize(("interval", "transactions"), [(0.0, 3), (2.0, 2)])
async def test_transactions_start_at_most_every_interval(
    store: Store, interval: float, transactions: int
) -> None:
    """The first envelope commits at once. With an interval, two arriving 0.3 s apart soon
    after it wait for the interval to pass and share a transaction; without one, each gets
    its own (0.3 s leaves a slow CI machine ample time to commit the second alone)."""
    enroll(store, "a1")
    enroll(store, "a2")
    one, two = Chain("a1"), Chain("a2")
    committer = GroupCommitter(store, min_interval=interval)
    await committer.start()
    await committer.submit(one.next(T0))
    second = asyncio.ensure_future(committer.submit(one.next(T0)))
    await asyncio.sleep(0.3)
    third = asyncio.ensure_future(committer.submit(two.next(T0)))
    accepted = [await second, await third]
    await committer.close()
    assert [a.log_index for a in accepted] == [1, 2]
    assert (committer.batches, committer.items) == (transactions, 3)


async def test_a_quarter_full_queue_does_not_wait_for_the_interval(store: Store) -> None:
    """Under load the interval never holds envelopes back: once max_batch // 4 are queued the
    transaction starts. With an interval of 60 s and max_batch 8, a burst of four after the
    first commit goes at once (the test would hang for a minute otherwise), and a lone
    envelope after it still waits until a second one comes."""
    chains = [Chain(f"q{i}") for i in range(5)]
    for chain in chains:
        enroll(store, chain.agent_id)
    committer = GroupCommitter(store, max_batch=8, min_interval=60.0)
    await committer.start()
    await committer.submit(chains[0].next(T0))
    burst = await asyncio.wait_for(
        asyncio.gather(*(committer.submit(c.next(T0)) for c in chains[1:])), timeout=30
    )
    assert sorted(a.log_index for a in burst) == [1, 2, 3, 4]
    assert committer.batches <= 3
    lone = asyncio.ensure_future(committer.submit(chains[0].next(T0)))
    await asyncio.sleep(0.5)
    assert not lone.done()  # one envelope is not a quarter: it waits for the interval
    # A second one makes a quarter, and both go.
    second = await asyncio.wait_for(committer.submit(chains[1].next(T0)), timeout=30)
    assert sorted([(await lone).log_index, second.log_index]) == [5, 6]
    await committer.close()


def test_a_negative_interval_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="min_interval"):
        GroupCommitter(store, min_interval=-0.001)


async def test_each_caller_gets_its_own_typed_error(store: Store) -> None:
    enroll(store, "a1")
    chain = Chain("a1")
    item = chain.next(T0)
    committer = GroupCommitter(store)
    await committer.start()
    first, second = await asyncio.gather(
        committer.submit(item), committer.submit(item), return_exceptions=True
    )
    await committer.close()
    assert isinstance(first, Accepted)
    assert isinstance(second, ReplayError)


async def test_submit_before_start_is_refused(store: Store) -> None:
    with pytest.raises(StoreError):
        await GroupCommitter(store).submit(Chain("a1").next(T0))


def _read_acks(proc: subprocess.Popen[str], want: int) -> list[tuple[str, int, int]]:
    acks = []
    assert proc.stdout is not None
    for line in proc.stdout:
        _, agent, seq, index = line.split()
        acks.append((agent, int(seq), int(index)))
        if len(acks) >= want:
            break
    return acks


@pytest.mark.slow
def test_nothing_acknowledged_is_lost_on_sigkill(backend: Backend) -> None:
    store = backend.open()
    agents = [f"k{i}" for i in range(8)]
    for agent in agents:
        enroll(store, agent)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.verifier.store.commit_worker", backend.url, *agents],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        acks = _read_acks(proc, 300)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    assert len(acks) == 300
    for agent, seq, index in acks:
        record = store.get_attestation(agent, seq)
        assert record is not None, (agent, seq)
        assert record.log_index == index
        assert store.get_envelope(index) is not None
    # Whatever committed without an ACK is still a gapless log prefix.
    size = store.log_size()
    assert size >= len(acks)
    assert [e.log_index for e in store.log_entries(0, size)] == list(range(size))
