"""The reconciliation engine (verifier/reconcile/, docs/design.md §14): destinations, the
country cap, licences and their attribution, table-driven, every number worked out by hand here.
TPP per GPU from the aidr-2025 catalogue: H100-SXM 15,832, A100 4,992, RTX-4090 5,285."""

from __future__ import annotations

from datetime import date

import pytest

from tests.verifier.reconcile_world import (
    A100,
    AIDR,
    BASELINE,
    H20,
    H100,
    RTX4090,
    arrangement,
    authorization,
    entity,
    keys,
    only,
    registry,
    row,
    run,
    site,
)
from verifier.model import Severity
from verifier.reconcile import AuthorizationUsage, CountryTotals, Totals

# --- Tier 3 destinations and headquarters ------------------------------------------------------


@pytest.mark.parametrize(
    ("country", "device", "tier_text"),
    [
        ("CN", H100, "CN, Tier 3"),
        ("HK", H100, "HK (as CN), Tier 3"),  # Hong Kong counts as China
        ("MO", H100, "MO, Tier 3"),  # Macau is Tier 3 on its own
        ("RU", A100, "RU, Tier 3"),
        ("AE", H100, None),  # Tier 2
        ("DE", H100, None),  # Tier 1
        ("CN", H20, None),  # below 3A090: not a controlled GPU
    ],
)
def test_tier3_destination(country: str, device: int, tier_text: str | None) -> None:
    reg = registry(entity("acme", hq="DE"), site("s1", "acme", country))
    found = only(run(reg, [row("s1", device, 10, evidence=(7, 3))]), "tier3-destination")
    if tier_text is None:
        assert found == []
        return
    (f,) = found
    tpp = 10 * (15_832 if device == H100 else 4_992)
    assert f.subject == "site:s1"
    assert f.severity is Severity.CRITICAL
    assert f"site s1 ({tier_text}) holds 10 controlled GPUs, {tpp:,} TPP" in f.message
    assert f.evidence == (3, 7)


@pytest.mark.parametrize(
    ("hq", "parent", "raised"),
    [
        ("CN", None, True),
        ("HK", None, True),  # as CN
        ("AE", "CN", True),  # the ultimate parent in Tier 3 is enough
        ("AE", "MO", True),
        ("AE", None, False),
        ("US", "GB", False),
    ],
)
def test_tier3_headquarters(hq: str, parent: str | None, raised: bool) -> None:
    reg = registry(entity("acme", hq=hq, parent=parent), site("s1", "acme", "DE"))
    found = only(run(reg, [row("s1", H100, 2)]), "tier3-headquarters")
    assert [f.subject for f in found] == (["entity:acme"] if raised else [])
    if raised:
        assert "holds 2 controlled GPUs, 31,664 TPP (2 x H100-SXM at 15,832)" in found[0].message


# --- the country cap: 790,000,000 TPP per Tier 2 country, 1,580,000,000 under an arrangement ----

# 49,898 x 15,832 = 789,985,136 (under); 49,408 x 15,832 + 1,557 x 4,992
# = 782,227,456 + 7,772,544 = 790,000,000 (exactly at the cap: allowed);
# 49,867 x 15,832 + 96 x 4,992 + 5 x 5,285 = 789,495,344 + 479,232 + 26,425 = 790,000,001.
AT_CAP = [(H100, 49_408), (A100, 1_557)]
ONE_OVER = [(H100, 49_867), (A100, 96), (RTX4090, 5)]


@pytest.mark.parametrize(
    ("lots", "over_by"),
    [
        ([(H100, 49_898)], None),
        (AT_CAP, None),
        (ONE_OVER, 1),
        ([(H100, 51_020)], 807_748_640 - 790_000_000),
    ],
)
def test_country_cap_boundary(lots: list[tuple[int, int]], over_by: int | None) -> None:
    reg = registry(entity("acme", hq="AE"), site("s1", "acme", "AE"))
    found = only(run(reg, [row("s1", dev, count) for dev, count in lots]), "country-cap-exceeded")
    if over_by is None:
        assert found == []
        return
    (f,) = found
    assert f.subject == "country:AE"
    assert f.severity is Severity.HIGH
    assert f"exceed the country cap 790,000,000 TPP by {over_by:,} TPP" in f.message


