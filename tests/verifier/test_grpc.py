"""Real gRPC over loopback with TLS and mTLS against a real SQLite store."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from attest import wire
from attest.envelope import envelope_hash, rotation_statement
from attest.keys import SoftwareSigner
from attest.model import Freshness
from attest.v1 import attest_pb2 as pb
from attest.v1 import attest_pb2_grpc as pb_grpc
from tests.verifier.conftest import make_config
from tests.verifier.helpers import Chain
from tests.verifier.rpc import (
    Enrolled,
    Stream,
    check_receipt,
    csr_for,
    enroll_agent,
    mtls_channel,
    new_token,
    tls_channel,
)
from verifier.enroll import revoke
from verifier.server import Running, start


def now() -> datetime:
    return datetime.now(UTC)


async def attest_n(running: Running, agent: Enrolled, chain: Chain, n: int) -> list[bytes]:
    """Open a stream, send n fresh envelopes, check each receipt; return the receipts."""
    receipts = []
    async with mtls_channel(running, agent) as channel:
        stream = Stream(channel)
        challenge = await stream.challenge()
        assert challenge.last_seq == chain.seq
        for _ in range(n):
            raw = chain.next(challenge.nonce, now())
            await stream.send(raw)
            message = await stream.recv()
            assert message.WhichOneof("kind") == "receipt", message
            receipt = check_receipt(agent, message.receipt, raw)
            assert receipt.freshness is Freshness.NONCE and receipt.seq == chain.seq
            assert receipt.checkpoint  # verified by check_receipt: its tree holds log_index
            receipts.append(message.receipt)
            assert message.HasField("next_challenge")  # one message answers each envelope
            challenge = wire.challenge_from_pb(message.next_challenge)
            assert challenge.last_seq == chain.seq
            assert challenge.last_hash == envelope_hash(raw)
        await stream.call.done_writing()
        assert await stream.status() == grpc.StatusCode.OK
    return receipts


async def test_enroll_attest_and_receipts(running: Running) -> None:
    store = running.core.store
    agent = await enroll_agent(running, new_token(store))
    chain = Chain(agent.agent_id, agent.signer)
    await attest_n(running, agent, chain, 3)
    record = store.get_agent(agent.agent_id)
    assert record is not None and record.last_seq == 3
    stored = store.get_attestation(agent.agent_id, 2)
    assert stored is not None and stored.envelope_hash == envelope_hash(chain.sent[1])
    third = store.get_attestation(agent.agent_id, 3)
    assert third is not None and store.get_envelope(third.log_index) == chain.sent[2]
    # A reconnecting agent learns the chain head from the first challenge.
    await attest_n(running, agent, chain, 1)


async def test_checked_gpu_entries_are_kept_for_admitted_open_streams_only(
    tmp_path: Path,
) -> None:
    server = await start(make_config(tmp_path, gpu_check_cache_size=1))
    try:
        store = server.core.store
        first, second = [await enroll_agent(server, new_token(store)) for _ in range(2)]
        chains = [Chain(a.agent_id, a.signer) for a in (first, second)]
        async with mtls_channel(server, first) as one, mtls_channel(server, second) as two:
            streams = [Stream(one), Stream(two)]
            for stream, chain in zip(streams, chains, strict=True):
                nonce = (await stream.challenge()).nonce
                await stream.send(chain.next(nonce, now()))
                assert (await stream.recv()).WhichOneof("kind") == "receipt"
            # Room for one: the first agent's entries are kept, the second's are not.
            assert list(server.core.gpu_sections) == [first.agent_id]
            for stream in streams:
                await stream.call.done_writing()
                assert await stream.status() == grpc.StatusCode.OK
        assert server.core.gpu_sections == {}  # they leave with their stream
    finally:
        await server.stop(0)


async def test_enroll_is_idempotent_for_the_same_key_only(running: Running) -> None:
    token = new_token(running.core.store)
    signer = SoftwareSigner.generate("ecdsa-p256-sha256")
    first = await enroll_agent(running, token, signer)
    again = await enroll_agent(running, token, signer)
    assert again.agent_id == first.agent_id
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await enroll_agent(running, token)
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "token-used" in (info.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await enroll_agent(running, "gat1_not-a-token")
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def _rejected(
    running: Running, agent: Enrolled, raw_for: object, code: str, status: grpc.StatusCode
) -> None:
    store = running.core.store
    log_size = store.log_size()
    async with mtls_channel(running, agent) as channel:
        stream = Stream(channel)
        challenge = await stream.challenge()
        raw = raw_for(challenge.nonce)  # type: ignore[operator]
        await stream.send(raw)
        message = await stream.recv()
        assert message.WhichOneof("kind") == "rejection", message
        assert message.rejection.code == code
        assert message.rejection.envelope_hash == envelope_hash(raw)
        assert await stream.status() == status
        assert code in (await stream.call.details() or "")
    assert store.log_size() == log_size  # nothing was stored
    assert store.get_envelope(log_size) is None


async def test_hostile_envelopes_get_typed_errors_while_others_keep_working(
    running: Running,
) -> None:
    store = running.core.store
    victim = await enroll_agent(running, new_token(store))
    bystander = await enroll_agent(running, new_token(store))
    chain = Chain(victim.agent_id, victim.signer)
    other = Chain(bystander.agent_id, bystander.signer)
    await attest_n(running, victim, chain, 1)

    async with mtls_channel(running, bystander) as channel:
        stream = Stream(channel)
        challenge = await stream.challenge()

        def flipped(nonce: bytes) -> bytes:
            data = bytearray(Chain(victim.agent_id, victim.signer, chain.seq, chain.prev).next(
                nonce, now()
            ))  # fmt: skip
            data[10] ^= 0x01  # inside the payload
            return bytes(data)

        await _rejected(running, victim, flipped, "signature-invalid",
                        grpc.StatusCode.UNAUTHENTICATED)  # fmt: skip
        # The bystander's stream, opened before, still works after the victim's rejection.
        raw = other.next(challenge.nonce, now())
        await stream.send(raw)
        message = await stream.recv()
        assert message.WhichOneof("kind") == "receipt"
        check_receipt(bystander, message.receipt, raw)

    await _rejected(running, victim, lambda _n: chain.sent[0], "evidence-replayed",
                    grpc.StatusCode.ALREADY_EXISTS)  # fmt: skip
    forger = SoftwareSigner.generate("ecdsa-p256-sha256")
    await _rejected(
        running, victim,
        lambda n: Chain(victim.agent_id, forger, chain.seq, chain.prev).next(n, now()),
        "signature-unknown-key", grpc.StatusCode.PERMISSION_DENIED,
    )  # fmt: skip
    await _rejected(
        running, victim,
        lambda n: Chain(victim.agent_id, victim.signer, chain.seq + 1, b"\x01" * 32).next(n, now()),
        "evidence-gap", grpc.StatusCode.FAILED_PRECONDITION,
    )  # fmt: skip
    audit = store.list_audit()
    assert {"signature-invalid", "evidence-replayed", "signature-unknown-key"} <= {
        a.code for a in audit
    }
    record = store.get_agent(victim.agent_id)
    assert record is not None and record.last_seq == 1
    # And the victim itself still attests after all of that.
    await attest_n(running, victim, chain, 1)


async def test_attest_without_client_certificate_is_refused(running: Running) -> None:
    async with tls_channel(running, "enroll") as channel:
        stream = Stream(channel)
        assert await stream.status() == grpc.StatusCode.UNAUTHENTICATED


async def test_mtls_port_refuses_a_client_without_certificate(running: Running) -> None:
    async with tls_channel(running, "listen") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pb_grpc.AttestationStub(channel).Enroll(pb.EnrollRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_revoked_agent_is_refused(running: Running) -> None:
    store = running.core.store
    agent = await enroll_agent(running, new_token(store))
    revoke(store, agent.agent_id, now(), "test")
    async with mtls_channel(running, agent) as channel:
        stream = Stream(channel)
        assert await stream.status() == grpc.StatusCode.PERMISSION_DENIED
        assert "agent-revoked" in (await stream.call.details() or "")


async def test_rotate_key_signed_by_the_old_key(running: Running) -> None:
    store = running.core.store
    agent = await enroll_agent(running, new_token(store))
    chain = Chain(agent.agent_id, agent.signer)
    await attest_n(running, agent, chain, 1)
    new = SoftwareSigner.generate("ecdsa-p256-sha256")
    message = rotation_statement(agent.agent_id, new.public_key.spki_der)
    request = pb.RotateKeyRequest(
        agent_id=agent.agent_id, new_public_key=new.public_key.spki_der, csr=csr_for(new),
        old_key_signature=pb.Signature(keyid=agent.signer.public_key.keyid,
                                       sig=agent.signer.sign(message)),
    )  # fmt: skip
    async with mtls_channel(running, agent) as channel:
        stub = pb_grpc.AttestationStub(channel)
        forged = pb.RotateKeyRequest()
        forged.CopyFrom(request)
        forged.old_key_signature.sig = new.sign(message)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.RotateKey(forged, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        response = await stub.RotateKey(request, timeout=10)
    rotated = Enrolled(agent.agent_id, new, response.client_certificate, agent.ca_pem,
                       agent.verifier_key)  # fmt: skip
    chain.signer = new
    await attest_n(running, rotated, chain, 1)
    kinds = {a.kind.value for a in store.list_audit()}
    assert "rotation" in kinds


async def test_health_and_reflection_answer(running: Running) -> None:
    async with tls_channel(running, "enroll") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(
            health_pb2.HealthCheckRequest(service="attest.v1.Attestation"), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(timeout=5)
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        answer = await call.read()
        await call.done_writing()
        names = {s.name for s in answer.list_services_response.service}
        assert "attest.v1.Attestation" in names and "grpc.health.v1.Health" in names


async def test_challenge_is_reissued_before_expiry(tmp_path: Path) -> None:
    config = make_config(tmp_path, challenge_ttl_s=10)
    running = await start(config)
    try:
        agent = await enroll_agent(running, new_token(running.core.store))
        async with mtls_channel(running, agent) as channel:
            stream = Stream(channel)
            first = await stream.challenge()
            second = await asyncio.wait_for(stream.challenge(), timeout=15)
            assert first.nonce != second.nonce
            raw = Chain(agent.agent_id, agent.signer).next(first.nonce, now())
            await stream.send(raw)  # the older, still valid nonce is accepted too
            message = await stream.recv()
            assert message.WhichOneof("kind") == "receipt"
            assert wire.decode_receipt(message.receipt).checkpoint
    finally:
        await running.stop(0)


async def test_a_stream_with_a_stale_head_rechecks_against_the_store(running: Running) -> None:
    store = running.core.store
    agent = await enroll_agent(running, new_token(store))
    chain = Chain(agent.agent_id, agent.signer)
    async with mtls_channel(running, agent) as first:
        old = Stream(first)
        old_challenge = await old.challenge()  # this stream saw head 0
        await attest_n(running, agent, chain, 1)  # another stream moves the head to 1
        raw = chain.next(old_challenge.nonce, now())
        await old.send(raw)
        message = await old.recv()
        assert message.WhichOneof("kind") == "receipt", message
        check_receipt(agent, message.receipt, raw)
    assert not [f for f in store.iter_findings() if f.rule == "evidence-gap"]


async def test_oversized_envelope_gets_a_size_error_and_nothing_is_stored(tmp_path: Path) -> None:
    running = await start(make_config(tmp_path, max_message_bytes=4096))
    try:
        agent = await enroll_agent(running, new_token(running.core.store))
        many = tuple(f"GPU-{i:08d}-0000-0000-0000-000000000000" for i in range(8))
        chain = Chain(agent.agent_id, agent.signer, uuids=many)
        await _rejected(
            running, agent, lambda n: chain.next(n, now()), "size-limit",
            grpc.StatusCode.INVALID_ARGUMENT,
        )  # fmt: skip
        assert running.core.store.log_size() == 0
    finally:
        await running.stop(0)


async def test_envelopes_beyond_max_inflight_wait_their_turn_and_all_commit(
    tmp_path: Path,
) -> None:
    """With one decode slot and the store's write lock held elsewhere, the first envelope
    holds the slot while its commit waits; the others wait as received bytes (the gauge
    counts them), and once the lock is released each is checked, committed and answered."""
    config = make_config(tmp_path, max_inflight=1)
    running = await start(config)
    waiting = functools.partial(
        running.core.metrics.registry.get_sample_value, "gpu_attest_verifier_envelopes_waiting"
    )
    try:
        store = running.core.store
        agents = [await enroll_agent(running, new_token(store)) for _ in range(4)]
        chains = [Chain(a.agent_id, a.signer) for a in agents]
        async with contextlib.AsyncExitStack() as stack:
            channels = [await stack.enter_async_context(mtls_channel(running, a)) for a in agents]
            streams = [Stream(channel) for channel in channels]
            nonces = [(await stream.challenge()).nonce for stream in streams]
            blocker = sqlite3.connect(config.database_url, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")  # the group commit now waits for this lock
            try:
                sent = []
                for stream, chain, nonce in zip(streams, chains, nonces, strict=True):
                    sent.append(chain.next(nonce, now()))
                    await stream.send(sent[-1])
                for _ in range(100):
                    if waiting() == len(agents) - 1:
                        break
                    await asyncio.sleep(0.05)
                assert waiting() == len(agents) - 1
            finally:
                blocker.rollback()
                blocker.close()
            for stream, agent, raw in zip(streams, agents, sent, strict=True):
                message = await asyncio.wait_for(stream.recv(), timeout=10)
                assert message.WhichOneof("kind") == "receipt", message
                check_receipt(agent, message.receipt, raw)
                await stream.call.done_writing()
                assert await stream.status() == grpc.StatusCode.OK
        assert waiting() == 0
        assert all(store.get_attestation(a.agent_id, 1) is not None for a in agents)
    finally:
        await running.stop(0)
