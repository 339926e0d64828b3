"""A site that reports only through `ingest` is judged against its own registry deadline
(`offline_deadline`) instead of going `agent-stale` after every ingest (issue 13, item 6), on
both backends."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.verifier.store.helpers import T0, Chain, enroll
from verifier.findings import AGENT_STALE
from verifier.model import Accepted, FindingStatus
from verifier.registry_model import Entity, Registry, Site, VeuStatus
from verifier.store.api import Store

GRACE = timedelta(days=30)  # gpu-missing plays no part here
ACME = Entity("acme", "Acme", "US", "US", VeuStatus.NONE)
AIR = Site("air", "acme", "DE", 50.1, 8.7, offline_deadline=timedelta(days=7))
FRA = Site("fra", "acme", "DE", 50.1, 8.7)
#: Both agents enroll at T0 and ingest one offline envelope created at T0 + 1h. The store's
#: attestation deadline is 5 minutes (StoreOptions), so fra's agent (no offline deadline, no
#: nonce-fresh evidence) is due at T0 + 5m; air's is due at T0 + 1h + 7d.
AIR_DUE = T0 + timedelta(hours=1) + timedelta(days=7)


def _stale(store: Store) -> dict[str, FindingStatus]:
    return {
        f.subject: f.status
        for f in store.iter_findings(include_resolved=True)
        if f.rule == AGENT_STALE
    }


def _setup(store: Store) -> tuple[Chain, Chain]:
    store.import_registry(Registry(entities=(ACME,), sites=(AIR, FRA)), T0)
    enroll(store, "air-1", site="air", now=T0)
    enroll(store, "fra-1", site="fra", now=T0)
    chains = Chain("air-1"), Chain("fra-1")
    at = T0 + timedelta(hours=1)
    for chain in chains:
        [outcome] = store.accept([chain.next(at)], at)  # no nonce: offline evidence
        assert isinstance(outcome, Accepted)
    return chains


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (T0 + timedelta(minutes=5) - timedelta(microseconds=1), {}),
        (T0 + timedelta(minutes=5), {"agent:fra-1": FindingStatus.OPEN}),
        (AIR_DUE - timedelta(microseconds=1), {"agent:fra-1": FindingStatus.OPEN}),
        (AIR_DUE, {"agent:fra-1": FindingStatus.OPEN, "agent:air-1": FindingStatus.OPEN}),
    ],
)
def test_an_offline_site_is_judged_against_its_own_deadline(
    store: Store, now: datetime, expected: dict[str, FindingStatus]
) -> None:
    _setup(store)
    store.sweep(now, GRACE)
    assert _stale(store) == expected


def test_the_next_ingest_clears_it_and_dropping_the_deadline_restores_the_fleet_one(
    store: Store,
) -> None:
    air, _ = _setup(store)
    store.sweep(AIR_DUE, GRACE)
    assert _stale(store)["agent:air-1"] is FindingStatus.OPEN
    later = AIR_DUE + timedelta(hours=1)
    [outcome] = store.accept([air.next(later)], later)
    assert isinstance(outcome, Accepted)
    store.sweep(later, GRACE)
    assert _stale(store)["agent:air-1"] is FindingStatus.RESOLVED
    message = next(f.message for f in store.iter_findings(True) if f.subject == "agent:air-1")
    assert "longer ago than its site's offline deadline 7d" in message
    # Without the site's deadline the agent is judged like any other: stale since T0 + 5m.
    store.import_registry(Registry(entities=(ACME,), sites=(FRA,)), later)
    store.sweep(later, GRACE)
    assert _stale(store)["agent:air-1"] is FindingStatus.OPEN
