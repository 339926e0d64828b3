"""The periodic sweep's transaction bodies, each over one bounded page of state.

A sweep is two walks, each a run of short write transactions (`SqlStore.sweep` drives them):
- resolve: the open findings of each swept rule, a page of subjects at a time by key; the rule
  is evaluated again over the stored state of just those subjects, and the ones it no longer
  raises are resolved;
- raise: the agents past their deadline, and the GPUs a page of UUIDs at a time (every claim
  on a UUID lies in one page), through the same pure rules; what they raise is upserted.
Memory is O(page) whatever the fleet size; no walk holds the database for the whole sweep.
Each page decides from the state it reads in its own transaction, so a finding is never
resolved or raised against state older than its page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from verifier import findings
from verifier.model import AgentStatus, FindingDraft
from verifier.store.ops_findings import resolve_findings, upsert_findings
from verifier.store.ops_fleet import INDEX_SQL, SEEN_SQL
from verifier.store.sqlbase import Db, Row, from_micros, opt_from_micros, where_all

#: Pages that become an IN list stay under SQLite's oldest bound-parameter limit (999).
MAX_IN_PAGE = 900


@dataclass(frozen=True)
class SweepRules:
    """When the sweep runs and the rules' windows."""

    now_us: int
    gpu_missing_grace: timedelta
    claim_freshness: timedelta  # a claim older than this counts for no duplicate


_GPU_ROWS = (
    f"SELECT s.uuid, s.agent_id, {SEEN_SQL.format(s='s', a='a')}, "
    f"{INDEX_SQL.format(s='s', a='a')}, s.present, a.status, a.last_seen_at, a.last_log_index, "
    "s.lost "
    "FROM gpu_sightings s JOIN agents a ON a.agent_id = s.agent_id"
)
_AGENT_PREFIX = findings.agent_subject("")
_GPU_PREFIX = findings.gpu_subject("")


_OVERDUE = (
    "SELECT a.agent_id, a.hostname, a.next_due, a.last_fresh_at, a.last_log_index, "
    "r.offline_deadline_s, a.last_seen_at, a.enrolled_at FROM agents a "
)
#: An agent at a site with an offline deadline is due that long after its latest evidence of
#: any freshness (it reports through `ingest`), or after its enrollment.
_OFFLINE_DUE = "COALESCE(a.last_seen_at, a.enrolled_at) + r.offline_deadline_s * 1000000"


def _overdue(
    db: Db, now_us: int, condition: str, params: Sequence[object], limit: int
) -> list[Row]:
    """Active agents past their deadline that meet `condition`, by agent_id, at most `limit`:
    those of sites without an offline deadline by the next_due index; those of sites with one
    (registry `offline_deadline`) only when the registry has such a site."""
    active = AgentStatus.ACTIVE.value
    online_due = where_all("a.status = ?", "a.next_due <= ?", "r.offline_deadline_s IS NULL")
    online = db.all(
        f"{_OVERDUE}LEFT JOIN reg_sites r ON r.id = a.site_id{online_due}"
        f"{' AND ' + condition if condition else ''} ORDER BY a.agent_id LIMIT ?",
        [active, now_us, *params, limit],
    )
    if db.one("SELECT 1 FROM reg_sites WHERE offline_deadline_s IS NOT NULL LIMIT 1") is None:
        return online
    offline_due = where_all(
        "a.status = ?", "r.offline_deadline_s IS NOT NULL", f"{_OFFLINE_DUE} <= ?"
    )
    offline = db.all(
        f"{_OVERDUE}JOIN reg_sites r ON r.id = a.site_id{offline_due}"
        f"{' AND ' + condition if condition else ''} ORDER BY a.agent_id LIMIT ?",
        [active, now_us, *params, limit],
    )
    return sorted(online + offline, key=lambda r: str(r[0]))[:limit]


