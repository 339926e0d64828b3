"""Transaction bodies for fleet state, findings and evidence reads. Listings are keyset pages
(ORDER BY a unique key, WHERE key > last, LIMIT n) so a caller holds one page at a time."""

from __future__ import annotations

from attest.errors import ForkError, GapError
from verifier import findings
from verifier.model import (
    AuditKind,
    AuditRecord,
    Finding,
    GpuSighting,
    HostFleet,
    LogEntry,
)
from verifier.store.ops_chain import find_attestation
from verifier.store.ops_findings import FindingKey, upsert_findings
from verifier.store.sqlbase import (
    Db,
    Row,
    from_micros,
    read_agents,
    to_micros,
    where_all,
)

# A present claim is as fresh as its agent's last attestation (heartbeat compaction).
SEEN_SQL = "CASE WHEN {s}.present = 1 AND {a}.last_seen_at IS NOT NULL THEN {a}.last_seen_at ELSE {s}.last_seen END"  # noqa: E501
INDEX_SQL = "CASE WHEN {s}.present = 1 THEN {a}.last_log_index ELSE {s}.last_log_index END"
_SIGHTING_SELECT = (
    "SELECT s.uuid, s.agent_id, s.site_id, s.name, s.pci_device_id, s.first_seen, "
    f"{SEEN_SQL.format(s='s', a='a')}, s.present, s.serial, s.board_part_number, s.lost, "
    "s.pci_subsystem_id "
    "FROM gpu_sightings s "
    "JOIN agents a ON a.agent_id = s.agent_id"
)


def finding_key(finding: Finding) -> FindingKey:
    return (to_micros(finding.opened_at), finding.rule, finding.subject)


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
        serial=row[8],
        board_part_number=row[9],
        lost=bool(row[10]),
        pci_subsystem_id=None if row[11] is None else int(row[11]),
    )


def fleet_page(db: Db, site_id: str | None, *, after: str | None, limit: int) -> list[HostFleet]:
    """The first `limit` hosts (agents, optionally of one site) whose id sorts after `after`,
    each with the GPUs it claims ordered by uuid."""
    site, site_params = ("", []) if site_id is None else ("site_id = ?", [site_id])
    agents = read_agents(db, site and f"agents.{site}", site_params, after=after, limit=limit)
    if not agents:
        return []
    # The sightings of exactly this page: same filter, bounded by its first and last agent.
    page = "" if after is None else "a.agent_id > ?"
    rows = db.all(
        f"{_SIGHTING_SELECT}"
        f"{where_all(site and f'a.{site}', page, 'a.agent_id <= ?')} "
        "ORDER BY s.agent_id, s.uuid",
        [*site_params, *([] if after is None else [after]), agents[-1].agent_id],
    )
    by_agent: dict[str, list[GpuSighting]] = {}
    for row in rows:
        by_agent.setdefault(row[1], []).append(_sighting(row))
    return [HostFleet(agent=a, gpus=tuple(by_agent.get(a.agent_id, ()))) for a in agents]


def gpu_sightings(db: Db, uuid: str) -> list[GpuSighting]:
    return [_sighting(r) for r in db.all(f"{_SIGHTING_SELECT} WHERE s.uuid = ?", (uuid,))]


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
        prior = find_attestation(db, record.agent_id, record.seq)
        index = None if prior is None else prior.log_index
        upsert_findings(db, [findings.evidence_fork(record.agent_id, record.seq, index)], at_us)
    elif record.code == GapError.code:
        draft = findings.evidence_gap(record.agent_id, int(head[0]), record.seq, head[1])
        upsert_findings(db, [draft], at_us)


def log_size(db: Db) -> int:
    row = db.one("SELECT size FROM log_head WHERE id = 1")
    return 0 if row is None else int(row[0])


def log_entries(db: Db, start: int, stop: int) -> list[LogEntry]:
    rows = db.all(
        "SELECT log_index, leaf_hash, envelope_hash FROM attestations "
        "WHERE log_index >= ? AND log_index < ? ORDER BY log_index",
        (start, stop),
    )
    return [LogEntry(int(r[0]), bytes(r[1]), bytes(r[2])) for r in rows]
