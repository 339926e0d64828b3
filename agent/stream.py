"""The Attest stream session: challenges in, spooled envelopes out, receipts in.

One task writes (the session loop), one task reads (`_read`); both run on the event loop that
owns the spool. `StreamClient.run` reconnects with capped, fully jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import grpc

from agent.client import AGENT_ID_METADATA, Backoff, open_channel, utcnow
from agent.identity import Identity, TlsMaterial, read_receipt, verify_receipt
from agent.logs import get_logger
from agent.metrics import AgentMetrics
from agent.spool import ChainHead, Spool
from attest import errors
from attest.hostport import HostPort
from attest.keys import PublicKey
from attest.model import Challenge
from attest.v1 import attest_pb2 as pb
from attest.v1 import attest_pb2_grpc as pb_grpc
from attest.wire import challenge_from_pb, rejection_from_pb

log = get_logger("stream")

#: Envelopes in flight without a receipt; bounds memory on a long replay.
SEND_WINDOW = 64


@dataclass(frozen=True)
class StreamSettings:
    target: HostPort
    identity: Identity
    verifier_key: PublicKey
    tls: TlsMaterial | None
    insecure_plaintext: bool
    backoff: Backoff
    drain_timeout_s: float = 5.0


class StreamClient:
    """Keeps the Attest stream open and the spool draining."""

    def __init__(
        self,
        settings: StreamSettings,
        spool: Spool,
        metrics: AgentMetrics,
        clock: Callable[[], datetime] = utcnow,
        on_base_refused: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self._on_base_refused = on_base_refused
        #: Set by a heartbeat-base-unknown rejection: at the next challenge, the pending
        #: entries (which chain onto the refused heartbeat) are replaced by full evidence.
        self._rebase = False
        self._spool = spool
        self._metrics = metrics
        self._clock = clock
        self._wake = asyncio.Event()
        self._challenge: Challenge | None = None
        self._nonce_used = True
        self._sent_through = 0
        self._penalty = False
        #: Set when a stream opens (first challenge): the daemon attests at once.
        self.opened = asyncio.Event()

    # --- what the producer asks ----------------------------------------------------------------

    def take_nonce(self, now: datetime) -> bytes:
        """The latest unexpired, unused challenge nonce (then marked used), or b"" (offline)."""
        challenge = self._challenge
        if challenge is None or self._nonce_used or now >= challenge.expires_at:
            return b""
        self._nonce_used = True
        return challenge.nonce

    def spooled(self) -> None:
        """Tell the sender that the spool has a new entry."""
        self._wake.set()

    # --- the connection loop ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, run sessions and reconnect with backoff until `stop` is set."""
        attempt = 0
        while not stop.is_set():
            self._metrics.reconnects.inc()
            try:
                challenged = await self._connect_once(stop)
            except Exception:
                # A bug or a spool failure must cost one session, never the daemon's stream.
                log.exception("stream session failed")
                challenged, self._penalty = False, True
            self._challenge = None
            self._metrics.stream_connected.set(0)
            if stop.is_set():
                return
            attempt = 0 if challenged and not self._penalty else attempt + 1
            wait = (
                self.settings.backoff.cap_s
                if self._penalty
                else self.settings.backoff.delay(attempt)
            )
            self._penalty = False
            log.info("stream closed; reconnecting in %.1fs", wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)

    async def _connect_once(self, stop: asyncio.Event) -> bool:
        s = self.settings
        try:
            channel = open_channel(s.target, s.tls, None, s.insecure_plaintext)
        except errors.ConfigError:
            log.exception("cannot open a channel to %s", s.target)
            self._penalty = True
            return False
        metadata = ((AGENT_ID_METADATA, s.identity.agent_id),) if s.insecure_plaintext else None
        challenged = asyncio.Event()
        try:
            call = pb_grpc.AttestationStub(channel).Attest(metadata=metadata)  # type: ignore[call-arg]
            reader = asyncio.create_task(self._read(call, challenged))
            try:
                await self._session(call, reader, stop)
            finally:
                if not reader.done():
                    call.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await reader
        except grpc.aio.AioRpcError as exc:
            log.warning("stream error: %s %s", exc.code().name, exc.details())
        finally:
            await channel.close(None)
        return challenged.is_set()

    async def _session(
        self,
        call: grpc.aio.StreamStreamCall[pb.AgentMessage, pb.VerifierMessage],
        reader: asyncio.Task[None],
        stop: asyncio.Event,
    ) -> None:
        stop_wait = asyncio.create_task(stop.wait())
        try:
            while not reader.done():
                wake = asyncio.create_task(self._wake.wait())
                await asyncio.wait({reader, stop_wait, wake}, return_when=asyncio.FIRST_COMPLETED)
                wake.cancel()
                self._wake.clear()
                if stop.is_set():
                    await self._drain(reader)
                    return
                if self._challenge is not None:
                    await self._send_pending(call)
        finally:
            stop_wait.cancel()

    async def _send_pending(
        self, call: grpc.aio.StreamStreamCall[pb.AgentMessage, pb.VerifierMessage]
    ) -> None:
        unacked = self._spool.pending(0, SEND_WINDOW)
        in_flight = sum(1 for e in unacked if e.seq <= self._sent_through)
        room = SEND_WINDOW - in_flight
        if room <= 0:
            return
        for entry in self._spool.pending(self._sent_through, room):
            await call.write(pb.AgentMessage(evidence=entry.envelope))
            self._sent_through = entry.seq
            log.debug("sent seq %d", entry.seq)

    async def _drain(self, reader: asyncio.Task[None]) -> None:
        """On shutdown, give receipts for what was sent a short while to arrive."""
        deadline = asyncio.get_running_loop().time() + self.settings.drain_timeout_s
        while not reader.done() and asyncio.get_running_loop().time() < deadline:
            outstanding = self._spool.pending(0, 1)
            if not outstanding or outstanding[0].seq > self._sent_through:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=0.1)

    # --- what the verifier says ------------------------------------------------------------------

    async def _read(
        self,
        call: grpc.aio.StreamStreamCall[pb.AgentMessage, pb.VerifierMessage],
        challenged: asyncio.Event,
    ) -> None:
        try:
            async for message in call:
                kind = message.WhichOneof("kind")
                if kind == "challenge":
                    self._on_challenge(message.challenge, first=not challenged.is_set())
                    challenged.set()
                elif kind == "receipt":
                    self._on_receipt(message.receipt)
                    if message.HasField("next_challenge"):
                        self._on_challenge(message.next_challenge, first=False)
                elif kind == "rejection":
                    self._on_rejection(message.rejection)
                self._wake.set()
        except grpc.aio.AioRpcError as exc:
            if exc.code() is not grpc.StatusCode.CANCELLED:
                log.warning("stream ended: %s %s", exc.code().name, exc.details())
        finally:
            self._wake.set()

    def _on_challenge(self, message: pb.Challenge, first: bool) -> None:
        try:
            challenge = challenge_from_pb(message)
        except errors.DecodeError as exc:
            log.warning("ignoring a malformed challenge: %s", exc)
            return
        self._challenge = challenge
        self._nonce_used = False
        if first:
            self._resume_from(challenge)
            self._metrics.stream_connected.set(1)
            self.opened.set()
        self._metrics.spool_depth.set(self._spool.depth())

    def _resume_from(self, challenge: Challenge) -> None:
        dropped = self._spool.drop_through(challenge.last_seq)
        if dropped:
            log.info("verifier already holds seq <= %d: dropped %d", challenge.last_seq, dropped)
        head = self._spool.head()
        if head.seq < challenge.last_seq:
            log.warning(
                "verifier's chain head %d is ahead of ours %d (state restored?); continuing "
                "from the verifier's head",
                challenge.last_seq,
                head.seq,
            )
            self._spool.adopt_head(ChainHead(challenge.last_seq, challenge.last_hash))
        if self._rebase:
            self._rebase = False
            dropped = self._spool.discard_pending(
                ChainHead(challenge.last_seq, challenge.last_hash)
            )
            log.warning(
                "the verifier does not hold the full evidence our heartbeats repeat: dropped "
                "%d unaccepted entries after seq %d; full evidence follows (docs/protocol.md "
                "§4.1)",
                dropped,
                challenge.last_seq,
            )
        self._sent_through = challenge.last_seq

    def _on_receipt(self, raw: bytes) -> None:
        """An entry leaves the spool only for a receipt whose checkpoint is signed by the pinned
        verifier key and whose inclusion proof shows this entry's bytes in that checkpoint's
        tree; any other receipt is refused and logged, and the entry stays spooled."""
        s = self.settings
        try:
            seq = read_receipt(raw).seq
            entry = self._spool.get(seq)
            if entry is None:
                log.info("receipt for seq %d, which is no longer spooled", seq)
                return
            receipt = verify_receipt(raw, entry.envelope, s.verifier_key, s.identity.agent_id)
        except errors.AttestError as exc:
            log.error("rejecting a receipt: %s (%s)", exc, exc.code)  # noqa: TRY400
            self._metrics.count("error")
            return
        self._spool.acknowledge(receipt.seq, raw, self._clock())
        self._metrics.count("accepted")
        self._metrics.last_receipt.set(receipt.accepted_at.timestamp())
        self._metrics.spool_depth.set(self._spool.depth())
        self._metrics.spool_full.set(0)
        log.info("verifier accepted seq %d (log index %d)", receipt.seq, receipt.log_index)

    def _on_rejection(self, message: pb.Rejection) -> None:
        rejection = rejection_from_pb(message)
        self._metrics.count("rejected")
        log.error(
            "verifier rejected seq %d: %s: %s%s",
            rejection.seq,
            rejection.code,
            rejection.message,
            "" if rejection.retryable else " (not retryable; the entry stays spooled)",
        )
        if not rejection.retryable:
            self._penalty = True
        if rejection.code == errors.HeartbeatBaseError.code:
            self._rebase = True
            if self._on_base_refused is not None:
                self._on_base_refused()
