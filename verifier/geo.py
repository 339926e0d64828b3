"""Country boundaries and the "clear of Tier 3" test (docs/design.md §16).

Pure: the boundary data is package data (verifier/geodata/, made by scripts/gen_borders.py from
Natural Earth 1:50m) read once; nothing here touches the network or the store.

Distances are on the sphere of attest/landmark.py (EARTH_RADIUS_KM), from unit vectors: the
distance from a point to an edge is the distance to the edge's great-circle arc (the foot of the
perpendicular when it falls inside the arc, else the nearer end). Source edges are straight in
longitude/latitude; edges longer than _DENSIFY_DEG are split first, so an arc and the edge it
stands for never part by more than ~0.03 km, well inside MARGIN_KM. Inside/outside is decided in
longitude/latitude, as the source draws it, after unwrapping rings that cross the antimeridian
and closing over the pole those that run round it.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.resources
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from attest.errors import BoundaryDataError, CountryBoundaryUnknownError
from attest.landmark import EARTH_RADIUS_KM

#: How far a country's territory may reach beyond its 1:50m polygons, in km: a point whose data
#: distance from a country exceeds a disk's radius by more than this is outside the disk in
#: fact. Measured (docs/design.md §16) as the farthest vertex of Natural Earth's own 1:10m
#: boundaries outside the 1:50m polygons, every other vertex, for the countries the built-in
#: packs list in Tier 3 and HK (scripts/measure_border_margin.py); the 1:50m data drops small
#: islands (the Paracels for CN, Isla de Aves for VE, the Coco Islands for MM, Victoria Island
#: for RU), which is where the large figures come from. Each is the measurement rounded up plus
#: MARGIN_KM of headroom for the unmeasured vertices, the grid's quantization (<= 0.2 km), the
#: arc-for-edge approximation (~0.03 km) and 1:10m's own generalization. A country not
#: measured gets the largest figure.
MARGIN_KM: Final = 10.0
COUNTRY_MARGIN_KM: Final = {
    code: measured + MARGIN_KM
    for code, measured in {
        "AF": 6, "BY": 6, "CD": 12, "CF": 9, "CN": 336, "CU": 69, "ER": 8, "HK": 8, "HT": 19,
        "IQ": 7, "IR": 78, "KH": 16, "KP": 22, "LB": 5, "LY": 7, "MM": 226, "MO": 13, "NI": 59,
        "RU": 163, "SD": 13, "SO": 9, "SS": 120, "SY": 7, "VE": 506, "ZW": 7,
    }.items()
}  # fmt: skip
UNMEASURED_MARGIN_KM: Final = max(COUNTRY_MARGIN_KM.values())
_DENSIFY_DEG: Final = 0.5
_CHUNK: Final = 32
_DATA_PACKAGE: Final = "verifier.geodata"
_DATA_FILE: Final = "countries-50m.json.gz"
_FORMAT: Final = "gpu-attest-borders/1"
#: Territories counted as part of a country for this test: the policy packs resolve HK to CN
#: (docs/design.md §13), so a set naming CN covers Hong Kong too. Macau is listed on its own.
PART_OF: Final = {"CN": frozenset({"HK"})}

Vec = tuple[float, float, float]


@dataclass(frozen=True)
class Clearance:
    """The answer of clear_of. `clear` is True only when some disk misses every listed country
    by more than its margin (margin_km); otherwise `nearest`/`distance_km` name the country
    and data distance for the disk that came closest to showing it (`radius_km` its radius),
    or are None when there was no disk to judge (`reason` says which)."""

    clear: bool
    nearest: str | None
    distance_km: float | None
    radius_km: float | None
    reason: str


@dataclass(frozen=True)
class _Chunk:
    """Up to _CHUNK consecutive edges and the smallest cap (centre, angular radius) we compute
    around their vertices: no point of the edges is farther than `radius` from `centre`."""

    centre: Vec
    radius: float
    points: tuple[Vec, ...]


@dataclass(frozen=True)
class _Ring:
    lonlat: tuple[tuple[float, float], ...]
    lon_min: float
    lon_max: float
    lat_min: float
    lat_max: float


@dataclass(frozen=True)
class _Polygon:
    rings: tuple[_Ring, ...]  # outline first, then holes (inside: an odd number of them)


@dataclass(frozen=True)
class _Country:
    polygons: tuple[_Polygon, ...]
    chunks: tuple[_Chunk, ...]
    centre: Vec
    radius: float


def _unit(lat: float, lon: float) -> Vec:
    phi, lam = math.radians(lat), math.radians(lon)
    return (math.cos(phi) * math.cos(lam), math.cos(phi) * math.sin(lam), math.sin(phi))


def _cross(a: Vec, b: Vec) -> Vec:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _dot(a: Vec, b: Vec) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _angle(a: Vec, b: Vec) -> float:
    c = _cross(a, b)
    return math.atan2(math.sqrt(_dot(c, c)), _dot(a, b))


def _arc_angle(p: Vec, a: Vec, b: Vec) -> float:
    """Angular distance from p to the minor great-circle arc a-b."""
    n = _cross(a, b)
    norm = math.sqrt(_dot(n, n))
    if norm < 1e-15:  # a and b coincide (or are antipodal, which edges never are)
        return _angle(p, a)
    n = (n[0] / norm, n[1] / norm, n[2] / norm)
    # The foot of the perpendicular lies on the arc iff p is on the inner side of the great
    # circles through a and b perpendicular to the arc's plane.
    if _dot(_cross(a, p), n) >= 0 and _dot(_cross(p, b), n) >= 0:
        return math.asin(min(1.0, abs(_dot(p, n))))
    return min(_angle(p, a), _angle(p, b))


def _unwrapped(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Longitudes made continuous: a step of more than 180 degrees is the short way round."""
    out = [points[0]]
    for lon, lat in points[1:]:
        prev = out[-1][0]
        out.append((lon + 360.0 * round((prev - lon) / 360.0), lat))
    return out


