"""The three location decisions of tests/e2e/test_location_netns.py, on round trips recorded from
those runs, so that they hold wherever namespaces cannot be made; and the property they rest on:
delay (a relay, a queue, a slow host) can lift a contradiction, never make one
(docs/design.md §2: location is a bound, never a position)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from attest.landmark import (
    C_KM_PER_S,
    EARTH_RADIUS_KM,
    MAX_RTT_NS,
    bound_km,
    contradicts,
    great_circle_km,
    min_rtt_ns,
)

#: The landmark of the namespace tests (Frankfurt) and a claimed site 2,021 km from it (Moscow).
LANDMARK = (50.11, 8.68)
CLAIMED_SITE = (55.76, 37.62)
#: rtt_min_ns that `landmark serve` signed for `locate` over the relay paths of
#: tests/e2e/test_location_netns.py (delaying relay, 16 probes), recorded 2026-12-05.
NEAR_1MS = 2_054_935  # 0.5 ms each way
FAR_30MS = 31_808_114  # 15 ms each way
DIRECT_TO_RELAY = 1_938_372  # the relaying host, 0.5 ms each way
RELAYED = 34_510_366  # the agent behind it, 15 ms more each way

HALF_EQUATOR_KM = math.pi * EARTH_RADIUS_KM  # the farthest two points on the sphere


def test_the_claimed_site_is_2000_km_from_the_landmark() -> None:
    assert 2000 < great_circle_km(*LANDMARK, *CLAIMED_SITE) < 2050
    assert 13_300_000 < min_rtt_ns(2000) < 13_400_000  # 2 d / c


def test_an_agent_1_ms_away_is_contradicted_at_a_site_2000_km_away() -> None:
    distance = great_circle_km(*LANDMARK, *CLAIMED_SITE)
    assert contradicts(NEAR_1MS, 2000)
    assert contradicts(NEAR_1MS, distance)
    assert bound_km(NEAR_1MS) < 310  # within ~300 km of Frankfurt, whatever it claims


def test_the_same_agent_30_ms_away_is_consistent_with_it() -> None:
    distance = great_circle_km(*LANDMARK, *CLAIMED_SITE)
    assert not contradicts(FAR_30MS, 2000)
    assert not contradicts(FAR_30MS, distance)
    assert bound_km(FAR_30MS) > distance


def test_a_relayed_agent_only_looks_farther() -> None:
    assert RELAYED > DIRECT_TO_RELAY
    assert bound_km(RELAYED) > bound_km(DIRECT_TO_RELAY)
    assert contradicts(DIRECT_TO_RELAY, 2000)
    assert not contradicts(RELAYED, 2000)


rtts = st.integers(1, MAX_RTT_NS)
distances = st.floats(0, HALF_EQUATOR_KM, allow_nan=False)


@given(rtts, st.integers(0, MAX_RTT_NS), distances)
def test_added_delay_never_makes_a_contradiction(rtt: int, extra: int, distance: float) -> None:
    if contradicts(rtt + extra, distance):
        assert contradicts(rtt, distance)
    assert bound_km(rtt + extra) >= bound_km(rtt)


@given(rtts, distances)
def test_contradicted_exactly_when_the_site_is_beyond_the_bound(rtt: int, distance: float) -> None:
    bound = bound_km(rtt)
    assert bound == C_KM_PER_S * rtt / 2e9
    if abs(distance - bound) > 1e-9 * max(bound, 1.0):  # off the floating-point boundary
        assert contradicts(rtt, distance) == (distance > bound)
