"""Builders for store tests: enrolled agents and verified attestations with real hashes."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from attest.envelope import HEARTBEAT_PAYLOAD_TYPE, sign
from attest.keys import SoftwareSigner
from attest.model import Freshness
from attest.v1 import attest_pb2 as pb
from attest.wire import encode_envelope
from verifier.model import (
    Accepted,
    EnrollmentRequest,
    GpuClaim,
    NewToken,
    NonceRecord,
    VerifiedAttestation,
    token_hash,
)
from verifier.nonces import new_nonce
from verifier.store.api import Store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
H100 = 0x233010DE


def gpus(*uuids: str) -> tuple[GpuClaim, ...]:
    return tuple(GpuClaim(uuid=u, name="NVIDIA H100 80GB HBM3", pci_device_id=H100) for u in uuids)


def enroll(store: Store, agent_id: str, site: str = "site-a", now: datetime = T0) -> str:
    """Create a token and enroll `agent_id` with a fresh key; returns the key id."""
    token = secrets.token_urlsafe(16)
    store.create_token(NewToken(token_hash(token), site, now, now + timedelta(hours=1)))
    spki = secrets.token_bytes(44)
    keyid = hashlib.sha256(spki).hexdigest()
    store.enroll(
        EnrollmentRequest(token_hash(token), agent_id, spki, keyid, f"host-{agent_id}", "m"), now
    )
    return keyid


@dataclass
class Chain:
    """An agent's evidence chain as the agent would build it."""

    agent_id: str
    seq: int = 0
    last_hash: bytes = b""
    inventory: tuple[GpuClaim, ...] = field(default_factory=tuple)

    def next(
        self,
        at: datetime,
        *,
        nonce: bytes = b"",
        inventory: tuple[GpuClaim, ...] | None = None,
        salt: bytes = b"",
        advance: bool = True,
    ) -> VerifiedAttestation:
        """The next attestation; `advance=False` builds it without moving the chain."""
        if inventory is not None:
            self.inventory = inventory
        seq = self.seq + 1
        payload = b"evidence|%s|%d|%s|%s" % (
            self.agent_id.encode(),
            seq,
            at.isoformat().encode(),
            salt,
        )
        envelope = b"envelope|" + payload + b"|sig"
        item = VerifiedAttestation(
            agent_id=self.agent_id,
            seq=seq,
            prev_hash=self.last_hash,
            envelope=envelope,
            envelope_hash=hashlib.sha256(envelope).digest(),
            payload_digest=hashlib.sha256(payload).digest(),
            nonce=nonce,
            freshness=Freshness.NONCE if nonce else Freshness.OFFLINE,
            created_at=at,
            received_at=at,
            gpus=self.inventory,
        )
        if advance:
            self.seq, self.last_hash = seq, item.envelope_hash
        return item


def nonce(
    store: Store, agent_id: str, at: datetime = T0, ttl: timedelta = timedelta(minutes=5)
) -> bytes:
    """A nonce issued to `agent_id`'s challenge, led by its issue time as the verifier's are."""
    value = new_nonce(at)
    store.issue_nonces([NonceRecord(value, at, at + ttl, "replica-test", agent_id)])
    return value


def heartbeat(agent_id: str, seq: int, prev_hash: bytes, nonce: bytes = b"") -> bytes:
    """A heartbeat payload as the agent serializes it."""
    message = pb.Heartbeat(
        agent_id=agent_id, seq=seq, prev_hash=prev_hash, nonce=nonce, agent_version="0.9.0",
        base=hashlib.sha256(b"full").digest(),
    )  # fmt: skip
    message.created_at.FromDatetime(T0)
    return message.SerializeToString(deterministic=True)


def accept_heartbeats(
    store: Store,
    chain: Chain,
    count: int,
    payload: Callable[[str, int, bytes], bytes] = heartbeat,
) -> list[bytes]:
    """`count` signed heartbeats of `chain` accepted one by one (real ones unless `payload`
    builds another from the agent, seq and previous hash); their bytes."""
    signer, sent = SoftwareSigner.generate("ecdsa-p256-sha256"), []
    for _ in range(count):
        item = chain.next(T0, advance=False)
        body = payload(chain.agent_id, item.seq, chain.last_hash)
        raw = encode_envelope(sign(HEARTBEAT_PAYLOAD_TYPE, body, [signer]))
        item = replace(item, envelope=raw, envelope_hash=hashlib.sha256(raw).digest())
        chain.seq, chain.last_hash = item.seq, item.envelope_hash
        (outcome,) = store.accept([item], T0)
        assert isinstance(outcome, Accepted), outcome
        sent.append(raw)
    return sent
