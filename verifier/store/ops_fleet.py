"""Transaction bodies for fleet state, findings, the periodic sweep and evidence reads."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from attest.errors import ForkError, GapError
from attest.model import Freshness
from verifier import anomalies
from verifier.store.api import (
    AgentStatus,
    AttestationRecord,
    AuditKind,
    AuditRecord,
    Finding,
    FindingDraft,
    FindingStatus,
    GpuSighting,
    HostFleet,
    LogEntry,
    Severity,
    StoreOptions,
)
from verifier.store.sqlbase import Db, Row, from_micros, opt_from_micros, read_agents, to_micros

_MICRO = timedelta(microseconds=1)

# A present claim is as fresh as its agent's last attestation (heartbeat compaction).
_SEEN = "CASE WHEN {s}.present = 1 AND {a}.last_seen_at IS NOT NULL THEN {a}.last_seen_at ELSE {s}.last_seen END"  # noqa: E501
_INDEX = "CASE WHEN {s}.present = 1 THEN {a}.last_log_index ELSE {s}.last_log_index END"
_SIGHTING_SELECT = (
    "SELECT s.uuid, s.agent_id, s.site_id, s.name, s.pci_device_id, s.first_seen, "
    f"{_SEEN.format(s='s', a='a')}, s.present FROM gpu_sightings s "
    "JOIN agents a ON a.agent_id = s.agent_id"
)


def _evidence_text(evidence: Sequence[int]) -> str:
    return ",".join(str(i) for i in evidence)


def upsert_findings(db: Db, drafts: Sequence[FindingDraft], now_us: int) -> None:
    """Open or refresh each draft; a row is rewritten only when something about it changed."""
    db.many(
        "INSERT INTO findings (rule, subject, severity, message, evidence, status, opened_at, "
        "updated_at, resolved_at) VALUES (?, ?, ?, ?, ?, 'open', ?, ?, NULL) "
        "ON CONFLICT (rule, subject) DO UPDATE SET severity = excluded.severity, "
        "message = excluded.message, evidence = excluded.evidence, "
        "opened_at = CASE WHEN findings.status = 'open' THEN findings.opened_at "
        "ELSE excluded.opened_at END, status = 'open', updated_at = excluded.updated_at, "
        "resolved_at = NULL WHERE findings.status <> 'open' "
        "OR findings.message <> excluded.message OR findings.evidence <> excluded.evidence "
        "OR findings.severity <> excluded.severity",
        [
            (
                d.rule,
                d.subject,
                d.severity.value,
                d.message,
                _evidence_text(d.evidence),
                now_us,
                now_us,
            )
            for d in drafts
        ],
    )


def resolve_findings(db: Db, keys: Sequence[tuple[str, str]], now_us: int) -> None:
    db.many(
        "UPDATE findings SET status = 'resolved', resolved_at = ?, updated_at = ? "
        "WHERE rule = ? AND subject = ? AND status = 'open'",
        [(now_us, now_us, rule, subject) for rule, subject in keys],
    )


def list_findings(db: Db, include_resolved: bool) -> list[Finding]:
    where = "" if include_resolved else " WHERE status = 'open'"
    rows = db.all(
        "SELECT rule, subject, severity, message, evidence, status, opened_at, updated_at, "
        f"resolved_at FROM findings{where} ORDER BY opened_at, rule, subject"
    )
    return [
        Finding(
            rule=r[0],
            subject=r[1],
            severity=Severity(r[2]),
            message=r[3],
            evidence=tuple(int(i) for i in r[4].split(",") if i),
            status=FindingStatus(r[5]),
            opened_at=from_micros(r[6]),
            updated_at=from_micros(r[7]),
            resolved_at=opt_from_micros(r[8]),
        )
        for r in rows
    ]


def _sighting(row: Row) -> GpuSighting:
    return GpuSighting(
        uuid=row[0],
        agent_id=row[1],
        site_id=row[2],
        name=row[3],
        pci_device_id=None if row[4] is None else int(row[4]),
        first_seen=from_micros(row[5]),
        last_seen=from_micros(row[6]),
        present=bool(row[7]),
    )


def list_fleet(db: Db, site_id: str | None) -> list[HostFleet]:
    if site_id is None:
        agents = read_agents(db)
        rows = db.all(f"{_SIGHTING_SELECT} ORDER BY s.agent_id, s.uuid")
    else:
        agents = read_agents(db, "agents.site_id = ?", (site_id,))
        rows = db.all(
            f"{_SIGHTING_SELECT} WHERE a.site_id = ? ORDER BY s.agent_id, s.uuid", (site_id,)
        )
    by_agent: dict[str, list[GpuSighting]] = {}
    for row in rows:
        by_agent.setdefault(row[1], []).append(_sighting(row))
    return [HostFleet(agent=a, gpus=tuple(by_agent.get(a.agent_id, ()))) for a in agents]


def gpu_sightings(db: Db, uuid: str) -> list[GpuSighting]:
    return [_sighting(r) for r in db.all(f"{_SIGHTING_SELECT} WHERE s.uuid = ?", (uuid,))]


def sweep(db: Db, now_us: int, grace: timedelta, options: StoreOptions) -> None:
    """Raise the swept rules from stored state and resolve the ones that no longer hold."""
    now = from_micros(now_us)
    deadlines = [
        anomalies.AgentDeadline(r[0], r[1], True, from_micros(r[2]), opt_from_micros(r[3]), r[4])
        for r in db.all(
            "SELECT agent_id, hostname, next_due, last_fresh_at, last_log_index FROM agents "
            "WHERE status = ? AND next_due <= ?",
            (AgentStatus.ACTIVE.value, now_us),
        )
    ]
    drafts = anomalies.stale_agents(deadlines, now)
    drafts += anomalies.missing_gpus(_last_seen_before(db, now_us - grace // _MICRO), now, grace)
    claims = [
        anomalies.GpuClaimState(
            r[0], r[1], r[2] == AgentStatus.ACTIVE.value, opt_from_micros(r[3]), r[4]
        )
        for r in db.all(
            "SELECT s.uuid, s.agent_id, a.status, a.last_seen_at, a.last_log_index "
            "FROM gpu_sightings s JOIN agents a ON a.agent_id = s.agent_id "
            "WHERE s.present = 1 AND s.uuid IN (SELECT uuid FROM gpu_sightings "
            "WHERE present = 1 GROUP BY uuid HAVING COUNT(*) > 1)"
        )
    ]
    drafts += anomalies.duplicate_gpu(claims, now, options.attestation_deadline)
    upsert_findings(db, drafts, now_us)
    open_keys = [
        (r[0], r[1]) for r in db.all("SELECT rule, subject FROM findings WHERE status = 'open'")
    ]
    resolve_findings(db, anomalies.no_longer_raised(open_keys, drafts), now_us)


def _last_seen_before(db: Db, cutoff_us: int) -> list[anomalies.GpuLastSeen]:
    """For each GPU no agent reported at or after the cutoff: its latest report."""
    seen, seen2 = _SEEN.format(s="s", a="a"), _SEEN.format(s="s2", a="a2")
    rows = db.all(
        f"SELECT s.uuid, s.agent_id, {seen}, {_INDEX.format(s='s', a='a')} "
        "FROM gpu_sightings s JOIN agents a ON a.agent_id = s.agent_id "
        f"WHERE {seen} < ? AND NOT EXISTS (SELECT 1 FROM gpu_sightings s2 "
        f"JOIN agents a2 ON a2.agent_id = s2.agent_id WHERE s2.uuid = s.uuid AND {seen2} >= ?)",
        (cutoff_us, cutoff_us),
    )
    latest: dict[str, anomalies.GpuLastSeen] = {}
    for uuid, agent_id, when, index in rows:
        candidate = anomalies.GpuLastSeen(uuid, agent_id, from_micros(when), index)
        if uuid not in latest or candidate.last_seen > latest[uuid].last_seen:
            latest[uuid] = candidate
    return list(latest.values())


def record_rejection(db: Db, record: AuditRecord) -> None:
    at_us = to_micros(record.at)
    db.run(
        "INSERT INTO audit (kind, at, agent_id, code, message, envelope_hash, seq) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            AuditKind.REJECTION.value,
            at_us,
            record.agent_id,
            record.code,
            record.message,
            record.envelope_hash,
            record.seq,
        ),
    )
    head = db.one(
        "SELECT last_seq, last_log_index FROM agents WHERE agent_id = ?", (record.agent_id,)
    )
    if head is None:
        return
    if record.code == ForkError.code:
        prior = db.one(
            "SELECT log_index FROM attestations WHERE agent_id = ? AND seq = ?",
            (record.agent_id, record.seq),
        )
        index = None if prior is None else int(prior[0])
        upsert_findings(db, [anomalies.evidence_fork(record.agent_id, record.seq, index)], at_us)
    elif record.code == GapError.code:
        draft = anomalies.evidence_gap(record.agent_id, int(head[0]), record.seq, head[1])
        upsert_findings(db, [draft], at_us)


def get_attestation(db: Db, agent_id: str, seq: int) -> AttestationRecord | None:
    row = db.one(
        "SELECT agent_id, seq, envelope_hash, payload_digest, freshness, created_at, "
        "received_at, log_index FROM attestations WHERE agent_id = ? AND seq = ?",
        (agent_id, seq),
    )
    if row is None:
        return None
    return AttestationRecord(
        agent_id=row[0],
        seq=int(row[1]),
        envelope_hash=bytes(row[2]),
        payload_digest=bytes(row[3]),
        freshness=Freshness(row[4]),
        created_at=from_micros(row[5]),
        received_at=from_micros(row[6]),
        log_index=int(row[7]),
    )


def get_blob(db: Db, envelope_hash: bytes) -> bytes | None:
    row = db.one("SELECT body FROM blobs WHERE hash = ?", (envelope_hash,))
    return None if row is None else bytes(row[0])


def log_size(db: Db) -> int:
    row = db.one("SELECT size FROM log_head WHERE id = 1")
    return 0 if row is None else int(row[0])


def log_entries(db: Db, start: int, stop: int) -> list[LogEntry]:
    rows = db.all(
        "SELECT log_index, leaf_hash, envelope_hash FROM log_entries "
        "WHERE log_index >= ? AND log_index < ? ORDER BY log_index",
        (start, stop),
    )
    return [LogEntry(int(r[0]), bytes(r[1]), bytes(r[2])) for r in rows]
