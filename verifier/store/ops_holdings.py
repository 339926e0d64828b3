"""Holdings and posture for compliance reconciliation: written in the accept transaction only
when an agent's inventory or posture changed, read as SQL aggregates (sites x models rows,
never one row per GPU) now or as of the end of a past date.

Times are receipt times (`received_at`), not the agent's claimed creation time: holdings as of
a date must not count an envelope the verifier received later (docs/design.md §9).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta

from attest.identifiers import PLACEHOLDER_UUID
from verifier.model import AgentStatus, VerifiedAttestation
from verifier.reconcile.model import HoldingRow, PostureRow
from verifier.store.ops_sightings import fell_out_of_sight
from verifier.store.sqlbase import Db, from_micros, to_micros

_IN_CHUNK = 500
#: A GPU's attributes that holdings group on; a change closes its interval and opens another.
_Attrs = tuple[int | None, int | None, int]


def end_of_day_us(on: date) -> int:
    """The first microsecond after `on` (UTC): holdings at `on` are what was received before."""
    return to_micros(datetime.combine(on + timedelta(days=1), time(), tzinfo=UTC))


def update_presence(db: Db, *, item: VerifiedAttestation, site_id: str, log_index: int) -> None:
    """Before the sightings are rewritten for a changed inventory: close the presence interval
    of every GPU that left or changed attributes, open one for every GPU that came or changed,
    and keep the sightings' classification columns current. Runs only on a changed inventory."""
    received_us = to_micros(item.received_at)
    held = db.all(
        "SELECT uuid, pci_device_id, pci_subsystem_id, power_limit_w, lost FROM gpu_sightings "
        "WHERE agent_id = ? AND (present = 1 OR lost = 1)",
        (item.agent_id,),
    )
    before: dict[str, _Attrs] = {r[0]: (r[1], r[2], int(r[3])) for r in held}
    # A placeholder (a GPU fallen off the bus without a readable UUID) names no GPU: the GPUs
    # that left the inventory with it fell off the bus. A lost GPU is still held (docs/design.md
    # §5): its interval stays open until it is reported again or its agent is revoked.
    now: dict[str, _Attrs] = {
        g.uuid: (g.pci_device_id, g.pci_subsystem_id, g.power_limit_w)
        for g in item.gpus
        if not PLACEHOLDER_UUID.match(g.uuid)
    }
    fell_off = fell_out_of_sight(item)
    lost = {str(r[0]) for r in held if (r[4] or fell_off) and r[0] not in now}
    closing = sorted(u for u, attrs in before.items() if u not in lost and now.get(u) != attrs)
    opening = sorted(u for u, attrs in now.items() if before.get(u) != attrs)
    db.many(
        "UPDATE gpu_presence SET to_us = ? WHERE uuid = ? AND agent_id = ? AND to_us IS NULL",
        [(received_us, uuid, item.agent_id) for uuid in closing],
    )
    first = _first_received(db, item.agent_id, opening, received_us)
    db.many(
        "INSERT INTO gpu_presence (uuid, agent_id, from_us, to_us, site_id, pci_device_id, "
        "pci_subsystem_id, power_limit_w, first_received, log_index) "
        "VALUES (?, ?, ?, NULL, ?, ?, ?, ?, ?, ?) ON CONFLICT (uuid, agent_id, from_us) "
        "DO UPDATE SET to_us = NULL, pci_device_id = excluded.pci_device_id, "
        "pci_subsystem_id = excluded.pci_subsystem_id, power_limit_w = excluded.power_limit_w, "
        "log_index = excluded.log_index",
        [
            (uuid, item.agent_id, received_us, site_id, *now[uuid], first[uuid], log_index)
            for uuid in opening
        ],
    )