def test_country_cap_message_shows_the_arithmetic() -> None:
    reg = registry(entity("acme", hq="AE"), site("s1", "acme", "AE"))
    (f,) = only(run(reg, [row("s1", H100, 51_020)]), "country-cap-exceeded")
    assert f.message.startswith(
        "AE non-VEU holdings 807,748,640 TPP (51,020 x H100-SXM at 15,832) exceed the country "
        "cap 790,000,000 TPP"
    )
    (f,) = only(run(reg, [row("s1", d, c) for d, c in ONE_OVER]), "country-cap-exceeded")
    assert "(49,867 x H100-SXM at 15,832 + 5 x RTX-4090 at 5,285 + 96 x A100 at 4,992)" in f.message


# 51,020 H100 = 807,748,640: over 790,000,000, under 1,580,000,000. 99,798 x 15,832 =
# 1,580,001,936 is over even the doubled cap; 99,797 x 15,832 = 1,579,986,104 is not.
@pytest.mark.parametrize(
    ("on", "count", "raised"),
    [
        (date(2025, 5, 31), 51_020, True),  # the day before the arrangement: single cap
        (date(2025, 6, 1), 51_020, False),  # on its `since` date: doubled
        (date(2025, 6, 1), 99_797, False),
        (date(2025, 6, 1), 99_798, True),
    ],
)
def test_arrangement_doubles_the_cap_from_its_since_date(
    on: date, count: int, raised: bool
) -> None:
    reg = registry(
        entity("acme", hq="AE"), site("s1", "acme", "AE"), arrangement("AE", "2025-06-01")
    )
    found = only(run(reg, [row("s1", H100, count)], on=on), "country-cap-exceeded")
    assert len(found) == int(raised)
    if raised and on == date(2025, 6, 1):
        assert "cap 1,580,000,000 TPP (under the arrangement in force since 2025-06-01)" in (
            found[0].message
        )


def test_country_cap_sums_non_veu_holders_only() -> None:
    """30,000 + 21,020 H100 of two non-VEU holders = 807,748,640 > 790,000,000; a UVEU's and an
    NVEU's GPUs in the same country do not count against the cap."""
    reg = registry(
        entity("a", hq="AE"),
        entity("b", hq="US"),
        entity("u", hq="US", veu="uveu"),
        entity("v", hq="AE", veu="nveu"),
        site("a1", "a", "AE"),
        site("b1", "b", "AE"),
        site("u1", "u", "AE"),
        site("v1", "v", "AE"),
    )
    two = [row("a1", H100, 30_000), row("b1", H100, 21_020)]
    (f,) = only(run(reg, two), "country-cap-exceeded")
    assert "807,748,640 TPP" in f.message
    veu = [row("a1", H100, 40_000), row("u1", H100, 40_000), row("v1", H100, 40_000)]
    assert only(run(reg, veu), "country-cap-exceeded") == []  # 633,280,000 non-VEU


def test_gpus_held_under_lpp_do_not_count_against_the_cap() -> None:
    """aidr-2025: LPP exports do not count against the country cap."""
    reg = registry(
        entity("acme", hq="AE"),
        site("s1", "acme", "AE"),
        authorization("L1", "acme", countries=("AE",), kind="lpp"),
    )
    assert only(run(reg, [row("s1", H100, 51_020)]), "country-cap-exceeded") == []


def test_gpus_under_an_expired_lpp_count_against_the_cap() -> None:
    reg = registry(
        entity("acme", hq="AE"),
        site("s1", "acme", "AE"),
        authorization("L1", "acme", countries=("AE",), kind="lpp", valid_until="2025-05-31"),
    )
    assert keys(run(reg, [row("s1", H100, 51_020)])) == [
        ("country-cap-exceeded", "country:AE"),
        ("licence-expired", "authorization:L1"),
    ]


