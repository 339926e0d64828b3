"""The verifier's storage port: one `Store` protocol, two implementations (SQLite, PostgreSQL).

Conventions every implementation keeps:
- Every datetime going in and out is timezone-aware UTC (stored as integer microseconds).
- Every method blocks and is thread-safe. From asyncio, call them with `asyncio.to_thread`, and
  hand accepts to `verifier.store.batch.GroupCommitter`, which batches many envelopes into one
  transaction (group commit) and resolves each caller only after COMMIT.
- Failures to reach the database raise `StoreUnavailableError` (retryable; the store reconnects
  by itself); other database failures raise `StoreError`. Domain refusals raise the typed errors
  named in each docstring, all from `attest.errors`.
- Open a store with `verifier.store.open_store(url, options)`: `sqlite:///path/to/db` or
  `postgresql://user@host:port/db`. Schema migrations are applied at open.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from attest.errors import AttestError
from attest.model import Freshness
from verifier.registry_model import Registry

# --- agents, keys, enrollment ------------------------------------------------------------------


class AgentStatus(enum.Enum):
    ACTIVE = "active"
    REVOKED = "revoked"


@dataclass(frozen=True)
class AgentKey:
    keyid: str  # hex SHA-256 of spki_der (attest.keys.key_id)
    spki_der: bytes
    added_at: datetime
    retired_at: datetime | None = None  # set when rotated away; None = current


@dataclass(frozen=True)
class AgentRecord:
    """An enrolled agent and its chain head, as of the read."""

    agent_id: str
    site_id: str
    hostname: str
    machine_id: str
    status: AgentStatus
    keys: tuple[AgentKey, ...]  # every key ever bound, oldest first
    token_hash: bytes  # SHA-256 of the enrollment token it came from
    enrolled_at: datetime
    last_seq: int  # 0 before the first accepted attestation
    last_hash: bytes  # envelope hash of last_seq; b"" before the first
    first_attested_at: datetime | None
    last_seen_at: datetime | None  # last accepted attestation (any freshness)
    last_fresh_at: datetime | None  # last accepted nonce-fresh attestation
    next_due: datetime  # attestation deadline: last fresh evidence (or enrollment) + deadline
    revoked_at: datetime | None = None

    @property
    def current_keys(self) -> tuple[AgentKey, ...]:
        """The keys that may sign new evidence (not retired)."""
        return tuple(k for k in self.keys if k.retired_at is None)


@dataclass(frozen=True)
class NewToken:
    """An enrollment token to store. Only its SHA-256 is kept (see `token_hash`)."""

    token_hash: bytes
    site_id: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class TokenRecord:
    token_hash: bytes
    site_id: str
    created_at: datetime
    expires_at: datetime
    redeemed_at: datetime | None
    agent_id: str | None  # the agent it created, once redeemed


@dataclass(frozen=True)
class EnrollmentRequest:
    """What `Store.enroll` binds: a presented token (as hash) and the agent's key and host."""

    token_hash: bytes
    proposed_agent_id: str  # used only when a new agent is created
    spki_der: bytes
    keyid: str
    hostname: str
    machine_id: str


@dataclass(frozen=True)
class Enrollment:
    agent: AgentRecord
    created: bool  # False: an idempotent repeat returned the agent made earlier


def token_hash(token: str) -> bytes:
    """The SHA-256 under which an enrollment token is stored and looked up."""
    return hashlib.sha256(token.encode("utf-8")).digest()


# --- nonces -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NonceRecord:
    nonce: bytes  # 32 random bytes
    issued_at: datetime
    expires_at: datetime
    replica: str  # id of the verifier replica that issued it
    consumed_at: datetime | None = None


# --- accepting evidence ------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuClaim:
    """The per-GPU facts fleet state keeps; `uuid` is the identity."""

    uuid: str
    name: str = ""  # model name as NVML reported it; "" if unavailable
    pci_device_id: int | None = None  # (device << 16) | vendor


