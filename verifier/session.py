"""One Attest stream's logic, apart from gRPC message plumbing: who is on it (the transport's
identity), what every stream shares (`Core`), and the stream's own state (`AttestSession`):
verify an envelope, make it durable, answer with the receipt and the next challenge.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from prometheus_client import Counter

from attest import wire
from attest.errors import (
    AttestError,
    ChainError,
    RateLimitedError,
    StoreError,
    TransportIdentityError,
)
from attest.keys import KeyCache, SoftwareSigner
from attest.model import Challenge, Freshness, Receipt
from attest.v1 import attest_pb2 as pb
from verifier import pipeline
from verifier.admission import AgentStreams
from verifier.budget import ByteBudget
from verifier.ca import CertificateAuthority, peer_from_certificate
from verifier.config import VerifierConfig
from verifier.metrics import Metrics
from verifier.model import Accepted, AuditKind, AuditRecord, NonceRecord
from verifier.nonces import NonceIssuer, new_nonce
from verifier.ratelimit import RateLimiter
from verifier.store.api import Store
from verifier.store.batch import GroupCommitter
from verifier.storehealth import StoreHealth
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
        return pipeline.Limits(
            s.max_message_bytes, s.clock_skew, s.offline_max_age, s.nonce_retention
        )

    @functools.cached_property
    def key_cache(self) -> KeyCache:
        """Parsed agent keys shared by every stream (bounded: see stream.key_cache_size)."""
        return KeyCache(self.config.stream.key_cache_size)

    @functools.cached_property
    def gpu_sections(self) -> dict[str, wire.GpuSection]:
        """Agent id -> its last accepted GPU entries, checked (most evidence repeats them), for
        agents with an open stream. At most `stream.gpu_check_cache_size` agents are admitted
        (~1.7 KB each for 8 GPUs) and one leaves when its stream closes: no eviction, since
        with more agents than room an LRU would only replace entries it never gets to use."""
        return {}

    def keep_gpu_section(self, agent_id: str, section: wire.GpuSection) -> None:
        sections = self.gpu_sections
        if agent_id in sections or len(sections) < self.config.stream.gpu_check_cache_size:
            sections[agent_id] = section

    @functools.cached_property
    def inflight(self) -> asyncio.Semaphore:
        """Envelopes decoded and not yet committed, at most `stream.max_inflight`: when every
        stream sends at once, the rest wait as the bytes they arrived as (FIFO), not as the
        several-times-larger decoded evidence queued for the group commit."""
        return asyncio.Semaphore(self.config.stream.max_inflight)

    @functools.cached_property
    def byte_budget(self) -> ByteBudget:
        """Bytes of evidence each agent may have accepted per hour (verifier/budget.py)."""
        return ByteBudget(self.config.stream.agent_bytes_per_hour)

    @functools.cached_property
    def agent_streams(self) -> AgentStreams[AttestSession]:
        """Each agent's open Attest streams (at most `stream.max_streams_per_agent`)."""
        return AgentStreams(self.config.stream.max_streams_per_agent)

    @functools.cached_property
    def store_health(self) -> StoreHealth:
        """Whether the store takes writes; `serve` publishes it to health and systemd."""
        return StoreHealth(self.metrics)

    @functools.cached_property
    def accepted_counters(self) -> dict[Freshness, Counter]:
        """The accepted counter's child per freshness, bound once (labels() per call is not
        free on a path taken for every envelope)."""
        return {f: self.metrics.accepted.labels(freshness=f.value) for f in Freshness}

    def nonce_record(self, agent_id: str) -> NonceRecord:
        """A fresh challenge nonce for `agent_id` only; it may be sent once the store has it."""
        now = self.clock()
        return NonceRecord(
            nonce=new_nonce(now),
            issued_at=now,
            expires_at=now + self.config.stream.challenge_ttl,
            replica=self.replica_id,
            agent_id=agent_id,
        )

    async def new_challenge(
        self, agent_id: str, head: pipeline.ChainHead
    ) -> tuple[Challenge, NonceRecord]:
        record = self.nonce_record(agent_id)
        await self.nonces.issue(record)
        return self.challenge_for(record, head), record

    def challenge_for(self, record: NonceRecord, head: pipeline.ChainHead) -> Challenge:
        """The challenge of an issued (durable) nonce."""
        self.metrics.challenges.inc()
        return Challenge(record.nonce, record.expires_at, head.last_seq, head.last_hash)

    async def audit_rejection(
        self, agent_id: str, error: AttestError, seq: int, envelope_hash: bytes
    ) -> None:
        self.metrics.rejected.labels(code=error.code).inc()
        if isinstance(error, StoreError):
            await self.store_health.failed(error)
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
        "agent", "answering", "closed", "context", "core", "ended_by", "evidence_seen", "head",
        "nonces", "opened", "refresh_at", "task", "writing",
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
        self.refresh_at = 0.0
        self.closed = False
        self.opened = time.monotonic()
        #: A stream that sent no envelope by the time its first challenge expires is ended
        #: (`stream-idle`): held idle, it would only keep a slot and write nonce rows.
        self.evidence_seen = False
        #: Set while an envelope is being answered: the stream is then never cancelled.
        self.answering = False
        #: Why the servicer must end this stream (replaced, idle), set by another task.
        self.ended_by: AttestError | None = None
        self.task: asyncio.Task[None] | None = None
        #: Held while one envelope is answered or an idle challenge is sent: one write at a time.
        self.writing = asyncio.Lock()

    async def challenge(self) -> pb.VerifierMessage:
        challenge, record = await self.core.new_challenge(self.agent.agent_id, self.head)
        return pb.VerifierMessage(challenge=self._sent(challenge, record))

    def _sent(self, challenge: Challenge, record: NonceRecord) -> pb.Challenge:
        self.nonces[record.nonce] = record
        while len(self.nonces) > _STREAM_NONCES:
            del self.nonces[next(iter(self.nonces))]
        ttl = self.core.config.stream.challenge_ttl_s
        self.refresh_at = time.monotonic() + ttl / 2
        if not self.evidence_seen:  # due no later than the first envelope's deadline
            self.refresh_at = min(self.refresh_at, self.opened + ttl)
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

    async def _commit(self, raw: bytes) -> tuple[Accepted, NonceRecord]:
        """Check `raw` against this stream's state and make it durable with the next nonce
        (issued in the same transaction); return the outcome and that nonce."""
        core = self.core
        agent_id = self.agent.agent_id
        known_gpus = core.gpu_sections.get(agent_id)
        auth = pipeline.authenticate(raw, agent_id, self.agent, core.limits, known_gpus)
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
        next_nonce = core.nonce_record(agent_id)
        attestation = pipeline.to_attestation(verified, core.clock())
        # Charged once every check passed, so only evidence the store would keep counts;
        # given back when the store does not take it.
        core.byte_budget.reserve(agent_id, len(raw), time.monotonic())
        try:
            accepted = await core.committer.submit(attestation, next_nonce)
        except BaseException:
            core.byte_budget.refund(agent_id, len(raw))
            raise
        self.head = self.head.after(accepted.seq, accepted.envelope_hash, evidence.created_at)
        if isinstance(evidence, wire.CheckedEvidence):  # a heartbeat keeps the full one's
            core.keep_gpu_section(agent_id, evidence.gpu_section)
        self.nonces.pop(evidence.nonce, None)
        return accepted, next_nonce

    async def accept(self, raw: bytes) -> pb.VerifierMessage:
        """Verify, make durable, and answer with the receipt and the next challenge,
        whose nonce became durable in the same transaction (one message); raise AttestError."""
        core = self.core
        wait = core.limiter.acquire(self.agent.agent_id, time.monotonic(), _MAX_RATE_WAIT_S)
        if wait is None:
            raise RateLimitedError("too many envelopes from this agent; slow down")
        if wait > 0:
            await asyncio.sleep(wait)
        gate = core.inflight
        counted = gate.locked()  # every slot taken: this one waits as bytes, counted
        if counted:
            core.metrics.waiting.inc()
        try:
            await gate.acquire()  # a free slot is taken without suspending
        finally:
            if counted:
                core.metrics.waiting.dec()
        try:
            accepted, next_nonce = await self._commit(raw)
        finally:
            gate.release()
        core.accepted_counters[accepted.freshness].inc()
        # No signature per envelope: the checkpoint (signed once per tree size) and the entry's
        # inclusion proof in its tree are the receipt's proof (docs/protocol.md §5).
        inclusion = await core.checkpointer.prove(accepted.log_index)
        receipt = Receipt(
            agent_id=accepted.agent_id, seq=accepted.seq, envelope_hash=accepted.envelope_hash,
            log_index=accepted.log_index, checkpoint=inclusion.checkpoint,
            accepted_at=accepted.accepted_at, freshness=accepted.freshness,
            inclusion_proof=inclusion.proof,
        )  # fmt: skip
        challenge = self._sent(core.challenge_for(next_nonce, self.head), next_nonce)
        return pb.VerifierMessage(receipt=wire.encode_receipt(receipt), next_challenge=challenge)
