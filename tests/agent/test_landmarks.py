"""The agent's landmark responder over real gRPC on loopback: a minimal landmark written here
with attest.landmark (the agent never imports the verifier's), the prober, the statements in the
next evidence (and only once), `locate --json`, and the agent.toml keys."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import landmarks as al
from agent.attestor import Attestor, AttestorSettings, HostOverride
from agent.cli import main
from agent.config import MAX_LANDMARKS, AgentConfig, load_config, parse_config
from agent.exits import AgentExit
from agent.metrics import AgentMetrics
from agent.simulate import SimulatedInventory, parse_machine
from agent.spool import Spool
from attest import errors, wire
from attest import landmark as lm
from attest.envelope import EVIDENCE_PAYLOAD_TYPE, HEARTBEAT_PAYLOAD_TYPE, verify
from attest.hostport import HostPort
from attest.keys import SoftwareSigner
from attest.v1 import attest_pb2 as pb
from attest.v1 import attest_pb2_grpc as pb_grpc
from attest.wire import decode_envelope, decode_evidence, decode_heartbeat
from tests.agent.live import enrolled_agent, run_until
from tests.verifier.sim import free_port
from verifier.server import Running

from .helpers import MACHINE_8X_H100, enrolled_state_dir

AGENT_ID = "agt-1"


class TestLandmark(pb_grpc.LandmarkServicer):
    """A landmark as docs/protocol.md describes it, with ways to misbehave: `mode` is "honest",
    "other-session" (challenge 1 belongs to another session), "hang" (never sends a statement)
    or "other-agent" (signs a statement about another agent)."""

    __test__ = False

    def __init__(self, probes: int = 8, mode: str = "honest") -> None:
        self.key = SoftwareSigner.generate("ed25519")
        self.probes, self.mode = probes, mode
        self.answers: list[pb.ProbeAnswer] = []
        self.sessions = 0

    async def Probe(  # noqa: N802 - the generated servicer's name
        self,
        request_iterator: AsyncIterator[pb.ProbeReply],
        context: grpc.aio.ServicerContext[pb.ProbeReply, pb.LandmarkMessage],
    ) -> AsyncIterator[pb.LandmarkMessage]:
        replies = aiter(request_iterator)
        hello = (await anext(replies)).hello
        self.sessions += 1
        session = secrets.token_bytes(lm.SESSION_LEN)
        challenges, signatures, rtts = [], [], []
        for seq in range(self.probes):
            own = secrets.token_bytes(lm.SESSION_LEN) if self.mode == "other-session" else session
            challenge = lm.challenge_bytes(
                "lm-fra", own if seq == 1 else session, seq, secrets.token_bytes(32)
            )
            start = time.monotonic_ns()
            yield pb.LandmarkMessage(challenge=pb.LandmarkChallenge(seq=seq, challenge=challenge))
            reply = await anext(replies)
            rtts.append(max(1, time.monotonic_ns() - start))
            self.answers.append(reply.answer)
            challenges.append(challenge)
            signatures.append(reply.answer.signature)
        if self.mode == "hang":
            await asyncio.sleep(3600)
        statement = lm.Statement(
            landmark_id="lm-fra", lat=50.11, lon=8.68,
            agent_id="agt-other" if self.mode == "other-agent" else hello.agent_id,
            agent_public_key=hello.agent_public_key, session=session,
            challenges=tuple(challenges), signatures=tuple(signatures), rtt_ns=tuple(rtts),
            rtt_min_ns=min(rtts), measured_at=datetime.now(UTC),
        )  # fmt: skip
        yield pb.LandmarkMessage(statement=lm.sign_statement(statement, self.key))


async def serve(landmark: TestLandmark) -> tuple[grpc.aio.Server, HostPort]:
    server = grpc.aio.server()
    pb_grpc.add_LandmarkServicer_to_server(landmark, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, HostPort("127.0.0.1", port)


AGENT = SoftwareSigner.generate("ecdsa-p256-sha256")


async def test_the_agent_answers_every_challenge_and_the_statement_verifies() -> None:
    landmark = TestLandmark(probes=8)
    server, address = await serve(landmark)
    try:
        located = await al.probe(address, AGENT_ID, AGENT)
    finally:
        await server.stop(None)
    keys = {AGENT.public_key.spki_der}
    statement = lm.verify_statement(
        located.envelope, landmark.key.public_key, agent_id=AGENT_ID, agent_keys=keys
    )
    assert statement == located.statement
    assert statement.probes == 8 == len(landmark.answers)
    assert [a.seq for a in landmark.answers] == list(range(8))
    measurement = located.measurement()
    assert (measurement.landmark_id, measurement.statement) == ("lm-fra", located.envelope)


async def test_a_challenge_for_another_session_is_never_answered() -> None:
    landmark = TestLandmark(mode="other-session")
    server, address = await serve(landmark)
    try:
        with pytest.raises(errors.LandmarkProbeError, match="another session") as caught:
            await al.probe(address, AGENT_ID, AGENT)
    finally:
        await server.stop(None)
    assert caught.value.result == "malformed"
    assert [a.seq for a in landmark.answers] == [0]  # challenge 1 got no signature


async def test_a_landmark_that_never_finishes_times_out_with_one_clear_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    landmark = TestLandmark(probes=2, mode="hang")
    server, address = await serve(landmark)
    caplog.set_level(logging.WARNING)
    try:
        result = await al.probe_logged(address, AGENT_ID, AGENT, AgentMetrics(), timeout_s=1.0)
    finally:
        await server.stop(None)
    assert isinstance(result, al.LandmarkProbeFailure)
    assert result.result == "timeout"
    lines = [r.getMessage() for r in caplog.records if "landmark" in r.getMessage()]
    assert len(lines) == 1
    assert f"landmark {address}: probe failed (timeout)" in lines[0]


async def test_unreachable_and_other_agent_statements_are_failures_not_crashes() -> None:
    metrics = AgentMetrics()
    nobody = HostPort("127.0.0.1", free_port())
    result = await al.probe_logged(nobody, AGENT_ID, AGENT, metrics, timeout_s=5.0)
    assert isinstance(result, al.LandmarkProbeFailure)
    assert result.result == "unreachable"
    landmark = TestLandmark(probes=2, mode="other-agent")
    server, address = await serve(landmark)
    try:
        with pytest.raises(errors.LandmarkProbeError, match="about agent 'agt-other'"):
            await al.probe(address, AGENT_ID, AGENT)
    finally:
        await server.stop(None)
    count = metrics.registry.get_sample_value
    assert count("gpu_attest_agent_landmark_probes_total", {"result": "unreachable"}) == 1


# --- the pure check of a statement ----------------------------------------------------------------


def _statement(agent: SoftwareSigner = AGENT) -> tuple[bytes, lm.Statement]:
    session = secrets.token_bytes(lm.SESSION_LEN)
    challenges = tuple(
        lm.challenge_bytes("lm-fra", session, seq, secrets.token_bytes(32)) for seq in range(3)
    )
    statement = lm.Statement(
        landmark_id="lm-fra", lat=50.11, lon=8.68, agent_id=AGENT_ID,
        agent_public_key=agent.public_key.spki_der, session=session, challenges=challenges,
        signatures=tuple(lm.answer(agent, c) for c in challenges), rtt_ns=(3000, 2000, 2500),
        rtt_min_ns=2000, measured_at=datetime(2026, 12, 5, tzinfo=UTC),
    )  # fmt: skip
    return lm.sign_statement(statement, SoftwareSigner.generate()), statement


def _check(raw: bytes, statement: lm.Statement, **changes: object) -> lm.Statement:
    expected: dict[str, object] = {
        "agent_id": AGENT_ID, "agent_key": AGENT.public_key.spki_der,
        "challenges": statement.challenges, "answers": statement.signatures,
    }  # fmt: skip
    expected.update(changes)
    return al.check_statement(raw, **expected)  # type: ignore[arg-type]


RAW, STATEMENT = _statement()


def test_check_statement_accepts_what_was_exchanged_and_nothing_else() -> None:
    assert _check(RAW, STATEMENT) == STATEMENT
    other = SoftwareSigner.generate("ecdsa-p256-sha256").public_key.spki_der
    for changes in (
        {"agent_id": "agt-2"},
        {"agent_key": other},
        {"challenges": STATEMENT.challenges[:2]},
        {"answers": (*STATEMENT.signatures[:2], b"x")},
    ):
        with pytest.raises(errors.LandmarkProbeError):
            _check(RAW, STATEMENT, **changes)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_check_statement_refuses_any_bytes_with_a_typed_error(raw: bytes) -> None:
    with pytest.raises(errors.LandmarkProbeError):
        _check(raw, STATEMENT)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_flipping_any_payload_byte_is_refused_or_changes_nothing_checked(
    data: st.DataObject,
) -> None:
    envelope = decode_envelope(RAW)
    position = data.draw(st.integers(0, len(envelope.payload) - 1))
    flipped = bytearray(envelope.payload)
    flipped[position] ^= data.draw(st.integers(1, 255))
    raw = pb.Envelope(
        payload_type=envelope.payload_type, payload=bytes(flipped),
        signatures=[pb.Signature(keyid=s.keyid, sig=s.sig) for s in envelope.signatures],
    ).SerializeToString()  # fmt: skip
    try:
        checked = _check(raw, STATEMENT)
    except errors.LandmarkProbeError:
        return
    # Accepted only when the flip left every field the agent checks as it was (e.g. a time or
    # a coordinate): the landmark's signature, which the verifier checks, then no longer holds.
    assert (checked.agent_id, checked.agent_public_key) == (AGENT_ID, STATEMENT.agent_public_key)
    assert (checked.challenges, checked.signatures) == (STATEMENT.challenges, STATEMENT.signatures)


# --- statements in the next evidence, once --------------------------------------------------------


def _attestor(tmp_path: Path, book: al.LandmarkBook) -> tuple[Attestor, SoftwareSigner]:
    signer = SoftwareSigner.generate("ecdsa-p256-sha256")
    settings = AttestorSettings(
        agent_id=AGENT_ID, site_id="", host_root=Path("/nonexistent"),
        state_dir=tmp_path, key_file=tmp_path / "agent.key",
        host_override=HostOverride("sim-host", None, "sim-site"),
    )  # fmt: skip
    inventory = SimulatedInventory(parse_machine(MACHINE_8X_H100))
    return Attestor(settings, signer, Spool.open(tmp_path, 1 << 22), inventory, book), signer


def _landmarks_of(envelope: bytes, signer: SoftwareSigner) -> tuple[str, ...]:
    key = signer.public_key
    payload = verify(decode_envelope(envelope), EVIDENCE_PAYLOAD_TYPE, {key.keyid: key}).payload
    return tuple(m.statement.hex() for m in decode_evidence(payload).landmarks)


async def test_statements_go_into_the_next_evidence_and_only_once(tmp_path: Path) -> None:
    landmark = TestLandmark(probes=3)
    server, address = await serve(landmark)
    book = al.LandmarkBook()
    attestor, signer = _attestor(tmp_path, book)
    try:
        runner = al.LandmarkRunner(
            [address], agent_id=AGENT_ID, signer=lambda: signer, book=book,
            metrics=AgentMetrics(), interval_s=3600,
        )  # fmt: skip
        await runner.cycle()
    finally:
        await server.stop(None)
    [measurement] = book.pending()
    assert measurement.landmark_id == "lm-fra"
    assert measurement.rtt_us == ()
    now = datetime(2026, 12, 5, tzinfo=UTC)
    first = attestor.produce(b"", now)
    second = attestor.produce(b"", now)
    assert _landmarks_of(first.envelope, signer) == (measurement.statement.hex(),)
    assert _landmarks_of(second.envelope, signer) == ()
    statement = lm.verify_statement(
        measurement.statement, landmark.key.public_key, agent_id=AGENT_ID,
        agent_keys={signer.public_key.spki_der},
    )  # fmt: skip
    assert statement.probes == 3


def test_a_newer_statement_put_while_evidence_was_built_is_kept() -> None:
    book = al.LandmarkBook()
    address = HostPort("127.0.0.1", 1)
    book.put(al.Located(address, RAW, STATEMENT))
    taken = book.pending()
    newer_raw, newer = _statement()
    book.put(al.Located(address, newer_raw, newer))
    book.carried(taken)
    assert [m.statement for m in book.pending()] == [newer_raw]


async def test_a_running_agent_carries_a_landmark_statement_to_the_verifier_once(
    tmp_path: Path, running: Running
) -> None:
    landmark = TestLandmark(probes=4)
    server, address = await serve(landmark)
    agent = await enrolled_agent(tmp_path, running)
    text = agent.config.read_text().replace("interval_seconds = 3600", "interval_seconds = 1")
    agent.config.write_text(f'{text}landmarks = ["{address}"]\nlandmark_interval = "1h"\n')
    cfg = load_config(agent.config)
    agent = type(agent)(agent.running, agent.config, cfg, agent.identity)
    store = running.core.store

    def carried() -> list[int]:
        seqs = []
        for seq in range(1, agent.record().last_seq + 1):
            accepted = store.get_attestation(agent.identity.agent_id, seq)
            assert accepted is not None
            raw = store.get_envelope(accepted.log_index)
            assert raw is not None
            # Landmark statements ride in whichever link comes next, heartbeat or full
            # evidence (docs/protocol.md §4.1).
            envelope = decode_envelope(raw)
            heartbeat = envelope.payload_type == HEARTBEAT_PAYLOAD_TYPE
            decode = decode_heartbeat if heartbeat else decode_evidence
            if decode(envelope.payload).landmarks:
                seqs.append(seq)
        return seqs

    try:
        await run_until(
            agent, lambda: bool(carried()) and agent.record().last_seq >= carried()[0] + 2
        )
    finally:
        await server.stop(None)
    assert len(carried()) == 1  # one probe cycle, one statement, carried once
    assert landmark.sessions == 1


# --- locate ---------------------------------------------------------------------------------------


async def test_locate_json_lists_each_landmark_and_exits_16_when_one_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    enrolled = enrolled_state_dir(state)
    landmark = TestLandmark(probes=5)
    server, address = await serve(landmark)
    nobody = HostPort("127.0.0.1", free_port())
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{state}"\nlandmarks = ["{address}", "{nobody}"]\n')
    try:
        code = await asyncio.to_thread(main, ["locate", "--config", str(config), "--json"])
    finally:
        await server.stop(None)
    assert code == AgentExit.LANDMARK
    assert int(code) == 16
    out = json.loads(capsys.readouterr().out)
    assert out["agent_id"] == enrolled.agent_id
    ok, failed = out["landmarks"]
    assert ok["ok"] is True
    assert (ok["landmark_id"], ok["address"], ok["probes"]) == ("lm-fra", str(address), 5)
    assert ok["rtt_min_ms"] > 0
    assert ok["bound_km"] == pytest.approx(lm.C_KM_PER_S * ok["rtt_min_ms"] / 2e3)
    assert (failed["ok"], failed["result"], failed["address"]) == (
        False,
        "unreachable",
        str(nobody),
    )


def test_locate_without_landmarks_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    enrolled_state_dir(state)
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{state}"\n')
    assert main(["locate", "--config", str(config)]) == AgentExit.CONFIG
    assert "no landmark configured" in capsys.readouterr().err


# --- agent.toml -----------------------------------------------------------------------------------


def test_landmark_keys_of_agent_toml() -> None:
    cfg = parse_config(
        'landmarks = ["lm-fra.example:7445", "[::1]:7445"]\nlandmark_interval = "2h"\n'
    )
    assert cfg.landmarks == (HostPort("lm-fra.example", 7445), HostPort("::1", 7445))
    assert cfg.landmark_interval_s == 7200
    assert AgentConfig().landmark_interval_s == 3600
    assert MAX_LANDMARKS == wire.MAX_LANDMARKS
    too_many = ", ".join(f'"h{i}:1"' for i in range(MAX_LANDMARKS + 1))
    for text, complaint in (
        ('landmark_interval = "30s"', "agent.toml: landmark_interval: '30s': must be from 1m"),
        ("landmark_interval = 3600", 'landmark_interval: must be a duration such as "1h"'),
        ('landmarks = ["nohost"]', "agent.toml: landmarks: item 0:"),
        ('landmarks = ["a:1", "a:1"]', "landmarks: lists an item twice"),
        (f"landmarks = [{too_many}]", f"landmarks: lists 65 landmarks; at most {MAX_LANDMARKS}"),
    ):
        with pytest.raises(errors.ConfigError) as caught:
            parse_config(text)
        assert complaint in str(caught.value)
