"""A hostile enrolled agent against the real server (gRPC over loopback, mTLS, SQLite store):
another agent's challenge nonce, and time run backwards along its own chain."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc

from attest import model, wire
from attest.model import Freshness
from attest.v1 import attest_pb2 as pb
from tests.verifier.helpers import Chain
from tests.verifier.rpc import (
    Enrolled,
    Stream,
    check_receipt,
    enroll_agent,
    mtls_channel,
    new_token,
)
from verifier.config import VerifierConfig
from verifier.server import Running, start


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Answer:
    """The verifier's answer to one envelope: a checked receipt, or a rejection and the
    stream's final status."""

    receipt: model.Receipt | None = None
    rejection: pb.Rejection | None = None
    status: grpc.StatusCode = grpc.StatusCode.OK


async def _send(running: Running, agent: Enrolled, raw_for: Callable[[bytes], bytes]) -> Answer:
    """Open a stream and send the envelope `raw_for(challenge nonce)` builds."""
    async with mtls_channel(running, agent) as channel:
        stream = Stream(channel)
        challenge = await stream.challenge()
        raw = raw_for(challenge.nonce)
        await stream.send(raw)
        message = await stream.recv()
        if message.WhichOneof("kind") == "receipt":
            receipt = check_receipt(agent, message.receipt, raw)
            await stream.call.done_writing()
            return Answer(receipt=receipt, status=await stream.status())
        assert message.WhichOneof("kind") == "rejection", message
        return Answer(rejection=message.rejection, status=await stream.status())


async def test_another_agents_nonce_is_refused_and_stays_usable_by_its_agent(
    running: Running,
) -> None:
    store = running.core.store
    thief = await enroll_agent(running, new_token(store))
    owner = await enroll_agent(running, new_token(store))
    owner_chain = Chain(owner.agent_id, owner.signer)
    thief_chain = Chain(thief.agent_id, thief.signer)
    async with mtls_channel(running, owner) as channel:
        stream = Stream(channel)
        owners_nonce = (await stream.challenge()).nonce
        # The thief answers its own stream's challenge with the owner's nonce.
        answer = await _send(running, thief, lambda _n: thief_chain.next(owners_nonce, now()))
        assert answer.rejection is not None, answer
        assert answer.rejection.code == "nonce-mismatch" and not answer.rejection.retryable
        assert answer.status == grpc.StatusCode.PERMISSION_DENIED
        # The owner's own answer is still fresh: the thief consumed nothing.
        raw = owner_chain.next(owners_nonce, now())
        await stream.send(raw)
        message = await stream.recv()
        assert message.WhichOneof("kind") == "receipt", message
        assert check_receipt(owner, message.receipt, raw).freshness is Freshness.NONCE
        next_nonce = wire.challenge_from_pb(message.next_challenge).nonce
        await stream.call.done_writing()
        assert await stream.status() == grpc.StatusCode.OK
    issued = store.get_nonce(next_nonce)
    assert issued is not None and issued.agent_id == owner.agent_id
    thief_record = store.get_agent(thief.agent_id)
    assert thief_record is not None and thief_record.last_seq == 0
    assert any(
        a.code == "nonce-mismatch" and a.agent_id == thief.agent_id for a in store.list_audit()
    )


async def test_time_cannot_run_backwards_along_a_chain_even_after_a_restart(
    config: VerifierConfig,
) -> None:
    skew = config.stream.clock_skew
    first = await start(config)
    try:
        agent = await enroll_agent(first, new_token(first.core.store))
        chain = Chain(agent.agent_id, agent.signer)
        for _ in range(3):
            answer = await _send(first, agent, lambda n: chain.next(n, now()))
            assert answer.receipt is not None, answer
        latest = now()
    finally:
        await first.stop(0)
    # A fresh process: the chain's latest time can only have come from the store.
    running = await start(config)
    try:

        def at(created_at: datetime) -> bytes:
            """seq 4, offline (no nonce), without moving the test's chain."""
            return Chain(agent.agent_id, agent.signer, chain.seq, chain.prev).next(b"", created_at)

        answer = await _send(running, agent, lambda _n: at(latest - timedelta(days=29)))
        assert answer.rejection is not None, answer
        assert answer.rejection.code == "evidence-time-reversed"
        assert not answer.rejection.retryable
        assert answer.status == grpc.StatusCode.FAILED_PRECONDITION
        answer = await _send(running, agent, lambda _n: at(latest - skew * 2))
        assert answer.rejection is not None, answer
        assert answer.rejection.code == "evidence-time-reversed"
        # Within the allowed skew of the chain's latest time it is accepted.
        answer = await _send(running, agent, lambda _n: at(latest - skew / 2))
        assert answer.receipt is not None, answer
        assert (answer.receipt.freshness, answer.receipt.seq) == (Freshness.OFFLINE, 4)
        store = running.core.store
        assert any(a.code == "evidence-time-reversed" for a in store.list_audit())
    finally:
        await running.stop(0)
