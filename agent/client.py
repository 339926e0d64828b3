"""The gRPC shell of the agent: Enroll (retried until its first success), RotateKey and the
Attest stream.

Stream semantics are those of protocol.md: the verifier speaks first with a Challenge; the agent
drops spooled entries the verifier already holds (seq <= last_seq), replays the rest in seq
order, and removes an entry only when a receipt signed by the pinned verifier key names it.
Reconnects use exponential backoff with full jitter, capped.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc

from agent.identity import (
    KEY_FILE,
    Identity,
    TlsMaterial,
    make_csr,
    save_enrollment,
)
from agent.logs import get_logger
from agent.rotation import (
    PendingKey,
    abandon_rotation,
    check_issued_certificate,
    install_rotation,
)
from attest import errors
from attest.envelope import rotation_statement
from attest.hostport import HostPort, require_loopback
from attest.keys import Algorithm, SoftwareSigner, load_or_create_private_key
from attest.v1 import attest_pb2 as pb
from attest.v1 import attest_pb2_grpc as pb_grpc

log = get_logger("client")

AGENT_ID_METADATA = "x-gpu-attest-agent-id"
#: The agent key signs evidence AND is the mTLS client key. grpc's BoringSSL server does not
#: offer Ed25519 among the signature algorithms of its CertificateRequest (the handshake fails
#: with NO_COMMON_SIGNATURE_ALGORITHMS), so the agent key is ECDSA P-256, as a TPM key would be.
AGENT_KEY_ALGORITHM: Algorithm = "ecdsa-p256-sha256"
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
_CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.enable_retries", 0),
)
_ENROLL_TIMEOUT_S = 30.0
_ROTATE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: uniform(0, min(cap, initial * 2**attempt))."""

    initial_s: float
    cap_s: float

    def delay(
        self, attempt: int, uniform: Callable[[float, float], float] = random.uniform
    ) -> float:
        ceiling = min(self.cap_s, self.initial_s * (2 ** min(attempt, 32)))
        return uniform(0.0, ceiling)


def open_channel(
    target: HostPort, tls: TlsMaterial | None, ca_pem: bytes | None, insecure_plaintext: bool
) -> grpc.aio.Channel:
    """A channel to the verifier: mTLS when `tls` is given, server-auth TLS, or plaintext.

    Plaintext is refused unless the target is loopback (raises ConfigError).
    """
    if insecure_plaintext:
        require_loopback(target, "--insecure-plaintext")
        return grpc.aio.insecure_channel(str(target), options=_CHANNEL_OPTIONS)
    if tls is not None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls.ca_pem, private_key=tls.key_pem, certificate_chain=tls.cert_pem
        )
    else:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    return grpc.aio.secure_channel(str(target), credentials, options=_CHANNEL_OPTIONS)


def enrollment_error(code: grpc.StatusCode, details: str) -> errors.EnrollmentError:
    """The typed error for a final Enroll failure, chosen by the stable code in the details."""
    for cls in (errors.TokenExpiredError, errors.TokenUsedError, errors.TokenInvalidError):
        if cls.code in details:
            return cls(f"enrollment refused ({code.name}): {details}")
    return errors.EnrollmentError(f"enrollment refused ({code.name}): {details}")


@dataclass(frozen=True)
class EnrollRequest:
    target: HostPort
    token: str
    ca_pem: bytes | None
    state_dir: Path
    hostname: str
    machine_id: str
    insecure_plaintext: bool = False
    #: Where `run` attests (recorded in identity.toml); None: the enroll target itself.
    attest_target: HostPort | None = None


