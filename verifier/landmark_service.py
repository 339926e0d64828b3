"""The landmark service: times signed round trips to an agent and signs what it measured
(docs/protocol.md §12).

One `Landmark.Probe` call is one session: the agent's ProbeHello names it and its attestation
key; the landmark sends `probes` challenges one at a time, reading its own monotonic clock just
before each is written and again when the answer arrives, and verifies each answer's
signature between the two, after the clock stopped and before the next challenge's clock starts
(so it adds nothing to any round trip, and a peer answering garbage is dropped at once). Any
failure ends the call with a status and no statement. Then the
landmark sends one DSSE envelope around a LandmarkStatement, signed by its Ed25519 key.

Plain gRPC, deliberately: nothing exchanged is secret, every answer and the statement are
signed, and a party in the middle can only add delay, which loosens the distance bound and
never tightens it, or drop the call (docs/protocol.md §12).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from attest import identifiers as ids
from attest.errors import BadSignatureError, ConfigError, KeyMaterialError
from attest.files import require_private_dir
from attest.hostport import parse_host_port
from attest.keys import PublicKey, SoftwareSigner, load_or_create_private_key
from attest.landmark import (
    MAX_RTT_NS,
    SESSION_LEN,
    Statement,
    answer_message,
    challenge_bytes,
    sign_statement,
)
from attest.sdnotify import Notifier
from attest.v1 import attest_pb2 as pb
from attest.v1 import attest_pb2_grpc as pb_grpc
from attest.wire._common import NONCE_LEN
from verifier.exits import VerifierExit
from verifier.landmark_config import LandmarkConfig

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[pb.ProbeReply, pb.LandmarkMessage]
#: A hello holds an id and an SPKI (~100 bytes), an answer a seq and a signature (<= 80 bytes).
MAX_REPLY_BYTES = 4096
SHUTDOWN_GRACE_S = 2.0
#: Closed set of the `result` label of gpu_attest_landmark_sessions.
RESULTS = ("ok", "bad-hello", "bad-answer", "bad-signature", "timeout", "busy", "cancelled")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LandmarkMetrics:
    """gpu_attest_landmark_* collectors in a registry of their own (verifier/metrics.py's
    style: labels from closed sets only, never agent ids)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sessions = Counter(
            "gpu_attest_landmark_sessions",
            "Probe sessions ended, by result (ok, bad-hello, bad-answer, bad-signature, "
            "timeout, busy, cancelled).",
            ["result"],
            registry=r,
        )
        self.probes = Counter(
            "gpu_attest_landmark_probes", "Challenges answered within a session.", registry=r
        )
        self.active = Gauge(
            "gpu_attest_landmark_sessions_active", "Probe sessions in progress.", registry=r
        )
        self.rtt_min = Histogram(
            "gpu_attest_landmark_rtt_min_seconds",
            "Least round trip of each signed statement (the one the distance bound uses).",
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        for result in RESULTS:
            self.sessions.labels(result=result)


class SessionEnded(Exception):  # noqa: N818 - a session's end, mapped to a status at once
    """Ends a probe session with gRPC status `code`; `result` labels the session metric.
    Raised and caught inside this module only (the servicer turns it into the status)."""

    def __init__(self, code: grpc.StatusCode, result: str, message: str) -> None:
        super().__init__(message)
        self.code, self.result = code, result


def parse_hello(reply: pb.ProbeReply) -> tuple[str, PublicKey]:
    """The agent id and attestation key of the first message (untrusted); raise SessionEnded
    (INVALID_ARGUMENT) for anything but a hello with an id and a supported key."""
    if reply.WhichOneof("kind") != "hello":
        raise SessionEnded(grpc.StatusCode.INVALID_ARGUMENT, "bad-hello", "expected ProbeHello")
    agent_id = reply.hello.agent_id
    if not ids.TOKEN.match(agent_id):
        raise SessionEnded(
            grpc.StatusCode.INVALID_ARGUMENT, "bad-hello", "ProbeHello agent_id is not an id"
        )
    try:
        key = PublicKey.from_spki_der(reply.hello.agent_public_key)
    except KeyMaterialError as exc:
        raise SessionEnded(
            grpc.StatusCode.INVALID_ARGUMENT, "bad-hello", f"ProbeHello agent_public_key: {exc}"
        ) from None
    return agent_id, key


def _verify_answer(key: PublicKey, seq: int, challenge: bytes, signature: bytes) -> None:
    try:
        key.verify(signature, answer_message(challenge))
    except BadSignatureError:
        raise SessionEnded(
            grpc.StatusCode.UNAUTHENTICATED,
            "bad-signature",
            f"the answer to probe {seq} does not verify under the hello's key",
        ) from None


class LandmarkServicer(pb_grpc.LandmarkServicer):
    """`Landmark.Probe`: decode the hello, run the timed exchange, sign, map failures."""

    def __init__(
        self,
        config: LandmarkConfig,
        signer: SoftwareSigner,
        metrics: LandmarkMetrics,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._config, self._signer, self._metrics, self._clock = config, signer, metrics, clock
        self._active = 0

    async def Probe(  # type: ignore[override]  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[pb.ProbeReply],  # noqa: ARG002 - read via context
        context: Context,
    ) -> None:
        metrics = self._metrics
        if self._active >= self._config.max_sessions:
            metrics.sessions.labels(result="busy").inc()
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"landmark busy: {self._config.max_sessions} sessions in progress",
            )
        self._active += 1
        metrics.active.inc()
        result = "cancelled"  # the call went away (the agent hung up, or shutdown)
        try:
            try:
                statement = await self._session(context)
            except SessionEnded as ended:
                result = ended.result
                await context.abort(ended.code, str(ended))
            await context.write(pb.LandmarkMessage(statement=statement))
            result = "ok"
        finally:
            self._active -= 1
            metrics.active.dec()
            metrics.sessions.labels(result=result).inc()

    async def _read(self, context: Context, timeout_s: float, what: str) -> pb.ProbeReply:
        try:
            reply = await asyncio.wait_for(context.read(), timeout_s)
        except TimeoutError:
            raise SessionEnded(
                grpc.StatusCode.DEADLINE_EXCEEDED, "timeout", f"no {what} within {timeout_s:g}s"
            ) from None
        if not isinstance(reply, pb.ProbeReply):  # grpc.aio.EOF: the agent half-closed
            raise SessionEnded(
                grpc.StatusCode.INVALID_ARGUMENT, "bad-answer", f"stream closed before {what}"
            )
        return reply

    async def _session(self, context: Context) -> bytes:
        config = self._config
        agent_id, key = parse_hello(await self._read(context, config.hello_timeout_s, "ProbeHello"))
        session = secrets.token_bytes(SESSION_LEN)
        challenges: list[bytes] = []
        answers: list[bytes] = []
        rtts: list[int] = []
        answer_timeout = config.answer_timeout_ms / 1000
        for seq in range(config.probes):
            challenge = challenge_bytes(config.id, session, seq, secrets.token_bytes(NONCE_LEN))
            message = pb.LandmarkMessage(
                challenge=pb.LandmarkChallenge(seq=seq, challenge=challenge)
            )
            # The timed section: write, then the answer's arrival; nothing else in between.
            sent = time.monotonic_ns()
            await context.write(message)
            reply = await self._read(context, answer_timeout, f"answer to probe {seq}")
            rtt = time.monotonic_ns() - sent
            if reply.WhichOneof("kind") != "answer" or reply.answer.seq != seq:
                raise SessionEnded(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "bad-answer",
                    f"expected the answer to probe {seq}",
                )
            if not 0 < rtt <= MAX_RTT_NS:
                raise SessionEnded(
                    grpc.StatusCode.DEADLINE_EXCEEDED, "timeout", f"probe {seq} took over 1 s"
                )
            # Checked now, after the clock stopped and before the next challenge: a peer that
            # answers with garbage is dropped at its first answer instead of holding one of
            # max_sessions for every probe's timeout.
            _verify_answer(key, seq, challenge, reply.answer.signature)
            challenges.append(challenge)
            answers.append(reply.answer.signature)
            rtts.append(rtt)
        self._metrics.probes.inc(len(rtts))
        self._metrics.rtt_min.observe(min(rtts) / 1e9)
        statement = Statement(
            landmark_id=config.id, lat=config.lat, lon=config.lon, agent_id=agent_id,
            agent_public_key=key.spki_der, session=session, challenges=tuple(challenges),
            signatures=tuple(answers), rtt_ns=tuple(rtts), rtt_min_ns=min(rtts),
            measured_at=self._clock(),
        )  # fmt: skip
        log.info("landmark %s measured agent %s: rtt_min %d ns", config.id, agent_id, min(rtts))
        return sign_statement(statement, self._signer)


def load_or_create_landmark_signer(config: LandmarkConfig) -> SoftwareSigner:
    """The landmark's Ed25519 key (STATE_DIR/landmark.key, 0600, created on first use in a
    0700 directory); raise StatePermissionError for a state directory open to others."""
    require_private_dir(config.state_dir)
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return load_or_create_private_key(config.key_path, "ed25519")


class LandmarkServer:
    """A started landmark: its plain gRPC port and its metrics endpoint. Runs on its own
    (`landmark serve`) or beside the verifier (`landmark = ...` in verifier.toml)."""

    def __init__(self, config: LandmarkConfig, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self.config = config
        self.signer = load_or_create_landmark_signer(config)
        self.metrics = LandmarkMetrics()
        self.servicer = LandmarkServicer(config, self.signer, self.metrics, clock)
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._metrics_server: Any = None

    async def start(self) -> int:
        """Bind `listen` and start serving; return the bound port. Raise ConfigError when the
        address cannot be bound."""
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_REPLY_BYTES),
                ("grpc.max_send_message_length", 64 * 1024),
                ("grpc.so_reuseport", 0),
            ],
            # Over the session cap, grpc itself refuses before any Python runs.
            maximum_concurrent_rpcs=self.config.max_sessions + 16,
        )
        pb_grpc.add_LandmarkServicer_to_server(self.servicer, server)
        try:
            self.port = server.add_insecure_port(self.config.listen)
        except RuntimeError:
            # Stopped here, while its event loop runs: left to the garbage collector, the
            # server's __del__ schedules its shutdown on a closed loop and prints a traceback.
            await server.stop(None)
            raise ConfigError(
                f"landmark listen = {self.config.listen!r}: cannot listen there (the port is "
                "in use, or the address is not one of this host's)"
            ) from None
        await server.start()
        self._server = server
        if self.config.metrics_listen:
            from prometheus_client import start_http_server  # noqa: PLC0415

            address = parse_host_port(self.config.metrics_listen, "metrics_listen", any_port=True)
            self._metrics_server, _ = start_http_server(
                address.port, addr=address.host, registry=self.metrics.registry
            )
        log.info("landmark %s serving on port %d", self.config.id, self.port)
        return self.port

    async def stop(self, grace: float = SHUTDOWN_GRACE_S) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None


async def _watchdog(notifier: Notifier, interval_s: float) -> None:
    """WATCHDOG=1 while the event loop turns (the landmark holds no store to probe)."""
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval_s)


async def run_until_signalled(config: LandmarkConfig) -> int:
    """`landmark serve`: serve until SIGTERM or SIGINT; READY/WATCHDOG/STOPPING to systemd."""
    notifier = Notifier()
    landmark = LandmarkServer(config)
    await landmark.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = []
    if notifier.watchdog_interval_s is not None:
        tasks.append(asyncio.create_task(_watchdog(notifier, notifier.watchdog_interval_s)))
    notifier.ready(f"landmark {config.id} serving on {config.listen}")
    await stop.wait()
    notifier.stopping()
    for task in tasks:
        task.cancel()
    await landmark.stop()
    log.info("landmark stopped")
    return VerifierExit.OK
