"""The landmark service over real gRPC on loopback, against an agent-side answerer written
here (docs/protocol.md §12): a session yields a statement `verify_statement` accepts; every way
an agent can fail a session ends the call with its status and no statement."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from attest import landmark
from attest.keys import SoftwareSigner
from attest.v1 import attest_pb2 as pb
from attest.v1 import attest_pb2_grpc as pb_grpc
from tests.verifier.conftest import make_config
from verifier.landmark_config import LandmarkConfig
from verifier.landmark_service import LandmarkServer, SessionEnded, parse_hello
from verifier.server import start

AGENT_ID = "agent-1"
Answer = Callable[[int, bytes], pb.ProbeAnswer | None]


def landmark_config(tmp_path: Path, **changes: object) -> LandmarkConfig:
    config = LandmarkConfig(
        id="lm-fra", lat=50.11, lon=8.68, listen="127.0.0.1:0", state_dir=tmp_path / "lm",
        probes=8, metrics_listen="", answer_timeout_ms=1000,
    )  # fmt: skip
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[LandmarkServer]:
    running = LandmarkServer(landmark_config(tmp_path))
    await running.start()
    try:
        yield running
    finally:
        await running.stop(0)


def honest(signer: SoftwareSigner) -> Callable[[int, bytes], pb.ProbeAnswer]:
    def reply(seq: int, challenge: bytes) -> pb.ProbeAnswer:
        return pb.ProbeAnswer(seq=seq, signature=landmark.answer(signer, challenge))

    return reply


async def probe(
    port: int,
    signer: SoftwareSigner,
    reply: Answer | None = None,
    hello: pb.ProbeHello | None = None,
    started: asyncio.Event | None = None,
) -> tuple[grpc.StatusCode, bytes | None]:
    """One session as an agent runs it; `reply` None for a probe answers nothing (silence)."""
    reply = reply or honest(signer)
    hello = hello or pb.ProbeHello(agent_id=AGENT_ID, agent_public_key=signer.public_key.spki_der)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = pb_grpc.LandmarkStub(channel).Probe()  # type: ignore[call-arg]
        try:
            await call.write(pb.ProbeReply(hello=hello))
            while True:
                message = await call.read()
                if not isinstance(message, pb.LandmarkMessage):  # EOF
                    return grpc.StatusCode.OK, None
                if message.WhichOneof("kind") == "statement":
                    return grpc.StatusCode.OK, message.statement
                if started is not None:
                    started.set()
                answer = reply(message.challenge.seq, message.challenge.challenge)
                if answer is not None:
                    await call.write(pb.ProbeReply(answer=answer))
        except grpc.aio.AioRpcError as exc:
            return exc.code(), None


def sessions_now(server: LandmarkServer, result: str) -> float:
    value = server.metrics.registry.get_sample_value(
        "gpu_attest_landmark_sessions_total", {"result": result}
    )
    return value or 0.0


async def sessions(server: LandmarkServer, result: str, want: float = 1.0) -> float:
    """The session counter once it reaches `want` (or after 5 s): the landmark counts a session
    when its handler returns, which can be just after the agent has read the last message."""
    for _ in range(500):
        if sessions_now(server, result) >= want:
            break
        await asyncio.sleep(0.01)
    return sessions_now(server, result)


async def test_a_session_yields_a_statement_the_verifier_accepts(server: LandmarkServer) -> None:
    agent = SoftwareSigner.generate("ecdsa-p256-sha256")
    code, raw = await probe(server.port, agent)
    assert code is grpc.StatusCode.OK and raw is not None
    statement = landmark.verify_statement(
        raw, server.signer.public_key, agent_id=AGENT_ID, agent_keys={agent.public_key.spki_der}
    )
    assert statement.landmark_id == "lm-fra" and statement.probes == server.config.probes
    assert 0 < statement.rtt_min_ns == min(statement.rtt_ns) < 10**9
    # Loopback: the bound is far below the distance to anywhere else.
    assert landmark.bound_km(statement.rtt_min_ns) < 3000
    assert await sessions(server, "ok") == 1
    assert server.metrics.registry.get_sample_value("gpu_attest_landmark_probes_total") == 8


async def test_the_statement_is_of_the_key_the_landmark_keeps(server: LandmarkServer) -> None:
    agent = SoftwareSigner.generate()
    _, raw = await probe(server.port, agent)
    assert raw is not None
    with pytest.raises(Exception, match="signature"):
        landmark.verify_statement(
            raw, SoftwareSigner.generate().public_key, agent_id=AGENT_ID,
            agent_keys={agent.public_key.spki_der},
        )  # fmt: skip


async def test_an_answer_by_another_key_ends_without_a_statement(server: LandmarkServer) -> None:
    agent, impostor = SoftwareSigner.generate(), SoftwareSigner.generate()
    code, raw = await probe(server.port, agent, honest(impostor))
    assert (code, raw) == (grpc.StatusCode.UNAUTHENTICATED, None)
    assert await sessions(server, "bad-signature") == 1


async def test_one_bad_answer_among_good_ones_is_caught(server: LandmarkServer) -> None:
    agent = SoftwareSigner.generate()
    good = honest(agent)

    def reply(seq: int, challenge: bytes) -> pb.ProbeAnswer:
        answer = good(seq, challenge)
        if seq == 5:
            answer.signature = bytes([answer.signature[0] ^ 1]) + answer.signature[1:]
        return answer

    assert await probe(server.port, agent, reply) == (grpc.StatusCode.UNAUTHENTICATED, None)


async def test_a_garbage_answer_ends_the_session_at_once(server: LandmarkServer) -> None:
    """Each answer is checked before the next challenge: a peer answering garbage holds a
    session for one round trip, not for every probe's timeout."""
    agent = SoftwareSigner.generate()
    asked: list[int] = []

    def reply(seq: int, challenge: bytes) -> pb.ProbeAnswer:
        asked.append(seq)
        return pb.ProbeAnswer(seq=seq, signature=b"\x00" * 64)

    assert await probe(server.port, agent, reply) == (grpc.StatusCode.UNAUTHENTICATED, None)
    assert asked == [0]