async def enroll(
    request: EnrollRequest, backoff: Backoff, max_attempts: int | None = None
) -> Identity:
    """Enroll this agent; retry retryable failures with backoff until the first success.

    Creates agent.key (0600) if absent; the same key is reused on retry, which the verifier
    answers idempotently. Raises EnrollmentError (or a Token*Error) on a final refusal.
    """
    request.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    signer = load_or_create_private_key(request.state_dir / KEY_FILE, AGENT_KEY_ALGORITHM)
    message = pb.EnrollRequest(
        token=request.token,
        public_key=signer.public_key.spki_der,
        csr=make_csr(signer, request.hostname),
        hostname=request.hostname,
        machine_id=request.machine_id,
    )
    attempt = 0
    while True:
        channel = open_channel(request.target, None, request.ca_pem, request.insecure_plaintext)
        try:
            stub = pb_grpc.AttestationStub(channel)
            response = await stub.Enroll(message, timeout=_ENROLL_TIMEOUT_S)
            break
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRYABLE:
                raise enrollment_error(exc.code(), exc.details() or "") from exc
            attempt += 1
            if max_attempts is not None and attempt >= max_attempts:
                raise errors.EnrollmentError(
                    f"verifier {request.target} unreachable after {attempt} attempts: "
                    f"{exc.details()}"
                ) from exc
            wait = backoff.delay(attempt)
            log.warning("enroll: %s (%s); retrying in %.1fs", exc.code().name, exc.details(), wait)
            await asyncio.sleep(wait)
        finally:
            await channel.close(None)
    attest_target = request.attest_target or request.target
    identity = Identity(response.agent_id, response.site_id, str(attest_target))
    if not identity.agent_id:
        raise errors.EnrollmentError("the verifier returned no agent id")
    save_enrollment(
        request.state_dir,
        identity,
        response.client_certificate,
        response.ca_certificate,
        response.verifier_public_key,
    )
    return identity


@dataclass(frozen=True)
class RotateRequest:
    """What RotateKey needs: the enrolled identity and the pair it authenticates with now."""

    target: HostPort
    state_dir: Path
    identity: Identity
    current: SoftwareSigner  # agent.key: signs the hand-over and is the mTLS client key
    tls: TlsMaterial  # the current key's, with the pinned CA


async def rotate_key(
    request: RotateRequest,
    pending: PendingKey,
    backoff: Backoff,
    max_attempts: int = 1,
    clock: Callable[[], datetime] | None = None,
) -> TlsMaterial:
    """Hand the identity over to `pending` (agent.rotation, step 1 already done) and install it.

    Calls RotateKey over mTLS with the current pair, retrying retryable failures up to
    `max_attempts` with backoff; checks that the certificate is for the pending key, names this
    agent and chains to the pinned CA; installs key and certificate (agent.rotation, steps 2-4)
    and returns the new TLS material.

    Only begin with an empty spool: envelopes signed by the current key are refused once the
    verifier has pinned the new one. A refusal of a `fresh` key's first request proves the
    verifier never pinned it, so the pending key is abandoned (the current pair stays in use);
    after any unanswered attempt the pending key is kept, since the verifier may hold it.
    Raises KeyRotationRefusedError (the verifier refused), KeyRotationError (unreachable after
    `max_attempts`, or an unusable answer).
    """
    identity, new = request.identity, pending.signer
    statement = rotation_statement(identity.agent_id, new.public_key.spki_der)
    message = pb.RotateKeyRequest(
        agent_id=identity.agent_id,
        new_public_key=new.public_key.spki_der,
        csr=make_csr(new, identity.agent_id),
        old_key_signature=pb.Signature(
            keyid=request.current.public_key.keyid, sig=request.current.sign(statement)
        ),
    )
    maybe_pinned = not pending.fresh
    attempt = 0
    while True:
        channel = open_channel(request.target, request.tls, None, insecure_plaintext=False)
        try:
            response = await pb_grpc.AttestationStub(channel).RotateKey(
                message, timeout=_ROTATE_TIMEOUT_S
            )
            break
        except grpc.aio.AioRpcError as exc:
            details = f"{exc.code().name}: {exc.details()}"
            if exc.code() not in RETRYABLE:
                if not maybe_pinned:
                    abandon_rotation(request.state_dir)
                raise errors.KeyRotationRefusedError(f"key rotation refused ({details})") from exc
            maybe_pinned = True
            attempt += 1
            if attempt >= max_attempts:
                raise errors.KeyRotationError(
                    f"verifier {request.target} did not answer RotateKey after {attempt} "
                    f"attempt(s) ({details}); the pending key is kept for the next try"
                ) from exc
            wait = backoff.delay(attempt)
            log.warning("rotate-key: %s; retrying in %.1fs", details, wait)
            await asyncio.sleep(wait)
        finally:
            await channel.close(None)
    cert_pem = bytes(response.client_certificate)
    now = (clock or utcnow)()
    check_issued_certificate(
        cert_pem, ca_pem=request.tls.ca_pem, key=new.public_key, agent_id=identity.agent_id,
        now=now,
    )  # fmt: skip
    install_rotation(request.state_dir, cert_pem)
    return TlsMaterial(ca_pem=request.tls.ca_pem, cert_pem=cert_pem, key_pem=new.private_pem())


def utcnow() -> datetime:
    return datetime.now(UTC)