def _first_received(db: Db, agent_id: str, uuids: list[str], received_us: int) -> dict[str, int]:
    """When each GPU was first received at this agent (a GPU that returns keeps its date)."""
    first = dict.fromkeys(uuids, received_us)
    for start in range(0, len(uuids), _IN_CHUNK):
        chunk = uuids[start : start + _IN_CHUNK]
        for uuid, earliest in db.all(
            "SELECT uuid, first_received FROM gpu_sightings WHERE agent_id = ? "
            f"AND first_received IS NOT NULL AND uuid IN {db.in_list(len(chunk))}",
            (agent_id, *chunk),
        ):
            first[uuid] = min(int(earliest), received_us)
    return first


def update_sighting_attrs(db: Db, *, item: VerifiedAttestation) -> None:
    """After `update_sightings`: the columns compliance reads, for the reported GPUs."""
    received_us = to_micros(item.received_at)
    db.many(
        "UPDATE gpu_sightings SET pci_subsystem_id = ?, power_limit_w = ?, "
        "first_received = COALESCE(first_received, ?) WHERE uuid = ? AND agent_id = ?",
        [
            (g.pci_subsystem_id, g.power_limit_w, received_us, g.uuid, item.agent_id)
            for g in item.gpus
        ],
    )


def posture_text(posture: Iterable[tuple[str, str]]) -> str:
    """Canonical form of a posture: a JSON object, names sorted (the last result of a repeated
    name wins, as the evidence lists it)."""
    return json.dumps(dict(sorted(dict(posture).items())), separators=(",", ":"))


def update_postures(db: Db, accepted: Sequence[tuple[VerifiedAttestation, int]]) -> None:
    """Store each accepted envelope's posture when it differs from its agent's stored one; one
    indexed read per batch, no write for an unchanged posture."""
    agent_ids = sorted({item.agent_id for item, _ in accepted})
    stored: dict[str, str] = {}
    for start in range(0, len(agent_ids), _IN_CHUNK):
        chunk = agent_ids[start : start + _IN_CHUNK]
        stored.update(
            (r[0], r[1])
            for r in db.all(
                f"SELECT agent_id, checks FROM agent_posture WHERE agent_id IN "
                f"{db.in_list(len(chunk))}",
                chunk,
            )
        )
    changed: dict[tuple[str, int], tuple[str, int]] = {}
    for item, log_index in accepted:
        text = posture_text(item.posture)
        if stored.get(item.agent_id) != text:
            stored[item.agent_id] = text
            changed[item.agent_id, to_micros(item.received_at)] = (text, log_index)
    if not changed:
        return
    rows = [(a, t, text, i) for (a, t), (text, i) in changed.items()]
    upsert = (
        " ON CONFLICT ({key}) DO UPDATE SET checks = excluded.checks, "
        "log_index = excluded.log_index{extra}"
    )
    db.many(
        "INSERT INTO posture_history (agent_id, from_us, checks, log_index) VALUES (?, ?, ?, ?)"
        + upsert.format(key="agent_id, from_us", extra=""),
        rows,
    )
    db.many(
        "INSERT INTO agent_posture (agent_id, since_us, checks, log_index) VALUES (?, ?, ?, ?)"
        + upsert.format(key="agent_id", extra=", since_us = excluded.since_us"),
        rows,  # in batch order, so an agent's last change wins
    )


# --- reads -------------------------------------------------------------------------------------

# The evidence an agent's GPUs are named by is its current full evidence (full_log_index), not
# its latest heartbeat, which lists no GPU (docs/protocol.md §4.1): reports sample these. A row
# written without it (by bulk SQL, as benchmarks.reconcile does) only ever held full evidence.
_CURRENT = (
    "SELECT s.site_id, s.pci_device_id, s.pci_subsystem_id, COUNT(*), SUM(s.power_limit_w), "
    "MIN(COALESCE(s.first_received, s.first_seen)), MIN(s.last_log_index), "
    "MAX(COALESCE(a.full_log_index, a.last_log_index)) FROM gpu_sightings s "
    "JOIN agents a ON a.agent_id = s.agent_id "
    "WHERE (s.present = 1 OR s.lost = 1) AND a.status = ? "
    "GROUP BY s.site_id, s.pci_device_id, s.pci_subsystem_id"
)
# An interval counts at the end of the day when it opened before and had not closed by then;
# its agent must not have been revoked by then either.
_AT = (
    "SELECT p.site_id, p.pci_device_id, p.pci_subsystem_id, COUNT(*), SUM(p.power_limit_w), "
    "MIN(p.first_received), MIN(p.log_index), MAX(p.log_index) FROM gpu_presence p "
    "JOIN agents a ON a.agent_id = p.agent_id "
    "WHERE p.from_us < ? AND (p.to_us IS NULL OR p.to_us >= ?) "
    "AND (a.revoked_at IS NULL OR a.revoked_at >= ?) "
    "GROUP BY p.site_id, p.pci_device_id, p.pci_subsystem_id"
)
_ORDER = " ORDER BY 1, 2, 3"