async def test_a_wrong_seq_ends_without_a_statement(server: LandmarkServer) -> None:
    agent = SoftwareSigner.generate()
    good = honest(agent)

    def reply(seq: int, challenge: bytes) -> pb.ProbeAnswer:
        answer = good(seq, challenge)
        answer.seq = seq + 1
        return answer

    assert await probe(server.port, agent, reply) == (grpc.StatusCode.INVALID_ARGUMENT, None)
    assert await sessions(server, "bad-answer") == 1


async def test_a_silent_agent_times_out(tmp_path: Path) -> None:
    running = LandmarkServer(landmark_config(tmp_path, answer_timeout_ms=200))
    await running.start()
    try:
        agent = SoftwareSigner.generate()
        good = honest(agent)

        def reply(seq: int, challenge: bytes) -> pb.ProbeAnswer | None:
            return good(seq, challenge) if seq < 3 else None  # goes quiet at probe 3

        code, raw = await probe(running.port, agent, reply)
        assert (code, raw) == (grpc.StatusCode.DEADLINE_EXCEEDED, None)
        assert await sessions(running, "timeout") == 1
    finally:
        await running.stop(0)


async def test_no_hello_times_out(tmp_path: Path) -> None:
    running = LandmarkServer(landmark_config(tmp_path, hello_timeout_s=1))
    await running.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            call = pb_grpc.LandmarkStub(channel).Probe()  # type: ignore[call-arg]
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call.read()
        assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        await running.stop(0)


async def test_sessions_beyond_max_sessions_are_refused(tmp_path: Path) -> None:
    running = LandmarkServer(landmark_config(tmp_path, max_sessions=1))
    await running.start()
    try:
        agent = SoftwareSigner.generate()
        started = asyncio.Event()
        # The first session stalls on its first challenge (until its 1 s answer timeout).
        first = asyncio.create_task(probe(running.port, agent, lambda *_: None, started=started))
        await asyncio.wait_for(started.wait(), 5)
        assert await probe(running.port, agent) == (grpc.StatusCode.RESOURCE_EXHAUSTED, None)
        assert (await first)[0] is grpc.StatusCode.DEADLINE_EXCEEDED
        assert await sessions(running, "busy") == 1
        # The slot is free again.
        code, raw = await probe(running.port, agent)
        assert code is grpc.StatusCode.OK and raw is not None
    finally:
        await running.stop(0)


