"""grpc.aio servicer of attest.v1.Attestation: decode, call the core, encode, map errors.

The Attest stream: the verifier speaks first with a Challenge (its nonce recorded in the store,
so every replica accepts it) and re-issues one at ttl/2 while the stream is idle. Each envelope
runs through the pure pipeline, then the group-committed store transaction; only after COMMIT is
it answered, with one message holding the signed receipt and the next challenge (whose nonce
became durable in that same transaction). A rejection is audited, sent as a Rejection message,
and ends that stream alone with the status errors_map assigns.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from prometheus_client import Counter

from attest import wire
from attest.envelope import RECEIPT_PAYLOAD_TYPE, EnvelopeSignature, envelope_hash, sign
from attest.errors import (
    AgentRevokedError,
    AgentUnknownError,
    AttestError,
    ChainError,
    RateLimitedError,
    StoreError,
    TransportIdentityError,
)
from attest.keys import KeyCache, SoftwareSigner
from attest.model import Challenge, Freshness, Receipt
from attest.v1 import attest_pb2 as pb
from attest.v1 import attest_pb2_grpc as pb_grpc
from verifier import enroll as enroll_core
from verifier import pipeline
from verifier.ca import CertificateAuthority, peer_from_certificate
from verifier.config import VerifierConfig
from verifier.errors_map import details_for, rejection_for, status_for
from verifier.metrics import Metrics
from verifier.nonces import NonceIssuer, new_nonce
from verifier.ratelimit import RateLimiter
from verifier.refresh import IdleRefresher
from verifier.store.api import AuditKind, AuditRecord, NonceRecord, Store
from verifier.store.batch import GroupCommitter
from verifier.transparency import Checkpointer

log = logging.getLogger(__name__)

PLAINTEXT_AGENT_HEADER = "x-gpu-attest-agent-id"
#: Nonces of one stream that stay acceptable from memory: the current one and the one before
#: (an envelope crossing an idle refresh); older ones go through the store.
_STREAM_NONCES = 2
_MAX_RATE_WAIT_S = 2.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Peer:
    """Who the transport says is on the stream: the agent id, and the key id of its client
    certificate (None with --insecure-plaintext, where only the signature binds the agent)."""

    agent_id: str
    cert_keyid: str | None


Identify = Callable[[grpc.aio.ServicerContext[object, object]], Peer]


def identity_from_certificate(context: grpc.aio.ServicerContext[object, object]) -> Peer:
    """The agent of the TLS-verified client certificate; raise TransportIdentityError."""
    pems = list(context.auth_context().get("x509_pem_cert", ()))
    if not pems:
        raise TransportIdentityError("Attest needs the agent's client certificate (mTLS)")
    return Peer(*peer_from_certificate(pems[0]))


def identity_from_metadata(context: grpc.aio.ServicerContext[object, object]) -> Peer:
    """--insecure-plaintext only: the claimed agent id header (the signature still binds it)."""
    for key, value in context.invocation_metadata() or ():
        if key == PLAINTEXT_AGENT_HEADER and isinstance(value, str) and 0 < len(value) <= 128:
            return Peer(value, None)
    raise TransportIdentityError(f"plaintext Attest needs the {PLAINTEXT_AGENT_HEADER} header")


@dataclass(frozen=True)
class Core:
    """Everything the servicer calls into; built once by `serve`."""

    config: VerifierConfig
    store: Store
    committer: GroupCommitter
    nonces: NonceIssuer
    checkpointer: Checkpointer
    ca: CertificateAuthority
    receipt_signer: SoftwareSigner
    metrics: Metrics
    limiter: RateLimiter
    identify: Identify
    replica_id: str
    clock: Callable[[], datetime] = _utcnow

    @functools.cached_property
    def limits(self) -> pipeline.Limits:
        s = self.config.stream
        return pipeline.Limits(s.max_message_bytes, s.clock_skew, s.offline_max_age)

    @functools.cached_property
    def key_cache(self) -> KeyCache:
        """Parsed agent keys shared by every stream (bounded: see stream.key_cache_size)."""
        return KeyCache(self.config.stream.key_cache_size)

    @functools.cached_property
    def accepted_counters(self) -> dict[Freshness, Counter]:
        """The accepted counter's child per freshness, bound once (labels() per call is not
        free on a path taken for every envelope)."""
        return {f: self.metrics.accepted.labels(freshness=f.value) for f in Freshness}

    def nonce_record(self) -> NonceRecord:
        """A fresh challenge nonce; it may only be sent once the store has it."""
        now = self.clock()
        return NonceRecord(
            nonce=new_nonce(now),
            issued_at=now,
            expires_at=now + self.config.stream.challenge_ttl,
            replica=self.replica_id,
        )

    async def new_challenge(self, head: pipeline.ChainHead) -> tuple[Challenge, NonceRecord]:
        record = self.nonce_record()
        await self.nonces.issue(record)
        return self.challenge_for(record, head), record

    def challenge_for(self, record: NonceRecord, head: pipeline.ChainHead) -> Challenge:
        """The challenge of an issued (durable) nonce."""
        self.metrics.challenges.inc()
        return Challenge(record.nonce, record.expires_at, head.last_seq, head.last_hash)

    def sign_receipt(self, receipt: Receipt) -> bytes:
        body = wire.encode_receipt(receipt)
        return wire.encode_envelope(sign(RECEIPT_PAYLOAD_TYPE, body, [self.receipt_signer]))

    async def audit_rejection(
        self, agent_id: str, error: AttestError, seq: int, envelope_hash: bytes
    ) -> None:
        self.metrics.rejected.labels(code=error.code).inc()
        if isinstance(error, StoreError):
            return  # the store is what failed; there is nowhere to write the record
        record = AuditRecord(
            kind=AuditKind.REJECTION, at=self.clock(), agent_id=agent_id, code=error.code,
            message=str(error)[:512], envelope_hash=envelope_hash, seq=seq,
        )  # fmt: skip
        try:
            await asyncio.to_thread(self.store.record_rejection, record)
        except AttestError:
            log.warning("could not audit rejection %s of agent %s", error.code, agent_id)


class AttestSession:
    """One Attest stream's state: the agent, its chain head, the nonces issued on it."""

    __slots__ = (
        "agent", "closed", "context", "core", "gpus", "head", "keeps_gpus", "nonces",
        "refresh_at", "writing",
    )  # fmt: skip

    def __init__(
        self,
        core: Core,
        agent: pipeline.PinnedAgent,
        head: pipeline.ChainHead,
        context: grpc.aio.ServicerContext[pb.AgentMessage, pb.VerifierMessage],
    ) -> None:
        self.core = core
        self.context = context
        self.agent = agent
        self.head = head
        self.nonces: dict[bytes, NonceRecord] = {}
        #: The GPU entries of the last accepted evidence, checked: most evidence repeats them.
        #: Kept only while `keeps_gpus` (the servicer bounds how many streams keep them).
        self.gpus: wire.GpuSection | None = None
        self.keeps_gpus = False
        self.refresh_at = 0.0
        self.closed = False
        #: Held while one envelope is answered or an idle challenge is sent: one write at a time.
        self.writing = asyncio.Lock()

    async def challenge(self) -> pb.VerifierMessage:
        challenge, record = await self.core.new_challenge(self.head)
        return pb.VerifierMessage(challenge=self._sent(challenge, record))

    def _sent(self, challenge: Challenge, record: NonceRecord) -> pb.Challenge:
        self.nonces[record.nonce] = record
        while len(self.nonces) > _STREAM_NONCES:
            del self.nonces[next(iter(self.nonces))]
        self.refresh_at = time.monotonic() + self.core.config.stream.challenge_ttl_s / 2
        return wire.challenge_to_pb(challenge)

    async def _nonce(self, nonce: bytes) -> NonceRecord | None:
        if not nonce:
            return None
        local = self.nonces.get(nonce)
        if local is not None:
            return local
        return await asyncio.to_thread(self.core.store.get_nonce, nonce)

    async def _check(
        self, auth: pipeline.AuthenticatedEvidence, nonce: NonceRecord | None
    ) -> pipeline.VerifiedEvidence:
        evidence = auth.evidence
        digest_at_seq = None
        if evidence.seq <= self.head.last_seq:
            prior = await asyncio.to_thread(
                self.core.store.get_attestation, evidence.agent_id, evidence.seq
            )
            digest_at_seq = None if prior is None else prior.payload_digest
        return pipeline.check_state(
            auth, nonce, self.head, digest_at_seq, now=self.core.clock(), limits=self.core.limits
        )

    async def accept(self, raw: bytes) -> pb.VerifierMessage:
        """Verify, make durable, and answer with the signed receipt and the next challenge,
        whose nonce became durable in the same transaction (one message); raise AttestError."""
        core = self.core
        wait = core.limiter.acquire(self.agent.agent_id, time.monotonic(), _MAX_RATE_WAIT_S)
        if wait is None:
            raise RateLimitedError("too many envelopes from this agent; slow down")
        if wait > 0:
            await asyncio.sleep(wait)
        auth = pipeline.authenticate(raw, self.agent.agent_id, self.agent, core.limits, self.gpus)
        evidence = auth.evidence
        nonce = await self._nonce(evidence.nonce) if evidence.nonce else None
        try:
            verified = await self._check(auth, nonce)
        except ChainError:
            # Another stream or replica may have moved this agent's chain since this stream
            # opened: judge again against the stored head before calling it a gap or replay.
            record = await asyncio.to_thread(core.store.get_agent, evidence.agent_id)
            if record is None or pipeline.head_of(record) == self.head:
                raise
            self.head = pipeline.head_of(record)
            verified = await self._check(auth, nonce)
        next_nonce = core.nonce_record()
        attestation = pipeline.to_attestation(verified, core.clock())
        accepted = await core.committer.submit(attestation, next_nonce)
        self.head = pipeline.ChainHead(accepted.seq, accepted.envelope_hash)
        if self.keeps_gpus:
            self.gpus = evidence.gpu_section
        self.nonces.pop(evidence.nonce, None)
        core.accepted_counters[accepted.freshness].inc()
        checkpoint = await core.checkpointer.covering(accepted.log_index)
        receipt = Receipt(
            agent_id=accepted.agent_id, seq=accepted.seq, envelope_hash=accepted.envelope_hash,
            log_index=accepted.log_index, checkpoint=checkpoint, accepted_at=accepted.accepted_at,
            freshness=accepted.freshness,
        )  # fmt: skip
        challenge = self._sent(core.challenge_for(next_nonce, self.head), next_nonce)
        return pb.VerifierMessage(receipt=core.sign_receipt(receipt), next_challenge=challenge)


