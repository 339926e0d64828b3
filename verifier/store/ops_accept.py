"""The accept transaction body: chain compare-and-set, nonce consumption, envelope, attestation,
transparency log append and fleet state, for a batch of verified attestations.

Pre-checks, not savepoints: the batch reads the chain heads and nonces it needs once, checks
every item against them in memory (updating them as items pass), and writes only the items
that passed, one executemany per table, so a failing item leaves nothing behind. Batches are
ordered against other replicas by locking the log head row first, which also keeps log
indices gapless; the heads are then written by compare-and-set as a safety net.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from attest.errors import (
    AgentRevokedError,
    AgentUnknownError,
    ForkError,
    GapError,
    HeartbeatBaseError,
    NonceMismatchError,
    NonceReplayedError,
    NonceUnknownError,
    ReplayError,
    StoreError,
    VerificationError,
)
from attest.model import Freshness
from verifier.model import Accepted, AcceptOutcome, AgentStatus, GpuClaim, VerifiedAttestation
from verifier.store import bodies, ops_compliance, ops_log
from verifier.store.api import StoreOptions
from verifier.store.ops_chain import FRESH, find_attestation
from verifier.store.ops_claims import settle_site_claims
from verifier.store.ops_holdings import update_postures, update_presence, update_sighting_attrs
from verifier.store.ops_sightings import raise_duplicates, update_sightings
from verifier.store.sqlbase import Db, from_micros, to_micros

_MICRO = timedelta(microseconds=1)
#: A heartbeat may repeat a full evidence created at most this long before it (the agent's
#: `full_evidence_interval` is at most 24 h; an hour of slack for its clock), docs/protocol.md §4.1.
MAX_BASE_AGE = timedelta(hours=25)
_IN_CHUNK = 500


def leaf_hash(envelope: bytes) -> bytes:
    """RFC 6962 leaf hash of a log entry: SHA-256(0x00 || envelope bytes)."""
    return hashlib.sha256(b"\x00" + envelope).digest()


def inventory_fingerprint(gpus: Sequence[GpuClaim]) -> bytes:
    """A digest of the GPU list that fleet state keeps, independent of GPU order."""
    rows = sorted(
        (g.uuid, g.name, g.pci_device_id, g.pci_subsystem_id, g.power_limit_w, g.lost, g.serial,
         g.board_part_number)
        for g in gpus
    )  # fmt: skip
    # repr of str/int/None tuples is unambiguous and C-fast; should it ever change between
    # Python versions, the cost is one full fleet-state rewrite per agent, not a wrong answer.
    return hashlib.sha256(repr(rows).encode("utf-8")).digest()


@dataclass
class _Head:
    """An agent's row as the batch sees it: read once, updated in memory, written once."""

    status: str
    last_seq: int
    last_hash: bytes
    fingerprint: bytes
    site_id: str
    last_seen: int | None
    last_fresh: int | None
    next_due: int
    last_index: int | None
    stored_seq: int  # last_seq in the database: the compare-and-set condition
    first_attested: int | None
    full_hash: bytes  # envelope hash of the current full evidence (b"": none yet)
    full_index: int | None  # its log index
    full_created: int | None  # and its created_at (µs)
    agent_no: int  # the agent's number (migration 0017): how its rows name it


@dataclass
class _Batch:
    """What one accept transaction writes, gathered so each table gets one executemany."""

    heads: dict[str, _Head]
    #: issued nonce -> (consumed already, its agent's number; None: unbound)
    nonces: dict[bytes, tuple[bool, int | None]]
    accepted: dict[tuple[str, int], bytes] = field(default_factory=dict)  # -> payload digest
    nonce_rows: list[tuple[int, bytes]] = field(default_factory=list)
    envelope_rows: list[tuple[object, ...]] = field(default_factory=list)
    attestation_rows: list[tuple[object, ...]] = field(default_factory=list)
    leaves: list[bytes] = field(default_factory=list)  # in log order
    landmark_rows: list[tuple[object, ...]] = field(default_factory=list)
    inventory_changes: list[tuple[VerifiedAttestation, int, int, int | None, int | None]] = field(
        default_factory=list
    )
    #: agent -> (enrolled site, latest claimed site, its log index), for site-claim-mismatch
    site_claims: dict[str, tuple[str, str, int]] = field(default_factory=dict)


