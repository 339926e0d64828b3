"""The location decisions as pure functions (verifier/location.py, docs/design.md §16)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from attest import landmark as lm
from verifier import location
from verifier.location import Measurement
from verifier.policy import find_pack
from verifier.registry_model import Landmark, Site

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
DEADLINE = timedelta(hours=6)
FRA = Landmark("lm-fra", 50.11, 8.68, b"k")
ALA = Landmark("lm-ala", 43.24, 76.89, b"k")  # Almaty, ~300 km from the Chinese border
SITES = {
    "fra1": Site("fra1", "acme", "DE", 50.11, 8.68),
    "iad1": Site("iad1", "acme", "US", 38.95, -77.45),
    "ala1": Site("ala1", "acme", "KZ", 43.24, 76.89),
}
LANDMARKS = {"lm-fra": FRA, "lm-ala": ALA}


def m(agent: str, site: str, rtt_ms: float, *, landmark: str = "lm-fra", ago_h: float = 1,
      index: int = 0) -> Measurement:  # fmt: skip
    return Measurement(
        index, agent, site, landmark, int(rtt_ms * 1e6), 16, NOW - timedelta(hours=ago_h)
    )


def judge(agents: dict[str, list[str]], *ms: Measurement, **kw: object) -> dict[str, str]:
    judged = location.judge(SITES, agents, ms, LANDMARKS, now=NOW, deadline=DEADLINE, **kw)  # type: ignore[arg-type]
    return {s.site_id: s.status for s in judged}


def test_the_three_statuses() -> None:
    agents = {"fra1": ["a"], "iad1": ["b"], "ala1": ["c"]}
    got = judge(agents, m("a", "fra1", 0.5), m("b", "iad1", 0.5))
    assert got == {"fra1": "verified", "iad1": "contradicted", "ala1": "unverified"}


def test_every_active_host_must_be_measured_for_a_site_to_verify() -> None:
    assert judge({"fra1": ["a", "b"]}, m("a", "fra1", 0.5)) == {"fra1": "unverified"}
    assert judge({"fra1": ["a", "b"]}, m("a", "fra1", 0.5), m("b", "fra1", 3)) == {
        "fra1": "verified"
    }


def test_only_measurements_within_the_deadline_and_of_registered_landmarks_count() -> None:
    agents = {"iad1": ["b"]}
    assert judge(agents, m("b", "iad1", 0.5, ago_h=7)) == {"iad1": "unverified"}
    assert judge(agents, m("b", "iad1", 0.5, landmark="lm-gone")) == {"iad1": "unverified"}
    assert judge(agents, m("b", "iad1", 0.5, ago_h=-1)) == {"iad1": "unverified"}  # future


def test_the_least_round_trip_decides_and_a_slow_one_never_clears_a_fast_one() -> None:
    # Virginia from Frankfurt needs 43.7 ms; one fast answer contradicts whatever else came.
    got = judge({"iad1": ["b"]}, m("b", "iad1", 80, index=1), m("b", "iad1", 1.0, index=2))
    assert got == {"iad1": "contradicted"}
    assert judge({"iad1": ["b"]}, m("b", "iad1", 80)) == {"iad1": "verified"}


def test_findings_name_the_agent_contradicted_and_the_site_unverified() -> None:
    judged = location.judge(
        SITES, {"iad1": ["b"], "ala1": ["c"]}, [m("b", "iad1", 0.5, index=7)], LANDMARKS,
        now=NOW, deadline=DEADLINE,
    )  # fmt: skip
    drafts = {(d.rule, d.subject): d for d in location.findings(judged)}
    assert set(drafts) == {
        ("location-contradicted", "agent:b"),
        ("location-unverified", "site:ala1"),
    }
    assert drafts["location-contradicted", "agent:b"].evidence == (7,)
    assert drafts["location-contradicted", "agent:b"].severity.value == "critical"


def test_tier3_clearance_from_the_pack_in_force() -> None:
    pack = find_pack("aidr-2025")
    on = date(2025, 3, 1)
    assert {"CN", "RU", "MO", "IR", "KP"} <= location.tier3_countries(pack, on)
    clearance = location.tier3_clearance(pack, on)
    agents = {"fra1": ["a"], "ala1": ["c"]}
    judged = location.judge(
        SITES, agents, [m("a", "fra1", 0.5), m("c", "ala1", 4.0, landmark="lm-ala")],
        LANDMARKS, now=NOW, deadline=DEADLINE, clearance=clearance,
    )  # fmt: skip
    by_site = {s.site_id: s for s in judged}
    fra, ala = by_site["fra1"].tier3, by_site["ala1"].tier3
    assert fra is not None and fra.clear  # within 75 km of Frankfurt: far from any Tier 3
    # 4 ms from Almaty is 600 km: China is ~300 km away, so the disk may reach it.
    assert ala is not None and not ala.clear and ala.nearest == "CN"
    view = location.as_json(by_site["ala1"])
    assert view["tier3"] == {
        "clear": False,
        "nearest_country": "CN",
        "nearest_km": round(ala.distance_km or 0, 1),
        "radius_km": round(lm.bound_km(4_000_000), 1),
        "reason": ala.reason,
    }


@settings(max_examples=200, deadline=None)
@given(st.floats(0.01, 200), st.floats(0, 200))
def test_added_delay_never_turns_consistent_into_contradicted(rtt_ms: float, extra: float) -> None:
    """Physics: queuing, relays and slow hosts only add delay, and delay only loosens."""
    before = judge({"iad1": ["b"]}, m("b", "iad1", rtt_ms))["iad1"]
    after = judge({"iad1": ["b"]}, m("b", "iad1", rtt_ms + extra))["iad1"]
    assert not (before == "verified" and after == "contradicted")