def _stale_drafts(rows: Sequence[Row], now_us: int) -> list[FindingDraft]:
    deadlines = []
    for agent_id, hostname, next_due, fresh, index, offline_s, seen, enrolled in rows:
        offline = None if offline_s is None else timedelta(seconds=int(offline_s))
        due = from_micros(next_due)
        if offline is not None:
            due = from_micros(seen if seen is not None else enrolled) + offline
        deadlines.append(
            findings.AgentDeadline(
                agent_id, hostname, True, due, opt_from_micros(fresh), index,
                offline_deadline=offline, last_seen_at=opt_from_micros(seen),
            )
        )  # fmt: skip
    return findings.stale_agents(deadlines, from_micros(now_us))


def _gpu_drafts(rows: Sequence[Row], rules: SweepRules) -> list[FindingDraft]:
    """gpu-missing, duplicate-gpu and gpu-lost over every sighting of some UUIDs (rows by
    uuid). A revoked agent's GPUs left the holdings (state `revoked`), and a lost GPU raises
    gpu-lost: neither is missing."""
    latest: dict[str, findings.GpuLastSeen] = {}
    claims = []
    lost = []
    for uuid, agent_id, seen, index, present, status, agent_seen, agent_index, is_lost in rows:
        active = status == AgentStatus.ACTIVE.value
        if active and is_lost:
            lost.append(findings.LostGpu(uuid, agent_id, index))
        candidate = findings.GpuLastSeen(uuid, agent_id, from_micros(seen), index)
        if (
            active
            and not is_lost
            and (uuid not in latest or candidate.last_seen > latest[uuid].last_seen)
        ):
            latest[uuid] = candidate
        if present:
            claims.append(
                findings.GpuClaimState(
                    uuid, agent_id, active, opt_from_micros(agent_seen), agent_index
                )
            )
    now = from_micros(rules.now_us)
    missing = findings.missing_gpus(latest.values(), now, rules.gpu_missing_grace)
    lost_uuids = {g.uuid for g in lost}
    missing = [d for d in missing if d.subject.removeprefix(_GPU_PREFIX) not in lost_uuids]
    duplicates = findings.duplicate_gpu(claims, now, rules.claim_freshness)
    return missing + duplicates + findings.lost_gpus(lost)


def raise_stale_agents(db: Db, rules: SweepRules, *, after: str | None, limit: int) -> str | None:
    """Upsert agent-stale for one page of overdue active agents (by agent_id); returns the
    position to continue from, or None when this was the last page."""
    if after is None:
        rows = _overdue(db, rules.now_us, "", (), limit)
    else:
        rows = _overdue(db, rules.now_us, "a.agent_id > ?", (after,), limit)
    upsert_findings(db, _stale_drafts(rows, rules.now_us), rules.now_us)
    return str(rows[-1][0]) if len(rows) == limit else None


def raise_gpu_rules(db: Db, rules: SweepRules, *, after: str | None, limit: int) -> str | None:
    """Upsert gpu-missing and duplicate-gpu for one page of GPU UUIDs; returns the position to
    continue from, or None when this was the last page."""
    lower = [] if after is None else [after]
    # The page ends at the UUID of its `limit`-th sighting, read straight off the primary key
    # (no DISTINCT: without statistics PostgreSQL guesses 200 distinct values and hashes the
    # whole table for every page).
    uuids = db.all(
        "SELECT uuid FROM gpu_sightings"
        f"{where_all('' if after is None else 'uuid > ?')} ORDER BY uuid LIMIT ?",
        [*lower, limit],
    )
    if not uuids:
        return None
    # Every sighting of the page's UUIDs: a UUID's claims are never split across pages.
    last = str(uuids[-1][0])
    span = where_all("" if after is None else "s.uuid > ?", "s.uuid <= ?")
    # The claimants are named to the join: PostgreSQL otherwise hashes the whole agents table
    # for every page (a sweep quadratic in the fleet); by key it reads only the page's agents.
    claimants = [
        r[0] for r in db.all(f"SELECT DISTINCT agent_id FROM gpu_sightings s{span}", [*lower, last])
    ]
    rows: list[Row] = []
    for start in range(0, len(claimants), MAX_IN_PAGE - 2):
        ids = claimants[start : start + MAX_IN_PAGE - 2]
        rows += db.all(
            f"{_GPU_ROWS}{span} AND a.agent_id IN {db.in_list(len(ids))}", [*lower, last, *ids]
        )
    # One fixed order (by uuid, then agent) whatever the chunks: _gpu_drafts breaks ties by it.
    rows.sort(key=lambda r: (r[0], r[1]))
    upsert_findings(db, _gpu_drafts(rows, rules), rules.now_us)
    return last if len(uuids) == limit else None


