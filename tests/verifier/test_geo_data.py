"""The committed country boundaries (verifier/geodata/) are what scripts/gen_borders.py makes
from the recorded source, carry their source and digest, and cover every country a built-in
policy pack lists in Tier 3 (docs/design.md §16)."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from verifier import geo
from verifier.policy.countries import ISO_3166_ALPHA2
from verifier.policy.load import builtin_packs

ROOT = Path(__file__).resolve().parent.parent.parent
DATA = ROOT / "verifier" / "geodata" / "countries-50m.json.gz"
#: Where `npm pack world-atlas@2.0.2` leaves the source when run in /tmp (never committed).
TARBALL = Path(os.environ.get("WORLD_ATLAS_TGZ", "/tmp/world-atlas-2.0.2.tgz"))


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_borders", ROOT / "scripts" / "gen_borders.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _committed() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(gzip.decompress(DATA.read_bytes()))
    return document


def test_committed_file_is_small_and_names_its_source() -> None:
    assert DATA.stat().st_size < 1_500_000
    document = _committed()
    assert document["format"] == "gpu-attest-borders/1"
    assert "Natural Earth 4.1.0" in document["source"] and "1:50m" in document["source"]
    assert "public domain" in document["source_licence"]
    assert "world-atlas 2.0.2" in document["redistribution"]
    assert document["source_sha256"] == _generator().SOURCE_SHA256
    assert document["doc"] == "docs/design.md §16"


def test_committed_body_matches_its_digest() -> None:
    document = _committed()
    body = {"transform": document["transform"], "countries": document["countries"]}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert hashlib.sha256(canonical).hexdigest() == document["body_sha256"]


def test_every_key_is_an_iso_code_and_rings_are_closed() -> None:
    gen = _generator()
    countries = _committed()["countries"]
    assert set(countries) <= ISO_3166_ALPHA2 | gen.EXTRA_CODES
    assert set(gen._NUMERIC_TO_ALPHA2.values()) <= ISO_3166_ALPHA2
    for code, polygons in countries.items():
        for polygon in polygons:
            for ring in polygon:
                xs, ys = ring[0::2], ring[1::2]
                assert len(xs) >= 4, code
                assert sum(xs[1:]) == 0 and sum(ys[1:]) == 0, f"{code}: ring not closed"


def test_special_cases_map_as_the_generator_says() -> None:
    countries = _committed()["countries"]
    for code in ("FR", "NO", "XK", "HK", "MO", "CN", "TW", "SO", "CX", "CC", "AU"):
        assert code in countries, code
    # Siachen is counted in both claimants; Somaliland in Somalia (two features, one key).
    assert len(countries["SO"]) >= 2
    assert geo.distance_to_country_km(35.4, 77.1, "IN") == 0.0
    assert geo.distance_to_country_km(35.4, 77.1, "PK") == 0.0
    assert geo.distance_to_country_km(9.56, 44.06, "SO") == 0.0  # Hargeisa (Somaliland)
    assert geo.distance_to_country_km(78.22, 15.65, "NO") == 0.0  # Longyearbyen (Svalbard)
    assert geo.distance_to_country_km(4.93, -52.33, "FR") == 0.0  # Cayenne (French Guiana)
    assert geo.distance_to_country_km(42.66, 21.16, "XK") == 0.0  # Pristina
    assert geo.distance_to_country_km(-10.45, 105.69, "CX") == 0.0  # Christmas Island


def test_every_tier3_country_of_the_builtin_packs_has_territory_and_a_measured_margin() -> None:
    listed = {
        code
        for pack in builtin_packs()
        for listing in pack.tiers.listings
        if listing.tier == 3
        for code in listing.countries
    }
    assert listed, "the built-in packs list no Tier 3 country"
    assert listed <= geo.known_countries()
    assert listed <= set(geo.COUNTRY_MARGIN_KM)


def test_a_tarball_other_than_the_recorded_one_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "world-atlas-2.0.2.tgz"
    with tarfile.open(fake, "w:gz") as tar:
        payload = b'{"type":"Topology"}'
        info = tarfile.TarInfo("package/countries-50m.json")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(SystemExit, match="expected"):
        _generator().read_source(fake)


@pytest.mark.skipif(not TARBALL.is_file(), reason=f"source {TARBALL} absent (npm pack it)")
def test_committed_file_is_what_the_generator_makes() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_borders.py"), str(TARBALL), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