def _closed_over_pole(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """An unwrapped ring that ends 360 degrees from where it began runs round a pole (the
    Antarctic coast): close it over that pole, so the plane sees the area it encloses. The
    added edges are for inside/outside only, never distances (they are not a border)."""
    (lon0, lat0), (lon1, _) = points[0], points[-1]
    if abs(lon1 - lon0) < 1e-9:
        return points
    pole = -90.0 if sum(lat for _, lat in points) < 0 else 90.0
    return [*points, (lon1, pole), (lon0, pole), (lon0, lat0)]


def _densified(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out = [points[0]]
    for (lon0, lat0), (lon1, lat1) in itertools.pairwise(points):
        steps = max(1, math.ceil(max(abs(lon1 - lon0), abs(lat1 - lat0)) / _DENSIFY_DEG))
        for i in range(1, steps + 1):
            t = i / steps
            out.append((lon0 + (lon1 - lon0) * t, lat0 + (lat1 - lat0) * t))
    return out


def _cap(points: Sequence[Vec]) -> tuple[Vec, float]:
    sx = sum(p[0] for p in points)
    sy = sum(p[1] for p in points)
    sz = sum(p[2] for p in points)
    norm = math.sqrt(sx * sx + sy * sy + sz * sz)
    if norm < 1e-9:  # points spread round the globe: a cap of the whole sphere
        return (0.0, 0.0, 1.0), math.pi
    centre = (sx / norm, sy / norm, sz / norm)
    # The farthest vertex bounds every arc between vertices too while the cap is under a
    # hemisphere (a minor arc between two points of a convex cap stays in it).
    radius = max(_angle(centre, p) for p in points)
    return centre, (radius if radius < math.pi / 2 else math.pi)


def _chunks(points: list[Vec]) -> list[_Chunk]:
    out = []
    for start in range(0, len(points) - 1, _CHUNK):
        run = tuple(points[start : start + _CHUNK + 1])
        centre, radius = _cap(run)
        out.append(_Chunk(centre, radius, run))
    return out


def _ring(flat: list[int], transform: dict[str, Any]) -> tuple[_Ring, list[_Chunk], list[Vec]]:
    (sx, sy), (tx, ty) = transform["scale"], transform["translate"]
    x = y = 0
    points = []
    for i in range(0, len(flat), 2):
        x, y = x + flat[i], y + flat[i + 1]
        points.append((x * sx + tx, y * sy + ty))
    drawn = _densified(_unwrapped(points))
    vectors = [_unit(lat, lon) for lon, lat in drawn]
    lonlat = _closed_over_pole(drawn)
    lons = [p[0] for p in lonlat]
    lats = [p[1] for p in lonlat]
    ring = _Ring(tuple(lonlat), min(lons), max(lons), min(lats), max(lats))
    return ring, _chunks(vectors), vectors


@functools.cache
def _document() -> dict[str, Any]:
    try:
        raw = importlib.resources.files(_DATA_PACKAGE).joinpath(_DATA_FILE).read_bytes()
        document: dict[str, Any] = json.loads(gzip.decompress(raw))
        body = {"transform": document["transform"], "countries": document["countries"]}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        if document["format"] != _FORMAT:
            raise BoundaryDataError(f"{_DATA_FILE}: format {document['format']!r}, not {_FORMAT}")
        if hashlib.sha256(canonical).hexdigest() != document["body_sha256"]:
            raise BoundaryDataError(f"{_DATA_FILE}: content does not match its body_sha256")
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        raise BoundaryDataError(f"{_DATA_FILE}: unreadable ({exc})") from exc
    return document


def known_countries() -> frozenset[str]:
    """Every code the boundary data has territory for."""
    return frozenset(_document()["countries"])


@functools.cache
def _country(iso2: str) -> _Country:
    document = _document()
    if iso2 not in document["countries"]:
        raise CountryBoundaryUnknownError(f"no boundary data for country {iso2!r}")
    polygons, chunks, vectors = [], [], []
    for polygon in document["countries"][iso2]:
        rings = []
        for flat in polygon:
            ring, ring_chunks, ring_vectors = _ring(flat, document["transform"])
            rings.append(ring)
            chunks += ring_chunks
            vectors += ring_vectors
        polygons.append(_Polygon(tuple(rings)))
    centre, radius = _cap(vectors)
    return _Country(tuple(polygons), tuple(chunks), centre, radius)


def _in_ring(lon: float, lat: float, ring: _Ring) -> bool:
    if not ring.lat_min <= lat <= ring.lat_max:
        return False
    for x in (lon, lon + 360.0, lon - 360.0):
        if ring.lon_min <= x <= ring.lon_max and _crossings_odd(x, lat, ring.lonlat):
            return True
    return False


def _crossings_odd(x: float, y: float, points: Sequence[tuple[float, float]]) -> bool:
    inside = False
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
            inside = not inside
    return inside


def _inside(lon: float, lat: float, country: _Country) -> bool:
    # Even-odd over all of a polygon's rings: an outline less its holes, and right too where
    # the source's first ring is a degenerate line along the pole (Antarctica).
    return any(
        sum(_in_ring(lon, lat, ring) for ring in polygon.rings) % 2 == 1
        for polygon in country.polygons
    )


def _check_point(lat: float, lon: float) -> None:
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise ValueError(f"not a coordinate: lat {lat}, lon {lon}")


def _angle_to(p: Vec, country: _Country, best: float) -> float:
    """The angular distance from p to the country's edges, or `best` if none is nearer."""
    if _angle(p, country.centre) - country.radius >= best:
        return best
    bounds = sorted(
        ((_angle(p, chunk.centre) - chunk.radius, i) for i, chunk in enumerate(country.chunks)),
    )
    for lower, i in bounds:
        if lower >= best:
            break
        points = country.chunks[i].points
        for a, b in itertools.pairwise(points):
            best = min(best, _arc_angle(p, a, b))
    return best


def _territories(iso2s: Iterable[str]) -> frozenset[str]:
    codes = frozenset(iso2s)
    return codes.union(*(PART_OF.get(code, frozenset()) for code in codes))


def distance_to_country_km(lat: float, lon: float, iso2: str) -> float:
    """Great-circle distance (km) from a point to the nearest point of a country's territory as
    the data draws it, 0 inside. A country with parts (PART_OF: HK for CN) includes them.
    Raises CountryBoundaryUnknownError for a code the data lacks, ValueError for a point off the
    globe."""
    found = nearest_country_km(lat, lon, (iso2,))
    assert found is not None
    return found[1]


def nearest_country_km(lat: float, lon: float, iso2s: Iterable[str]) -> tuple[str, float] | None:
    """The listed country nearest a point and its distance (km, 0 inside); None for an empty
    list. A territory counted as part of a listed country (PART_OF) is reported under that
    country's code. Raises as distance_to_country_km."""
    return _nearest(float(lat), float(lon), frozenset(iso2s))


@functools.lru_cache(maxsize=4096)
def _nearest(lat: float, lon: float, iso2s: frozenset[str]) -> tuple[str, float] | None:
    _check_point(lat, lon)
    owners = {t: code for code in sorted(iso2s) for t in _territories((code,))}
    countries = {t: _country(t) for t in sorted(owners)}
    p = _unit(lat, lon)
    for territory, country in countries.items():
        if _inside(lon, lat, country):
            return owners[territory], 0.0
    best, best_code = math.pi, None
    for territory, country in countries.items():
        angle = _angle_to(p, country, best)
        if angle < best or best_code is None:
            best, best_code = angle, owners[territory]
    if best_code is None:
        return None
    return best_code, best * EARTH_RADIUS_KM


def margin_km(territory: str) -> float:
    """How far `territory` may reach beyond the data's polygons (COUNTRY_MARGIN_KM)."""
    return COUNTRY_MARGIN_KM.get(territory, UNMEASURED_MARGIN_KM)


def clear_of(disks: Iterable[tuple[float, float, float]], iso2s: Iterable[str]) -> Clearance:
    """Whether the intersection of the disks (lat, lon, radius km) is shown to lie outside every
    listed country (and the territories PART_OF counts in it). Sound and conservative: clear
    only when some disk alone misses each listed territory by more than that territory's
    margin_km of data distance, so the data's error can only turn a true "clear" into "not
    shown clear", never the reverse. An empty country list is clear (nothing to be clear of);
    no disks, or a country the data lacks, is not shown clear. Raises ValueError for a point
    off the globe or a radius that is negative or not a number."""
    codes = frozenset(iso2s)
    if not codes:
        return Clearance(True, None, None, None, "no countries to be clear of")
    owners = {t: code for code in sorted(codes) for t in _territories((code,))}
    missing = sorted(set(owners) - known_countries())
    if missing:
        return Clearance(False, None, None, None, f"no boundary data for {', '.join(missing)}")
    best: tuple[float, str, float, float] | None = None
    for lat, lon, radius in disks:
        if not radius >= 0.0:
            raise ValueError(f"not a disk radius: {radius}")
        # The territory this disk comes closest to reaching, margins counted.
        worst = min(
            (_territory_km(float(lat), float(lon), t) - radius - margin_km(t), t) for t in owners
        )
        slack, territory = worst
        if best is None or slack > best[0]:
            distance = _territory_km(float(lat), float(lon), territory)
            best = (slack, owners[territory], distance, float(radius))
    if best is None:
        return Clearance(False, None, None, None, "no measurement bounds the host")
    slack, code, distance, radius = best
    if slack > 0.0:
        return Clearance(True, code, distance, radius, "a disk misses every listed country")
    return Clearance(False, code, distance, radius, f"a disk may reach {code}")


@functools.lru_cache(maxsize=4096)
def _territory_km(lat: float, lon: float, territory: str) -> float:
    _check_point(lat, lon)
    country = _country(territory)
    if _inside(lon, lat, country):
        return 0.0
    return _angle_to(_unit(lat, lon), country, math.pi) * EARTH_RADIUS_KM
