"""Incremental reconciliation (verifier/reconcile/live.py) against the full engine: after any
sequence of holding and posture changes, applied in any batching, the findings it keeps are
exactly those of `reconcile` over the same rows, the changes it reports turn the first findings
into the last, and a change that touches nothing reports nothing."""

from __future__ import annotations

from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.verifier.reconcile_world import (
    AIDR,
    BASELINE,
    H100,
    authorization,
    entity,
    registry,
    row,
    site,
)
from tests.verifier.test_reconcile_properties import DEVICES, postures
from verifier.model import FindingDraft
from verifier.policy import PolicyPack
from verifier.reconcile import HoldingRow, PostureRow, reconcile
from verifier.reconcile.live import FindingChanges, LiveReconciliation
from verifier.reconcile.model import HoldingDelta

# Every kind of holder, and two without VEU status in one Tier 2 country with no LPP, so that
# the country cap (the one rule judged across holders) is exceeded and cleared by changes.
REGISTRY = registry(
    entity("plain", hq="AE"),
    entity("other", hq="US"),
    entity("third", hq="GB"),
    entity("hyper", hq="US", veu="uveu"),
    entity("nat", hq="SA", veu="nveu"),
    entity("red", hq="HK", parent="CN"),
    site("plain-ae", "plain", "AE", power_kw="0.5"),
    site("plain-de", "plain", "DE"),
    site("other-sa", "other", "SA"),
    site("other-ae", "other", "AE"),
    site("third-sa", "third", "SA", power_kw="30"),
    site("hyper-us", "hyper", "US", power_kw="12000"),
    site("hyper-ae", "hyper", "AE"),
    site("hyper-hk", "hyper", "HK"),
    site("nat-sa", "nat", "SA"),
    site("red-mo", "red", "MO"),
    authorization("A1", "plain", sites=("plain-ae",), max_units=10, valid_until="2026-02-28"),
    authorization("A2", "plain", countries=("AE",), max_tpp=1_000_000.5),
    authorization("L1", "plain", countries=("AE", "DE"), kind="lpp", max_units=0),
    authorization("O1", "other", countries=("SA", "AE"), max_units=30_000),
    authorization("T1", "third", sites=("third-sa",), valid_until="2026-03-01"),
    authorization("U1", "hyper", countries=("AE", "US"), kind="uveu"),
    authorization("N1", "nat", countries=("SA",), kind="nveu", valid_from="2026-01-01"),
)
SITES = [s.id for s in REGISTRY.sites] + ["ghost"]
Key = tuple[str, int | None, int | None]
KEYS = st.tuples(
    st.sampled_from(SITES), st.sampled_from(DEVICES), st.sampled_from([None, 0x16C110DE])
)
DAY = date(2026, 3, 1)


def _initial(keys: list[Key], counts: list[int]) -> dict[Key, HoldingRow]:
    out: dict[Key, HoldingRow] = {}
    for key, count in zip(keys, counts, strict=False):
        out[key] = HoldingRow(*key, count, count * 700, date(2025, 1, 1), (1,))
    return out


def _apply(findings: dict[tuple[str, str], FindingDraft], changes: FindingChanges) -> None:
    for key in changes.cleared:
        assert key in findings, f"cleared {key} that was not raised"
        del findings[key]
    for f in changes.raised:
        findings[(f.rule, f.subject)] = f