def accept_batch(
    db: Db, items: Sequence[VerifiedAttestation], now_us: int, options: StoreOptions
) -> list[AcceptOutcome]:
    """Apply `items` in order inside the caller's transaction; see `Store.accept`."""
    row = db.one(f"SELECT size FROM log_head WHERE id = 1{db.dialect.for_update}")
    if row is None:
        raise StoreError("log head row is missing")
    size = int(row[0])
    batch = _Batch(
        heads=_read_heads(db, sorted({i.agent_id for i in items})),
        nonces=_read_nonces(db, sorted({i.nonce for i in items if i.nonce})),
    )
    outcomes: list[AcceptOutcome] = []
    for item in items:
        try:
            outcomes.append(
                _accept_one(db, batch, item=item, now_us=now_us, log_index=size, options=options)
            )
        except VerificationError as exc:
            outcomes.append(exc)
        else:
            size += 1
    _flush(db, batch, size)
    for item, index, seen, prev_seen, prev_index in batch.inventory_changes:
        site_id = batch.heads[item.agent_id].site_id
        before = ops_compliance.agent_holdings(db, item.agent_id)
        update_presence(db, item=item, site_id=site_id, log_index=index)
        released = update_sightings(
            db,
            item=item,
            site_id=site_id,
            log_index=index,
            seen_us=seen,
            previous=(prev_seen, prev_index),
        )
        update_sighting_attrs(db, item=item)
        raise_duplicates(
            db, item=item, log_index=index, seen_us=seen, now_us=now_us, options=options
        )
        # What the host's holdings became, less what they were, and the lost GPUs released
        # elsewhere: the holdings journal that incremental reconciliation applies.
        for _, site, device, subsystem, power in released:
            units, watts = before.get((site, device, subsystem), (0, 0))
            before[(site, device, subsystem)] = (units + 1, watts + power)
        ops_compliance.journal(
            db,
            log_index=index,
            received_us=to_micros(item.received_at),
            before=before,
            after=ops_compliance.agent_holdings(db, item.agent_id),
        )
    # Posture is compared for every accepted item (one read per batch), written on change.
    accepted = zip(items, outcomes, strict=True)
    # A heartbeat carries no posture: it repeats its base's (docs/protocol.md §4.1).
    update_postures(
        db, [(i, o.log_index) for i, o in accepted if isinstance(o, Accepted) and not i.base]
    )
    if batch.site_claims:
        settle_site_claims(db, batch.site_claims, now_us)
    return outcomes


def _read_heads(db: Db, agent_ids: list[str]) -> dict[str, _Head]:
    heads: dict[str, _Head] = {}
    for start in range(0, len(agent_ids), _IN_CHUNK):
        chunk = agent_ids[start : start + _IN_CHUNK]
        # FOR UPDATE (PostgreSQL) holds off a concurrent revocation until we commit.
        for r in db.all(
            "SELECT agent_id, status, last_seq, last_hash, inventory_fp, site_id, last_seen_at, "
            "last_fresh_at, next_due, last_log_index, first_attested_at, full_hash, "
            "full_log_index, full_created_at, agent_no FROM agents "
            f"WHERE agent_id IN {db.in_list(len(chunk))} ORDER BY agent_id"
            f"{db.dialect.for_update}",
            chunk,
        ):
            heads[r[0]] = _Head(
                status=r[1],
                last_seq=int(r[2]),
                last_hash=bytes(r[3]),
                fingerprint=bytes(r[4]),
                site_id=r[5],
                last_seen=r[6],
                last_fresh=r[7],
                next_due=int(r[8]),
                last_index=r[9],
                stored_seq=int(r[2]),
                first_attested=r[10],
                full_hash=b"" if r[11] is None else bytes(r[11]),
                full_index=r[12],
                full_created=r[13],
                agent_no=int(r[14]),
            )
    return heads


def _read_nonces(db: Db, nonces: list[bytes]) -> dict[bytes, tuple[bool, int | None]]:
    """The issued nonces among these, each with whether it has been consumed and the number of
    the agent it was issued to (None: unbound)."""
    found: dict[bytes, tuple[bool, int | None]] = {}
    for start in range(0, len(nonces), _IN_CHUNK):
        chunk = nonces[start : start + _IN_CHUNK]
        for nonce, consumed_at, agent_no in db.all(
            "SELECT nonce, consumed_at, agent_no FROM nonces "
            f"WHERE nonce IN {db.in_list(len(chunk))}",
            chunk,
        ):
            found[bytes(nonce)] = (consumed_at is not None, agent_no)
    return found


