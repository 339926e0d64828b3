"""The verification pipeline: pure functions over bytes, looked-up state values and `now`.

Two stages, because the state the second needs depends on what the first authenticated:

1. `authenticate`: size limit -> decode the envelope -> signature by a key pinned for the agent
   that the *transport* named (never a name read from the message) -> parse the evidence ->
   the evidence names that same agent -> invariants.
2. `check_state`: sequence and previous hash continue the chain head (replay vs fork decided on
   the payload digest, because ECDSA signatures are malleable) -> nonce (issued by this fleet,
   unexpired, unused, issued to this agent -> NONCE freshness; empty or issued-but-expired ->
   OFFLINE) -> creation time within the allowed skew, not older than the offline maximum age,
   and not earlier (beyond the skew) than evidence the chain already holds.

Neither stage does I/O. The shell looks the state up, calls these, and then lets the store
consume the nonce and advance the chain head in one transaction (compare-and-set), which closes
the race between replicas that the pure checks cannot see. Every rejection is a typed error.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from attest import wire
from attest.envelope import EVIDENCE_PAYLOAD_TYPE, HEARTBEAT_PAYLOAD_TYPE, envelope_hash, verify
from attest.errors import (
    AgentRevokedError,
    AgentUnknownError,
    ClockSkewError,
    ForkError,
    GapError,
    IdentityMismatchError,
    InvariantError,
    NonceMismatchError,
    NonceReplayedError,
    NonceUnknownError,
    ReplayError,
    SizeLimitError,
    TimeReversedError,
)
from attest.keys import CachedKeys, KeyCache, PublicKey
from attest.model import Freshness, Heartbeat, InventoryState
from attest.wire import CheckedEvidence
from verifier.model import AgentRecord, AgentStatus, GpuClaim, NonceRecord, VerifiedAttestation

#: Longest GPU UUID accepted ("GPU-" + 36-character UUID is 40; MIG ids are longer).
MAX_UUID_LEN = 128
MAX_LANDMARK_STATEMENT = 16 * 1024
MAX_RTT_SAMPLES = 64

#: What an accepted chain link says: full evidence, or a heartbeat repeating the last full one.
Attested = CheckedEvidence | Heartbeat


@dataclass(frozen=True)
class Limits:
    """The pipeline's bounds, taken from the configuration."""

    max_envelope_bytes: int
    clock_skew: timedelta
    offline_max_age: timedelta
    #: a nonce's row is kept at least this long after it was issued (then purged)
    nonce_retention: timedelta


