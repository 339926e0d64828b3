"""The table readers of a policy pack (docs/design.md §13): one function per TOML table, each
checking its keys through attest.tomlconf, so every complaint names file, table and key.

No floats are accepted anywhere: TPP is an integer, fractional figures are decimal strings
("608.5") or fractions ("7/100"), read into `Fraction`s. Checks that span tables (overlapping
date ranges, duplicate ids) are in verifier/policy/load.py.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import date
from fractions import Fraction
from typing import TypeVar

from attest import tomlconf as tc
from verifier.policy.catalogue import (
    NVIDIA_VENDOR,
    CatalogueEntry,
    Eccn,
    Source,
    SourceLabel,
    Thresholds,
)
from verifier.policy.countries import iso_country
from verifier.policy.model import (
    COMPLIANCE_RULES,
    SAFEGUARD_CHECKS,
    AiaReporting,
    CountryAlias,
    CountryCap,
    HolderRules,
    LppLimit,
    Milestone,
    NveuStep,
    TierListing,
    UveuShares,
)
from verifier.registry_model import VeuStatus

T = TypeVar("T")
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_DECIMAL = re.compile(r"^[0-9]{1,12}(\.[0-9]{1,6})?$")
_FRACTION = re.compile(r"^([0-9]{1,9})/([0-9]{1,9})$")
_TEXT = tc.text(max_len=2000, printable=True)
_TPP = tc.integer(0)
_TIER = tc.integer(1, 3)


def _exact(value: object) -> Fraction:
    """A positive integer or decimal string ("608.5"): floats are inexact, so refused."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return Fraction(value)
    if isinstance(value, str) and _DECIMAL.match(value) and Fraction(value) > 0:
        return Fraction(value)
    raise tc.Invalid(
        f'must be a positive integer or a decimal string such as "608.5" (never a float), '
        f"got {tc.got(value)}"
    )


def _share(value: object) -> Fraction:
    """A share as an integer fraction "7/100", from 0 to 1."""
    match = _FRACTION.match(value) if isinstance(value, str) else None
    if not match or int(match.group(2)) == 0 or int(match.group(1)) > int(match.group(2)):
        raise tc.Invalid(
            f'must be a fraction "N/D" from 0 to 1 such as "7/100", got {tc.got(value)}'
        )
    return Fraction(int(match.group(1)), int(match.group(2)))