def _accept_one(
    db: Db,
    batch: _Batch,
    *,
    item: VerifiedAttestation,
    now_us: int,
    log_index: int,
    options: StoreOptions,
) -> Accepted:
    head = batch.heads.get(item.agent_id)
    if head is None:
        raise AgentUnknownError(f"no agent {item.agent_id!r}")
    if head.status != AgentStatus.ACTIVE.value:
        raise AgentRevokedError(f"agent {item.agent_id!r} is revoked")
    _check_chain(db, batch, item, head)
    _check_nonce(batch, item, head)
    if item.base and not (head.full_hash and hmac.compare_digest(item.base, head.full_hash)):
        raise HeartbeatBaseError(
            "the heartbeat repeats a full evidence that is not this agent's current one; "
            "send the full evidence"
        )
    seen_us = to_micros(item.created_at)
    if item.base and seen_us - (head.full_created or seen_us) > MAX_BASE_AGE // _MICRO:
        raise HeartbeatBaseError(
            f"the heartbeat repeats a full evidence older than {MAX_BASE_AGE}; send the full "
            "evidence"
        )
    previous = (head.last_seen, head.last_index)
    head.last_seen = seen_us if head.last_seen is None else max(head.last_seen, seen_us)
    if item.freshness is Freshness.NONCE:
        head.last_fresh = seen_us if head.last_fresh is None else max(head.last_fresh, seen_us)
        head.next_due = head.last_fresh + options.attestation_deadline // _MICRO
    head.last_seq, head.last_hash, head.last_index = item.seq, item.envelope_hash, log_index
    if head.first_attested is None:
        head.first_attested = now_us
    if not item.base:
        # Full evidence; a heartbeat's inventory is its base's, unchanged by definition.
        head.full_hash, head.full_index, head.full_created = item.envelope_hash, log_index, seen_us
        fingerprint = inventory_fingerprint(item.gpus)
        if not hmac.compare_digest(head.fingerprint, fingerprint):
            head.fingerprint = fingerprint
            batch.inventory_changes.append((item, log_index, head.last_seen, *previous))
    if item.site_claim:
        batch.site_claims[item.agent_id] = (head.site_id, item.site_claim, log_index)
    if item.nonce:
        batch.nonces[item.nonce] = (True, head.agent_no)
        batch.nonce_rows.append((now_us, item.nonce))
    leaf = leaf_hash(item.envelope)
    batch.accepted[item.agent_id, item.seq] = item.payload_digest
    # The chain the row links (bodies.py): its readers rebuild it from prev_index, so only a
    # row that has one is stored linked.
    link = None if previous[1] is None else bodies.Link(item.agent_id, item.prev_hash)
    batch.envelope_rows.append((log_index, bodies.compact(item.envelope, link)))
    # The attestation is its log entry: one row (migration 0017).
    batch.attestation_rows.append(
        (
            head.agent_no,
            item.seq,
            previous[1],  # the agent's previous entry: its chain link (ops_chain.py)
            leaf,
            item.envelope_hash,
            item.payload_digest,
            FRESH[item.freshness],
            seen_us,
            to_micros(item.received_at),
            log_index,
        )
    )
    batch.leaves.append(leaf)
    received_us = to_micros(item.received_at)
    for position, (landmark_id, statement) in enumerate(item.landmarks):
        batch.landmark_rows.append(
            (log_index, position, item.agent_id, head.site_id, landmark_id, received_us, statement)
        )
    return Accepted(
        agent_id=item.agent_id,
        seq=item.seq,
        envelope_hash=item.envelope_hash,
        log_index=log_index,
        leaf_hash=leaf,
        accepted_at=from_micros(now_us),
        freshness=item.freshness,
    )


def _check_chain(db: Db, batch: _Batch, item: VerifiedAttestation, head: _Head) -> None:
    if item.seq <= head.last_seq:
        prior = batch.accepted.get((item.agent_id, item.seq))
        if prior is None:
            # The committed row (this batch writes nothing until its flush).
            record = find_attestation(db, item.agent_id, item.seq)
            prior = None if record is None else record.payload_digest
        if prior is None or hmac.compare_digest(prior, item.payload_digest):
            raise ReplayError(f"sequence {item.seq} was accepted already")
        raise ForkError(f"a different envelope holds sequence {item.seq} already")
    if item.seq != head.last_seq + 1:
        raise GapError(f"sequence {item.seq} does not follow the accepted {head.last_seq}")
    if not hmac.compare_digest(item.prev_hash, head.last_hash):
        raise GapError(f"previous hash of sequence {item.seq} does not match the accepted chain")


def _check_nonce(batch: _Batch, item: VerifiedAttestation, head: _Head) -> None:
    if not item.nonce:
        return
    found = batch.nonces.get(item.nonce)
    if found is None:
        raise NonceUnknownError("nonce was not issued by this verifier fleet")
    consumed, agent_no = found
    # Checked before consumption, so another agent's evidence never uses up the nonce; an
    # unbound nonce (None) is never consumed as fresh (the pipeline makes such evidence OFFLINE).
    if agent_no != head.agent_no:
        raise NonceMismatchError("nonce was issued to another agent's challenge")
    if consumed:
        raise NonceReplayedError("nonce was used already")