# --- licences: scope, limits, validity and attribution -----------------------------------------


@pytest.mark.parametrize(
    ("lots", "problem"),
    [
        ([(H100, 1_000)], None),  # 1,000 units, 15,832,000 TPP: exactly at both limits
        ([(H100, 1_001)], "1,001 GPUs > max_units 1,000; 15,847,832 TPP > max_tpp 15,832,000"),
        ([(H100, 999), (A100, 1)], None),  # 15,816,168 + 4,992 = 15,821,160
        ([(H100, 1_000), (A100, 1)], "1,001 GPUs > max_units 1,000; 15,836,992 TPP > max_tpp"),
        ([(H100, 999), (RTX4090, 1)], None),  # 15,816,168 + 5,285 = 15,821,453
        ([(H20, 5_000)], None),  # not controlled: not carried by the licence
    ],
)
def test_licence_exceeded(lots: list[tuple[int, int]], problem: str | None) -> None:
    reg = registry(
        entity("acme"),
        site("s1", "acme", "AE"),
        authorization("D1", "acme", countries=("AE",), max_units=1_000, max_tpp=15_832_000),
    )
    result = run(reg, [row("s1", dev, count) for dev, count in lots])
    found = only(result, "licence-exceeded")
    assert only(result, "unlicensed-gpu") == []
    if problem is None:
        assert found == []
        return
    (f,) = found
    assert (f.subject, f.severity) == ("authorization:D1", Severity.HIGH)
    assert problem in f.message


def test_max_tpp_by_tpp_alone() -> None:
    """max_tpp 100,000: 6 H100 = 94,992 fits, 7 = 110,824 does not."""
    reg = registry(
        entity("acme"),
        site("s1", "acme", "AE"),
        authorization("D1", "acme", sites=("s1",), max_tpp=100_000),
    )
    assert only(run(reg, [row("s1", H100, 6)]), "licence-exceeded") == []
    (f,) = only(run(reg, [row("s1", H100, 7)]), "licence-exceeded")
    assert "110,824 TPP > max_tpp 100,000" in f.message


@pytest.mark.parametrize(
    ("on", "rules", "state"),
    [
        (date(2025, 3, 31), ["unlicensed-gpu"], "not-yet-valid"),  # the day before valid_from
        (date(2025, 4, 1), [], "valid"),
        (date(2025, 12, 31), [], "valid"),  # its last valid day
        (date(2026, 1, 1), ["licence-expired"], "expired"),  # the day after
    ],
)
def test_licence_validity_days(on: date, rules: list[str], state: str) -> None:
    reg = registry(
        entity("acme"),
        site("s1", "acme", "AE"),
        authorization(
            "D1", "acme", countries=("AE",), valid_from="2025-04-01", valid_until="2025-12-31"
        ),
    )
    result = run(reg, [row("s1", H100, 3)], on=on)
    assert [f.rule for f in result.findings] == rules
    (usage,) = result.authorizations
    assert usage.state == state
    if rules == ["licence-expired"]:
        f = result.findings[0]
        assert f.subject == "authorization:D1"
        assert "valid through 2025-12-31" in f.message
        assert "3 controlled GPUs, 47,496 TPP" in f.message


def test_attribution_most_specific_first_then_by_id() -> None:
    """120 H100 at s1: site licences A (10 units) and B (20 units) fill first, by id; the
    country licence C (max 100) takes the other 90: within its limit. 131 H100 put 101 on C."""
    reg = registry(
        entity("acme"),
        site("s1", "acme", "AE"),
        authorization("C", "acme", countries=("AE",), max_units=100),
        authorization("B", "acme", sites=("s1",), max_units=20),
        authorization("A", "acme", sites=("s1",), max_units=10),
    )
    result = run(reg, [row("s1", H100, 120)])
    used = {u.id: (u.used_units, u.used_tpp) for u in result.authorizations}
    assert used == {"A": (10, 158_320), "B": (20, 316_640), "C": (90, 1_424_880)}
    assert result.findings == ()
    result = run(reg, [row("s1", H100, 131)])
    assert keys(result) == [("licence-exceeded", "authorization:C")]
    assert "101 GPUs > max_units 100" in result.findings[0].message