@dataclass(frozen=True, slots=True)
class PinnedAgent:
    """An enrolled agent as the store knows it: its pinned keys (keyid -> key)."""

    agent_id: str
    site_id: str
    keys: Mapping[str, PublicKey]
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The agent's last accepted envelope: its sequence number and envelope hash (0/b"": none),
    and the latest created_at the chain holds (None: nothing accepted yet)."""

    last_seq: int = 0
    last_hash: bytes = b""
    last_created_at: datetime | None = None

    def after(self, seq: int, envelope_hash: bytes, created_at: datetime) -> ChainHead:
        """The head once the envelope (seq, envelope_hash, created_at) was accepted on it."""
        latest = self.last_created_at
        return ChainHead(
            seq, envelope_hash, created_at if latest is None else max(latest, created_at)
        )


@dataclass(frozen=True)
class AuthenticatedEvidence:
    """Evidence whose signature verified against the agent's pinned key, parsed and checked.

    `evidence` went through every rule of wire.decode_evidence (wire.check_evidence runs the
    same code) but its GPU entries are converted only as far as fleet state reads them.
    """

    raw: bytes
    envelope_hash: bytes
    payload_digest: bytes
    keyid: str
    evidence: Attested


@dataclass(frozen=True)
class VerifiedEvidence:
    """Evidence that passed every pure gate; the store still has to win the compare-and-set."""

    raw: bytes
    envelope_hash: bytes
    payload_digest: bytes
    keyid: str
    evidence: Attested
    freshness: Freshness

    @property
    def agent_id(self) -> str:
        return self.evidence.agent_id

    @property
    def seq(self) -> int:
        return self.evidence.seq


def authenticate(
    raw: bytes,
    transport_agent_id: str,
    agent: PinnedAgent | None,
    limits: Limits,
    known_gpus: wire.GpuSection | None = None,
) -> AuthenticatedEvidence:
    """Verify the envelope's signature by `agent`'s pinned key, then parse and check it.

    `transport_agent_id` is the identity the transport authenticated (mTLS certificate SAN).
    `known_gpus`, the GPU section of this agent's previous evidence, spares re-checking GPU
    entries that are byte for byte the same (wire.GpuSection); it never changes the outcome.
    Raises SizeLimitError, DecodeError, AgentUnknownError, AgentRevokedError, the SignatureError
    family, InvariantError, IdentityMismatchError. A site claim other than the agent's enrolled
    site is not refused here: the host stays counted at the site its token was issued for and
    the store raises `site-claim-mismatch` (docs/design.md §5).
    """
    if len(raw) > limits.max_envelope_bytes:
        raise SizeLimitError(
            f"envelope of {len(raw)} bytes exceeds the limit of {limits.max_envelope_bytes}"
        )
    envelope = wire.decode_envelope(raw, limits.max_envelope_bytes)
    if agent is None or agent.agent_id != transport_agent_id:
        raise AgentUnknownError(f"agent {transport_agent_id[:64]!r} is not enrolled here")
    if agent.revoked:
        raise AgentRevokedError(f"agent {agent.agent_id} was revoked")
    evidence: Attested
    if envelope.payload_type == HEARTBEAT_PAYLOAD_TYPE:
        verified = verify(envelope, HEARTBEAT_PAYLOAD_TYPE, agent.keys)
        evidence = wire.decode_heartbeat(verified.payload)
    else:
        verified = verify(envelope, EVIDENCE_PAYLOAD_TYPE, agent.keys)
        evidence = wire.check_evidence(verified.payload, known_gpus)
    if evidence.agent_id != transport_agent_id:
        raise IdentityMismatchError(
            f"evidence names agent {evidence.agent_id[:64]!r}, the connection is "
            f"{transport_agent_id!r}"
        )
    if isinstance(evidence, Heartbeat):
        check_link_invariants(evidence)
    else:
        check_invariants(evidence)
    return AuthenticatedEvidence(
        raw=raw,
        envelope_hash=envelope_hash(raw),
        payload_digest=hashlib.sha256(verified.payload).digest(),
        keyid=verified.keyids[0],
        evidence=evidence,
    )


def check_invariants(evidence: CheckedEvidence) -> None:
    """Counts and sizes the wire decoder does not already bound; raise InvariantError.

    (The decoder already refuses a UUID twice, over-long strings and oversized lists.)
    """
    inventory = evidence.inventory
    no_driver = (InventoryState.LIBRARY_NOT_FOUND, InventoryState.DRIVER_NOT_LOADED)
    if inventory.state in no_driver and evidence.gpus:
        raise InvariantError("GPUs listed although the inventory says there is no driver")
    if inventory.device_count > wire.MAX_GPUS:
        raise InvariantError(f"device count {inventory.device_count} is not plausible")
    seen_mig: set[str] = set()
    for gpu in evidence.gpus:
        if not gpu.uuid or len(gpu.uuid) > MAX_UUID_LEN:
            raise InvariantError(f"GPU {gpu.index} has no UUID or an over-long one")
        if gpu.index >= wire.MAX_GPUS:
            raise InvariantError(f"GPU index {gpu.index} is not plausible")
        mig = gpu.mig
        for device in getattr(mig, "devices", ()):
            if not device.uuid or device.uuid in seen_mig:
                raise InvariantError(f"MIG device {device.uuid[:64]!r} is empty or repeated")
            seen_mig.add(device.uuid)
    check_link_invariants(evidence)


def check_link_invariants(evidence: Attested) -> None:
    """The invariants of what full evidence and heartbeats share: site and landmarks."""
    if not evidence.site_id or len(evidence.site_id) > 128:
        raise InvariantError("evidence names no site or an over-long one")
    for measurement in evidence.landmarks:
        if len(measurement.statement) > MAX_LANDMARK_STATEMENT:
            raise InvariantError("a landmark statement is larger than allowed")
        if len(measurement.rtt_us) > MAX_RTT_SAMPLES:
            raise InvariantError("a landmark measurement carries too many samples")


def check_state(
    auth: AuthenticatedEvidence,
    nonce: NonceRecord | None,
    head: ChainHead,
    digest_at_seq: bytes | None,
    *,
    now: datetime,
    limits: Limits,
) -> VerifiedEvidence:
    """Decide freshness and chain position of authenticated evidence.

    `nonce` is the store's record of the evidence's nonce (None: never issued, or the evidence
    carries none). `digest_at_seq` is the payload digest already accepted at the evidence's
    sequence number, if any. Raises NonceUnknownError, NonceMismatchError, NonceReplayedError,
    ReplayError, ForkError, GapError, ClockSkewError, TimeReversedError.
    """
    evidence = auth.evidence
    # Chain first: an accepted envelope sent again must read as a replay, not as a nonce reuse.
    check_chain(auth, head, digest_at_seq)
    freshness = check_nonce(evidence, nonce, now, limits)
    check_time(evidence, freshness, nonce, head, now=now, limits=limits)
    return VerifiedEvidence(
        raw=auth.raw,
        envelope_hash=auth.envelope_hash,
        payload_digest=auth.payload_digest,
        keyid=auth.keyid,
        evidence=evidence,
        freshness=freshness,
    )


def check_nonce(
    evidence: Attested, nonce: NonceRecord | None, now: datetime, limits: Limits
) -> Freshness:
    """NONCE when bound to a live challenge of ours sent to this agent; OFFLINE when empty,
    issued-but-expired, or too old for its nonce's row to be kept. A nonce of another agent's
    challenge is refused, and stays usable by that agent (the store consumes it only with
    evidence of the agent it was issued to)."""
    if not evidence.nonce:
        return Freshness.OFFLINE
    if nonce is None or nonce.nonce != evidence.nonce:
        if evidence.created_at + limits.clock_skew < now - limits.nonce_retention:
            # Answered a challenge whose row may have been purged since (a spooled envelope
            # replayed after a long outage). Refusing it would lose evidence for good; OFFLINE
            # grants it nothing an envelope without a nonce would not get.
            return Freshness.OFFLINE
        raise NonceUnknownError("the evidence's nonce was not issued by this verifier fleet")
    if nonce.agent_id and nonce.agent_id != evidence.agent_id:
        raise NonceMismatchError("the evidence's nonce was issued to another agent's challenge")
    if nonce.consumed_at is not None:
        raise NonceReplayedError("the evidence's nonce was already used")
    if not nonce.agent_id:
        # Issued before nonces were bound to agents: it cannot say whose challenge it was, so
        # it proves no freshness; OFFLINE still keeps a spooled envelope acceptable.
        return Freshness.OFFLINE
    if now >= nonce.expires_at:
        # A spooled envelope replayed after its challenge expired: still welcome, but it only
        # proves time by its own clock.
        return Freshness.OFFLINE
    return Freshness.NONCE


def check_chain(auth: AuthenticatedEvidence, head: ChainHead, digest_at_seq: bytes | None) -> None:
    """The envelope must be the successor of the chain head; raise Replay/Fork/GapError."""
    seq = auth.evidence.seq
    if seq <= head.last_seq:
        if digest_at_seq is not None and not hmac.compare_digest(
            digest_at_seq, auth.payload_digest
        ):
            raise ForkError(f"a different envelope was already accepted as seq {seq}")
        raise ReplayError(f"seq {seq} was already accepted (chain head is {head.last_seq})")
    if seq != head.last_seq + 1:
        raise GapError(f"seq {seq} does not follow the chain head {head.last_seq}")
    if seq > 1 and not hmac.compare_digest(auth.evidence.prev_hash, head.last_hash):
        raise GapError(f"seq {seq} does not link to the hash of seq {head.last_seq}")


def check_time(
    evidence: Attested,
    freshness: Freshness,
    nonce: NonceRecord | None,
    head: ChainHead,
    *,
    now: datetime,
    limits: Limits,
) -> None:
    """created_at within the skew; not older than the offline maximum age; not earlier than the
    chain's latest created_at less the skew (TimeReversedError); raise ClockSkewError."""
    created = evidence.created_at
    if created > now + limits.clock_skew:
        raise ClockSkewError(f"evidence was created {created.isoformat()}, in the future")
    if created < now - limits.offline_max_age:
        raise ClockSkewError(f"evidence of {created.isoformat()} is older than allowed")
    latest = head.last_created_at
    if latest is not None and created < latest - limits.clock_skew:
        # Against the chain's latest time, not just the previous envelope's: otherwise each
        # envelope could step back by the skew and walk the chain's clock back by days.
        raise TimeReversedError(
            f"evidence of {created.isoformat()} predates evidence of {latest.isoformat()} "
            "that the chain already holds"
        )
    bound = nonce if freshness is Freshness.NONCE else None
    if bound is not None and created < bound.issued_at - limits.clock_skew:
        raise ClockSkewError("evidence claims to predate the challenge it answers")