@dataclass(frozen=True)
class VerifiedAttestation:
    """An envelope that passed every pure gate of the pipeline, ready to be made durable.

    `nonce` is b"" for offline evidence; otherwise the store consumes it in the accept
    transaction. `freshness` is the pipeline's verdict (NONCE or OFFLINE).
    """

    agent_id: str
    seq: int
    prev_hash: bytes  # must equal the agent's last_hash (b"" when seq == 1)
    envelope: bytes  # the serialized Envelope, verbatim
    envelope_hash: bytes  # SHA-256(envelope)
    payload_digest: bytes  # SHA-256(envelope payload); replay vs fork is decided on this
    nonce: bytes
    freshness: Freshness
    created_at: datetime
    received_at: datetime
    gpus: tuple[GpuClaim, ...]


@dataclass(frozen=True)
class Accepted:
    """The durable outcome of one attestation: what a Receipt is built from."""

    agent_id: str
    seq: int
    envelope_hash: bytes
    log_index: int  # position in the transparency log, from 0, gapless
    leaf_hash: bytes  # RFC 6962 leaf hash SHA-256(0x00 || envelope)
    accepted_at: datetime
    freshness: Freshness


#: One entry of `Store.accept`'s answer: the outcome, or the typed error for that item alone.
AcceptOutcome = Accepted | AttestError


@dataclass(frozen=True)
class AttestationRecord:
    agent_id: str
    seq: int
    envelope_hash: bytes
    payload_digest: bytes
    freshness: Freshness
    created_at: datetime
    received_at: datetime
    log_index: int


@dataclass(frozen=True)
class LogEntry:
    log_index: int
    leaf_hash: bytes
    envelope_hash: bytes


# --- fleet state -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuSighting:
    """One GPU as claimed by one agent. A UUID claimed by two agents has two sightings."""

    uuid: str
    agent_id: str
    site_id: str
    name: str
    pci_device_id: int | None
    first_seen: datetime
    last_seen: datetime  # compaction-aware: the agent's last_seen while still present
    present: bool  # in the agent's latest inventory


@dataclass(frozen=True)
class HostFleet:
    """One host (agent) and the GPUs it claims, for `fleet` listings."""

    agent: AgentRecord
    gpus: tuple[GpuSighting, ...]


# --- findings and audit ------------------------------------------------------------------------