def test_attribution_ignores_other_holders_and_scopes() -> None:
    reg = registry(
        entity("acme"),
        entity("other"),
        site("s1", "acme", "AE"),
        authorization("O1", "other", countries=("AE",)),  # another holder's licence
        authorization("D1", "acme", countries=("SA",)),  # another country
    )
    assert keys(run(reg, [row("s1", H100, 1)])) == [("unlicensed-gpu", "site:s1")]


@pytest.mark.parametrize(
    ("country", "hq", "pack_id", "raised"),
    [
        ("AE", "US", "aidr-2025", True),  # Tier 2 needs a licence
        ("IN", "US", "aidr-2025", True),  # Tier 2 by default
        ("DE", "US", "aidr-2025", False),  # Tier 1
        ("DE", "CN", "aidr-2025", True),  # a Tier 3 headquarters needs one worldwide
        ("IN", "US", "baseline-2025-05", False),  # Tier 1 by default after 2025-05-13
        ("SA", "US", "baseline-2025-05", True),  # D:1/D:4 listed: Tier 2
    ],
)
def test_unlicensed_gpu(country: str, hq: str, pack_id: str, raised: bool) -> None:
    pack = AIDR if pack_id == "aidr-2025" else BASELINE
    reg = registry(entity("acme", hq=hq), site("s1", "acme", country))
    found = only(run(reg, [row("s1", H100, 4)], pack=pack), "unlicensed-gpu")
    assert [f.subject for f in found] == (["site:s1"] if raised else [])
    if raised:
        assert "holds 4 controlled GPUs, 63,328 TPP (4 x H100-SXM at 15,832) that no " in (
            found[0].message
        )


def test_a_site_missing_from_the_registry_is_unlicensed() -> None:
    """Fail closed: its destination is unknown, so a licence is assumed needed."""
    reg = registry(entity("acme"), site("s1", "acme", "DE"))
    result = run(reg, [row("ghost", H100, 2)])
    assert keys(result) == [("unlicensed-gpu", "site:ghost")]
    assert "site ghost (not in the registry)" in result.findings[0].message
    assert result.by_country["?"] == CountryTotals("?", None, Totals(2, 31_664, 2, 31_664))


# --- totals --------------------------------------------------------------------------------------


def test_totals_by_site_country_entity_model_and_authorization() -> None:
    """s1 (DE): 10 H100 = 158,320 + 5 H20 = 11,840 (not controlled); s2 (HK): 2 A100 = 9,984."""
    reg = registry(
        entity("acme", hq="DE"),
        site("s1", "acme", "DE"),
        site("s2", "acme", "HK"),
        authorization("D1", "acme", sites=("s2",), max_units=5, max_tpp=100_000.5),
    )
    result = run(reg, [row("s1", H100, 10), row("s1", H20, 5), row("s2", A100, 2)])
    assert result.total == Totals(17, 180_144, 12, 168_304)
    assert result.by_site == {
        "s1": Totals(15, 170_160, 10, 158_320),
        "s2": Totals(2, 9_984, 2, 9_984),
    }
    assert result.by_country["DE"] == CountryTotals("DE", 1, Totals(15, 170_160, 10, 158_320))
    assert result.by_country["HK"].tier == 3
    assert result.by_entity == {"acme": Totals(17, 180_144, 12, 168_304)}
    assert result.by_model["H20"] == Totals(5, 11_840, 0, 0)
    assert result.authorizations == (
        AuthorizationUsage("D1", "acme", "licence", "valid", 2, 9_984, 5, 100_000),
    )
    assert keys(result) == [("tier3-destination", "site:s2")]
