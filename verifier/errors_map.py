"""The ONE place that maps AttestError classes to gRPC status codes and Rejection messages.

Lookup walks the error's class hierarchy (most specific first), so a new subclass inherits its
parent's status until it is given its own entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from attest import errors
from attest.model import Rejection


@dataclass(frozen=True)
class Mapping:
    """How one error class travels: the stream's final status and whether resending may help."""

    status: grpc.StatusCode
    retryable: bool


_MAP: dict[type[errors.AttestError], Mapping] = {
    # Who signed: the transport identity is known, its key is not.
    errors.UnknownKeyError: Mapping(grpc.StatusCode.PERMISSION_DENIED, retryable=False),
    errors.SignatureError: Mapping(grpc.StatusCode.UNAUTHENTICATED, retryable=False),
    errors.TransportIdentityError: Mapping(grpc.StatusCode.UNAUTHENTICATED, retryable=False),
    errors.AgentUnknownError: Mapping(grpc.StatusCode.PERMISSION_DENIED, retryable=False),
    errors.AgentRevokedError: Mapping(grpc.StatusCode.PERMISSION_DENIED, retryable=False),
    errors.IdentityMismatchError: Mapping(grpc.StatusCode.PERMISSION_DENIED, retryable=False),
    errors.KeyMaterialError: Mapping(grpc.StatusCode.INVALID_ARGUMENT, retryable=False),
    # What was sent.
    errors.SizeLimitError: Mapping(grpc.StatusCode.INVALID_ARGUMENT, retryable=False),
    errors.DecodeError: Mapping(grpc.StatusCode.INVALID_ARGUMENT, retryable=False),
    # Freshness and order.
    errors.ReplayError: Mapping(grpc.StatusCode.ALREADY_EXISTS, retryable=False),
    errors.ForkError: Mapping(grpc.StatusCode.ALREADY_EXISTS, retryable=False),
    errors.GapError: Mapping(grpc.StatusCode.FAILED_PRECONDITION, retryable=False),
    errors.ChainError: Mapping(grpc.StatusCode.FAILED_PRECONDITION, retryable=False),
    # The agent answers it with its full evidence (docs/protocol.md §4.1).
    errors.HeartbeatBaseError: Mapping(grpc.StatusCode.FAILED_PRECONDITION, retryable=True),
    errors.NonceReplayedError: Mapping(grpc.StatusCode.ALREADY_EXISTS, retryable=False),
    # Another agent's nonce never becomes this agent's: resending cannot help.
    errors.NonceMismatchError: Mapping(grpc.StatusCode.PERMISSION_DENIED, retryable=False),
    errors.NonceExpiredError: Mapping(grpc.StatusCode.FAILED_PRECONDITION, retryable=True),
    errors.NonceUnknownError: Mapping(grpc.StatusCode.FAILED_PRECONDITION, retryable=True),
    errors.NonceError: Mapping(grpc.StatusCode.FAILED_PRECONDITION, retryable=True),
    # Evidence from the future becomes acceptable as time passes; a reversed one never does.
    errors.TimeReversedError: Mapping(grpc.StatusCode.FAILED_PRECONDITION, retryable=False),
    errors.ClockSkewError: Mapping(grpc.StatusCode.FAILED_PRECONDITION, retryable=True),
    errors.VerificationError: Mapping(grpc.StatusCode.FAILED_PRECONDITION, retryable=False),
    # Enrollment.
    errors.TokenInvalidError: Mapping(grpc.StatusCode.PERMISSION_DENIED, retryable=False),
    errors.TokenExpiredError: Mapping(grpc.StatusCode.PERMISSION_DENIED, retryable=False),
    errors.TokenUsedError: Mapping(grpc.StatusCode.ALREADY_EXISTS, retryable=False),
    errors.EnrollmentError: Mapping(grpc.StatusCode.INVALID_ARGUMENT, retryable=False),
    # Capacity and infrastructure.
    errors.RateLimitedError: Mapping(grpc.StatusCode.RESOURCE_EXHAUSTED, retryable=True),
    errors.StreamReplacedError: Mapping(grpc.StatusCode.ABORTED, retryable=True),
    errors.StreamIdleError: Mapping(grpc.StatusCode.DEADLINE_EXCEEDED, retryable=True),
    errors.StoreUnavailableError: Mapping(grpc.StatusCode.UNAVAILABLE, retryable=True),
    errors.StoreError: Mapping(grpc.StatusCode.UNAVAILABLE, retryable=True),
}
_DEFAULT = Mapping(grpc.StatusCode.INTERNAL, retryable=True)


def mapping_for(error: errors.AttestError) -> Mapping:
    """The mapping of the most specific class of `error` listed here."""
    for cls in type(error).__mro__:
        found = _MAP.get(cls)
        if found is not None:
            return found
    return _DEFAULT


def status_for(error: errors.AttestError) -> grpc.StatusCode:
    return mapping_for(error).status


def details_for(error: errors.AttestError) -> str:
    """The status detail string: the stable code first, so agents can log and match it."""
    return f"{error.code}: {error}"[:512]


def rejection_for(error: errors.AttestError, seq: int, envelope_hash: bytes) -> Rejection:
    """The Rejection message the agent logs before the stream ends with `status_for(error)`."""
    return Rejection(
        seq=seq,
        envelope_hash=envelope_hash,
        code=error.code,
        message=str(error)[:512],
        retryable=mapping_for(error).retryable,
    )
