"""Two verifier replicas (two store instances) on one PostgreSQL database: every seq is
accepted once, nonces are shared and used once, and every acknowledged envelope is stored."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from attest.errors import ForkError, NonceReplayedError, ReplayError
from tests.verifier.store.conftest import pg_schema_url
from tests.verifier.store.helpers import T0, Chain, enroll, gpus, nonce
from verifier.model import Accepted, AcceptOutcome, VerifiedAttestation
from verifier.store import open_store
from verifier.store.api import Store, StoreOptions
from verifier.store.batch import GroupCommitter

pytestmark = pytest.mark.postgres
T = TypeVar("T")


@pytest.fixture
def replicas(pg_schema: str) -> Iterator[list[Store]]:
    url = pg_schema_url(pg_schema)
    stores = [open_store(url, StoreOptions(replica_id=f"r{i}")) for i in range(2)]
    yield stores
    for store in stores:
        store.close()


def _race(calls: list[Callable[[], T]]) -> list[T]:
    """Run the calls at once from threads; return their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[T | None] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r for r in results if r is not None]


def _accept_on(store: Store, item: VerifiedAttestation) -> Callable[[], AcceptOutcome]:
    return lambda: store.accept([item], T0)[0]


def test_the_same_seq_on_two_replicas_is_accepted_once(replicas: list[Store]) -> None:
    a, b = replicas
    agents = [f"a{i}" for i in range(12)]
    for agent in agents:
        enroll(a, agent)
    for agent in agents:
        item = Chain(agent).next(T0)
        outcomes = _race([_accept_on(a, item), _accept_on(b, item)])
        kinds = sorted(type(o).__name__ for o in outcomes)
        assert kinds == ["Accepted", "ReplayError"], outcomes
    assert a.log_size() == len(agents)
    assert [e.log_index for e in b.log_entries(0, 100)] == list(range(len(agents)))


def test_different_envelopes_for_one_seq_fork(replicas: list[Store]) -> None:
    a, b = replicas
    enroll(a, "a1")
    one, other = Chain("a1").next(T0), Chain("a1").next(T0, salt=b"other")
    outcomes = _race([_accept_on(a, one), _accept_on(b, other)])
    assert sorted(type(o).__name__ for o in outcomes) == ["Accepted", "ForkError"]
    assert any(isinstance(o, ForkError) for o in outcomes)


def test_a_nonce_from_one_replica_is_accepted_by_the_other_once(replicas: list[Store]) -> None:
    a, b = replicas
    enroll(a, "a1")
    enroll(a, "a2")
    shared = nonce(a, "a1")
    assert b.get_nonce(shared) is not None
    chain = Chain("a1")
    first = chain.next(T0, nonce=shared)
    stolen = Chain("a2").next(T0, nonce=shared)
    # Whichever replica commits first, the nonce is a1's: a2's use is refused and consumes
    # nothing, so a1's own answer is accepted.
    outcomes = _race([_accept_on(a, first), _accept_on(b, stolen)])
    assert [type(o).__name__ for o in outcomes] == ["Accepted", "NonceMismatchError"]
    issued = a.get_nonce(shared)
    assert issued is not None
    assert (issued.replica, issued.agent_id) == ("replica-test", "a1")
    assert issued.consumed_at is not None
    [again] = b.accept([chain.next(T0, nonce=shared)], T0)
    assert isinstance(again, NonceReplayedError)


async def test_agents_on_both_replicas_lose_nothing(replicas: list[Store]) -> None:
    """Agents reconnect to either replica and resend what has no receipt, like the stream does."""
    a, b = replicas
    agents = [f"g{i:02}" for i in range(16)]
    for agent in agents:
        enroll(a, agent)
    committers = [GroupCommitter(s) for s in replicas]
    for committer in committers:
        await committer.start()

    async def agent_loop(index: int, agent: str) -> dict[int, int]:
        chain = Chain(agent, inventory=gpus(f"GPU-{agent}"))
        receipts: dict[int, int] = {}
        for step in range(12):
            item = chain.next(T0)
            # Send to one replica, and every third step also resend it through the other
            # (a receipt lost, the agent reconnected elsewhere).
            first = committers[(index + step) % 2]
            sends = [first.submit(item)]
            if step % 3 == 0:
                sends.append(committers[(index + step + 1) % 2].submit(item))
            for outcome in await asyncio.gather(*sends, return_exceptions=True):
                if isinstance(outcome, Accepted):
                    assert item.seq not in receipts
                    receipts[item.seq] = outcome.log_index
                else:
                    assert isinstance(outcome, ReplayError), outcome
            assert item.seq in receipts
        return receipts

    results = await asyncio.gather(*(agent_loop(i, g) for i, g in enumerate(agents)))
    for committer in committers:
        await committer.close()
    all_indices = sorted(i for r in results for i in r.values())
    assert all_indices == list(range(len(agents) * 12))
    for agent, receipts in zip(agents, results, strict=True):
        for seq, index in receipts.items():
            record = await asyncio.to_thread(b.get_attestation, agent, seq)
            assert record is not None
            assert record.log_index == index
