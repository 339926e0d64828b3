"""Properties of the reconciliation engine (verifier/reconcile/) over arbitrary holdings on a
fixed registry: it never raises, totals are exactly the sum of count x classified TPP, the
result does not depend on the order rows arrive in, and (rule, subject) never repeats."""

from __future__ import annotations

from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.verifier.reconcile_world import (
    AIDR,
    BASELINE,
    arrangement,
    authorization,
    entity,
    registry,
    site,
)
from verifier.policy import COMPLIANCE_RULES, PolicyPack, UnknownModel, classify
from verifier.reconcile import HoldingRow, PostureRow, reconcile

REGISTRY = registry(
    entity("plain", hq="AE"),
    entity("hyper", hq="US", veu="uveu"),
    entity("nat", hq="SA", veu="nveu"),
    entity("red", hq="HK", parent="CN"),
    site("plain-ae", "plain", "AE", power_kw="0.5"),
    site("plain-de", "plain", "DE"),
    site("hyper-us", "hyper", "US", power_kw="12000"),
    site("hyper-ae", "hyper", "AE"),
    site("hyper-hk", "hyper", "HK"),
    site("nat-sa", "nat", "SA"),
    site("red-mo", "red", "MO"),
    authorization("A1", "plain", sites=("plain-ae",), max_units=10, valid_until="2025-12-31"),
    authorization("A2", "plain", countries=("AE",), max_tpp=1_000_000.5),
    authorization("L1", "plain", countries=("AE", "DE"), kind="lpp", max_units=0),
    authorization("U1", "hyper", countries=("AE", "US"), kind="uveu"),
    authorization("N1", "nat", countries=("SA",), kind="nveu", valid_from="2026-01-01"),
    arrangement("AE", "2025-06-01"),
)
SITES = [s.id for s in REGISTRY.sites] + ["ghost"]
DEVICES = [e.pci_device_id for e in AIDR.catalogue.entries] + [0x999910DE, None]

rows = st.builds(
    HoldingRow,
    site_id=st.sampled_from(SITES),
    pci_device_id=st.sampled_from(DEVICES),
    pci_subsystem_id=st.sampled_from([None, 0x16C110DE, 0x18BF10DE, 0]),
    count=st.integers(0, 200_000),
    power_limit_w=st.integers(0, 10**9),
    first_received=st.dates(date(2024, 1, 1), date(2030, 1, 1)),
    evidence=st.lists(st.integers(0, 10**6), max_size=3).map(tuple),
)
postures = st.builds(
    PostureRow,
    site_id=st.sampled_from(SITES),
    agent_id=st.text("abc123-", min_size=1, max_size=8),
    checks=st.dictionaries(
        st.sampled_from(["secure-boot", "kernel-lockdown", "firewall-ruleset", "other"]),
        st.sampled_from(["pass", "fail", "unknown", ""]),
    ),
    evidence=st.lists(st.integers(0, 10**6), max_size=2).map(tuple),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(rows, max_size=30),
    st.lists(postures, max_size=5),
    st.sampled_from([AIDR, BASELINE]),
    st.dates(date(2024, 1, 1), date(2030, 1, 1)),
    st.data(),
)
def test_reconcile_totals_are_exact_and_order_free(
    holding: list[HoldingRow],
    agents: list[PostureRow],
    pack: PolicyPack,
    on: date,
    data: st.DataObject,
) -> None:
    result = reconcile(holding, agents, REGISTRY, pack, on)
    expected = sum(r.count * _tpp(r.pci_device_id, r.pci_subsystem_id, pack) for r in holding)
    assert result.total.tpp == expected
    assert result.total.units == sum(r.count for r in holding)
    assert sum(t.tpp for t in result.by_site.values()) == expected
    assert sum(t.totals.tpp for t in result.by_country.values()) == expected
    assert sum(t.tpp for t in result.by_model.values()) == expected
    assert {f.rule for f in result.findings} <= set(COMPLIANCE_RULES)
    identities = [(f.rule, f.subject) for f in result.findings]
    assert len(identities) == len(set(identities))
    shuffled = data.draw(st.permutations(holding))
    reordered = data.draw(st.permutations(agents))
    assert reconcile(shuffled, reordered, REGISTRY, pack, on) == result


def _tpp(device: int | None, subsystem: int | None, pack: PolicyPack) -> int:
    model = classify(device, subsystem, pack.catalogue)
    return model.assumed_tpp if isinstance(model, UnknownModel) else model.dense_tpp