class Severity(enum.Enum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


@dataclass(frozen=True)
class FindingDraft:
    """A finding as the pure rules raise it; (rule, subject) is its identity."""

    rule: str  # a stable rule id of DESIGN §5, e.g. "duplicate-gpu"
    severity: Severity
    subject: str  # e.g. "gpu:GPU-1234...", "agent:<agent_id>"
    message: str
    evidence: tuple[int, ...] = ()  # log indices of the evidence behind it


class FindingStatus(enum.Enum):
    OPEN = "open"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    subject: str
    message: str
    evidence: tuple[int, ...]
    status: FindingStatus
    opened_at: datetime
    updated_at: datetime
    resolved_at: datetime | None = None


class AuditKind(enum.Enum):
    REJECTION = "rejection"
    ENROLLMENT = "enrollment"
    REVOCATION = "revocation"
    ROTATION = "rotation"


@dataclass(frozen=True)
class AuditRecord:
    kind: AuditKind
    at: datetime
    agent_id: str  # "" when the agent is not known (e.g. a forged claim)
    code: str = ""  # the AttestError code for rejections
    message: str = ""
    envelope_hash: bytes = b""
    seq: int = 0


# --- options and the port ----------------------------------------------------------------------

#: Rows per page of the `iter_*` listings (all pages of one listing read one snapshot), so a
#: listing holds O(chunk) rows whatever the size of the fleet (DESIGN §10).
LIST_CHUNK = 1000
#: Subjects per page of the sweep, each page one short write transaction.
SWEEP_CHUNK = 500


@dataclass(frozen=True)
class StoreOptions:
    """Store behaviour that comes from configuration."""

    #: next_due = last nonce-fresh evidence (or enrollment) + attestation_deadline.
    attestation_deadline: timedelta = timedelta(minutes=5)
    #: id of this verifier replica, recorded on nonces it issues.
    replica_id: str = "verifier-0"
    #: PostgreSQL pool size; SQLite ignores it.
    pool_size: int = 8
    #: how long a call waits for an unreachable database before StoreUnavailableError.
    unavailable_timeout: timedelta = field(default=timedelta(seconds=5))


class Store(Protocol):
    """The verifier's persistent state. See the module docstring for the shared conventions."""

    # agents and enrollment

    def create_token(self, token: NewToken) -> None:
        """Store a one-time enrollment token (by hash). Raises StoreError on a duplicate hash."""

    def get_token(self, token_hash: bytes) -> TokenRecord | None:
        """The token stored under this hash, or None."""

    def enroll(self, request: EnrollmentRequest, now: datetime) -> Enrollment:
        """Redeem a token and bind the key to an agent, atomically, in one transaction.

        Idempotent: the same token with the same keyid returns the agent made earlier
        (created=False) for as long as that agent has no accepted attestation, even if the
        token has expired since. Records an ENROLLMENT audit record when an agent is created.
        The new agent's next_due is now + attestation_deadline.
        Raises TokenInvalidError (no such token), TokenExpiredError, TokenUsedError (redeemed
        by another key, or the agent has attested already).
        """

    def get_agent(self, agent_id: str) -> AgentRecord | None:
        """The agent, with keys and chain head, or None."""

    def agents_with_current_key(self, keyid: str) -> list[str]:
        """The ids of the agents whose current (not retired) keys include `keyid`, sorted."""

    def iter_agents(self, *, chunk: int = LIST_CHUNK) -> Iterator[AgentRecord]:
        """Every agent, ordered by agent_id, read `chunk` agents at a time, all pages from one
        read-only snapshot taken at the first read (changes made meanwhile are not seen; the
        snapshot is released when the iterator is exhausted or closed). Raises ValueError when
        chunk < 1."""

    def revoke_agent(self, agent_id: str, now: datetime, reason: str) -> AgentRecord:
        """Mark the agent revoked (accept refuses it from then on) and audit it.

        Idempotent on an already revoked agent. Raises AgentUnknownError.
        """

    def rotate_key(
        self, agent_id: str, new_spki_der: bytes, new_keyid: str, now: datetime, reason: str
    ) -> AgentRecord:
        """Retire every current key of the agent, bind the new one, and audit it.

        The caller has checked that the old key signed the rotation. Raises AgentUnknownError,
        AgentRevokedError.
        """

    # nonces

    def issue_nonces(self, nonces: Sequence[NonceRecord]) -> None:
        """Record challenge nonces in ONE transaction, so that every replica sharing the
        database accepts them; one commit serves many streams' challenges."""

    def get_nonce(self, nonce: bytes) -> NonceRecord | None:
        """The nonce as issued (with consumed_at), or None if this fleet never issued it."""

    def purge_nonces(self, expired_before: datetime) -> int:
        """Delete nonces that expired before the given time; returns how many."""

    # evidence

    def accept(
        self,
        items: Sequence[VerifiedAttestation],
        now: datetime,
        nonces: Sequence[NonceRecord] = (),
    ) -> list[AcceptOutcome]:
        """Make a batch of verified attestations durable in ONE transaction (group commit).

        `nonces` are issued in that same transaction, whatever the items' outcomes (as
        `issue_nonces` would): the challenges sent after the receipts then cost no commit of
        their own.

        Returns one outcome per item, in order, only after COMMIT. Items are applied in order,
        so one batch may carry consecutive seqs of one agent. Per item, atomically: chain-head
        compare-and-set (seq == last_seq + 1 and prev_hash == last_hash, agent active), nonce
        consumption, verbatim envelope blob (content-addressed), attestation row, transparency
        log append, fleet-state update (compacted when the inventory is unchanged), and
        `duplicate-gpu` findings for GPUs another agent still freshly claims. An item that
        fails leaves no trace and does not affect the others; its outcome is the typed error:
        ReplayError (same agent+seq, same payload digest), ForkError (same agent+seq, other
        payload), GapError (seq skips or prev_hash does not link), NonceReplayedError,
        NonceUnknownError, AgentUnknownError, AgentRevokedError. The caller audits each
        failed item with `record_rejection`, which raises the evidence-fork / evidence-gap
        findings (one place for pipeline-detected and store-detected chain errors).
        Raises StoreUnavailableError / StoreError for the whole batch when the transaction
        cannot commit; then nothing of the batch is durable, or (commit outcome unknown) a
        retry reports the items as ReplayError.
        """

    def get_attestation(self, agent_id: str, seq: int) -> AttestationRecord | None:
        """The accepted attestation at (agent, seq), or None."""

    def get_blob(self, envelope_hash: bytes) -> bytes | None:
        """The envelope bytes stored under their SHA-256, verbatim, or None."""

    def log_size(self) -> int:
        """Number of entries in the transparency log."""

    def log_entries(self, start: int, stop: int) -> list[LogEntry]:
        """Log entries with start <= log_index < stop, in order."""

    # fleet state

    def iter_fleet(
        self, site_id: str | None = None, *, chunk: int = LIST_CHUNK
    ) -> Iterator[HostFleet]:
        """Every agent (optionally of one site) with the GPUs it claims, grouped by host:
        hosts by agent_id, GPUs by uuid; `chunk` hosts at a time from one snapshot, as for
        `iter_agents`. Raises ValueError when chunk < 1."""

    def gpu_sightings(self, uuid: str) -> list[GpuSighting]:
        """Every agent's claim on this GPU UUID."""

    # findings

    def upsert_findings(self, drafts: Sequence[FindingDraft], now: datetime) -> None:
        """Open or refresh findings by (rule, subject); a resolved one is reopened."""

    def resolve_findings(self, keys: Sequence[tuple[str, str]], now: datetime) -> None:
        """Mark the open findings with these (rule, subject) keys resolved."""

    def iter_findings(
        self, include_resolved: bool = False, *, chunk: int = LIST_CHUNK
    ) -> Iterator[Finding]:
        """Open findings (or all), ordered by opened_at, then rule and subject; `chunk`
        findings at a time from one snapshot, as for `iter_agents`. Raises ValueError when
        chunk < 1."""

    def sweep(
        self, now: datetime, gpu_missing_grace: timedelta, *, chunk: int = SWEEP_CHUNK
    ) -> dict[str, int]:
        """Run the periodic rules (agent-stale, gpu-missing, duplicate-gpu) over the stored
        state, upsert what they raise, resolve what no longer holds; returns the number of
        open findings per rule id afterwards.

        Works in pages of `chunk` subjects, each its own short write transaction, so memory
        is O(chunk) and accepts interleave with a long sweep. Raises ValueError when
        chunk < 1."""

    # audit

    def record_rejection(self, record: AuditRecord) -> None:
        """Audit a rejected envelope (never stored itself). A rejection with code
        `evidence-gap` or `evidence-fork` also raises the matching finding."""

    def list_audit(self, limit: int = 100) -> list[AuditRecord]:
        """The newest audit records first."""

    # registry

    def import_registry(self, registry: Registry) -> None:
        """Replace the stored registry with this one, atomically."""

    def load_registry(self) -> Registry:
        """The stored registry (empty if none was imported)."""

    # lifecycle

    def close(self) -> None:
        """Release connections. The store must not be used afterwards."""