_ATTESTATION_COLUMNS = (
    ("agent_no", "bigint"),
    ("seq", "bigint"),
    ("prev_index", "bigint"),
    ("leaf_hash", "bytea"),
    ("envelope_hash", "bytea"),
    ("payload_digest", "bytea"),
    ("fresh", "smallint"),
    ("created_at", "bigint"),
    ("received_at", "bigint"),
    ("log_index", "bigint"),
)


_LANDMARK_COLUMNS = (
    ("log_index", "bigint"),
    ("position", "integer"),
    ("agent_id", "text"),
    ("site_id", "text"),
    ("landmark_id", "text"),
    ("received_us", "bigint"),
    ("statement", "bytea"),
)


def _flush(db: Db, batch: _Batch, size: int) -> None:
    """Write the batch: one statement per table; heads and nonces by compare-and-set."""
    dirty = [(a, h) for a, h in batch.heads.items() if h.last_seq != h.stored_seq]
    if dirty:
        _update_heads(db, dirty)
        if db.rowcount != len(dirty):
            raise StoreError("an agent's chain head moved during a serialized accept")
    if batch.nonce_rows:
        _consume_nonces(db, batch.nonce_rows)
        if db.rowcount != len(batch.nonce_rows):
            raise StoreError("a nonce was consumed outside the serialized accept path")
    # Envelope bytes by log index, appended (migration 0014; `blobs` holds older ones), in
    # the stored form of verifier/store/bodies.py.
    db.insert_rows("envelopes", (("log_index", "bigint"), ("body", "bytea")), batch.envelope_rows)
    # Attestations and the log's entries, one row each (migration 0017).
    db.insert_rows("attestations", _ATTESTATION_COLUMNS, batch.attestation_rows)
    db.insert_rows("landmark_measurements", _LANDMARK_COLUMNS, batch.landmark_rows)
    # The Merkle nodes these leaves complete, in the same transaction (docs/design.md §9).
    ops_log.append_leaves(db, size - len(batch.leaves), batch.leaves)
    db.run("UPDATE log_head SET size = ? WHERE id = 1", (size,))


def _update_heads(db: Db, dirty: list[tuple[str, _Head]]) -> None:
    rows = [
        (
            agent_id, h.stored_seq, h.last_seq, h.last_hash, h.first_attested, h.last_seen,
            h.last_fresh, h.next_due, h.fingerprint, h.last_index, h.full_hash or None,
            h.full_index, h.full_created,
        )
        for agent_id, h in dirty
    ]  # fmt: skip
    active = AgentStatus.ACTIVE.value
    if db.dialect.bulk_arrays:
        db.run_arrays(
            "UPDATE agents SET last_seq = v.last_seq, last_hash = v.last_hash, "
            "first_attested_at = v.first_attested_at, last_seen_at = v.last_seen_at, "
            "last_fresh_at = v.last_fresh_at, next_due = v.next_due, "
            "inventory_fp = v.inventory_fp, last_log_index = v.last_log_index, "
            "full_hash = v.full_hash, full_log_index = v.full_log_index, "
            "full_created_at = v.full_created_at "
            "FROM unnest(?::text[], ?::bigint[], ?::bigint[], ?::bytea[], ?::bigint[], "
            "?::bigint[], ?::bigint[], ?::bigint[], ?::bytea[], ?::bigint[], ?::bytea[], "
            "?::bigint[], ?::bigint[]) AS v(agent_id, stored_seq, last_seq, last_hash, "
            "first_attested_at, last_seen_at, last_fresh_at, next_due, inventory_fp, "
            "last_log_index, full_hash, full_log_index, full_created_at) "
            "WHERE agents.agent_id = v.agent_id "
            "AND agents.last_seq = v.stored_seq AND agents.status = ?",
            [*([list(c) for c in zip(*rows, strict=True)]), active],
        )
        return
    db.many(
        "UPDATE agents SET last_seq = ?, last_hash = ?, first_attested_at = ?, "
        "last_seen_at = ?, last_fresh_at = ?, next_due = ?, inventory_fp = ?, "
        "last_log_index = ?, full_hash = ?, full_log_index = ?, full_created_at = ? "
        "WHERE agent_id = ? AND last_seq = ? AND status = ?",
        [(*row[2:], row[0], row[1], active) for row in rows],
    )


def _consume_nonces(db: Db, rows: list[tuple[int, bytes]]) -> None:
    if db.dialect.bulk_arrays:
        db.run_arrays(
            "UPDATE nonces SET consumed_at = v.consumed_at "
            "FROM unnest(?::bigint[], ?::bytea[]) AS v(consumed_at, nonce) "
            "WHERE nonces.nonce = v.nonce AND nonces.consumed_at IS NULL",
            [list(c) for c in zip(*rows, strict=True)],
        )
        return
    db.many(
        "UPDATE nonces SET consumed_at = ? WHERE nonce = ? AND consumed_at IS NULL",
        rows,
    )
