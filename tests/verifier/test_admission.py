"""Anonymous clients and a hostile enrolled agent try to exhaust a real server (in-process
`verifier.server.start`, real gRPC over TLS on loopback): held health Watch streams on the
enroll port, a pile of idle Attest streams, a stream that never sends evidence. Enrolled agents
must keep attesting and enrollment must keep working (verifier/admission.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from attest import wire
from attest.v1 import attest_pb2 as pb
from attest.v1 import attest_pb2_grpc as pb_grpc
from tests.verifier.conftest import make_config
from tests.verifier.helpers import Chain
from tests.verifier.rpc import Enrolled, enroll_agent, mtls_channel, new_token
from tests.verifier.test_grpc import attest_n
from verifier.admission import peer_key
from verifier.config import VerifierConfig
from verifier.server import Running, start

WATCH_FLOOD = 80  # the count: more than the whole budget of the old single server
ATTEST_FLOOD = 40
LONG = 120.0  # deadline of held calls: longer than any test here


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def _flood_config(tmp_path: Path) -> VerifierConfig:
    config = make_config(tmp_path, max_streams=10, max_calls_per_peer=8)
    # The enroll port on every address, so that the flood (from ::1) and the honest clients
    # (from 127.0.0.1) are two client addresses, as they would be on a network.
    return VerifierConfig(**{**config.__dict__, "enroll_listen": "[::]:0"})


@pytest.fixture
async def flooded(tmp_path: Path) -> AsyncIterator[Running]:
    if not _ipv6_loopback():
        pytest.skip("needs the IPv6 loopback address for a second client address")
    running = await start(_flood_config(tmp_path))
    try:
        yield running
    finally:
        await running.stop(0)


async def _hold_watches(running: Running, count: int) -> tuple[list[object], int]:
    """Open `count` health Watch streams from [::1] without certificates; return the held
    calls and how many were refused with RESOURCE_EXHAUSTED."""
    creds = grpc.ssl_channel_credentials(root_certificates=running.core.ca.pem)
    options = (("grpc.ssl_target_name_override", "localhost"),)
    channels = [
        grpc.aio.secure_channel(f"[::1]:{running.ports['enroll']}", creds, options=options)
        for _ in range(4)
    ]
    held, refused = [], 0
    for i in range(count):
        call = health_pb2_grpc.HealthStub(channels[i % 4]).Watch(
            health_pb2.HealthCheckRequest(), timeout=LONG
        )
        try:
            reply = await call.read()
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
            refused += 1
            continue
        assert isinstance(reply, health_pb2.HealthCheckResponse)
        held.append(call)
    return [*held, *channels], refused


def test_peer_keys_name_the_client_address() -> None:
    assert peer_key("ipv4:10.1.2.3:5000") == "10.1.2.3"
    assert peer_key("ipv6:%5B::1%5D:5000") == "::/64"
    assert peer_key("ipv6:%5B2001:db8:1:2:aaaa::1%5D:443") == "2001:db8:1:2::/64"
    assert peer_key("ipv6:%5B2001:db8:1:2:bbbb::9%5D:1") == "2001:db8:1:2::/64"
    assert peer_key("ipv6:%5B::ffff:10.0.0.7%5D:80") == "10.0.0.7"
    assert peer_key("unix:/run/x.sock") == "unix:/run/x.sock"


async def test_enrolled_agents_attest_and_enroll_works_during_a_flood(flooded: Running) -> None:
    running = flooded
    store = running.core.store
    held, refused = await _hold_watches(running, WATCH_FLOOD)
    try:
        # One address holds at most max_calls_per_peer of them; the rest were refused at once.
        assert refused == WATCH_FLOOD - 8
        # A hostile enrolled agent opens stream after stream and never sends evidence: each new
        # one replaces its oldest, so it never holds more than max_streams_per_agent.
        hostile = await enroll_agent(running, new_token(store))
        streams = await _open_attest_streams(running, hostile, ATTEST_FLOOD)
        for call, _ in streams[:-2]:
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await call.read()
            assert ended.value.code() == grpc.StatusCode.ABORTED
            assert (ended.value.details() or "").startswith("stream-replaced")
        for _ in range(200):  # replaced handlers may still be unwinding: bounded wait
            if running.core.agent_streams.count(hostile.agent_id) == 2:
                break
            await asyncio.sleep(0.05)
        assert running.core.agent_streams.count(hostile.agent_id) == 2
        # Meanwhile honest agents enroll and attest, and get receipts.
        for _ in range(3):
            agent = await enroll_agent(running, new_token(store))
            receipts = await attest_n(running, agent, Chain(agent.agent_id, agent.signer), 3)
            assert len(receipts) == 3
        # The hostile agent's newest stream still works for it.
        call, nonce = streams[-1]
        await _attest_on(call, nonce, Chain(hostile.agent_id, hostile.signer))
    finally:
        for item in held:
            if isinstance(item, grpc.aio.Call):
                item.cancel()
            else:
                await item.close()  # type: ignore[attr-defined]


Call = grpc.aio.StreamStreamCall[pb.AgentMessage, pb.VerifierMessage]


async def _open_attest_streams(
    running: Running, agent: Enrolled, count: int
) -> list[tuple[Call, bytes]]:
    """`count` Attest streams of `agent`, each with the nonce of its first challenge."""
    channel = mtls_channel(running, agent)
    calls = []
    for _ in range(count):
        call = pb_grpc.AttestationStub(channel).Attest(timeout=LONG)  # type: ignore[call-arg]
        first = await call.read()
        assert isinstance(first, pb.VerifierMessage) and first.HasField("challenge"), first
        calls.append((call, wire.challenge_from_pb(first.challenge).nonce))
    return calls


async def _attest_on(call: Call, nonce: bytes, chain: Chain) -> None:
    raw = chain.next(nonce, datetime.now(UTC))
    await call.write(pb.AgentMessage(evidence=raw))
    message = await call.read()
    assert isinstance(message, pb.VerifierMessage)
    assert message.WhichOneof("kind") == "receipt", message
    assert wire.decode_receipt(message.receipt).checkpoint


async def test_a_stream_that_sends_no_evidence_is_closed(tmp_path: Path) -> None:
    running = await start(make_config(tmp_path, challenge_ttl_s=10))
    try:
        agent = await enroll_agent(running, new_token(running.core.store))
        async with mtls_channel(running, agent) as channel:
            call = pb_grpc.AttestationStub(channel).Attest(timeout=LONG)  # type: ignore[call-arg]
            first = await call.read()
            assert isinstance(first, pb.VerifierMessage) and first.HasField("challenge")
            # Idle: a refreshed challenge at ttl/2, then the stream ends at ttl.
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                while True:
                    message = await asyncio.wait_for(call.read(), timeout=LONG)
                    assert isinstance(message, pb.VerifierMessage), message
                    assert message.HasField("challenge")
            assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert (ended.value.details() or "").startswith("stream-idle")
        # The server's handler may still be unwinding when the client sees the status: wait
        # (bounded) for it to release the stream's slot rather than race it.
        for _ in range(200):
            if running.core.agent_streams.count(agent.agent_id) == 0:
                break
            await asyncio.sleep(0.05)
        assert running.core.agent_streams.count(agent.agent_id) == 0
    finally:
        await running.stop(0)
