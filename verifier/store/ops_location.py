"""Reads and writes of the location pass (docs/design.md §16): the landmark statements not
checked yet, their verdicts, the measurements that count within a window, and the agents
active at a time by site."""

from __future__ import annotations

from collections.abc import Sequence

from verifier.location import VALID, CarriedStatement, Measurement, Verdict
from verifier.store.sqlbase import Db, from_micros, to_micros


def unchecked(db: Db, limit: int) -> list[CarriedStatement]:
    """The oldest statements with no verdict yet, at most `limit`."""
    rows = db.all(
        "SELECT log_index, position, agent_id, landmark_id, received_us, statement "
        "FROM landmark_measurements WHERE verdict IS NULL ORDER BY log_index, position LIMIT ?",
        (limit,),
    )
    return [
        CarriedStatement(int(r[0]), int(r[1]), r[2], r[3], from_micros(r[4]), bytes(r[5]))
        for r in rows
    ]


def record_verdicts(db: Db, verdicts: Sequence[Verdict]) -> None:
    """Record each verdict once: a row that has one already keeps it (another replica's pass
    may have checked it first; both reach the same verdict from the same inputs). The
    statement's bytes are dropped from the row once checked: the logged envelope keeps them,
    and the row keeps what judging needs (~100 bytes instead of ~2.4 KB a statement)."""
    db.many(
        "UPDATE landmark_measurements SET verdict = ?, statement = ?, rtt_min_ns = ?, "
        "probes = ?, measured_us = ? WHERE log_index = ? AND position = ? AND verdict IS NULL",
        [
            (
                v.verdict,
                b"",
                v.rtt_min_ns,
                v.probes,
                None if v.measured_at is None else to_micros(v.measured_at),
                v.log_index,
                v.position,
            )
            for v in verdicts
        ],
    )


def measurements(db: Db, since_us: int, until_us: int) -> list[Measurement]:
    """The statements that count, measured within [since, until]."""
    rows = db.all(
        "SELECT log_index, agent_id, site_id, landmark_id, rtt_min_ns, probes, measured_us "
        "FROM landmark_measurements WHERE measured_us >= ? AND measured_us <= ? "
        "AND verdict = ? ORDER BY log_index, position",
        (since_us, until_us, VALID),
    )
    return [
        Measurement(int(r[0]), r[1], r[2], r[3], int(r[4]), int(r[5]), from_micros(r[6]))
        for r in rows
    ]


def active_agents_by_site(db: Db, at_us: int) -> dict[str, list[str]]:
    """The agents enrolled at `at` and not revoked by then, by the site they enrolled at."""
    found: dict[str, list[str]] = {}
    for site_id, agent_id in db.all(
        "SELECT site_id, agent_id FROM agents WHERE enrolled_at <= ? "
        "AND (revoked_at IS NULL OR revoked_at > ?) ORDER BY site_id, agent_id",
        (at_us, at_us),
    ):
        found.setdefault(site_id, []).append(agent_id)
    return found
