"""Measure how far each country's territory reaches beyond the shipped 1:50m polygons, by
Natural Earth's own 1:10m boundaries from the same world-atlas tarball: the source of
COUNTRY_MARGIN_KM in verifier/geo.py (docs/design.md §16).

Usage: python scripts/measure_border_margin.py /tmp/world-atlas-2.0.2.tgz CN,RU,...

Prints, per country, the vertices measured (every other one of 1:10m), the farthest one's
data distance from the 1:50m country in km, and where it is. Takes about a minute for the
countries the built-in packs list in Tier 3. 1:10m features the 1:50m key table does not know
(Gibraltar, the U.S. Minor Outlying Islands, Dhekelia, ...) are keyed ZZ and never measured.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from verifier import geo  # noqa: E402


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "gen_borders", ROOT / "scripts" / "gen_borders.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ten_metre_document(tarball: Path) -> dict[str, Any]:
    gen = _generator()
    gen.read_source(tarball)  # checks the tarball is the recorded one
    with tarfile.open(fileobj=io.BytesIO(tarball.read_bytes()), mode="r:gz") as tar:
        member = tar.extractfile("package/countries-10m.json")
        assert member is not None
        topo = json.loads(member.read())
    keys = gen._keys

    def lenient(geometry: dict[str, Any], polygon: Any, x_at: Any) -> tuple[str, ...]:
        name = geometry["properties"]["name"]
        numeric = geometry.get("id")
        if numeric is None and name not in gen._UNNUMBERED and name not in gen._SPLIT_BY_LONGITUDE:
            return ("ZZ",)
        if numeric is not None and numeric not in gen._NUMERIC_TO_ALPHA2:
            return ("ZZ",)
        result: tuple[str, ...] = keys(geometry, polygon, x_at)
        return result

    gen._keys = lenient
    document: dict[str, Any] = gen.convert(json.dumps(topo).encode())
    return document


def main() -> int:
    tarball, codes = Path(sys.argv[1]), sys.argv[2].split(",")
    document = _ten_metre_document(tarball)
    (sx, sy), (tx, ty) = document["transform"]["scale"], document["transform"]["translate"]
    for code in codes:
        worst, where, measured = 0.0, (0.0, 0.0), 0
        for polygon in document["countries"].get(code, []):
            for ring in polygon:
                x = y = 0
                for i in range(0, len(ring), 2):
                    x, y = x + ring[i], y + ring[i + 1]
                    if i % 4:
                        continue
                    lon = max(-180.0, min(180.0, x * sx + tx))
                    lat = max(-90.0, min(90.0, y * sy + ty))
                    measured += 1
                    km = geo.distance_to_country_km(lat, lon, code)
                    if km > worst:
                        worst, where = km, (lat, lon)
        print(f"{code} {measured} {worst:.1f} km at {where[0]:.3f},{where[1]:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
