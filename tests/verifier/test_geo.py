"""Distances to country territory and the clear-of-Tier-3 test (verifier/geo.py,
docs/design.md §16), on the shipped Natural Earth data."""

from __future__ import annotations

import functools
import gzip
import json
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest.errors import CountryBoundaryUnknownError
from attest.landmark import great_circle_km
from verifier import geo

DATA = Path(__file__).resolve().parents[2] / "verifier" / "geodata" / "countries-50m.json.gz"
FRANKFURT = (50.1109, 8.6821)
SINGAPORE = (1.3521, 103.8198)
KALININGRAD = (54.7104, 20.4522)
SANYA = (18.2528, 109.5119)


@functools.cache
def vertices(code: str) -> tuple[tuple[float, float], ...]:
    """Every vertex of a country as (lat, lon), decoded here from the file, not through geo."""
    document = json.loads(gzip.decompress(DATA.read_bytes()))
    (sx, sy), (tx, ty) = document["transform"]["scale"], document["transform"]["translate"]
    out = []
    for polygon in document["countries"][code]:
        for ring in polygon:
            x = y = 0
            for i in range(0, len(ring), 2):
                x, y = x + ring[i], y + ring[i + 1]
                out.append((max(-90.0, y * sy + ty), x * sx + tx))
    return tuple(out)


def nearest_vertex_km(lat: float, lon: float, code: str) -> float:
    return min(great_circle_km(lat, lon, vlat, vlon) for vlat, vlon in vertices(code))


# --- known distances ---------------------------------------------------------------------------


def test_frankfurt_to_russia_is_kaliningrad_short_of_the_city() -> None:
    code, km = geo.nearest_country_km(*FRANKFURT, ["CN", "RU"]) or ("", 0.0)
    assert code == "RU"
    city = great_circle_km(*FRANKFURT, *KALININGRAD)
    assert round(city) == 946
    assert 850 < km < city  # the oblast's western border is nearer than the city


def test_singapore_to_china_is_hainan() -> None:
    km = geo.distance_to_country_km(*SINGAPORE, "CN")
    assert 1_900 < km <= great_circle_km(*SINGAPORE, *SANYA)  # Sanya is Chinese territory


@pytest.mark.parametrize(
    ("lat", "lon", "code"),
    [
        (55.75, 37.62, "RU"),  # Moscow
        (39.90, 116.40, "CN"),  # Beijing
        (54.71, 20.45, "RU"),  # Kaliningrad, an exclave
        (66.00, -175.00, "RU"),  # Chukotka, west of the antimeridian's far side
        (71.20, -179.50, "RU"),  # Wrangel Island, both sides of the antimeridian
        (71.20, 179.50, "RU"),
        (-16.80, -179.97, "FJ"),  # Taveuni, Fiji east of 180
        (-78.46, 106.84, "AQ"),  # Vostok station, inside a ring round the pole
        (-89.99, 0.0, "AQ"),
    ],
)
def test_a_point_inside_is_at_zero(lat: float, lon: float, code: str) -> None:
    assert geo.distance_to_country_km(lat, lon, code) == 0.0


def test_the_sea_off_chukotka_reads_the_same_on_both_sides_of_the_antimeridian() -> None:
    # 62 N, 0.02 degrees apart (~1 km) across 180: the distance may differ by no more than that.
    east = geo.distance_to_country_km(62.0, 179.99, "RU")
    west = geo.distance_to_country_km(62.0, -179.99, "RU")
    assert east > 50.0
    assert abs(east - west) <= great_circle_km(62.0, 179.99, 62.0, -179.99) + 1e-6
    # And from Alaska, across the antimeridian, Russia is still measured the short way round.
    nome = geo.distance_to_country_km(64.50, -165.40, "RU")
    assert nome <= great_circle_km(64.50, -165.40, 66.16, -169.80)  # Uelen, Chukotka
    assert nome > 100.0


def test_hong_kong_is_china_and_macau_is_not() -> None:
    kowloon = (22.33, 114.19)
    assert geo.nearest_country_km(*kowloon, ["CN"]) == ("CN", 0.0)
    assert geo.distance_to_country_km(*kowloon, "HK") == 0.0
    assert not geo.clear_of([(*kowloon, 1.0)], ["CN"]).clear
    # Where 1:50m draws Macau (a few km west of the peninsula: its margin covers that).
    macau = (22.215, 113.504)
    assert geo.distance_to_country_km(*macau, "MO") == 0.0
    assert geo.nearest_country_km(*macau, ["MO", "RU"]) == ("MO", 0.0)