@pytest.mark.parametrize(
    "hello",
    [
        pb.ProbeHello(agent_id="not an id", agent_public_key=b""),
        pb.ProbeHello(agent_id=AGENT_ID, agent_public_key=b"\x30\x03garbage"),
        pb.ProbeHello(agent_id="", agent_public_key=b""),
    ],
    ids=["bad-id", "bad-key", "empty"],
)
async def test_a_bad_hello_is_invalid_argument(
    server: LandmarkServer, hello: pb.ProbeHello
) -> None:
    code, raw = await probe(server.port, SoftwareSigner.generate(), hello=hello)
    assert (code, raw) == (grpc.StatusCode.INVALID_ARGUMENT, None)
    assert await sessions(server, "bad-hello") == 1


async def test_an_answer_before_a_hello_is_invalid_argument(server: LandmarkServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = pb_grpc.LandmarkStub(channel).Probe()  # type: ignore[call-arg]
        await call.write(pb.ProbeReply(answer=pb.ProbeAnswer(seq=0, signature=b"x")))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


_KEY = SoftwareSigner.generate().public_key.spki_der


@given(agent_id=st.text(max_size=140), key=st.binary(max_size=200) | st.just(_KEY))
def test_parse_hello_takes_an_id_and_a_key_or_refuses(agent_id: str, key: bytes) -> None:
    reply = pb.ProbeReply(hello=pb.ProbeHello(agent_id=agent_id, agent_public_key=key))
    try:
        parsed_id, parsed_key = parse_hello(reply)
    except SessionEnded as ended:
        assert ended.code is grpc.StatusCode.INVALID_ARGUMENT
        return
    assert parsed_id == agent_id and parsed_key.spki_der == key


@given(raw=st.binary(max_size=300))
def test_parse_hello_of_any_bytes_refuses_or_parses(raw: bytes) -> None:
    try:
        reply = pb.ProbeReply.FromString(raw)
    except DecodeError:  # not a message at all: grpc would not deliver it
        return
    try:
        parse_hello(reply)
    except SessionEnded as ended:
        assert ended.code is grpc.StatusCode.INVALID_ARGUMENT


async def test_the_key_survives_a_restart(tmp_path: Path) -> None:
    first = LandmarkServer(landmark_config(tmp_path))
    again = LandmarkServer(landmark_config(tmp_path))
    assert first.signer.public_key == again.signer.public_key
    assert (tmp_path / "lm" / "landmark.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "lm").stat().st_mode & 0o777 == 0o700


async def test_verifier_serve_with_a_landmark_answers_probes(tmp_path: Path) -> None:
    path = tmp_path / "landmark.toml"
    path.write_text(
        'id = "lm-verifier"\nlat = 48.14\nlon = 11.58\nlisten = "127.0.0.1:0"\n'
        f'state_dir = "{tmp_path / "lm"}"\nmetrics_listen = ""\nprobes = 4\n'
    )
    config = dataclasses.replace(make_config(tmp_path), landmark=str(path))
    running = await start(config)
    try:
        assert running.landmark is not None
        agent = SoftwareSigner.generate()
        code, raw = await probe(running.ports["landmark"], agent)
        assert code is grpc.StatusCode.OK and raw is not None
        statement = landmark.verify_statement(
            raw, running.landmark.signer.public_key, agent_id=AGENT_ID,
            agent_keys={agent.public_key.spki_der},
        )  # fmt: skip
        assert (statement.landmark_id, statement.probes) == ("lm-verifier", 4)
    finally:
        await running.stop(0)
    # Stopped with the verifier.
    assert await probe(running.ports["landmark"], agent) == (grpc.StatusCode.UNAVAILABLE, None)
