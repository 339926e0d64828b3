"""The one error tree. Every gate in gpu-attest raises a subclass of `AttestError`.

Each class carries a stable `code` (kebab-case): agents log it, the verifier maps it to a gRPC
status in one place, and audit records store it. Codes never change once released.
"""

from __future__ import annotations

from typing import ClassVar


class AttestError(Exception):
    """Root of every error gpu-attest raises on purpose."""

    code: ClassVar[str] = "attest-error"


# --- keys and signatures ---------------------------------------------------------------------


class KeyMaterialError(AttestError):
    """A key could not be loaded, parsed or is of an unsupported kind."""

    code = "key-invalid"


class UnsupportedKeyError(KeyMaterialError):
    code = "key-unsupported"


class KeyFilePermissionError(KeyMaterialError):
    """A private key file is readable by others than its owner."""

    code = "key-file-mode"


class SignatureError(AttestError):
    """Base of the envelope-signature failures."""

    code = "signature-invalid"


class NoSignatureError(SignatureError):
    code = "signature-missing"


class UnknownKeyError(SignatureError):
    """No signature on the envelope was made by a trusted key."""

    code = "signature-unknown-key"


class BadSignatureError(SignatureError):
    """A signature by a trusted key does not verify over the received bytes."""

    code = "signature-invalid"


class PayloadTypeError(SignatureError):
    code = "payload-type-mismatch"


# --- decoding untrusted bytes ----------------------------------------------------------------


class DecodeError(AttestError):
    """Bytes that should be a message of ours are not."""

    code = "decode-error"


class SizeLimitError(DecodeError):
    code = "size-limit"


class InvariantError(DecodeError):
    """A well-formed message breaks a rule of the contract (duplicate UUID, bad field)."""

    code = "invariant-violated"


class EvidenceBoundsError(InvariantError):
    """Evidence reports more than hardware can (GPUs, MIG devices, string lengths) or an
    identifier outside its grammar, or text with control, NUL or bidi characters."""

    code = "evidence-out-of-bounds"


# --- verification of evidence ----------------------------------------------------------------


class VerificationError(AttestError):
    code = "verification-failed"


class AgentUnknownError(VerificationError):
    code = "agent-unknown"


class AgentRevokedError(VerificationError):
    code = "agent-revoked"


class IdentityMismatchError(VerificationError):
    """The evidence names another agent than the authenticated transport identity."""

    code = "identity-mismatch"


class NonceError(VerificationError):
    code = "nonce-invalid"


class NonceUnknownError(NonceError):
    code = "nonce-unknown"


class NonceExpiredError(NonceError):
    code = "nonce-expired"


class NonceReplayedError(NonceError):
    code = "nonce-replayed"


class NonceMismatchError(NonceError):
    """The nonce was issued to another agent's challenge: a nonce proves freshness only for
    the agent it was sent to, and must stay usable by that agent."""

    code = "nonce-mismatch"


class ChainError(VerificationError):
    code = "chain-broken"


class ReplayError(ChainError):
    """The envelope (or its sequence number) was already accepted."""

    code = "evidence-replayed"


class ForkError(ChainError):
    """A different envelope already holds this agent's sequence number."""

    code = "evidence-fork"


class GapError(ChainError):
    """The sequence skips numbers or the previous-hash link does not match."""

    code = "evidence-gap"


class HeartbeatBaseError(VerificationError):
    """A heartbeat names a full evidence other than the one the verifier holds as the agent's
    current one (a restored store, a full evidence not yet accepted): the agent must send its
    full evidence again (docs/protocol.md §4.1)."""

    code = "heartbeat-base-unknown"


class ClockSkewError(VerificationError):
    code = "clock-skew"


class TimeReversedError(ClockSkewError):
    """The evidence claims to be created earlier (beyond the allowed skew) than evidence the
    agent's chain already holds: time along one chain never runs backwards."""

    code = "evidence-time-reversed"


# --- enrollment ------------------------------------------------------------------------------


class EnrollmentError(AttestError):
    code = "enrollment-failed"


class TokenInvalidError(EnrollmentError):
    code = "token-invalid"


class TokenExpiredError(EnrollmentError):
    code = "token-expired"


class TokenUsedError(EnrollmentError):
    code = "token-used"


class KeyRotationError(AttestError):
    """An agent key rotation did not complete (verifier unreachable, answer unusable, or the
    agent not in a state to rotate); the agent keeps whatever pending key it persisted."""

    code = "key-rotation-failed"


class KeyRotationRefusedError(KeyRotationError):
    """The verifier answered RotateKey with a refusal (e.g. the agent was revoked)."""

    code = "key-rotation-refused"


# --- configuration, storage, inventory -------------------------------------------------------


class ConfigError(AttestError):
    code = "config-invalid"