def _pci_device_id(value: object) -> int:
    """NVML's pci_device_id, (device << 16) | vendor, of an NVIDIA device."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise tc.Invalid(f"must be a 32-bit integer such as 0x233010DE, got {tc.got(value)}")
    if value & 0xFFFF != NVIDIA_VENDOR:
        raise tc.Invalid(f"must end in NVIDIA's vendor id 10DE, got {value:#010x}")
    return value


def _ident(value: object) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise tc.Invalid(f"must be an id (lower-case letters, digits, . _ -), got {tc.got(value)}")
    return value


def _enum_of(kind: Callable[[str], T], names: list[str]) -> tc.Check[T]:
    as_name = tc.one_of(names)
    return lambda value: kind(as_name(value))


_LABEL = _enum_of(SourceLabel, [m.value for m in SourceLabel])
_ECCN = _enum_of(Eccn, [m.value for m in Eccn])
_KIND = _enum_of(VeuStatus, [m.value for m in VeuStatus])


def _source(t: tc.Table) -> Source:
    """The source every figure carries: no figure without one."""
    return Source(t.get("source", _TEXT), t.get("source_label", _LABEL), t.get("note", _TEXT, ""))


def _range(
    t: tc.Table, first: str = "valid_from", last: str = "valid_until"
) -> tuple[date, date | None]:
    start, end = t.get(first, tc.day), t.opt(last, tc.day)
    if end is not None and end < start:
        raise t.fail(last, f"{end.isoformat()} is before {first} {start.isoformat()}")
    return start, end


# --- tables ------------------------------------------------------------------------------------


def read_pack_header(t: tc.Table) -> tuple[str, str, date, date | None, Source]:
    start, end = _range(t, "effective_from", "effective_until")
    return t.get("id", _ident), t.get("title", _TEXT), start, end, _source(t)


def read_milestone(t: tc.Table) -> Milestone:
    return Milestone(t.get("date", tc.day), t.get("what", _TEXT), _source(t))


def read_tiers_header(t: tc.Table) -> tuple[int, tuple[int, ...], tuple[str, str, str], Source]:
    words = (t.get("tier1", _TEXT), t.get("tier2", _TEXT), t.get("tier3", _TEXT))
    required = t.get("licence_required", tc.list_of(_TIER, unique=True))
    return t.get("default", _TIER), required, words, _source(t)


def read_tier(t: tc.Table) -> TierListing:
    start, end = _range(t)
    countries = t.get("countries", tc.list_of(iso_country, unique=True))
    return TierListing(t.get("tier", _TIER), countries, start, end, _source(t))


def read_alias(t: tc.Table) -> CountryAlias:
    alias = CountryAlias(
        t.get("country", iso_country),
        t.get("resolves_to", iso_country),
        t.get("valid_from", tc.day),
        _source(t),
    )  # fmt: skip
    if alias.country == alias.resolves_to:
        raise t.fail("resolves_to", "names the country itself")
    return alias


def read_country_cap(t: tc.Table) -> CountryCap:
    start, end = _range(t)
    cap = CountryCap(
        t.get("tier", _TIER), t.get("tpp", _TPP), t.get("tpp_with_arrangement", _TPP),
        start, end, _source(t),
    )  # fmt: skip
    if cap.tpp_with_arrangement < cap.tpp:
        raise t.fail("tpp_with_arrangement", f"is below tpp {cap.tpp}")
    return cap


def read_lpp(t: tc.Table) -> LppLimit:
    return LppLimit(
        t.get("tpp_per_consignee_per_year", _TPP),
        t.get("counts_against_country_cap", tc.boolean),
        _source(t),
    )


def read_aia(t: tc.Table) -> AiaReporting:
    return AiaReporting(t.get("reporting_threshold_tpp", _TPP), _source(t))


def read_uveu(t: tc.Table) -> UveuShares:
    return UveuShares(
        t.get("tier1_min_share", _share),
        t.get("tier2_country_max_share", _share),
        t.get("us_min_share_if_us_hq", _share),
        _source(t),
    )


def read_nveu(t: tc.Table) -> NveuStep:
    return NveuStep(t.get("valid_from", tc.day), t.get("cumulative_tpp", _TPP), _source(t))


def read_holder(t: tc.Table) -> HolderRules:
    return HolderRules(
        t.get("kind", _KIND),
        t.get("rules", tc.list_of(tc.one_of(COMPLIANCE_RULES), unique=True)),
        t.get("safeguards", tc.list_of(tc.one_of(SAFEGUARD_CHECKS), unique=True)),
        _source(t),
    )


def read_thresholds(t: tc.Table) -> Thresholds:
    return Thresholds(
        a_tpp=t.get("a_tpp", _TPP),
        a_density_tpp=t.get("a_density_tpp", _TPP),
        a_density=t.get("a_density", _exact),
        b_tpp=t.get("b_tpp", _TPP),
        b_density=t.get("b_density", _exact),
        b_alt_tpp=t.get("b_alt_tpp", _TPP),
        b_alt_density=t.get("b_alt_density", _exact),
        source=_source(t),
    )


def read_entry(t: tc.Table, thresholds: Thresholds | None) -> CatalogueEntry:
    entry = CatalogueEntry(
        model=t.get("model", tc.text(max_len=64, printable=True)),
        name=t.get("name", _TEXT),
        pci_device_id=t.opt("pci_device_id", _pci_device_id),
        pci_subsystem_ids=t.get("pci_subsystem_ids", tc.list_of(_pci_device_id, unique=True), ()),
        dense_tops=t.get("dense_tops", _exact),
        bit_length=t.get("bit_length", tc.integer(1, 64)),
        dense_tpp=t.get("dense_tpp", tc.integer(1)),
        die_area_mm2=t.opt("die_area_mm2", _exact),
        eccn=t.get("eccn", _ECCN),
        board_power_w=t.get("board_power_w", tc.integer(1, 100_000)),
        ids_source=Source(t.get("ids_source", _TEXT), t.get("ids_label", _LABEL)),
        source=_source(t),
    )
    if entry.pci_subsystem_ids and entry.pci_device_id is None:
        raise t.fail("pci_subsystem_ids", "given without pci_device_id")
    derived = math.ceil(entry.dense_tops * entry.bit_length)
    if entry.dense_tpp != derived:
        raise t.fail("dense_tpp", f"is {entry.dense_tpp}, but dense_tops x bit_length = {derived}")
    computed = None if thresholds is None else thresholds.classify(
        entry.dense_tpp, entry.performance_density
    )  # fmt: skip
    if computed is not None and computed is not entry.eccn:
        raise t.fail("eccn", f"is {entry.eccn.value}, but the thresholds give {computed.value}")
    return entry