@settings(max_examples=200, deadline=None)
@given(
    st.lists(KEYS, max_size=14),
    st.lists(st.integers(1, 60_000), min_size=14, max_size=14),
    st.lists(st.tuples(KEYS, st.integers(-40_000, 40_000), st.integers(0, 1000)), max_size=25),
    st.lists(postures, max_size=6),
    st.lists(postures, max_size=6),
    st.sampled_from([AIDR, BASELINE]),
    st.integers(1, 6),
)
def test_live_matches_full_reconcile(
    keys: list[Key],
    counts: list[int],
    steps: list[tuple[Key, int, int]],
    first_postures: list[PostureRow],
    later_postures: list[PostureRow],
    pack: PolicyPack,
    batch: int,
) -> None:
    held = _initial(keys, counts)
    first_postures = list({p.agent_id: p for p in first_postures}.values())  # one per agent
    live = LiveReconciliation(held.values(), first_postures, REGISTRY, pack, DAY)
    start = reconcile(held.values(), first_postures, REGISTRY, pack, DAY)
    assert live.findings() == list(start.findings)
    findings = {(f.rule, f.subject): f for f in start.findings}

    expected = {k: r.count for k, r in held.items()}
    deltas: list[HoldingDelta] = []
    for index, (key, wanted, watts) in enumerate(steps, start=10):
        change = max(wanted, -expected.get(key, 0))  # the store never drops more than held
        if change == 0:
            continue
        expected[key] = expected.get(key, 0) + change
        deltas.append(HoldingDelta(*key, change, change * watts, DAY, index))
    agents = {p.agent_id: p for p in first_postures}
    for start_at in range(0, max(len(deltas), 1), batch):
        chunk = deltas[start_at : start_at + batch]
        moved = later_postures if start_at == 0 else []
        agents.update((p.agent_id, p) for p in moved)
        _apply(findings, live.apply(chunk, moved))

    assert {r.site_id: 0 for r in live.rows() if r.count <= 0} == {}
    assert {(r.site_id, r.pci_device_id, r.pci_subsystem_id): r.count for r in live.rows()} == {
        k: c for k, c in expected.items() if c > 0
    }
    final = reconcile(live.rows(), agents.values(), REGISTRY, pack, DAY)
    assert live.findings() == list(final.findings)
    assert sorted(findings.values(), key=lambda f: (f.rule, f.subject)) == sorted(
        final.findings, key=lambda f: (f.rule, f.subject)
    )


def test_a_change_that_touches_nothing_reports_nothing() -> None:
    rows = [row("plain-ae", H100, 5, power_w=3500)]
    live = LiveReconciliation(rows, [], REGISTRY, AIDR, DAY)
    assert not live.apply([], [])
    # One GPU in and the same GPU out: the rows end as they began, the findings too.
    gained = HoldingDelta("plain-ae", H100, None, 1, 700, DAY, 5)
    lost = HoldingDelta("plain-ae", H100, None, -1, -700, DAY, 6)
    before = live.findings()
    live.apply([gained, lost])
    assert [f.message for f in live.findings()] == [f.message for f in before]
    assert [(r.count, r.power_limit_w) for r in live.rows()] == [(5, 3500)]


def test_country_cap_merges_the_holder_it_did_not_judge_again() -> None:
    """Two holders without VEU status in AE: a change at one judges the cap over both, the
    other's part taken from what was kept."""
    world = registry(
        entity("one", hq="US"),
        entity("two", hq="US"),
        site("one-ae", "one", "AE"),
        site("two-ae", "two", "AE"),
        authorization("X1", "one", countries=("AE",)),
        authorization("X2", "two", countries=("AE",)),
    )
    cap = AIDR.country_cap_tpp("AE", DAY, arrangement=False)
    assert cap is not None
    half = cap // 15_832 // 2  # H100-SXM at 15,832 TPP
    live = LiveReconciliation(
        [row("one-ae", H100, half), row("two-ae", H100, half)], [], world, AIDR, DAY
    )
    assert not [f for f in live.findings() if f.rule == "country-cap-exceeded"]
    over = cap // 15_832 + 1 - 2 * half  # the fewest GPUs that take AE over its cap
    changes = live.apply([HoldingDelta("two-ae", H100, None, over, 0, DAY, 7)])
    (raised,) = [f for f in changes.raised if f.rule == "country-cap-exceeded"]
    total = (2 * half + over) * 15_832
    assert raised.subject == "country:AE"
    assert f"AE non-VEU holdings {total:,} TPP ({2 * half + over:,} x H100-SXM" in raised.message
    assert f"by {total - cap:,} TPP" in raised.message
    back = live.apply([HoldingDelta("two-ae", H100, None, -1, 0, DAY, 8)])
    assert back.cleared == (("country-cap-exceeded", "country:AE"),)