def holdings(db: Db, at: date | None) -> list[HoldingRow]:
    """One row per (site, device id, subsystem id): sites x models rows, whatever the fleet."""
    if at is None:
        rows = db.all(_CURRENT + _ORDER, (AgentStatus.ACTIVE.value,))
    else:
        end = end_of_day_us(at)
        rows = db.all(_AT + _ORDER, (end, end, end))
    return [
        HoldingRow(
            site_id=site,
            pci_device_id=None if device is None else int(device),
            pci_subsystem_id=None if subsystem is None else int(subsystem),
            count=int(count),
            power_limit_w=int(power or 0),
            first_received=from_micros(first).date(),
            evidence=tuple(sorted({int(low), int(high)})),
        )
        for site, device, subsystem, count, power, first, low, high in rows
    ]


def postures_page(db: Db, *, at: date | None, after: str | None, limit: int) -> list[PostureRow]:
    """One keyset page of postures by agent_id: the stored latest of active agents, or the
    latest accepted before the end of `at` of agents not revoked by then."""
    if at is None:
        # An agent that holds GPUs but never attested a posture (none stored yet) is listed
        # with no checks: every required check is then missing, and missing fails (fail
        # closed), rather than its GPUs escaping the safeguard rules.
        page, params = ("", []) if after is None else (" AND a.agent_id > ?", [after])
        rows = db.all(
            "SELECT a.agent_id, a.site_id, p.checks, p.log_index FROM agents a "
            "LEFT JOIN agent_posture p ON p.agent_id = a.agent_id WHERE a.status = ? "
            "AND (p.agent_id IS NOT NULL OR EXISTS (SELECT 1 FROM gpu_sightings s WHERE "
            f"s.agent_id = a.agent_id AND (s.present = 1 OR s.lost = 1))){page} "
            "ORDER BY a.agent_id LIMIT ?",
            [AgentStatus.ACTIVE.value, *params, limit],
        )
    else:
        # As now: an agent that held GPUs at the end of that day but had attested no posture
        # by then is listed with no checks (fail closed).
        page, params = ("", []) if after is None else (" AND a.agent_id > ?", [after])
        end = end_of_day_us(at)
        rows = db.all(
            "SELECT a.agent_id, a.site_id, p.checks, p.log_index FROM agents a "
            "LEFT JOIN posture_history p ON p.agent_id = a.agent_id AND p.from_us = "
            "(SELECT MAX(h.from_us) FROM posture_history h WHERE h.agent_id = a.agent_id "
            "AND h.from_us < ?) WHERE (a.revoked_at IS NULL OR a.revoked_at >= ?) "
            "AND (p.agent_id IS NOT NULL OR EXISTS (SELECT 1 FROM gpu_presence g "
            "WHERE g.agent_id = a.agent_id AND g.from_us < ? "
            f"AND (g.to_us IS NULL OR g.to_us >= ?))){page} ORDER BY a.agent_id LIMIT ?",
            [end, end, end, end, *params, limit],
        )
    return [
        PostureRow(
            site_id=site,
            agent_id=agent_id,
            checks={} if checks is None else json.loads(checks),
            evidence=() if index is None else (int(index),),
        )
        for agent_id, site, checks, index in rows
    ]
