"""Small registries and holdings for the reconciliation tests, built from TOML text through the
real registry parser, and the PCI ids of the catalogue models they use."""

from __future__ import annotations

from datetime import date

from verifier.model import FindingDraft
from verifier.policy import PolicyPack, find_pack
from verifier.reconcile import HoldingRow, PostureRow, Reconciliation, reconcile
from verifier.registry import parse_registry
from verifier.registry_model import Registry

AIDR = find_pack("aidr-2025")
BASELINE = find_pack("baseline-2025-05")
DAY = date(2025, 6, 1)

# NVML pci_device_id values of catalogue entries (verifier/policy/packs/aidr-2025.toml).
H100 = 0x233010DE  # H100-SXM, 15,832 TPP, 3A090.a, 700 W
A100 = 0x20B010DE  # A100, 4,992 TPP, 3A090.a
RTX4090 = 0x268410DE  # RTX-4090, 5,285 TPP, 3A090.a
H20 = 0x232910DE  # H20, 2,368 TPP, below 3A090: not controlled
NOT_IN_CATALOGUE = 0x999910DE
MAX_TPP = 60_000  # GB300, the catalogue's highest


def entity(eid: str, hq: str = "US", veu: str = "none", parent: str | None = None) -> str:
    lines = [f'[[entity]]\nid = "{eid}"\nname = "{eid} Inc."\nhq_country = "{hq}"\nveu = "{veu}"']
    if parent is not None:
        lines.append(f'parent_hq_country = "{parent}"')
    return "\n".join(lines)


def site(sid: str, owner: str, country: str, power_kw: str | None = None) -> str:
    text = (
        f'[[site]]\nid = "{sid}"\nentity = "{owner}"\ncountry = "{country}"\nlat = 1.0\nlon = 2.0'
    )
    return text if power_kw is None else f"{text}\nfacility_power_kw = {power_kw}"


def authorization(
    aid: str,
    holder: str,
    *,
    countries: tuple[str, ...] = (),
    sites: tuple[str, ...] = (),
    max_units: int | None = None,
    max_tpp: float | None = None,
    valid_from: str = "2025-01-13",
    valid_until: str | None = None,
    kind: str = "licence",
) -> str:
    cc = ", ".join(f'"{c}"' for c in countries)
    ss = ", ".join(f'"{s}"' for s in sites)
    lines = [
        f'[[authorization]]\nid = "{aid}"\nholder = "{holder}"\nkind = "{kind}"',
        f"countries = [{cc}]\nsites = [{ss}]\nvalid_from = {valid_from}",
    ]
    if max_units is not None:
        lines.append(f"max_units = {max_units}")
    if max_tpp is not None:
        lines.append(f"max_tpp = {max_tpp}")
    if valid_until is not None:
        lines.append(f"valid_until = {valid_until}")
    return "\n".join(lines)


def arrangement(country: str, since: str) -> str:
    return f'[[arrangement]]\ncountry = "{country}"\nsince = {since}'


def registry(*tables: str) -> Registry:
    return parse_registry("\n\n".join(tables) + "\n", "test-registry.toml")


def row(
    site_id: str,
    device: int | None,
    count: int,
    *,
    power_w: int = 0,
    subsystem: int | None = None,
    evidence: tuple[int, ...] = (),
) -> HoldingRow:
    return HoldingRow(site_id, device, subsystem, count, power_w, date(2025, 2, 1), evidence)


def run(
    reg: Registry,
    rows: list[HoldingRow],
    *,
    on: date = DAY,
    postures: tuple[PostureRow, ...] = (),
    pack: PolicyPack = AIDR,
) -> Reconciliation:
    return reconcile(rows, postures, reg, pack, on)


def only(result: Reconciliation, rule: str) -> list[FindingDraft]:
    return [f for f in result.findings if f.rule == rule]


def keys(result: Reconciliation) -> list[tuple[str, str]]:
    return [(f.rule, f.subject) for f in result.findings]
