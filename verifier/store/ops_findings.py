"""Transaction bodies of the findings lifecycle: open -> acknowledged -> resolved.

A finding is one row per (rule, subject); the row's `id` names its current episode. Raising a
draft whose row is open (acknowledged or not) refreshes it in place, so re-running a rule never
duplicates a finding and never undoes an acknowledgment; raising one whose row is resolved opens
a new episode: a new id, opened_at now, acknowledgment and resolution cleared. Every
transition (opened, acknowledged, resolved) is an audit record of kind `finding`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from attest.errors import FindingResolvedError, FindingUnknownError
from verifier import findings
from verifier.model import (
    AuditKind,
    Finding,
    FindingDraft,
    FindingStatus,
    MissingOnHost,
    Severity,
)
from verifier.store.sqlbase import Db, Row, from_micros, opt_from_micros, where_all

#: The reason recorded when a rule stops raising a finding of its own accord.
CLEARED = "condition cleared"
#: Subjects per IN list, under SQLite's oldest bound-parameter limit (999).
_IN_PAGE = 900
_COLUMNS = (
    "rule, subject, severity, message, evidence, status, opened_at, updated_at, resolved_at, "
    "id, acknowledged_at, acknowledged_by, ack_reason, cleared_by_log_index, resolved_reason"
)


def _evidence_text(evidence: Sequence[int]) -> str:
    return ",".join(str(i) for i in evidence)


def _audit(db: Db, rows: Sequence[tuple[int, str, str, str]], at_us: int) -> None:
    """One `finding` audit record per (id, rule, subject, transition)."""
    prefix = findings.agent_subject("")
    db.many(
        "INSERT INTO audit (kind, at, agent_id, code, message, envelope_hash, seq) "
        "VALUES (?, ?, ?, ?, ?, ?, 0)",
        [
            (
                AuditKind.FINDING.value,
                at_us,
                subject.removeprefix(prefix) if subject.startswith(prefix) else "",
                transition,
                f"finding {fid} {rule} {subject}: {transition}",
                b"",
            )
            for fid, rule, subject, transition in rows
        ],
    )


def _existing(db: Db, keys: Sequence[tuple[str, str]], columns: str) -> dict[tuple[str, str], Row]:
    """The stored rows of these (rule, subject) keys, read an IN list of subjects per rule."""
    by_rule: dict[str, list[str]] = {}
    for rule, subject in keys:
        by_rule.setdefault(rule, []).append(subject)
    found: dict[tuple[str, str], Row] = {}
    for rule, subjects in by_rule.items():
        for start in range(0, len(subjects), _IN_PAGE):
            page = subjects[start : start + _IN_PAGE]
            for row in db.all(
                f"SELECT subject, {columns} FROM findings "
                f"WHERE rule = ? AND subject IN {db.in_list(len(page))}",
                [rule, *page],
            ):
                found[(rule, str(row[0]))] = row[1:]
    return found


def _take_ids(db: Db, count: int) -> int:
    """Reserve `count` finding ids; returns the first (the caller holds the counter's lock)."""
    db.run("UPDATE finding_ids SET next_id = next_id + ? WHERE one = 1", (count,))
    row = db.one("SELECT next_id FROM finding_ids WHERE one = 1")
    assert row is not None  # migration 0006 inserts the one row
    return int(row[0]) - count


def upsert_findings(db: Db, drafts: Sequence[FindingDraft], now_us: int) -> None:
    """Open, refresh or reopen each draft (the last draft of a key wins); a row is rewritten
    only when something about it changed."""
    latest = {(d.rule, d.subject): d for d in drafts}
    if not latest:
        return
    # Lock the id counter before reading: two writers (replicas, a sweep page and an accept)
    # raising the same new finding then run one after the other, and the second sees the
    # first's row (each statement reads the latest commit) instead of inserting a duplicate.
    db.run("UPDATE finding_ids SET next_id = next_id WHERE one = 1")
    stored = _existing(db, list(latest), "status, severity, message, evidence")
    fresh = [k for k in latest if k not in stored or stored[k][0] == "resolved"]
    changed = [
        d
        for k, d in latest.items()
        if k in stored
        and stored[k][0] != "resolved"
        and tuple(stored[k][1:]) != (d.severity.value, d.message, _evidence_text(d.evidence))
    ]
    if changed:
        db.many(
            "UPDATE findings SET severity = ?, message = ?, evidence = ?, updated_at = ? "
            "WHERE rule = ? AND subject = ?",
            [
                (d.severity.value, d.message, _evidence_text(d.evidence), now_us, d.rule, d.subject)
                for d in changed
            ],
        )
    if not fresh:
        return
    first = _take_ids(db, len(fresh))
    # A resolved row is the previous episode: its history is in the audit records, and the
    # row becomes the new episode (one row per key keeps "never duplicated" a key constraint).
    db.many(
        "DELETE FROM findings WHERE rule = ? AND subject = ?", [k for k in fresh if k in stored]
    )
    db.many(
        "INSERT INTO findings (rule, subject, severity, message, evidence, status, opened_at, "
        "updated_at, id) VALUES (?, ?, ?, ?, ?, 'open', ?, ?, ?)",
        [
            (*k, latest[k].severity.value, latest[k].message,
             _evidence_text(latest[k].evidence), now_us, now_us, first + n)
            for n, k in enumerate(fresh)
        ],
    )  # fmt: skip
    _audit(db, [(first + n, *k, "opened") for n, k in enumerate(fresh)], now_us)


def resolve_findings(
    db: Db,
    keys: Sequence[tuple[str, str]],
    now_us: int,
    *,
    reason: str = CLEARED,
    cleared_by: Mapping[tuple[str, str], int | None] | int | None = None,
) -> None:
    """Resolve the open (or acknowledged) findings with these keys, recording why and, where
    there is one, the log index of the accepted evidence that cleared each (`cleared_by`: one
    index for all, or per key)."""
    open_ids = {
        k: int(row[0])
        for k, row in _existing(db, keys, "id, status").items()
        if row[1] == FindingStatus.OPEN.value
    }
    if not open_ids:
        return

    def index(key: tuple[str, str]) -> int | None:
        return cleared_by.get(key) if isinstance(cleared_by, Mapping) else cleared_by

    db.many(
        "UPDATE findings SET status = 'resolved', resolved_at = ?, updated_at = ?, "
        "cleared_by_log_index = ?, resolved_reason = ? WHERE rule = ? AND subject = ?",
        [(now_us, now_us, index(k), reason, *k) for k in open_ids],
    )
    _audit(
        db,
        [
            (fid, *k, f"resolved ({reason}{'' if index(k) is None else f', log {index(k)}'})")
            for k, fid in open_ids.items()
        ],
        now_us,
    )


def _finding(r: Row) -> Finding:
    status = FindingStatus(r[5])
    if status is FindingStatus.OPEN and r[10] is not None:
        status = FindingStatus.ACKNOWLEDGED
    return Finding(
        rule=r[0],
        subject=r[1],
        severity=Severity(r[2]),
        message=r[3],
        evidence=tuple(int(i) for i in r[4].split(",") if i),
        status=status,
        opened_at=from_micros(r[6]),
        updated_at=from_micros(r[7]),
        resolved_at=opt_from_micros(r[8]),
        id=int(r[9]),
        acknowledged_at=opt_from_micros(r[10]),
        acknowledged_by=r[11],
        ack_reason=r[12],
        cleared_by=None if r[13] is None else int(r[13]),
        resolved_reason=r[14],
    )


def get_finding(db: Db, finding_id: int) -> Finding | None:
    row = db.one(f"SELECT {_COLUMNS} FROM findings WHERE id = ?", (finding_id,))
    return None if row is None else _finding(row)


def acknowledge(db: Db, finding_id: int, by: str, reason: str, now_us: int) -> Finding:
    """Acknowledge an open finding. Acknowledging it again changes nothing and returns the
    first acknowledgment (who, when, why stand as recorded). Raises FindingUnknownError,
    FindingResolvedError."""
    current = get_finding(db, finding_id)
    if current is None:
        raise FindingUnknownError(f"no finding with id {finding_id}")
    if current.status is FindingStatus.RESOLVED:
        raise FindingResolvedError(f"finding {finding_id} is resolved; nothing to acknowledge")
    if current.status is FindingStatus.ACKNOWLEDGED:
        return current
    db.run(
        "UPDATE findings SET acknowledged_at = ?, acknowledged_by = ?, ack_reason = ?, "
        "updated_at = ? WHERE id = ?",
        (now_us, by, reason, now_us, finding_id),
    )
    _audit(
        db, [(finding_id, current.rule, current.subject, f"acknowledged by {by}: {reason}")], now_us
    )
    found = get_finding(db, finding_id)
    assert found is not None  # updated in this transaction
    return found


#: A findings page's position: (opened_at, rule, subject) of its last row, the listing's order.
FindingKey = tuple[int, str, str]


def findings_page(
    db: Db, include_resolved: bool, *, after: FindingKey | None, limit: int
) -> list[Finding]:
    """The first `limit` findings after `after` in (opened_at, rule, subject) order, a unique
    order (rule, subject is the key) that the findings_listing index serves."""
    status = "" if include_resolved else "status = 'open'"
    page = "" if after is None else "(opened_at, rule, subject) > (?, ?, ?)"
    rows = db.all(
        f"SELECT {_COLUMNS} FROM findings{where_all(status, page)} "
        "ORDER BY opened_at, rule, subject LIMIT ?",
        [*(after or ()), limit],
    )
    return [_finding(r) for r in rows]


def missing_by_host(db: Db, first: int) -> list[MissingOnHost]:
    """Open `gpu-missing` findings counted per host (the active agents that claim the GPU),
    with the first `first` of each by uuid; aggregated in SQL, one row per host and shown
    GPU, whatever the number of missing GPUs."""
    rows = db.all(
        "WITH m AS (SELECT s.agent_id AS agent_id, s.uuid AS uuid, f.id AS fid, "
        "ROW_NUMBER() OVER (PARTITION BY s.agent_id ORDER BY s.uuid) AS n, "
        "COUNT(*) OVER (PARTITION BY s.agent_id) AS c "
        "FROM findings f JOIN gpu_sightings s ON s.uuid = SUBSTR(f.subject, ?) "
        "JOIN agents a ON a.agent_id = s.agent_id "
        "WHERE f.rule = ? AND f.status = 'open' AND a.status = 'active') "
        "SELECT m.agent_id, a.hostname, a.site_id, m.c, m.fid, m.uuid FROM m "
        "JOIN agents a ON a.agent_id = m.agent_id WHERE m.n <= ? ORDER BY m.agent_id, m.n",
        (len(findings.gpu_subject("")) + 1, findings.GPU_MISSING, first),
    )
    hosts: dict[str, MissingOnHost] = {}
    for agent_id, hostname, site_id, count, fid, uuid in rows:
        was = hosts.get(agent_id) or MissingOnHost(agent_id, hostname, site_id, int(count), ())
        hosts[agent_id] = MissingOnHost(
            agent_id, hostname, site_id, int(count), (*was.first, (int(fid), str(uuid)))
        )
    return list(hosts.values())
