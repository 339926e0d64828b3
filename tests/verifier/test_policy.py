"""The built-in policy packs and the questions asked of them (verifier/policy/): tiers on a
date, caps, shares, allocations, the pack in force, and the GPU catalogue with its classifier.
Every expected number is worked out by hand here from the sources the packs cite."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from fractions import Fraction

import pytest

from agent import posture
from attest.errors import PolicyNotFoundError
from verifier.policy import (
    CatalogueEntry,
    Eccn,
    PolicyPack,
    UnknownModel,
    builtin_packs,
    classify,
    find_pack,
    pack_in_force,
)
from verifier.policy.catalogue import Catalogue
from verifier.policy.model import SAFEGUARD_CHECKS
from verifier.registry_model import VeuStatus

AIDR = find_pack("aidr-2025")
BASELINE = find_pack("baseline-2025-05")
D = date


def test_the_built_in_packs_are_the_two_dated_ones() -> None:
    assert [(p.id, p.effective_from, p.effective_until) for p in builtin_packs()] == [
        ("aidr-2025", D(2025, 1, 13), None),
        ("baseline-2025-05", D(2025, 5, 13), None),
    ]
    assert {p.origin for p in builtin_packs()} == {"built-in"}


@pytest.mark.parametrize(
    ("on", "expected"),
    [
        (D(2025, 1, 13), "aidr-2025"),  # the rule's effective date
        (D(2025, 5, 12), "aidr-2025"),  # the last day it was enforced
        (D(2025, 5, 13), "baseline-2025-05"),  # enforcement stopped
        (D(2026, 6, 1), "baseline-2025-05"),
    ],
)
def test_pack_in_force_is_chosen_by_effective_dates(on: date, expected: str) -> None:
    assert pack_in_force(builtin_packs(), on).id == expected


def test_no_pack_before_the_rule_took_effect() -> None:
    with pytest.raises(PolicyNotFoundError, match="no policy pack is in force on 2025-01-12"):
        pack_in_force(builtin_packs(), D(2025, 1, 12))


def test_two_packs_taking_effect_the_same_day_are_ambiguous() -> None:
    twin = replace(AIDR, id="aidr-2025-copy")
    with pytest.raises(PolicyNotFoundError, match="aidr-2025, aidr-2025-copy"):
        pack_in_force([AIDR, twin], D(2025, 3, 1))


def test_a_pack_ends_on_its_last_day() -> None:
    ending = replace(BASELINE, effective_until=D(2025, 12, 31))
    assert pack_in_force([AIDR, ending], D(2025, 12, 31)) is ending
    assert pack_in_force([AIDR, ending], D(2026, 1, 1)) is AIDR  # the open-ended one again


@pytest.mark.parametrize(
    ("pack", "country", "on", "tier"),
    [
        (AIDR, "US", D(2025, 6, 1), 1),
        (AIDR, "TW", D(2025, 6, 1), 1),
        (AIDR, "GB", D(2025, 6, 1), 1),
        (AIDR, "AE", D(2025, 6, 1), 2),  # unlisted: the default tier
        (AIDR, "IN", D(2025, 6, 1), 2),
        (AIDR, "CY", D(2025, 6, 1), 2),  # D:5 membership unconfirmed: not listed
        (AIDR, "CN", D(2025, 6, 1), 3),
        (AIDR, "HK", D(2025, 6, 1), 3),  # Hong Kong resolves to China
        (AIDR, "MO", D(2025, 6, 1), 3),  # Macau is Tier 3 by name
        (AIDR, "RU", D(2025, 6, 1), 3),
        (AIDR, "KH", D(2026, 2, 2), 3),  # Cambodia in D:5 up to the day before the rule
        (AIDR, "KH", D(2026, 2, 3), 2),  # out of D:5 from Feb 3, 2026
        (BASELINE, "US", D(2025, 6, 1), 1),
        (BASELINE, "IN", D(2025, 6, 1), 1),  # baseline: no licence outside D:1/D:4/D:5
        (BASELINE, "AE", D(2025, 6, 1), 2),  # D:4: licence needed
        (BASELINE, "HK", D(2025, 6, 1), 3),
        (BASELINE, "MO", D(2025, 6, 1), 3),
        (BASELINE, "KH", D(2026, 2, 2), 3),
        (BASELINE, "KH", D(2026, 2, 3), 2),  # still D:1
    ],
)
def test_tier_of(pack: PolicyPack, country: str, on: date, tier: int) -> None:
    assert pack.tier_of(country, on) == tier


def test_hong_kong_counts_as_china_only_from_the_2020_rule() -> None:
    assert AIDR.resolve_country("HK", D(2020, 12, 23)) == "CN"
    assert AIDR.resolve_country("HK", D(2020, 12, 22)) == "HK"


@pytest.mark.parametrize(
    ("pack", "country", "required"),
    [(AIDR, "DE", False), (AIDR, "AE", True), (AIDR, "CN", True),
     (BASELINE, "IN", False), (BASELINE, "SA", True), (BASELINE, "HK", True)],
)  # fmt: skip
def test_licence_required(pack: PolicyPack, country: str, required: bool) -> None:
    assert pack.licence_required(country, D(2025, 6, 1)) is required


@pytest.mark.parametrize(
    ("country", "on", "arrangement", "cap"),
    [
        ("AE", D(2025, 6, 1), False, 790_000_000),
        ("AE", D(2025, 6, 1), True, 1_580_000_000),  # doubled: 2 x 790,000,000
        ("AE", D(2027, 12, 31), False, 790_000_000),  # the cap's last day
        ("AE", D(2028, 1, 1), False, None),  # the 2025-2027 period is over
        ("DE", D(2025, 6, 1), False, None),  # Tier 1: no cap
        ("CN", D(2025, 6, 1), False, None),  # Tier 3: no allocation at all
    ],
)
def test_country_cap(country: str, on: date, arrangement: bool, cap: int | None) -> None:
    assert AIDR.country_cap_tpp(country, on, arrangement=arrangement) == cap


def test_country_cap_in_h100_equivalents() -> None:
    # 790,000,000 / 15,832 = 49,898.9 (the sources round it to 49,899): 49,898 H100 SXM fit,
    # the 49,899th is 968 TPP over the cap.
    assert 49_898 * 15_832 == 789_985_136 <= 790_000_000 < 49_899 * 15_832 == 790_000_968


def test_baseline_has_no_caps_shares_or_allocations() -> None:
    assert BASELINE.country_cap is None and BASELINE.uveu is None
    assert BASELINE.country_cap_tpp("AE", D(2025, 6, 1), arrangement=False) is None
    assert BASELINE.nveu_allocation_tpp(D(2026, 1, 1)) is None


def test_lpp_and_aia_limits() -> None:
    assert AIDR.lpp is not None and AIDR.lpp.tpp_per_consignee_per_year == 26_900_000
    assert AIDR.lpp.source.verified  # read in 15 CFR 740.29(a)
    assert 26_900_000 // 15_832 == 1_699  # H100-equivalents per consignee and year
    assert AIDR.aia is not None and AIDR.aia.reporting_threshold_tpp == 253_000_000


def test_uveu_shares_are_exact_fractions() -> None:
    u = AIDR.uveu
    assert u is not None
    assert (u.tier1_min_share, u.tier2_country_max_share, u.us_min_share_if_us_hq) == (
        Fraction(3, 4), Fraction(7, 100), Fraction(1, 2))  # fmt: skip
    # exactly 7% of 1,000,000 TPP is allowed, one TPP more is not
    assert Fraction(70_000, 1_000_000) <= u.tier2_country_max_share
    assert Fraction(70_001, 1_000_000) > u.tier2_country_max_share
    assert not u.source.verified  # secondary (CSIS via TrendForce)


@pytest.mark.parametrize(
    ("on", "allocation"),
    [
        (D(2025, 1, 12), 0),
        (D(2025, 1, 13), 633_000_000),
        (D(2027, 12, 30), 633_000_000),  # the steps between the bookends are unverified
        (D(2027, 12, 31), 5_064_000_000),  # = 8 x 633,000,000
    ],
)
def test_nveu_allocation_by_date(on: date, allocation: int) -> None:
    assert AIDR.nveu_allocation_tpp(on) == allocation
    assert 8 * 633_000_000 == 5_064_000_000


def test_rules_by_holder_kind() -> None:
    none, uveu, nveu = (AIDR.holder_rules(k) for k in (VeuStatus.NONE, VeuStatus.UVEU,
                                                       VeuStatus.NVEU))  # fmt: skip
    assert "country-cap-exceeded" in none.rules and "uveu-tier2-share" not in none.rules
    assert {"uveu-tier1-share", "uveu-tier2-share", "uveu-us-share"} <= set(uveu.rules)
    assert "nveu-allocation-exceeded" in nveu.rules and "country-cap-exceeded" not in nveu.rules
    assert none.safeguards == () and "secure-boot" in uveu.safeguards
    assert all(not BASELINE.holder_rules(k).safeguards for k in VeuStatus)


def test_safeguard_names_are_the_agents_posture_checks() -> None:
    names = {value for name, value in vars(posture).items()
             if name.isupper() and isinstance(value, str) and "-" in value}  # fmt: skip
    assert set(SAFEGUARD_CHECKS) == names


def test_both_packs_carry_the_same_catalogue_and_thresholds() -> None:
    assert AIDR.catalogue.entries == BASELINE.catalogue.entries
    assert AIDR.thresholds == BASELINE.thresholds


# --- the catalogue ------------------------------------------------------------------------------

#: model, PCI device id, TPP worked out by hand (dense TOPS x bit length), die mm2, 3A090 class
CATALOGUE = [
    ("H100-SXM", 0x233010DE, 1979 * 8, 814, Eccn.A),  # = 15,832
    ("H100-PCIe", 0x233110DE, 1513 * 8, 814, Eccn.A),  # = 12,104
    ("H100-NVL", 0x232110DE, 13_364, 814, Eccn.A),  # 1,670.5 x 8
    ("H800", 0x232410DE, 1979 * 8, 814, Eccn.A),
    ("H200", 0x233510DE, 1979 * 8, 814, Eccn.A),  # 3,958 is the sparse figure
    ("H20", 0x232910DE, 296 * 8, 814, Eccn.NONE),  # = 2,368; PD 2.91 < 3.2
    ("A100", 0x20B010DE, 624 * 8, 826, Eccn.A),  # = 4,992 = 312 x 16
    ("B200", 0x290110DE, 4500 * 8, None, Eccn.A),  # = 36,000 = 9,000 x 4
    ("B300", None, 14_000 * 4, None, Eccn.A),  # = 56,000 (13,125 x 4 = 52,500 the low end)
    ("GB200", 0x294110DE, 10_000 * 4, None, Eccn.A),  # = 40,000
    ("GB300", 0x31C210DE, 15_000 * 4, None, Eccn.A),  # = 60,000
    ("L40S", 0x26B910DE, 733 * 8, Fraction(1217, 2), Eccn.A),  # = 5,864; 608.5 mm2
    ("L4", 0x27B810DE, 1940, Fraction(589, 2), Eccn.A),  # 242.5 x 8; 294.5 mm2
    ("RTX-4090", 0x268410DE, 5285, Fraction(1217, 2), Eccn.A),  # 660.6 x 8 = 5,284.8, up
    ("RTX-5090", 0x2B8510DE, 838 * 8, 750, Eccn.A),  # = 6,704
]


@pytest.mark.parametrize(("model", "pci", "tpp", "die", "eccn"), CATALOGUE)
def test_catalogue_rows(
    model: str, pci: int | None, tpp: int, die: Fraction | int | None, eccn: Eccn
) -> None:
    entry = AIDR.catalogue.by_model(model)
    assert entry is not None
    assert (entry.pci_device_id, entry.dense_tpp, entry.die_area_mm2, entry.eccn) == (
        pci, tpp, die, eccn)  # fmt: skip
    assert not entry.source.verified  # every TPP input is secondary or recalled
    assert isinstance(entry.dense_tpp, int)


def test_catalogue_covers_the_models_the_issue_names() -> None:
    assert [e.model for e in AIDR.catalogue.entries] == [row[0] for row in CATALOGUE]


@pytest.mark.parametrize(
    ("model", "density", "approx"),
    [
        ("H100-SXM", Fraction(15_832, 814), "19.45"),  # = 7916/407
        ("H20", Fraction(2_368, 814), "2.91"),  # = 32/11
        ("A100", Fraction(4_992, 826), "6.04"),
        ("L4", Fraction(1_940 * 2, 589), "6.59"),  # 1,940 / 294.5
        ("B200", None, None),  # die area not published
    ],
)
def test_performance_density_is_exact(
    model: str, density: Fraction | None, approx: str | None
) -> None:
    from verifier.policy.view import approx_text  # noqa: PLC0415

    entry = AIDR.catalogue.by_model(model)
    assert entry is not None and entry.performance_density == density
    assert (density and approx_text(density)) == approx


@pytest.mark.parametrize(
    ("tpp", "density", "eccn"),
    [
        (4_800, None, Eccn.A),  # TPP alone
        (4_799, None, None),  # needs the density, which is unknown
        (1_600, Fraction(592, 100), Eccn.A),  # exactly on both .a density bounds
        (1_599, Fraction(10), Eccn.NONE),
        (2_400, Fraction(16, 10), Eccn.B),  # exactly on the .b lower bounds
        (2_399, Fraction(16, 10), Eccn.NONE),
        (1_600, Fraction(32, 10), Eccn.B),  # the second .b paragraph
        (2_368, Fraction(32, 11), Eccn.NONE),  # H20
    ],
)
def test_thresholds_classify(tpp: int, density: Fraction | None, eccn: Eccn | None) -> None:
    assert AIDR.thresholds.classify(tpp, density) is eccn


@pytest.mark.parametrize(
    ("device", "subsystem", "model"),
    [
        (0x233010DE, 0x16C110DE, "H100-SXM"),
        (0x233510DE, 0x18BF10DE, "H200"),  # the two real captures' board
        (0x233510DE, 0x18BE10DE, "H200"),  # thamada/gls's board
        (0x233510DE, None, "H200"),
        (0x290110DE, 0x199910DE, "B200"),
    ],
)
def test_classify_known_ids(device: int, subsystem: int | None, model: str) -> None:
    found = classify(device, subsystem, AIDR.catalogue)
    assert isinstance(found, CatalogueEntry) and found.model == model


@pytest.mark.parametrize(
    ("device", "subsystem"),
    [(0x123410DE, 0x0), (0x233010DE & 0xFFFF0000 | 0x1002, None), (None, None)],
)
def test_unknown_ids_count_at_the_highest_tpp(device: int | None, subsystem: int | None) -> None:
    # the highest TPP of the catalogue is GB300's 15,000 x 4 = 60,000
    assert classify(device, subsystem, AIDR.catalogue) == UnknownModel(device, subsystem, 60_000)


def _entry(model: str, device: int, subsystems: tuple[int, ...], tpp: int) -> CatalogueEntry:
    base = AIDR.catalogue.entries[0]
    return replace(
        base, model=model, pci_device_id=device, pci_subsystem_ids=subsystems, dense_tpp=tpp
    )


def test_a_subsystem_entry_wins_over_the_whole_device_entry() -> None:
    catalogue = Catalogue((
        _entry("X-generic", 0x200010DE, (), 1000),
        _entry("X-special", 0x200010DE, (0xAAAA10DE,), 2000),
        _entry("Y-only", 0x300010DE, (0xBBBB10DE,), 3000),
    ))  # fmt: skip
    assert classify(0x200010DE, 0xAAAA10DE, catalogue).model == "X-special"  # type: ignore[union-attr]
    assert classify(0x200010DE, 0x123410DE, catalogue).model == "X-generic"  # type: ignore[union-attr]
    assert classify(0x300010DE, 0x123410DE, catalogue) == UnknownModel(0x300010DE, 0x123410DE, 3000)


def test_classify_never_reads_a_name() -> None:
    renamed = replace(AIDR.catalogue.entries[0], name="NVIDIA GeForce GT 710")
    catalogue = Catalogue((renamed,))
    assert classify(0x233010DE, None, catalogue) is renamed