def _seq_hint(raw: bytes) -> tuple[int, bytes]:
    """Best-effort (seq, envelope hash) for a Rejection; the seq is unverified and may be 0."""
    try:
        payload = wire.decode_envelope(raw).payload
        seq = pb.Evidence.FromString(payload).seq
    except Exception:  # noqa: BLE001 - only a hint for the agent's log; any garbage gives 0
        seq = 0
    return seq, envelope_hash(raw)


class AttestationServicer(pb_grpc.AttestationServicer):
    """The three RPCs; each maps AttestError to a status through errors_map."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._refresher: IdleRefresher[AttestSession] = IdleRefresher(self._refresh)
        #: Streams that may still keep their checked GPU entries (memory bound; see config).
        self._gpu_cache_slots = core.config.stream.gpu_check_cache_streams

    async def Enroll(  # noqa: N802 - gRPC method name
        self, request: pb.EnrollRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.EnrollResponse:
        core = self.core
        payload = enroll_core.EnrollInput(
            token=request.token, public_key=request.public_key, csr=request.csr,
            hostname=request.hostname, machine_id=request.machine_id,
        )  # fmt: skip
        try:
            result = await asyncio.to_thread(
                enroll_core.enroll, core.store, core.ca, payload, core.clock(),
                core.config.tls.client_cert_days,
            )  # fmt: skip
        except AttestError as exc:
            core.metrics.enrollments.labels(rpc="enroll", result=exc.code).inc()
            await context.abort(status_for(exc), details_for(exc))
        core.metrics.enrollments.labels(rpc="enroll", result="ok").inc()
        return pb.EnrollResponse(
            agent_id=result.agent_id,
            site_id=result.site_id,
            client_certificate=result.client_certificate,
            ca_certificate=core.ca.pem,
            verifier_public_key=core.receipt_signer.public_key.spki_der,
        )

    async def RotateKey(  # noqa: N802 - gRPC method name
        self, request: pb.RotateKeyRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.RotateKeyResponse:
        core = self.core
        try:
            # By name only: a rotation interrupted after the verifier answered is finished with
            # the old certificate (and a signature by the key that rotation retired).
            transport_id = core.identify(context).agent_id
            payload = enroll_core.RotateInput(
                agent_id=request.agent_id,
                new_public_key=request.new_public_key,
                csr=request.csr,
                old_key_signature=EnvelopeSignature(
                    keyid=request.old_key_signature.keyid, sig=request.old_key_signature.sig
                ),
            )
            cert = await asyncio.to_thread(
                functools.partial(
                    enroll_core.rotate_key, core.store, core.ca, payload,
                    transport_agent_id=transport_id, now=core.clock(),
                    cert_days=core.config.tls.client_cert_days,
                )
            )  # fmt: skip
        except AttestError as exc:
            core.metrics.enrollments.labels(rpc="rotate", result=exc.code).inc()
            await context.abort(status_for(exc), details_for(exc))
        core.metrics.enrollments.labels(rpc="rotate", result="ok").inc()
        return pb.RotateKeyResponse(client_certificate=cert)

    async def Attest(  # type: ignore[override]  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[pb.AgentMessage],  # noqa: ARG002 - read via context
        context: grpc.aio.ServicerContext[pb.AgentMessage, pb.VerifierMessage],
    ) -> None:
        core = self.core
        core.metrics.streams.inc()
        try:
            await self._attest(context)
        finally:
            core.metrics.streams.dec()

    async def _open(
        self, context: grpc.aio.ServicerContext[pb.AgentMessage, pb.VerifierMessage]
    ) -> AttestSession:
        core = self.core
        peer = core.identify(context)  # type: ignore[arg-type]
        agent_id = peer.agent_id
        record = await asyncio.to_thread(core.store.get_agent, agent_id)
        if record is None:
            raise AgentUnknownError(f"agent {agent_id[:64]!r} is not enrolled here")
        pinned = pipeline.pinned_from_record(record, core.key_cache)
        if pinned.revoked:
            raise AgentRevokedError(f"agent {agent_id} was revoked")
        if peer.cert_keyid is not None and peer.cert_keyid not in pinned.keys:
            # A certificate of a key rotated away stays valid until it expires; its stream
            # could only be refused envelope by envelope, so it is refused at the door.
            raise TransportIdentityError(
                f"the client certificate's key is not a current key of agent {agent_id}"
            )
        return AttestSession(core, pinned, pipeline.head_of(record), context)

    async def _attest(
        self, context: grpc.aio.ServicerContext[pb.AgentMessage, pb.VerifierMessage]
    ) -> None:
        core = self.core
        try:
            session = await self._open(context)
            await context.write(await session.challenge())
        except AttestError as exc:
            core.metrics.rejected.labels(code=exc.code).inc()
            await context.abort(status_for(exc), details_for(exc))
        # Each message is awaited directly (no task per message: this loop runs per envelope);
        # an idle stream's fresh challenge at ttl/2 comes from the servicer's one refresher,
        # and `session.writing` keeps its write apart from an answer to an envelope.
        self._refresher.add(session)
        if self._gpu_cache_slots > 0:
            self._gpu_cache_slots -= 1
            session.keeps_gpus = True
        try:
            while True:
                message: object = await context.read()  # EOF is a sentinel, not a message
                if not isinstance(message, pb.AgentMessage):
                    return  # EOF: the agent closed its side
                async with session.writing:
                    await self._one(session, context, message.evidence)
        finally:
            session.closed = True
            self._refresher.discard(session)
            if session.keeps_gpus:
                session.keeps_gpus, session.gpus = False, None
                self._gpu_cache_slots += 1

    async def _refresh(self, session: AttestSession) -> None:
        """Send a fresh challenge if the stream is still idle at its refresh time."""
        try:
            async with session.writing:
                if not session.closed and session.refresh_at <= time.monotonic():
                    await self._send_challenge(session, session.context)
        except grpc.aio.AbortError:
            return  # _send_challenge ended the stream with its status; the read loop ends too
        except grpc.aio.UsageError:
            return  # the call finished under us (agent gone); the read loop sees it as well

    async def _one(
        self,
        session: AttestSession,
        context: grpc.aio.ServicerContext[pb.AgentMessage, pb.VerifierMessage],
        raw: bytes,
    ) -> None:
        core = self.core
        started = time.perf_counter()
        try:
            answer = await session.accept(raw)
        except AttestError as exc:
            seq, digest = _seq_hint(raw)
            await core.audit_rejection(session.agent.agent_id, exc, seq, digest)
            rejection = wire.rejection_to_pb(rejection_for(exc, seq, digest))
            await context.write(pb.VerifierMessage(rejection=rejection))
            await context.abort(status_for(exc), details_for(exc))
        await context.write(answer)
        core.metrics.latency.observe(time.perf_counter() - started)

    async def _send_challenge(
        self,
        session: AttestSession,
        context: grpc.aio.ServicerContext[pb.AgentMessage, pb.VerifierMessage],
    ) -> None:
        try:
            challenge = await session.challenge()
        except AttestError as exc:
            # Only the challenge failed (store unreachable): end the stream with the mapped
            # status and no Rejection, which would name an envelope that was not refused.
            await context.abort(status_for(exc), details_for(exc))
        await context.write(challenge)
