"""The reconciliation engine's VEU, power, posture and catalogue rules (verifier/reconcile/,
docs/design.md §14), table-driven with the numbers worked out by hand. Shares are of controlled
TPP; with whole H100s (15,832 TPP each) a share of units is the share of TPP."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from tests.verifier.reconcile_world import (
    A100,
    AIDR,
    H100,
    MAX_TPP,
    NOT_IN_CATALOGUE,
    RTX4090,
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
from verifier.reconcile import HoldingRow, PostureRow, Totals
from verifier.registry_model import VeuStatus

COUNTRIES = ("US", "DE", "AE", "SA", "QA", "IN")  # Tier 1: US, DE; Tier 2: the rest


def _uveu(hq: str = "US") -> list[str]:
    tables = [entity("hyper", hq=hq, veu="uveu")]
    tables += [site(f"hyper-{c.lower()}", "hyper", c) for c in COUNTRIES]
    tables.append(authorization("U1", "hyper", countries=COUNTRIES, kind="uveu"))
    return tables


def _spread(**units: int) -> list[HoldingRow]:
    return [row(f"hyper-{c.lower()}", H100, u) for c, u in units.items() if u]


# 100 H100 in all = 1,583,200 TPP; 7 = 110,824 (7.00%), 8 = 126,656 (8.00%).
@pytest.mark.parametrize(
    ("spread", "expected"),
    [
        # 7% in one Tier 2 country is allowed; 75% in Tier 1 and 50% in the US hold.
        ({"US": 50, "DE": 25, "AE": 7, "SA": 7, "QA": 7, "IN": 4}, []),
        ({"US": 50, "DE": 42, "AE": 8}, [("uveu-tier2-share", "entity:hyper@AE")]),
        (
            {"US": 50, "DE": 24, "AE": 7, "SA": 7, "QA": 7, "IN": 5},
            [("uveu-tier1-share", "entity:hyper@tier1")],
        ),
        ({"US": 49, "DE": 44, "AE": 7}, [("uveu-us-share", "entity:hyper@US")]),
        (
            {"US": 10, "AE": 90},
            [
                ("uveu-tier2-share", "entity:hyper@AE"),
                ("uveu-tier1-share", "entity:hyper@tier1"),
                ("uveu-us-share", "entity:hyper@US"),
            ],
        ),
    ],
)
def test_uveu_shares(spread: dict[str, int], expected: list[tuple[str, str]]) -> None:
    result = run(registry(*_uveu()), _spread(**spread))
    assert keys(result) == expected
    assert all(f.severity is Severity.MEDIUM for f in result.findings)


def test_uveu_share_messages_show_numerator_denominator_and_percent() -> None:
    result = run(registry(*_uveu()), _spread(US=49, DE=25, AE=8, SA=7, QA=7, IN=4))
    by_rule = {f.rule: f.message for f in result.findings}
    assert (
        "126,656 / 1,583,200 TPP = 8.00% of its controlled TPP in AE (Tier 2), above the "
        in (by_rule["uveu-tier2-share"])
    )
    assert "7.00% allowed" in by_rule["uveu-tier2-share"]
    assert "1,171,568 / 1,583,200 TPP = 74.00%" in by_rule["uveu-tier1-share"]
    assert "below the 75.00% required" in by_rule["uveu-tier1-share"]
    assert (
        "775,768 / 1,583,200 TPP = 49.00% of its controlled TPP in the US"
        in (by_rule["uveu-us-share"])
    )


def test_exact_seven_percent_with_mixed_models() -> None:
    """100 A100 = 499,200 TPP: US 50 (249,600, exactly 50%), DE 43 (214,656), AE 7 (34,944,
    exactly 7%). One RTX-4090 more in AE: AE 40,229 / 504,485 = 7.97% > 7%, and the US
    249,600 / 504,485 = 49.48% < 50%; Tier 1 464,256 / 504,485 = 92.03% still holds."""
    spread = [row("hyper-us", A100, 50), row("hyper-de", A100, 43), row("hyper-ae", A100, 7)]
    assert run(registry(*_uveu()), spread).findings == ()
    spread.append(row("hyper-ae", RTX4090, 1))  # AE 40,229 / 504,485 > 7%; US 49.48% < 50%
    assert keys(run(registry(*_uveu()), spread)) == [
        ("uveu-tier2-share", "entity:hyper@AE"),
        ("uveu-us-share", "entity:hyper@US"),
    ]


def test_us_share_only_for_a_us_headquartered_uveu() -> None:
    result = run(registry(*_uveu(hq="GB")), _spread(DE=93, AE=7))
    assert result.findings == ()


def test_hong_kong_counts_as_china_in_shares() -> None:
    """HK is not a Tier 2 country of its own: its GPUs are Tier 3 (as CN), outside Tier 1."""
    tables = [*_uveu(), site("hyper-hk", "hyper", "HK")]
    result = run(registry(*tables), [*_spread(US=80, DE=10), row("hyper-hk", H100, 10)])
    assert keys(result) == [
        ("tier3-destination", "site:hyper-hk"),
        ("unlicensed-gpu", "site:hyper-hk"),
    ]


# NVEU: aidr-2025 allocates 633,000,000 TPP from 2025-01-13. 39,912 x 15,832 + 223 x 4,992
# = 631,886,784 + 1,113,216 = 633,000,000; 39,747 x 15,832 + 741 x 4,992 + 5 x 5,285
# = 629,274,504 + 3,699,072 + 26,425 = 633,000,001.
@pytest.mark.parametrize(
    ("lots", "over_by"),
    [
        ([(H100, 39_912), (A100, 223)], None),
        ([(H100, 39_747), (A100, 741), (RTX4090, 5)], 1),
    ],
)
def test_nveu_allocation(lots: list[tuple[int, int]], over_by: int | None) -> None:
    reg = registry(
        entity("nat", hq="AE", veu="nveu"),
        site("nat-ae", "nat", "AE"),
        site("nat-de", "nat", "DE"),
        authorization("N1", "nat", countries=("AE",), kind="nveu"),
    )
    rows = [row("nat-ae", dev, count) for dev, count in lots]
    rows.append(row("nat-de", H100, 100_000))  # Tier 1: needs no allocation
    found = only(run(reg, rows), "nveu-allocation-exceeded")
    if over_by is None:
        assert found == []
        return
    (f,) = found
    assert (f.subject, f.severity) == ("entity:nat@AE", Severity.HIGH)
    assert "holds 633,000,001 TPP" in f.message
    assert "cumulative allocation 633,000,000 TPP on 2025-06-01 by 1" in f.message


def test_nveu_allocation_follows_the_pack_dates() -> None:
    """From 2027-12-31 the allocation is 5,064,000,000 TPP: 40,000 H100 = 633,280,000 fit."""
    reg = registry(entity("nat", hq="AE", veu="nveu"), site("nat-ae", "nat", "AE"))
    rows = [row("nat-ae", H100, 40_000)]
    assert len(only(run(reg, rows, on=date(2027, 12, 30)), "nveu-allocation-exceeded")) == 1
    assert only(run(reg, rows, on=date(2027, 12, 31)), "nveu-allocation-exceeded") == []


# --- power ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("power_kw", "watts", "raised"),
    [
        ("700", 700_000, False),  # 1,000 H100 at 700 W: exactly the facility's power
        ("700", 700_001, True),
        ("0.7", 700, False),  # 0.7 kW is 700 W exactly (the figure as written, not the float)
        ("0.7", 701, True),
    ],
)
def test_power_implausible(power_kw: str, watts: int, raised: bool) -> None:
    reg = registry(entity("acme"), site("s1", "acme", "DE", power_kw=power_kw))
    found = only(run(reg, [row("s1", H100, 1_000, power_w=watts)]), "power-implausible")
    assert [f.subject for f in found] == (["site:s1"] if raised else [])
    if raised:
        assert f"attest power limits of {watts:,} W, above the declared facility power" in (
            found[0].message
        )


def test_power_without_a_declared_facility_power_is_not_judged() -> None:
    reg = registry(entity("acme"), site("s1", "acme", "DE"))
    assert only(run(reg, [row("s1", H100, 1, power_w=10**9)]), "power-implausible") == []


# --- safeguards ---------------------------------------------------------------------------------

REQUIRED = AIDR.holder_rules(VeuStatus.UVEU).safeguards


@pytest.mark.parametrize(
    ("veu", "checks", "failing"),
    [
        ("uveu", dict.fromkeys(REQUIRED, "pass"), None),
        (
            "uveu",
            {**dict.fromkeys(REQUIRED[2:], "pass"), REQUIRED[0]: "fail", REQUIRED[1]: "unknown"},
            f"{REQUIRED[0]}=fail, {REQUIRED[1]}=unknown",
        ),
        ("uveu", dict.fromkeys(REQUIRED[1:], "pass"), f"{REQUIRED[0]}=missing"),
        ("none", {}, None),  # no safeguards required of a holder without VEU status
    ],
)
def test_safeguard_failed(veu: str, checks: dict[str, str], failing: str | None) -> None:
    reg = registry(entity("acme", veu=veu), site("s1", "acme", "DE"))
    posture = PostureRow("s1", "agent-1", checks, (42,))
    found = only(run(reg, [], postures=(posture,)), "safeguard-failed")
    if failing is None:
        assert found == []
        return
    (f,) = found
    assert (f.subject, f.severity, f.evidence) == ("agent:agent-1", Severity.HIGH, (42,))
    assert f.message.endswith(f"fails required safeguards: {failing}")


# --- unknown models -----------------------------------------------------------------------------


def test_unknown_gpu_model_counted_at_the_highest_tpp() -> None:
    """4 unknown + 1 unreadable at 60,000 TPP each (GB300, the catalogue's highest)."""
    reg = registry(entity("acme"), site("s1", "acme", "DE"))
    rows = [
        row("s1", NOT_IN_CATALOGUE, 3, subsystem=0x1),
        row("s1", NOT_IN_CATALOGUE, 1, subsystem=0x2),
        row("s1", None, 1),
    ]
    result = run(reg, rows)
    assert keys(result) == [
        ("unknown-gpu-model", "model:0x999910de@s1"),
        ("unknown-gpu-model", "model:unreadable@s1"),
    ]
    assert result.findings[0].severity is Severity.LOW
    assert "(subsystem 0x00000001, 0x00000002)" in result.findings[0].message
    assert "counted at its highest TPP, 4 x 60,000 = 240,000 TPP" in result.findings[0].message
    assert result.by_model["unknown"] == Totals(5, 5 * MAX_TPP, 5, 5 * MAX_TPP)


def test_an_unknown_model_counts_against_the_cap() -> None:
    """13,167 x 60,000 = 790,020,000 > 790,000,000: an unknown board never hides compute."""
    reg = registry(entity("acme", hq="AE"), site("s1", "acme", "AE"))
    result = run(reg, [row("s1", NOT_IN_CATALOGUE, 13_167)])
    assert ("country-cap-exceeded", "country:AE") in keys(result)


def test_a_rule_the_pack_does_not_apply_is_not_raised() -> None:
    """The holder rules decide: without `unknown-gpu-model` for non-VEU holders, none."""
    holders = tuple(
        replace(h, rules=tuple(r for r in h.rules if r != "unknown-gpu-model"))
        for h in AIDR.holders
    )
    reg = registry(entity("acme"), site("s1", "acme", "DE"))
    result = run(reg, [row("s1", NOT_IN_CATALOGUE, 1)], pack=replace(AIDR, holders=holders))
    assert result.findings == ()


def test_two_posture_rows_of_one_agent_are_judged_together() -> None:
    """A check passes only if it passes in every row; one finding per agent."""
    reg = registry(entity("acme", veu="uveu"), site("s1", "acme", "DE"))
    good = dict.fromkeys(REQUIRED, "pass")
    rows = (
        PostureRow("s1", "agent-1", good, (1,)),
        PostureRow("s1", "agent-1", {**good, REQUIRED[3]: "fail"}, (2,)),
    )
    (f,) = only(run(reg, [], postures=rows), "safeguard-failed")
    assert f.message.endswith(f"fails required safeguards: {REQUIRED[3]}=fail")
    assert f.evidence == (1, 2)
