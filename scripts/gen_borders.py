"""Regenerate the committed country boundaries (verifier/geodata/countries-50m.json.gz) from
Natural Earth's admin-0 countries at 1:50m, as redistributed by the npm package world-atlas
(docs/design.md §16).

Usage:
    cd /tmp && npm pack world-atlas@2.0.2          # -> /tmp/world-atlas-2.0.2.tgz (never committed)
    python scripts/gen_borders.py /tmp/world-atlas-2.0.2.tgz [--check]

The tarball's SHA-256 must be the one recorded below: a different file is refused, so the
committed data always names exactly what it was made from. --check regenerates in memory and
exits 1 when the committed file's content differs (tests/verifier/test_geo_data.py runs the same
comparison when the tarball is present).

What the script does to the source, all of it here so a reviewer can check each choice:
- decodes the TopoJSON (delta-encoded arcs on a quantized 10^5 x 10^5 grid) into polygons, each
  a list of rings (the first the outline, the rest holes); coordinates stay on that integer grid,
  ring by ring delta-encoded, and the grid's transform is recorded;
- keys every country by ISO 3166-1 alpha-2 from its ISO 3166-1 numeric id (_NUMERIC_TO_ALPHA2,
  taken from pycountry 26.2.16 once, and checked against the verifier's own code list by the test);
- handles the features Natural Earth gives no numeric id, and the ids shared or composite:
    * Somaliland -> SO: internationally part of Somalia, and SO is Tier 3; leaving it out would
      make Somalia look smaller than it is (the unsafe direction).
    * N. Cyprus -> CY (internationally part of Cyprus).
    * Kosovo -> XK, the user-assigned code the EU and the IMF use; ISO 3166-1 assigns none.
    * Siachen Glacier -> both IN and PK: disputed, so it counts as territory of each claimant
      (a clearance test may only ever see a country as larger, never smaller).
    * Indian Ocean Ter. (Australian) -> CX (Christmas Island, east of 100 E) and CC (Cocos).
    * Ashmore and Cartier Is. share id 036 with Australia -> merged into AU.
    * France (250) includes its overseas departments (GF, GP, MQ, RE, YT): Natural Earth draws
      them as part of France, and legally they are; they are kept in FR, not split out.
    * Norway (578) includes Svalbard and Jan Mayen (ISO SJ): kept in NO for the same reason.
    * Hong Kong (344) and Macau (446) stay separate (HK, MO); the verifier counts HK as part of
      CN (verifier/geo.py), as the policy packs resolve HK to CN; MO is listed on its own.
- refuses a feature it cannot key. Rings that cross the antimeridian (Russia, Fiji) or run along
  it to the pole (Antarctica) are kept as the source draws them: a step from 179.9 to -180 is a
  short edge on the sphere, and verifier/geo.py unwraps such rings when it loads them.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
OUTPUT: Final = ROOT / "verifier" / "geodata" / "countries-50m.json.gz"

SOURCE_PACKAGE: Final = "world-atlas@2.0.2"
SOURCE_SHA256: Final = "032e7765f2ce00edaeafec23ff22bc3b77e42987c257da944cc585b452c05b97"
SOURCE_MEMBER: Final = "package/countries-50m.json"
HEADER: Final = {
    "format": "gpu-attest-borders/1",
    "source": "Natural Earth 4.1.0 admin-0 countries, 1:50m (https://www.naturalearthdata.com/)",
    "source_licence": "public domain (https://www.naturalearthdata.com/about/terms-of-use/)",
    "redistribution": (
        "npm world-atlas 2.0.2 countries-50m.json (ISC, Mike Bostock; "
        "https://github.com/topojson/world-atlas)"
    ),
    "source_sha256": SOURCE_SHA256,
    "generator": "scripts/gen_borders.py",
    "doc": "docs/design.md §16",
}

_NUMERIC: Final = """
004:AF 008:AL 010:AQ 012:DZ 016:AS 020:AD 024:AO 028:AG 031:AZ 032:AR 036:AU 040:AT 044:BS
048:BH 050:BD 051:AM 052:BB 056:BE 060:BM 064:BT 068:BO 070:BA 072:BW 076:BR 084:BZ 086:IO
090:SB 092:VG 096:BN 100:BG 104:MM 108:BI 112:BY 116:KH 120:CM 124:CA 132:CV 136:KY 140:CF
144:LK 148:TD 152:CL 156:CN 158:TW 170:CO 174:KM 178:CG 180:CD 184:CK 188:CR 191:HR 192:CU
196:CY 203:CZ 204:BJ 208:DK 212:DM 214:DO 218:EC 222:SV 226:GQ 231:ET 232:ER 233:EE 234:FO
238:FK 239:GS 242:FJ 246:FI 248:AX 250:FR 258:PF 260:TF 262:DJ 266:GA 268:GE 270:GM 275:PS
276:DE 288:GH 296:KI 300:GR 304:GL 308:GD 316:GU 320:GT 324:GN 328:GY 332:HT 334:HM 336:VA
340:HN 344:HK 348:HU 352:IS 356:IN 360:ID 364:IR 368:IQ 372:IE 376:IL 380:IT 384:CI 388:JM
392:JP 398:KZ 400:JO 404:KE 408:KP 410:KR 414:KW 417:KG 418:LA 422:LB 426:LS 428:LV 430:LR
434:LY 438:LI 440:LT 442:LU 446:MO 450:MG 454:MW 458:MY 462:MV 466:ML 470:MT 478:MR 480:MU
484:MX 492:MC 496:MN 498:MD 499:ME 500:MS 504:MA 508:MZ 512:OM 516:NA 520:NR 524:NP 528:NL
531:CW 533:AW 534:SX 540:NC 548:VU 554:NZ 558:NI 562:NE 566:NG 570:NU 574:NF 578:NO 580:MP
583:FM 584:MH 585:PW 586:PK 591:PA 598:PG 600:PY 604:PE 608:PH 612:PN 616:PL 620:PT 624:GW
626:TL 630:PR 634:QA 642:RO 643:RU 646:RW 652:BL 654:SH 659:KN 660:AI 662:LC 663:MF 666:PM
670:VC 674:SM 678:ST 682:SA 686:SN 688:RS 690:SC 694:SL 702:SG 703:SK 704:VN 705:SI 706:SO
710:ZA 716:ZW 724:ES 728:SS 729:SD 732:EH 740:SR 748:SZ 752:SE 756:CH 760:SY 762:TJ 764:TH
768:TG 776:TO 780:TT 784:AE 788:TN 792:TR 795:TM 796:TC 800:UG 804:UA 807:MK 818:EG 826:GB
831:GG 832:JE 833:IM 834:TZ 840:US 850:VI 854:BF 858:UY 860:UZ 862:VE 876:WF 882:WS 887:YE
894:ZM
"""
_NUMERIC_TO_ALPHA2: Final = dict(pair.split(":") for pair in _NUMERIC.split())
#: Features without a numeric id, by their Natural Earth name (see the module docstring).
_UNNUMBERED: Final = {
    "Somaliland": ("SO",),
    "N. Cyprus": ("CY",),
    "Kosovo": ("XK",),
    "Siachen Glacier": ("IN", "PK"),
}
_SPLIT_BY_LONGITUDE: Final = {"Indian Ocean Ter.": (100.0, "CC", "CX")}
#: Codes allowed beyond ISO 3166-1's assigned ones.
EXTRA_CODES: Final = frozenset({"XK"})

Ring = list[tuple[int, int]]
Polygon = list[Ring]


def read_source(tarball: Path) -> bytes:
    """The TopoJSON inside the npm tarball, after checking the tarball is the recorded one."""
    raw = tarball.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SOURCE_SHA256:
        raise SystemExit(
            f"{tarball}: SHA-256 {digest}, expected {SOURCE_SHA256} ({SOURCE_PACKAGE})"
        )
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        member = tar.extractfile(SOURCE_MEMBER)
        if member is None:
            raise SystemExit(f"{tarball}: no {SOURCE_MEMBER}")
        return member.read()


def _decode_arcs(topo: dict[str, Any]) -> list[Ring]:
    arcs: list[Ring] = []
    for arc in topo["arcs"]:
        x = y = 0
        points: Ring = []
        for dx, dy in arc:
            x, y = x + dx, y + dy
            points.append((x, y))
        arcs.append(points)
    return arcs


def _ring(indices: list[int], arcs: list[Ring]) -> Ring:
    points: Ring = []
    for index in indices:
        arc = arcs[index] if index >= 0 else arcs[~index][::-1]
        points.extend(arc if not points else arc[1:])
    if points[0] != points[-1]:
        raise SystemExit(f"ring {indices} is not closed")
    return points


def _polygons(geometry: dict[str, Any], arcs: list[Ring]) -> list[Polygon]:
    if geometry["type"] == "Polygon":
        parts = [geometry["arcs"]]
    elif geometry["type"] == "MultiPolygon":
        parts = geometry["arcs"]
    else:
        raise SystemExit(f"unexpected geometry type {geometry['type']}")
    return [[_ring(ring, arcs) for ring in part] for part in parts]


def _keys(geometry: dict[str, Any], polygon: Polygon, x_at: Any) -> tuple[str, ...]:
    name = geometry["properties"]["name"]
    if name in _SPLIT_BY_LONGITUDE:
        split, west, east = _SPLIT_BY_LONGITUDE[name]
        return (east,) if x_at(polygon[0][0][0]) > split else (west,)
    if "id" not in geometry:
        if name not in _UNNUMBERED:
            raise SystemExit(f"feature {name!r} has no id and no rule")
        return _UNNUMBERED[name]
    numeric = geometry["id"]
    if numeric not in _NUMERIC_TO_ALPHA2:
        raise SystemExit(f"feature {name!r}: numeric id {numeric} not in the table")
    return (_NUMERIC_TO_ALPHA2[numeric],)


def _delta(ring: Ring) -> list[int]:
    flat: list[int] = []
    px = py = 0
    for x, y in ring:
        flat += [x - px, y - py]
        px, py = x, y
    return flat


def convert(topojson: bytes) -> dict[str, Any]:
    """The committed document (before gzip) made from world-atlas's countries-50m.json."""
    topo = json.loads(topojson)
    transform = topo["transform"]
    (sx, _), (tx, _) = transform["scale"], transform["translate"]

    def x_at(x: int) -> float:
        return float(x * sx + tx)

    arcs = _decode_arcs(topo)
    countries: dict[str, list[list[list[int]]]] = {}
    for geometry in topo["objects"]["countries"]["geometries"]:
        for polygon in _polygons(geometry, arcs):
            for key in _keys(geometry, polygon, x_at):
                countries.setdefault(key, []).append([_delta(ring) for ring in polygon])
    body = {"transform": transform, "countries": dict(sorted(countries.items()))}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return {**HEADER, "body_sha256": hashlib.sha256(canonical).hexdigest(), **body}


def serialize(document: dict[str, Any]) -> bytes:
    """gzip of the canonical JSON, with mtime 0 so the same source gives the same bytes."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return gzip.compress(text, compresslevel=9, mtime=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("tarball", type=Path, help="world-atlas-2.0.2.tgz from `npm pack`")
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    document = convert(read_source(args.tarball))
    if args.check:
        committed = json.loads(gzip.decompress(OUTPUT.read_bytes()))
        if committed != document:
            print(f"{OUTPUT} differs from what {args.tarball} gives", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_bytes(serialize(document))
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes, {len(document['countries'])} countries)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