def pinned_from_record(record: AgentRecord, cache: KeyCache | None = None) -> PinnedAgent:
    """The agent's current (not retired) keys; raise KeyMaterialError if one is bad.

    With `cache`, the PinnedAgent holds the keys' DER and parses them through it when they are
    used (a long-lived stream then keeps bytes, not OpenSSL key objects); each is parsed once
    here so a bad stored key is still refused at once.
    """
    if cache is None:
        keys: Mapping[str, PublicKey] = {
            k.keyid: PublicKey.from_spki_der(k.spki_der) for k in record.current_keys
        }
    else:
        for k in record.current_keys:
            cache.get(k.spki_der)
        keys = CachedKeys({k.keyid: k.spki_der for k in record.current_keys}, cache)
    return PinnedAgent(
        agent_id=record.agent_id,
        site_id=record.site_id,
        keys=keys,
        revoked=record.status is AgentStatus.REVOKED,
    )


def head_of(record: AgentRecord) -> ChainHead:
    return ChainHead(record.last_seq, record.last_hash, record.last_seen_at)


def to_attestation(verified: VerifiedEvidence, received_at: datetime) -> VerifiedAttestation:
    """What the store's accept transaction makes durable. A heartbeat carries no GPUs or
    posture: it names, in `base`, the full evidence whose GPUs and posture it repeats, and the
    store accepts it only when that is the agent's current full evidence."""
    evidence = verified.evidence
    if isinstance(evidence, Heartbeat):
        return _attestation(verified, received_at, gpus=(), base=evidence.base)
    claims = tuple(
        GpuClaim(
            uuid=gpu.uuid,
            name=gpu.name if isinstance(gpu.name, str) else "",
            pci_device_id=gpu.pci_device_id,
            serial=gpu.serial,
            board_part_number=gpu.board_part_number,
            lost=gpu.lost,
            pci_subsystem_id=gpu.pci_subsystem_id,
            power_limit_w=(gpu.power_limit_mw or 0) // 1000,
        )
        for gpu in evidence.gpus
    )
    return _attestation(
        verified,
        received_at,
        gpus=claims,
        posture=tuple((p.name, p.result.value) for p in evidence.posture),
        inventory_read=evidence.inventory.state is InventoryState.OK,
    )


def _attestation(
    verified: VerifiedEvidence,
    received_at: datetime,
    *,
    gpus: tuple[GpuClaim, ...],
    posture: tuple[tuple[str, str], ...] = (),
    inventory_read: bool = True,
    base: bytes = b"",
) -> VerifiedAttestation:
    """The fields evidence and heartbeats share, with the ones that differ passed in."""
    evidence = verified.evidence
    return VerifiedAttestation(
        agent_id=evidence.agent_id,
        seq=evidence.seq,
        prev_hash=evidence.prev_hash,
        envelope=verified.raw,
        envelope_hash=verified.envelope_hash,
        payload_digest=verified.payload_digest,
        nonce=b"" if verified.freshness is Freshness.OFFLINE else evidence.nonce,
        freshness=verified.freshness,
        created_at=evidence.created_at,
        received_at=received_at,
        gpus=gpus,
        site_claim=evidence.site_id,
        posture=posture,
        inventory_read=inventory_read,
        landmarks=tuple((m.landmark_id, m.statement) for m in evidence.landmarks),
        base=base,
    )
