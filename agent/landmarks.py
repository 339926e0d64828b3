"""The agent's side of landmark round trips: dial each configured landmark, answer its
challenges at once, check and keep the statement it signs, and carry the newest one per landmark
in the next evidence (docs/design.md §2: location is a bound, never a position).

Agents only ever dial out, so the agent is the gRPC client of `Landmark.Probe`. The channel is
plaintext by design: nothing in it is secret and everything that matters is signed (the agent's
answers by its attestation key, the statement by the landmark's key), so a party in the middle
can only add delay, and delay only ever makes the agent look farther away.

`check_statement` is the pure core; `probe` is the gRPC shell; `LandmarkRunner` is the thread
that probes every `landmark_interval`; `LandmarkBook` hands statements to the attestor.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from agent.logs import get_logger
from agent.metrics import AgentMetrics
from attest import errors
from attest.hostport import HostPort
from attest.keys import SoftwareSigner
from attest.landmark import (
    MAX_PROBES,
    MAX_STATEMENT_BYTES,
    SESSION_LEN,
    STATEMENT_PAYLOAD_TYPE,
    Statement,
    answer,
    bound_km,
    decode_statement,
)
from attest.model import LandmarkMeasurement
from attest.v1 import attest_pb2 as pb
from attest.v1 import attest_pb2_grpc as pb_grpc
from attest.wire import decode_envelope

log = get_logger("landmarks")

#: One probe session, dial to statement: a landmark that has not finished by then is given up
#: for this cycle (64 probes at a second each would be far more than any real path needs).
PROBE_TIMEOUT_S = 30.0
#: The tail of a challenge after `landmark id || 0x00 || session`: seq (4) and nonce (32).
_TAIL = 4 + 32
_CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_STATEMENT_BYTES + 4096),
    ("grpc.enable_retries", 0),
)
#: gRPC status -> the bounded `result` label of a failed probe.
_STATUS_RESULTS = {
    grpc.StatusCode.UNAVAILABLE: "unreachable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "timeout",
}


@dataclass(frozen=True)
class Located:
    """A statement this agent checked: what `locate` prints and the evidence carries."""

    address: HostPort
    envelope: bytes  # the serialized envelope exactly as the landmark sent it
    statement: Statement

    def measurement(self) -> LandmarkMeasurement:
        return LandmarkMeasurement(self.statement.landmark_id, self.envelope, ())


# --- the pure core ---------------------------------------------------------------------------


def check_statement(
    raw: bytes,
    *,
    agent_id: str,
    agent_key: bytes,
    challenges: Sequence[bytes],
    answers: Sequence[bytes],
) -> Statement:
    """Decode a landmark's final message (untrusted bytes) and check it is about this probe.

    The agent does not know the landmark's key (the verifier takes it from the registry), so it
    cannot check the landmark's signature; it checks what it can know: the envelope and the
    statement decode, the statement names this agent and its key (SPKI DER), and its challenges
    and answers are exactly the ones exchanged, in order. Raises LandmarkProbeError (malformed).
    """
    try:
        envelope = decode_envelope(raw, MAX_STATEMENT_BYTES)
        if envelope.payload_type != STATEMENT_PAYLOAD_TYPE:
            raise errors.PayloadTypeError(f"payload type {envelope.payload_type[:64]!r}")
        if not envelope.signatures:
            raise errors.NoSignatureError("the statement is not signed")
        statement = decode_statement(envelope.payload)
    except errors.AttestError as exc:
        raise errors.LandmarkProbeError(f"the statement does not decode: {exc}") from exc
    if statement.agent_id != agent_id:
        raise errors.LandmarkProbeError(
            f"the statement is about agent {statement.agent_id!r}, not this one"
        )
    if statement.agent_public_key != agent_key:
        raise errors.LandmarkProbeError("the statement names another key than this agent's")
    if statement.challenges != tuple(challenges):
        raise errors.LandmarkProbeError("the statement's challenges are not the ones answered")
    if statement.signatures != tuple(answers):
        raise errors.LandmarkProbeError("the statement's answers are not this agent's")
    return statement


def _fits(challenge: bytes, prefix: bytes, seq: int) -> bool:
    """`challenge` is `prefix || seq || nonce`: the session pinned by the first challenge."""
    return (
        len(challenge) == len(prefix) + _TAIL
        and challenge.startswith(prefix)
        and challenge[len(prefix) : len(prefix) + 4] == struct.pack(">I", seq)
    )


def _first_prefix(challenge: bytes) -> bytes:
    """`landmark id || 0x00 || session` of a first challenge; b"" when it has no such shape."""
    prefix = challenge[:-_TAIL] if len(challenge) > _TAIL else b""
    if len(prefix) < SESSION_LEN + 2 or prefix[-SESSION_LEN - 1] != 0:
        return b""
    return prefix


# --- the gRPC shell ----------------------------------------------------------------------------


async def probe(
    address: HostPort, agent_id: str, signer: SoftwareSigner, timeout_s: float = PROBE_TIMEOUT_S
) -> Located:
    """Let the landmark at `address` measure this agent once; return its checked statement.

    `signer` is the software attestation key, by type: a TPM key is never used here, since a
    TPM signature takes ~200 ms and every millisecond in the timed loop widens the distance
    bound by ~150 km (docs/design.md §2). Raises LandmarkProbeError whose `result` says why:
    unreachable, refused, timeout or malformed.
    """
    spki = signer.public_key.spki_der
    challenges: list[bytes] = []
    answers: list[bytes] = []
    channel = grpc.aio.insecure_channel(str(address), options=_CHANNEL_OPTIONS)
    try:
        call = pb_grpc.LandmarkStub(channel).Probe(timeout=timeout_s)  # type: ignore[call-arg]
        try:
            hello = pb.ProbeHello(agent_id=agent_id, agent_public_key=spki)
            await call.write(pb.ProbeReply(hello=hello))
            raw = await _answer_challenges(call, signer, challenges, answers)
        finally:
            call.cancel()
    except grpc.aio.AioRpcError as exc:
        result = _STATUS_RESULTS.get(exc.code(), "refused")
        raise errors.LandmarkProbeError(
            # The details are the landmark's words: quoted and cut, never raw on a terminal.
            f"{exc.code().name}: {(exc.details() or 'no details')[:200]!r}",
            result,
        ) from exc
    finally:
        await channel.close(None)
    statement = check_statement(
        raw, agent_id=agent_id, agent_key=spki, challenges=challenges, answers=answers
    )
    return Located(address, raw, statement)


async def _answer_challenges(
    call: grpc.aio.StreamStreamCall[pb.ProbeReply, pb.LandmarkMessage],
    signer: SoftwareSigner,
    challenges: list[bytes],
    answers: list[bytes],
) -> bytes:
    """The timed loop: each challenge is answered as soon as it is read, with nothing else done
    in between (no logging, no disk: the landmark's clock is running). Returns the statement."""
    prefix = b""
    while True:
        message = await call.read()
        if not isinstance(message, pb.LandmarkMessage):  # grpc.aio.EOF
            raise errors.LandmarkProbeError("the landmark closed the probe without a statement")
        kind = message.WhichOneof("kind")
        if kind == "statement":
            raw: bytes = message.statement
            return raw
        if kind != "challenge":
            raise errors.LandmarkProbeError("the landmark sent an unknown message")
        seq, challenge = message.challenge.seq, message.challenge.challenge
        if not prefix:
            prefix = _first_prefix(challenge)
        if seq != len(challenges) or seq >= MAX_PROBES or not prefix:
            raise errors.LandmarkProbeError(f"challenge {seq} is out of order or malformed")
        if not _fits(challenge, prefix, seq):
            raise errors.LandmarkProbeError(f"challenge {seq} is for another session")
        signature = answer(signer, challenge)
        await call.write(pb.ProbeReply(answer=pb.ProbeAnswer(seq=seq, signature=signature)))
        challenges.append(challenge)
        answers.append(signature)


async def probe_logged(
    address: HostPort,
    agent_id: str,
    signer: SoftwareSigner,
    metrics: AgentMetrics,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> Located | LandmarkProbeFailure:
    """`probe`, with its one log line and its metrics; a failure is returned, never raised."""
    try:
        located = await probe(address, agent_id, signer, timeout_s)
    except errors.LandmarkProbeError as exc:
        log.warning("landmark %s: probe failed (%s): %s", address, exc.result, exc)
        metrics.count_landmark_probe(exc.result)
        return LandmarkProbeFailure(address, exc.result, str(exc))
    statement = located.statement
    metrics.count_landmark_probe("ok")
    metrics.landmark_rtt_min.labels(landmark=str(address)).set(statement.rtt_min_ns / 1e9)
    log.info(
        "landmark %s (%s): %d probes, rtt_min %.3f ms",
        address,
        statement.landmark_id,
        statement.probes,
        statement.rtt_min_ns / 1e6,
    )
    return located


@dataclass(frozen=True)
class LandmarkProbeFailure:
    address: HostPort
    result: str  # unreachable, refused, timeout, malformed
    reason: str


async def located_rows(
    addresses: Sequence[HostPort], agent_id: str, signer: SoftwareSigner
) -> list[dict[str, Any]]:
    """`gpu-attest-agent locate`: probe each landmark once, one after the other; one row each
    (`--json`'s stable keys: ok, address, landmark_id, probes, rtt_min_ms, bound_km, measured_at,
    result, reason)."""
    rows: list[dict[str, Any]] = []
    for address in addresses:
        result = await probe_logged(address, agent_id, signer, AgentMetrics(enabled=False))
        row: dict[str, Any] = {"ok": isinstance(result, Located), "address": str(address)}
        if isinstance(result, Located):
            statement = result.statement
            row.update(
                landmark_id=statement.landmark_id,
                probes=statement.probes,
                rtt_min_ms=statement.rtt_min_ns / 1e6,
                bound_km=bound_km(statement.rtt_min_ns),
                measured_at=statement.measured_at.isoformat(),
                result="ok",
                reason="",
            )
        else:
            row.update(
                landmark_id=None, probes=None, rtt_min_ms=None, bound_km=None,
                measured_at=None, result=result.result, reason=result.reason,
            )  # fmt: skip
        rows.append(row)
    return rows


# --- keeping statements until evidence carries them ---------------------------------------------


class LandmarkBook:
    """The newest checked statement per configured landmark, until an evidence carries it.
    Thread-safe: the runner's thread puts, the producer takes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._newest: dict[HostPort, LandmarkMeasurement] = {}

    def put(self, located: Located) -> None:
        with self._lock:
            self._newest[located.address] = located.measurement()

    def pending(self) -> tuple[LandmarkMeasurement, ...]:
        """What the next evidence should carry (at most one per configured landmark)."""
        with self._lock:
            return tuple(self._newest.values())

    def carried(self, measurements: Sequence[LandmarkMeasurement]) -> None:
        """`measurements` are in a spooled evidence: drop them (not a newer one put since)."""
        done = {m.statement for m in measurements}
        with self._lock:
            for address, measurement in list(self._newest.items()):
                if measurement.statement in done:
                    del self._newest[address]


class LandmarkRunner:
    """A thread of its own that probes every landmark at start and every `interval_s`.

    Its own thread and event loop keep the timed loop off the daemon's loop, where evidence
    building and the Attest stream would delay answers and widen the bound.
    """

    def __init__(
        self,
        addresses: Sequence[HostPort],
        *,
        agent_id: str,
        signer: Callable[[], SoftwareSigner],
        book: LandmarkBook,
        metrics: AgentMetrics,
        interval_s: float,
    ) -> None:
        self._addresses = tuple(addresses)
        self._agent_id = agent_id
        self._signer = signer
        self._book = book
        self._metrics = metrics
        self._interval_s = interval_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="landmarks", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._started.wait(timeout=10.0)

    def stop(self, timeout_s: float = 5.0) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(stopping.set)
        self._thread.join(timeout=timeout_s)

    def _main(self) -> None:
        asyncio.run(self._cycles())

    async def _cycles(self) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        self._started.set()
        stopping = self._stopping
        while not stopping.is_set():
            cycle = asyncio.create_task(self.cycle())
            halt = asyncio.create_task(stopping.wait())
            await asyncio.wait({cycle, halt}, return_when=asyncio.FIRST_COMPLETED)
            if stopping.is_set():
                cycle.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await cycle
                halt.cancel()
                return
            halt.cancel()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=self._interval_s)

    async def cycle(self) -> None:
        """Probe each landmark once, one after the other (parallel probes would share the CPU
        and delay each other's answers)."""
        try:
            signer = self._signer()
        except errors.AttestError as exc:
            log.warning("landmarks: no key to answer with this cycle: %s (%s)", exc, exc.code)
            self._metrics.count_landmark_probe("error")
            return
        for address in self._addresses:
            try:
                result = await probe_logged(address, self._agent_id, signer, self._metrics)
            except Exception:
                # A bug here must cost one probe, never the agent.
                log.exception("landmark %s: probe failed", address)
                self._metrics.count_landmark_probe("error")
                continue
            if isinstance(result, Located):
                self._book.put(result)
