"""The holdings journal and the compliance state row (migration 0008; docs/design.md §14):
what incremental reconciliation reads, and the guarded write of its findings.

The accept transaction journals, per changed inventory, what the agent's holdings became
minus what they were (the same predicate the current holdings read counts: present or lost
sightings), plus the lost GPUs another agent released by reporting them. Journal rows carry
the attestation's log index, so a reader that knows the log position of its state applies
exactly the rows after it, whichever replica accepted them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from verifier.model import AgentStatus, FindingDraft
from verifier.reconcile.model import ComplianceChanges, HoldingDelta, PostureRow
from verifier.store import ops_findings
from verifier.store.sqlbase import Db, from_micros

#: How long journal rows are kept: a live reconciliation further behind starts again in full.
JOURNAL_RETENTION_US = 24 * 3600 * 1_000_000

#: (site, PCI device id, PCI subsystem id) -> (GPUs, summed power limit in watts)
Holdings = dict[tuple[str, int | None, int | None], tuple[int, int]]


def agent_holdings(db: Db, agent_id: str) -> Holdings:
    """What one agent holds now, as the current holdings read counts it."""
    rows = db.all(
        "SELECT site_id, pci_device_id, pci_subsystem_id, COUNT(*), SUM(power_limit_w) "
        "FROM gpu_sightings WHERE agent_id = ? AND (present = 1 OR lost = 1) "
        "GROUP BY site_id, pci_device_id, pci_subsystem_id",
        (agent_id,),
    )
    return {
        (str(site), _opt(device), _opt(subsystem)): (int(count), int(power or 0))
        for site, device, subsystem, count, power in rows
    }


def _opt(value: object) -> int | None:
    return None if value is None else int(str(value))


def journal(db: Db, *, log_index: int, received_us: int, before: Holdings, after: Holdings) -> None:
    """Write after - before (rows that did not change are not written)."""
    rows = []
    for key in sorted(before.keys() | after.keys(), key=str):
        units_was, power_was = before.get(key, (0, 0))
        units, power = after.get(key, (0, 0))
        if (units, power) != (units_was, power_was):
            rows.append((log_index, *key, units - units_was, power - power_was, received_us))
    db.many(
        "INSERT INTO holdings_journal (log_index, site_id, pci_device_id, pci_subsystem_id, "
        "units, power_w, received_us) VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def state(db: Db) -> tuple[int, int, int]:
    """(epoch, journal_floor, findings_at)."""
    row = db.one("SELECT epoch, journal_floor, findings_at FROM compliance_state WHERE id = 1")
    if row is None:
        return (0, 0, 0)
    return int(row[0]), int(row[1]), int(row[2])


def new_epoch(db: Db) -> None:
    """Holdings or their judgment changed outside the log (a revocation, a registry import):
    live reconciliations start again in full."""
    db.run("UPDATE compliance_state SET epoch = epoch + 1 WHERE id = 1")


def changes(db: Db, after: int, size: int) -> ComplianceChanges:
    """Journal rows and posture changes with `after` <= log index < `size`, in log order."""
    epoch, floor, _ = state(db)
    if floor > after:
        return ComplianceChanges(epoch, floor, size)
    deltas = tuple(
        HoldingDelta(
            str(site), _opt(device), _opt(subsystem), int(units), int(power),
            from_micros(int(received)).date(), int(index),
        )
        for index, site, device, subsystem, units, power, received in db.all(
            "SELECT log_index, site_id, pci_device_id, pci_subsystem_id, units, power_w, "
            "received_us FROM holdings_journal WHERE log_index >= ? AND log_index < ? "
            "ORDER BY log_index",
            (after, size),
        )
    )  # fmt: skip
    postures = tuple(
        PostureRow(str(site), str(agent), json.loads(checks), (int(index),))
        for agent, site, checks, index in db.all(
            "SELECT p.agent_id, a.site_id, p.checks, p.log_index FROM posture_history p "
            "JOIN agents a ON a.agent_id = p.agent_id WHERE p.log_index >= ? "
            "AND p.log_index < ? AND a.status = ? ORDER BY p.log_index",
            (after, size, AgentStatus.ACTIVE.value),
        )
    )
    return ComplianceChanges(epoch, floor, size, deltas, postures)


def store_findings(
    db: Db,
    raised: Sequence[FindingDraft],
    cleared: Sequence[tuple[str, str]],
    *,
    epoch: int,
    position: int,
    now_us: int,
    cleared_by: Mapping[tuple[str, str], int | None] | int | None = None,
) -> bool:
    """Store compliance findings derived at (`epoch`, log `position`), unless the epoch moved
    on or findings derived at a later position are stored already; returns whether stored."""
    took = db.run(
        "UPDATE compliance_state SET findings_at = ? WHERE id = 1 AND epoch = ? "
        "AND findings_at <= ?",
        (position, epoch, position),
    )
    if took == 0:
        return False
    ops_findings.upsert_findings(db, raised, now_us)
    if cleared:
        ops_findings.resolve_findings(db, cleared, now_us, cleared_by=cleared_by)
    return True


def prune(db: Db, before_us: int) -> None:
    """Drop journal rows received before `before_us`; a reader behind them starts in full."""
    row = db.one("SELECT MAX(log_index) FROM holdings_journal WHERE received_us < ?", (before_us,))
    if row is None or row[0] is None:
        return
    floor = int(row[0]) + 1
    db.run("DELETE FROM holdings_journal WHERE log_index < ?", (floor,))
    db.run(
        "UPDATE compliance_state SET journal_floor = ? WHERE id = 1 AND journal_floor < ?",
        (floor, floor),
    )