def test_unknown_countries_and_bad_points_fail_closed() -> None:
    with pytest.raises(CountryBoundaryUnknownError):
        geo.distance_to_country_km(0.0, 0.0, "ZZ")
    with pytest.raises(ValueError, match="coordinate"):
        geo.distance_to_country_km(91.0, 0.0, "RU")
    assert geo.nearest_country_km(0.0, 0.0, []) is None
    missing = geo.clear_of([(*FRANKFURT, 1.0)], ["RU", "ZZ"])
    assert not missing.clear and "ZZ" in missing.reason
    assert not geo.clear_of([], ["RU"]).clear
    assert geo.clear_of([(*FRANKFURT, 1.0)], []).clear
    with pytest.raises(ValueError, match="radius"):
        geo.clear_of([(*FRANKFURT, float("nan"))], ["RU"])


# --- the margin and its direction --------------------------------------------------------------


def test_clear_needs_more_than_the_margin_of_slack() -> None:
    km = geo.distance_to_country_km(*FRANKFURT, "RU")
    margin = geo.margin_km("RU")
    assert margin >= geo.MARGIN_KM
    just_short = geo.clear_of([(*FRANKFURT, km - margin + 1.0)], ["RU"])
    assert not just_short.clear and just_short.nearest == "RU"
    assert just_short.distance_km == pytest.approx(km)
    assert geo.clear_of([(*FRANKFURT, km - margin - 1.0)], ["RU"]).clear
    # A tighter disk elsewhere shows it even when a looser one does not.
    loose = (*SINGAPORE, 5_000.0)
    assert geo.clear_of([loose, (*FRANKFURT, 100.0)], ["RU", "CN"]).clear
    assert not geo.clear_of([loose], ["RU", "CN"]).clear


def test_unmeasured_countries_get_the_largest_margin() -> None:
    assert geo.margin_km("DE") == geo.UNMEASURED_MARGIN_KM == max(geo.COUNTRY_MARGIN_KM.values())


def test_china_and_russia_from_frankfurt_is_fast_enough_per_landmark() -> None:
    geo.nearest_country_km(*FRANKFURT, ["CN", "RU"])  # loads the data and builds the countries
    start = time.perf_counter()
    for i in range(20):
        geo.nearest_country_km(FRANKFURT[0] + i * 1e-3, FRANKFURT[1], ["CN", "RU"])  # uncached
    per_call = (time.perf_counter() - start) / 20
    assert per_call < 0.05, f"{per_call * 1000:.1f} ms per call"


# --- properties --------------------------------------------------------------------------------

lats = st.floats(min_value=-89.0, max_value=89.0, allow_nan=False)
lons = st.floats(min_value=-180.0, max_value=180.0, allow_nan=False)
codes = st.sampled_from(["CN", "KP", "FJ", "CU", "BY"])


@settings(max_examples=60, deadline=None)
@given(lat=lats, lon=lons, code=codes)
def test_distance_never_exceeds_that_to_any_vertex(lat: float, lon: float, code: str) -> None:
    assert geo.distance_to_country_km(lat, lon, code) <= nearest_vertex_km(lat, lon, code) + 1e-6


@settings(max_examples=60, deadline=None)
@given(lat=lats, lon=lons, dlat=st.floats(-1, 1), dlon=st.floats(-1, 1), code=codes)
def test_distance_moves_no_faster_than_the_point(
    lat: float, lon: float, dlat: float, dlon: float, code: str
) -> None:
    lat2, lon2 = lat + dlat, (lon + dlon + 180.0) % 360.0 - 180.0
    step = great_circle_km(lat, lon, lat2, lon2)
    a = geo.distance_to_country_km(lat, lon, code)
    b = geo.distance_to_country_km(lat2, lon2, code)
    assert abs(a - b) <= step + 1e-6


@settings(max_examples=60, deadline=None)
@given(code=codes, index=st.integers(min_value=0), lat=lats, lon=lons)
def test_clear_of_never_clears_a_disk_that_reaches_a_vertex(
    code: str, index: int, lat: float, lon: float
) -> None:
    vlat, vlon = vertices(code)[index % len(vertices(code))]
    # A disk centred on territory, and a disk anywhere just wide enough to reach a vertex.
    assert not geo.clear_of([(vlat, vlon, 0.0)], [code]).clear
    reach = great_circle_km(lat, lon, vlat, vlon)
    assert not geo.clear_of([(lat, lon, reach)], [code, "RU"]).clear
    inside = geo.distance_to_country_km(lat, lon, code) == 0.0
    if inside:
        assert not geo.clear_of([(lat, lon, 0.0)], [code]).clear
