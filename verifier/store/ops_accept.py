"""The accept transaction body: chain compare-and-set, nonce consumption, blob, attestation,
transparency log append and fleet state, for a batch of verified attestations.

Every check of an item runs before its first write, so an item that fails leaves nothing behind
and needs no savepoint; the batch as a whole is ordered against other replicas by locking the
log head row first (which also keeps log indices gapless).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Sequence
from datetime import timedelta

from attest.errors import (
    AgentRevokedError,
    AgentUnknownError,
    ForkError,
    GapError,
    NonceReplayedError,
    NonceUnknownError,
    ReplayError,
    StoreError,
    VerificationError,
)
from attest.model import Freshness
from verifier import anomalies
from verifier.store.api import (
    Accepted,
    AcceptOutcome,
    AgentStatus,
    GpuClaim,
    StoreOptions,
    VerifiedAttestation,
)
from verifier.store.ops_fleet import upsert_findings
from verifier.store.sqlbase import Db, from_micros, opt_from_micros, to_micros

_MICRO = timedelta(microseconds=1)
_IN_CHUNK = 500


def leaf_hash(envelope: bytes) -> bytes:
    """RFC 6962 leaf hash of a log entry: SHA-256(0x00 || envelope bytes)."""
    return hashlib.sha256(b"\x00" + envelope).digest()


def inventory_fingerprint(gpus: Sequence[GpuClaim]) -> bytes:
    """A digest of the GPU list that fleet state keeps, independent of GPU order."""
    digest = hashlib.sha256(b"gpu-attest inventory v1\n")
    for gpu in sorted(gpus, key=lambda g: g.uuid):
        for text in (gpu.uuid, gpu.name):
            raw = text.encode("utf-8")
            digest.update(struct.pack(">I", len(raw)) + raw)
        pci = -1 if gpu.pci_device_id is None else gpu.pci_device_id
        digest.update(struct.pack(">q", pci))
    return digest.digest()


def accept_batch(
    db: Db, items: Sequence[VerifiedAttestation], now_us: int, options: StoreOptions
) -> list[AcceptOutcome]:
    """Apply `items` in order inside the caller's transaction; see `Store.accept`."""
    row = db.one(f"SELECT size FROM log_head WHERE id = 1{db.dialect.for_update}")
    if row is None:
        raise StoreError("log head row is missing")
    size = int(row[0])
    outcomes: list[AcceptOutcome] = []
    for item in items:
        try:
            outcomes.append(_accept_one(db, item, now_us, size, options))
        except VerificationError as exc:
            outcomes.append(exc)
        else:
            size += 1
    db.run("UPDATE log_head SET size = ? WHERE id = 1", (size,))
    return outcomes


def _accept_one(
    db: Db, item: VerifiedAttestation, now_us: int, log_index: int, options: StoreOptions
) -> Accepted:
    row = db.one(
        "SELECT status, last_seq, last_hash, inventory_fp, site_id, last_seen_at, "
        "last_fresh_at, next_due, last_log_index FROM agents WHERE agent_id = ?",
        (item.agent_id,),
    )
    if row is None:
        raise AgentUnknownError(f"no agent {item.agent_id!r}")
    status, last_seq, last_hash, old_fp, site_id, last_seen, last_fresh, next_due, last_idx = row
    if status != AgentStatus.ACTIVE.value:
        raise AgentRevokedError(f"agent {item.agent_id!r} is revoked")
    _check_chain(db, item, int(last_seq), bytes(last_hash))
    _check_nonce(db, item.nonce)

    seen_us = to_micros(item.created_at)
    new_seen = seen_us if last_seen is None else max(int(last_seen), seen_us)
    if item.freshness is Freshness.NONCE:
        last_fresh = seen_us if last_fresh is None else max(int(last_fresh), seen_us)
        next_due = last_fresh + options.attestation_deadline // _MICRO
    fingerprint = inventory_fingerprint(item.gpus)
    rows = db.run(
        "UPDATE agents SET last_seq = ?, last_hash = ?, "
        "first_attested_at = COALESCE(first_attested_at, ?), last_seen_at = ?, "
        "last_fresh_at = ?, next_due = ?, inventory_fp = ?, last_log_index = ? "
        "WHERE agent_id = ? AND last_seq = ? AND status = ?",
        (
            item.seq,
            item.envelope_hash,
            now_us,
            new_seen,
            last_fresh,
            next_due,
            fingerprint,
            log_index,
            item.agent_id,
            last_seq,
            AgentStatus.ACTIVE.value,
        ),
    )
    if rows != 1:
        # Accepts are serialized on the log head, so only a revocation can move the row.
        raise AgentRevokedError(f"agent {item.agent_id!r} was revoked while accepting")
    if item.nonce and (
        db.run(
            "UPDATE nonces SET consumed_at = ? WHERE nonce = ? AND consumed_at IS NULL",
            (now_us, item.nonce),
        )
        != 1
    ):
        raise StoreError("nonce was consumed outside the serialized accept path")
    _write_evidence(db, item, log_index)
    changed = not hmac.compare_digest(bytes(old_fp), fingerprint)
    if changed:
        _update_sightings(
            db,
            item=item,
            site_id=site_id,
            log_index=log_index,
            seen_us=new_seen,
            previous=(last_seen, last_idx),
        )
        _raise_duplicates(
            db,
            item=item,
            log_index=log_index,
            seen_us=new_seen,
            now_us=now_us,
            options=options,
        )
    return Accepted(
        agent_id=item.agent_id,
        seq=item.seq,
        envelope_hash=item.envelope_hash,
        log_index=log_index,
        leaf_hash=leaf_hash(item.envelope),
        accepted_at=from_micros(now_us),
        freshness=item.freshness,
    )


