"""Reads for signed reports (docs/design.md §15): aggregated in SQL, O(sites) rows whatever
the fleet, so a report of a million GPUs never holds one row per GPU."""

from __future__ import annotations

from datetime import date, timedelta

from verifier.store.ops_holdings import end_of_day_us
from verifier.store.sqlbase import Db

# GPUs held at the end of the day (as `holdings(at)` counts them), and of those, the ones whose
# agent had accepted evidence received during that day.
_ATTESTED = (
    "SELECT p.site_id, COUNT(*), SUM(CASE WHEN f.agent_no IS NULL THEN 0 ELSE 1 END) "
    "FROM gpu_presence p JOIN agents a ON a.agent_id = p.agent_id "
    "LEFT JOIN (SELECT DISTINCT agent_no FROM attestations WHERE received_at >= ? "
    "AND received_at < ?) f ON f.agent_no = a.agent_no "
    "WHERE p.from_us < ? AND (p.to_us IS NULL OR p.to_us >= ?) "
    "AND (a.revoked_at IS NULL OR a.revoked_at >= ?) GROUP BY p.site_id ORDER BY 1"
)


def attested_by_site(db: Db, at: date) -> dict[str, tuple[int, int]]:
    """Per site: (GPUs held at the end of `at`, those attested during `at`)."""
    end = end_of_day_us(at)
    start = end_of_day_us(at - timedelta(days=1))
    rows = db.all(_ATTESTED, (start, end, end, end, end))
    return {str(site): (int(held), int(fresh or 0)) for site, held, fresh in rows}
