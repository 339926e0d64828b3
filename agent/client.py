"""The gRPC shell of the agent: channels, backoff and Enroll (retried until its first success
or its deadline). RotateKey is agent.rotation's, the Attest stream agent.stream's.

Stream semantics are those of docs/protocol.md §8: the verifier speaks first with a Challenge;
the agent drops spooled entries the verifier already holds (seq <= last_seq), replays the rest
in seq order, and removes an entry only when a receipt signed by the pinned verifier key names it.
Reconnects use exponential backoff with full jitter, capped.
"""

from __future__ import annotations

import asyncio
import random
import time
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
from attest import errors
from attest.hostport import HostPort, require_loopback
from attest.keys import Algorithm, load_or_create_private_key
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
#: How long `enroll` keeps trying by default (`--timeout`): long enough for a verifier that is
#: starting, short enough that a wrong port or a missing CA ends in exit 11, not a hang.
ENROLL_DEADLINE_S = 120.0


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
    #: Give up (EnrollmentError, naming the likely cause) after this many seconds.
    deadline_s: float = ENROLL_DEADLINE_S


def likely_cause(request: EnrollRequest, details: str) -> tuple[str, bool]:
    """What an Enroll transport failure most likely means to the person running `enroll`, and
    whether retrying can help (a certificate that does not verify never starts to)."""
    target = request.target
    if "CERTIFICATE_VERIFY_FAILED" in details:
        if request.ca_pem is None:
            no_ca = (
                f"the certificate of {target} did not verify against the system CAs: pass the "
                "verifier's CA with --ca (`gpu-attest-verifier ca export` prints it)"
            )
            return no_ca, False
        return f"the certificate of {target} is not signed by --ca: wrong CA or wrong host", False
    if "Connection refused" in details:
        return f"nothing listens at {target}: is the verifier running, and is this its port?", True
    if "Socket closed" in details or "handshake" in details.lower():
        wrong_port = (
            f"{target} closed the TLS handshake: it may be the Attest (mTLS) port, which asks "
            "for a client certificate; --verifier takes the enroll port (7444 by default)"
        )
        return wrong_port, True
    return f"the verifier at {target} is unreachable ({details})", True


async def enroll(
    request: EnrollRequest, backoff: Backoff, max_attempts: int | None = None
) -> Identity:
    """Enroll this agent; retry retryable failures with backoff until the first success, at
    most `request.deadline_s` seconds (and `max_attempts` attempts, when given).

    Creates agent.key (0600) if absent; the same key is reused on retry, which the verifier
    answers idempotently. Raises EnrollmentError (or a Token*Error) on a final refusal, and
    EnrollmentError naming the likely cause (wrong port, CA missing, unreachable) when the
    deadline passes or the verifier's certificate does not verify.
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
    response = await _call_enroll(request, message, backoff, max_attempts)
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


async def _call_enroll(
    request: EnrollRequest,
    message: pb.EnrollRequest,
    backoff: Backoff,
    max_attempts: int | None,
) -> pb.EnrollResponse:
    deadline = time.monotonic() + request.deadline_s
    attempt, said = 0, ""
    while True:
        channel = open_channel(request.target, None, request.ca_pem, request.insecure_plaintext)
        try:
            stub = pb_grpc.AttestationStub(channel)
            left = max(0.1, deadline - time.monotonic())
            response: pb.EnrollResponse = await stub.Enroll(
                message, timeout=min(_ENROLL_TIMEOUT_S, left)
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRYABLE:
                raise enrollment_error(exc.code(), exc.details() or "") from exc
            cause, retry = likely_cause(request, exc.details() or exc.code().name)
            attempt += 1
            out_of_attempts = max_attempts is not None and attempt >= max_attempts
            if not retry or out_of_attempts or time.monotonic() >= deadline:
                raise errors.EnrollmentError(
                    f"gave up after {attempt} attempt(s): {cause}"
                ) from exc
            if cause != said:  # the cause once, not at every retry
                log.warning("enroll: %s; retrying for up to %.0fs", cause,
                            request.deadline_s)  # fmt: skip
                said = cause
            await asyncio.sleep(min(backoff.delay(attempt), max(0.0, deadline - time.monotonic())))
        else:
            return response
        finally:
            await channel.close(None)


def utcnow() -> datetime:
    return datetime.now(UTC)