class MachineFileError(ConfigError):
    """A simulated-machine description (docs/design.md §7) is malformed or names unknown keys."""

    code = "machine-file-invalid"


class StoreError(AttestError):
    code = "store-error"


class StoreUnavailableError(StoreError):
    code = "store-unavailable"


class SpoolFullError(StoreError):
    """The agent's spool cannot take more evidence (disk full or cap reached)."""

    code = "spool-full"


class InventoryError(AttestError):
    code = "inventory-error"


class RateLimitedError(AttestError):
    code = "rate-limited"


class ByteBudgetError(RateLimitedError):
    """The agent's accepted evidence would exceed its byte budget for the current window
    (`stream.agent_bytes_per_hour`): one agent must not be able to fill the verifier's disk."""

    code = "byte-budget-exceeded"


class PeerLimitError(RateLimitedError):
    """A client address holds as many calls of the services open to anyone (Enroll, health,
    reflection) as one address may (`stream.max_calls_per_peer`)."""

    code = "peer-limit"


class StreamReplacedError(AttestError):
    """An agent opened more Attest streams than `stream.max_streams_per_agent`: its oldest
    stream is ended in favour of the new one (a reconnecting agent's old stream is dead)."""

    code = "stream-replaced"


class StreamIdleError(AttestError):
    """An Attest stream sent no evidence within a challenge's lifetime after it opened."""

    code = "stream-idle"


class ProofError(AttestError):
    """A Merkle inclusion/consistency proof or a checkpoint does not verify."""

    code = "proof-invalid"


class NotEnrolledError(ConfigError):
    """The agent's state directory holds no enrollment (run `gpu-attest-agent enroll`)."""

    code = "agent-not-enrolled"


class ReceiptMismatchError(VerificationError):
    """A verifier receipt names another agent or envelope than the one it answers."""

    code = "receipt-mismatch"


class TransportIdentityError(VerificationError):
    """The connection carries no usable agent identity (no client certificate, no agent SAN)."""

    code = "transport-identity-missing"


class RegistryError(ConfigError):
    """The compliance registry file is malformed, has unknown keys or dangling references."""

    code = "registry-invalid"


class PolicyError(ConfigError):
    """A policy pack (docs/design.md §13) is malformed, has unknown keys or countries, floats,
    overlapping date ranges or figures without a source. The message holds one line per
    problem, each naming file, table and key."""

    code = "policy-invalid"


class PolicyNotFoundError(AttestError):
    """No policy pack has the name asked for, or none is in force on the date asked for."""

    code = "policy-unknown"


class DuplicateSignatureError(SignatureError):
    """One key signed the same envelope twice: never needed, and it makes envelopes malleable."""

    code = "signature-duplicate"


class TooManySignaturesError(SignatureError):
    """More signatures than the envelope policy allows: an attack on verifier CPU."""

    code = "signature-too-many"


class InputFileError(AttestError):
    """A file named on a command line is not a readable regular file (a FIFO, a device, a
    directory, missing or unreadable)."""

    code = "input-unreadable"


class FindingUnknownError(AttestError):
    """`findings ack ID` named no current finding (never issued, or an episode that resolved
    and recurred under a new id)."""

    code = "finding-unknown"


class FindingResolvedError(AttestError):
    """`findings ack ID` named a finding that has resolved: nothing is left to acknowledge."""

    code = "finding-resolved"


class SiteUnknownError(AttestError):
    """A site named on a command line is neither in the registry nor any agent's site."""

    code = "site-unknown"


class RegistryChangeRefusedError(AttestError):
    """A registry import would remove a site or entity still holding GPUs, or bring an
    authorization already expired, and `--force` was not given (exit 1, REFUSED)."""

    code = "registry-change-refused"


class StateMissingError(ConfigError):
    """A command that reads the verifier's state found none where the configuration points (a
    wrong `--config`, or no `/etc/gpu-attest/verifier.toml`)."""

    code = "state-missing"


class LandmarkProbeError(AttestError):
    """A landmark could not measure this agent: unreachable, refused, timed out, or what it sent
    is malformed or not about the challenges this agent answered. `result` is the bounded metric
    label of the failure (unreachable, refused, timeout, malformed)."""

    code = "landmark-probe-failed"

    def __init__(self, message: str, result: str = "malformed") -> None:
        super().__init__(message)
        self.result = result


class StatePermissionError(ConfigError):
    """A state directory is open to group or others: keys and evidence must stay private."""

    code = "state-dir-mode"


class BoundaryDataError(ConfigError):
    """The shipped country boundary file (verifier/geodata/) is missing, corrupt or not the
    format this code reads."""

    code = "boundary-data-invalid"


class CountryBoundaryUnknownError(AttestError):
    """A country code the boundary data has no territory for."""

    code = "country-boundary-unknown"