def _check_chain(db: Db, item: VerifiedAttestation, last_seq: int, last_hash: bytes) -> None:
    if item.seq <= last_seq:
        prior = db.one(
            "SELECT payload_digest FROM attestations WHERE agent_id = ? AND seq = ?",
            (item.agent_id, item.seq),
        )
        if prior is None or hmac.compare_digest(bytes(prior[0]), item.payload_digest):
            raise ReplayError(f"sequence {item.seq} was accepted already")
        raise ForkError(f"a different envelope holds sequence {item.seq} already")
    if item.seq != last_seq + 1:
        raise GapError(f"sequence {item.seq} does not follow the accepted {last_seq}")
    if not hmac.compare_digest(item.prev_hash, last_hash):
        raise GapError(f"previous hash of sequence {item.seq} does not match the accepted chain")


def _check_nonce(db: Db, nonce: bytes) -> None:
    if not nonce:
        return
    row = db.one("SELECT consumed_at FROM nonces WHERE nonce = ?", (nonce,))
    if row is None:
        raise NonceUnknownError("nonce was not issued by this verifier fleet")
    if row[0] is not None:
        raise NonceReplayedError("nonce was used already")


def _write_evidence(db: Db, item: VerifiedAttestation, log_index: int) -> None:
    db.run(
        "INSERT INTO blobs (hash, body) VALUES (?, ?) ON CONFLICT (hash) DO NOTHING",
        (item.envelope_hash, item.envelope),
    )
    db.run(
        "INSERT INTO attestations (agent_id, seq, envelope_hash, payload_digest, freshness, "
        "created_at, received_at, log_index) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            item.agent_id,
            item.seq,
            item.envelope_hash,
            item.payload_digest,
            item.freshness.value,
            to_micros(item.created_at),
            to_micros(item.received_at),
            log_index,
        ),
    )
    db.run(
        "INSERT INTO log_entries (log_index, leaf_hash, envelope_hash) VALUES (?, ?, ?)",
        (log_index, leaf_hash(item.envelope), item.envelope_hash),
    )


def _update_sightings(
    db: Db,
    *,
    item: VerifiedAttestation,
    site_id: str,
    log_index: int,
    seen_us: int,
    previous: tuple[int | None, int | None],
) -> None:
    present = {
        r[0]
        for r in db.all(
            "SELECT uuid FROM gpu_sightings WHERE agent_id = ? AND present = 1", (item.agent_id,)
        )
    }
    db.many(
        "INSERT INTO gpu_sightings (uuid, agent_id, site_id, name, pci_device_id, first_seen, "
        "last_seen, present, last_log_index) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?) "
        "ON CONFLICT (uuid, agent_id) DO UPDATE SET site_id = excluded.site_id, "
        "name = excluded.name, pci_device_id = excluded.pci_device_id, "
        "last_seen = excluded.last_seen, present = 1, last_log_index = excluded.last_log_index",
        [
            (g.uuid, item.agent_id, site_id, g.name, g.pci_device_id, seen_us, seen_us, log_index)
            for g in item.gpus
        ],
    )
    reported = {g.uuid for g in item.gpus}
    prev_seen, prev_index = previous
    # A GPU that left the inventory was last seen by the previous attestation.
    db.many(
        "UPDATE gpu_sightings SET present = 0, last_seen = ?, last_log_index = ? "
        "WHERE uuid = ? AND agent_id = ?",
        [
            (prev_seen if prev_seen is not None else seen_us, prev_index or 0, uuid, item.agent_id)
            for uuid in sorted(present - reported)
        ],
    )


def _raise_duplicates(
    db: Db,
    *,
    item: VerifiedAttestation,
    log_index: int,
    seen_us: int,
    now_us: int,
    options: StoreOptions,
) -> None:
    uuids = sorted({g.uuid for g in item.gpus})
    claims = [
        anomalies.GpuClaimState(u, item.agent_id, True, from_micros(seen_us), log_index)
        for u in uuids
    ]
    others = 0
    for start in range(0, len(uuids), _IN_CHUNK):
        chunk = uuids[start : start + _IN_CHUNK]
        rows = db.all(
            "SELECT s.uuid, s.agent_id, a.status, a.last_seen_at, a.last_log_index "
            "FROM gpu_sightings s JOIN agents a ON a.agent_id = s.agent_id "
            f"WHERE s.present = 1 AND s.agent_id <> ? AND s.uuid IN {db.in_list(len(chunk))}",
            (item.agent_id, *chunk),
        )
        others += len(rows)
        claims.extend(
            anomalies.GpuClaimState(
                uuid, agent_id, status == AgentStatus.ACTIVE.value, opt_from_micros(seen), idx
            )
            for uuid, agent_id, status, seen, idx in rows
        )
    if others:
        now = from_micros(now_us)
        drafts = anomalies.duplicate_gpu(claims, now, options.attestation_deadline)
        upsert_findings(db, drafts, now_us)