def resolve_page(
    db: Db, rules: SweepRules, rule: str, *, after: str | None, limit: int
) -> str | None:
    """Resolve the open findings of `rule` in one page of subjects that the rule, evaluated
    again over their current state, no longer raises; returns the position to continue from,
    or None when this was the last page."""
    limit = min(limit, MAX_IN_PAGE)
    page = "" if after is None else "subject > ?"
    rows = db.all(
        f"SELECT subject FROM findings{where_all('rule = ?', 'status = ?', page)} "
        "ORDER BY subject LIMIT ?",
        [rule, "open", *([] if after is None else [after]), limit],
    )
    if not rows:
        return None
    subjects = [str(r[0]) for r in rows]
    raised = {d.subject for d in _raised(db, rules, rule, subjects)}
    cleared = [s for s in subjects if s not in raised]
    if cleared:
        evidence = {(rule, s): i for s, i in _latest_evidence(db, rule, cleared).items()}
        resolve_findings(db, [(rule, s) for s in cleared], rules.now_us, cleared_by=evidence)
    return subjects[-1] if len(subjects) == limit else None


def _latest_evidence(db: Db, rule: str, subjects: Sequence[str]) -> dict[str, int]:
    """The log index of the latest accepted evidence about each subject: the evidence that
    cleared its finding (a fresh attestation, a GPU reported again or by one agent only)."""
    if rule == findings.AGENT_STALE:
        ids = [s.removeprefix(_AGENT_PREFIX) for s in subjects if s.startswith(_AGENT_PREFIX)]
        rows = db.all(
            "SELECT agent_id, last_log_index FROM agents "
            f"WHERE agent_id IN {db.in_list(len(ids))}",
            ids,
        ) if ids else []  # fmt: skip
        return {_AGENT_PREFIX + str(r[0]): int(r[1]) for r in rows if r[1] is not None}
    uuids = [s.removeprefix(_GPU_PREFIX) for s in subjects if s.startswith(_GPU_PREFIX)]
    rows = db.all(
        f"SELECT s.uuid, MAX({INDEX_SQL.format(s='s', a='a')}) FROM gpu_sightings s "
        f"JOIN agents a ON a.agent_id = s.agent_id WHERE s.uuid IN {db.in_list(len(uuids))} "
        "GROUP BY s.uuid",
        uuids,
    ) if uuids else []  # fmt: skip
    return {_GPU_PREFIX + str(r[0]): int(r[1]) for r in rows if r[1] is not None}


def _raised(db: Db, rules: SweepRules, rule: str, subjects: Sequence[str]) -> list[FindingDraft]:
    """What `rule` raises now for these subjects (a subject of a foreign form raises nothing)."""
    if rule == findings.AGENT_STALE:
        ids = [s.removeprefix(_AGENT_PREFIX) for s in subjects if s.startswith(_AGENT_PREFIX)]
        if not ids:
            return []
        rows = _overdue(db, rules.now_us, f"a.agent_id IN {db.in_list(len(ids))}", ids, len(ids))
        return _stale_drafts(rows, rules.now_us)
    uuids = [s.removeprefix(_GPU_PREFIX) for s in subjects if s.startswith(_GPU_PREFIX)]
    if not uuids:
        return []
    rows = db.all(
        f"{_GPU_ROWS} WHERE s.uuid IN {db.in_list(len(uuids))} ORDER BY s.uuid, s.agent_id",
        uuids,
    )
    return [d for d in _gpu_drafts(rows, rules) if d.rule == rule]


def open_counts(db: Db) -> dict[str, int]:
    """Open findings per rule id."""
    rows = db.all("SELECT rule, COUNT(*) FROM findings WHERE status = 'open' GROUP BY rule")
    return {str(rule): int(count) for rule, count in rows}
