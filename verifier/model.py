"""The verifier's domain values: agents and their keys, enrollment tokens, nonces, verified
and accepted attestations, the transparency log's entries, fleet state, findings and audit.

Plain frozen records with no I/O. The pure cores (`verifier.pipeline`, `verifier.findings`)
make and read them; the `Store` port (`verifier.store.api`) persists them. Every datetime is
timezone-aware UTC.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime

from attest.errors import AttestError
from attest.model import Freshness

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
    #: the latest created_at among its accepted attestations (any freshness)
    last_seen_at: datetime | None
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


#: Leading bytes of a challenge nonce that carry its issue time (µs, big-endian); the rest are
#: random (verifier/nonces.py). The store purges nonces by this prefix (migration 0015).
NONCE_TIME_BYTES = 8


@dataclass(frozen=True, slots=True)
class NonceRecord:
    nonce: bytes  # issue time (NONCE_TIME_BYTES), then random bytes
    issued_at: datetime
    expires_at: datetime
    replica: str  # id of the verifier replica that issued it
    #: The agent whose challenge carried it: only that agent's evidence may use it. "" for a
    #: nonce bound to no enrolled agent (issued before nonces were bound, store migration 0004,
    #: or to an id no agent has, as the store probe's are, 0017): it proves no freshness.
    agent_id: str
    consumed_at: datetime | None = None


# --- accepting evidence ------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuClaim:
    """The per-GPU facts fleet state keeps; `uuid` is the identity."""

    uuid: str
    name: str = ""  # model name as NVML reported it; "" if unavailable
    pci_device_id: int | None = None  # (device << 16) | vendor
    serial: str | None = None  # None when unreadable
    board_part_number: str | None = None
    lost: bool = False  # the agent reports it fallen off the bus (GpuState.LOST)
    pci_subsystem_id: int | None = None  # (subsystem << 16) | subsystem vendor
    power_limit_w: int = 0  # enforced power limit, whole watts; 0 when not reported


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
    #: the site the evidence claims; the agent stays counted at its enrolled site, and a
    #: different claim raises `site-claim-mismatch` ("" = no claim to check)
    site_claim: str = ""
    #: the attested posture checks as (name, result) pairs, in evidence order
    posture: tuple[tuple[str, str], ...] = ()
    #: False when the agent could not read its inventory cleanly (no NVML library, no driver,
    #: an NVML error): GPUs missing from it then fell out of sight, they did not leave, and are
    #: held as lost (counted, `gpu-lost`) until reported again
    inventory_read: bool = True
    #: landmark statements the evidence carries, as (landmark id, serialized envelope): kept
    #: as carried and checked by the location pass (docs/design.md §16)
    landmarks: tuple[tuple[str, bytes], ...] = ()
    #: b"" for full evidence; for a heartbeat, the envelope hash of the full evidence it
    #: repeats (gpus and posture are then empty and mean "unchanged", docs/protocol.md §4.1)
    base: bytes = b""


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
    pci_subsystem_id: int | None = None  # (subsystem << 16) | vendor; classifies the model
    serial: str | None = None  # as the agent read it; None when unreadable
    board_part_number: str | None = None
    lost: bool = False  # reported fallen off the bus: counted, but not `present`


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

    rule: str  # a stable rule id of docs/design.md §5, e.g. "duplicate-gpu"
    severity: Severity
    subject: str  # e.g. "gpu:GPU-1234...", "agent:<agent_id>"
    message: str
    evidence: tuple[int, ...] = ()  # log indices of the evidence behind it


class FindingStatus(enum.Enum):
    """open -> acknowledged (`findings ack`) -> resolved (the condition cleared); a resolved
    finding that is raised again opens as a new episode with a new id."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
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
    id: int = 0  # stable per episode: `findings ack ID`
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    ack_reason: str | None = None
    cleared_by: int | None = None  # log index of the accepted evidence that cleared it
    resolved_reason: str | None = None  # why it resolved, e.g. "agent revoked"


@dataclass(frozen=True)
class MissingOnHost:
    """The open `gpu-missing` findings of one host, for listings grouped by host."""

    agent_id: str
    hostname: str
    site_id: str
    count: int
    first: tuple[tuple[int, str], ...]  # (finding id, GPU uuid) of the first few, by uuid


class AuditKind(enum.Enum):
    REJECTION = "rejection"
    ENROLLMENT = "enrollment"
    REVOCATION = "revocation"
    ROTATION = "rotation"
    FINDING = "finding"  # a finding's transition; code: opened, acknowledged, resolved
    REGISTRY = "registry"  # a `registry import`: message names version, importer and digest


@dataclass(frozen=True)
class AuditRecord:
    kind: AuditKind
    at: datetime
    agent_id: str  # "" when the agent is not known (e.g. a forged claim)
    code: str = ""  # the AttestError code for rejections
    message: str = ""
    envelope_hash: bytes = b""
    seq: int = 0
