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
from collections.abc import AsyncIterator
from typing import NoReturn

import grpc

from attest import wire
from attest.envelope import EnvelopeSignature, envelope_hash
from attest.errors import (
    AgentRevokedError,
    AgentUnknownError,
    AttestError,
    RateLimitedError,
    StoreError,
    StreamIdleError,
    StreamReplacedError,
    TransportIdentityError,
)
from attest.v1 import attest_pb2 as pb
from attest.v1 import attest_pb2_grpc as pb_grpc
from verifier import enroll as enroll_core
from verifier import pipeline
from verifier.errors_map import details_for, rejection_for, status_for
from verifier.refresh import IdleRefresher
from verifier.session import (
    PLAINTEXT_AGENT_HEADER,
    AttestSession,
    Core,
    identity_from_certificate,
    identity_from_metadata,
)

log = logging.getLogger(__name__)

#: Longest an agent's new stream waits for a token of its rate bucket before it is refused.
_MAX_OPEN_WAIT_S = 2.0

__all__ = [
    "PLAINTEXT_AGENT_HEADER",
    "AttestationServicer",
    "Core",
    "identity_from_certificate",
    "identity_from_metadata",
]


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
            await self._store_failed(exc)
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
            await self._store_failed(exc)
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
        # Opening a stream costs a token of the agent's bucket: a stream writes a nonce row, and
        # an agent opening stream after stream must not turn that into a flood of rows.
        wait = core.limiter.acquire(agent_id, time.monotonic(), _MAX_OPEN_WAIT_S)
        if wait is None:
            raise RateLimitedError("too many streams opened by this agent; slow down")
        if wait > 0:
            await asyncio.sleep(wait)
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
        except AttestError as exc:
            await self._refuse(exc, context)
        agent_id = session.agent.agent_id
        session.task = asyncio.current_task()
        for oldest in core.agent_streams.add(agent_id, session):
            self._end(oldest, StreamReplacedError("a newer stream of this agent replaced it"))
        watched = False
        try:
            try:
                await context.write(await session.challenge())
            except AttestError as exc:
                await self._refuse(exc, context)
            self._refresher.add(session)
            watched = True
            await self._serve(session, context)
        except asyncio.CancelledError:
            if session.ended_by is None:
                raise  # the server is stopping
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # this cancellation was ours, and is handled here
            await self._close_ended(session, context)
        finally:
            session.closed = True
            if watched:
                self._refresher.discard(session)
            core.agent_streams.discard(agent_id, session)
            if core.agent_streams.count(agent_id) == 0:
                core.gpu_sections.pop(agent_id, None)

    async def _serve(
        self,
        session: AttestSession,
        context: grpc.aio.ServicerContext[pb.AgentMessage, pb.VerifierMessage],
    ) -> None:
        # Each message is awaited directly (no task per message: this loop runs per envelope);
        # an idle stream's fresh challenge at ttl/2 comes from the servicer's one refresher,
        # and `session.writing` keeps its write apart from an answer to an envelope.
        while session.ended_by is None:
            message: object = await context.read()  # EOF is a sentinel, not a message
            if not isinstance(message, pb.AgentMessage):
                return  # EOF: the agent closed its side
            raw = message.evidence
            del message  # the bytes alone while it waits its turn (session.Core.inflight)
            session.evidence_seen = True
            session.answering = True
            try:
                async with session.writing:
                    await self._one(session, context, raw)
            finally:
                session.answering = False
        await self._close_ended(session, context)

    def _end(self, session: AttestSession, error: AttestError) -> None:
        """End `session` from another task: at once while it waits for a message (its task is
        cancelled there, between envelopes), else right after the envelope it is answering."""
        if session.ended_by is not None or session.closed:
            return  # already ending: a second cancellation would cut its goodbye short
        session.ended_by = error
        if session.task is not None and not session.answering:
            session.task.cancel()

    async def _close_ended(
        self,
        session: AttestSession,
        context: grpc.aio.ServicerContext[pb.AgentMessage, pb.VerifierMessage],
    ) -> None:
        error = session.ended_by
        assert error is not None
        self.core.metrics.calls_refused.labels(reason=error.code).inc()
        async with session.writing:  # never in the middle of an idle refresh's write
            await context.abort(status_for(error), details_for(error))

    async def _refuse(
        self,
        error: AttestError,
        context: grpc.aio.ServicerContext[pb.AgentMessage, pb.VerifierMessage],
    ) -> NoReturn:
        self.core.metrics.rejected.labels(code=error.code).inc()
        await self._store_failed(error)
        await context.abort(status_for(error), details_for(error))

    async def _store_failed(self, error: AttestError) -> None:
        if isinstance(error, StoreError):
            await self.core.store_health.failed(error)

    async def _refresh(self, session: AttestSession) -> None:
        """Send a fresh challenge if the stream is still idle at its refresh time; end a
        stream that sent no evidence by the time its first challenge expired."""
        deadline = session.opened + self.core.config.stream.challenge_ttl_s
        if not session.evidence_seen and deadline <= time.monotonic():
            if not session.closed:
                self._end(session, StreamIdleError("no evidence within the challenge lifetime"))
            return
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
            await self._store_failed(exc)
            await context.abort(status_for(exc), details_for(exc))
        await context.write(challenge)
