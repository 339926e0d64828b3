"""`site-claim-mismatch`, raised and resolved by the accept transaction on both backends: a host
whose own site claim differs from its token's site stays counted at the token's site."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from tests.verifier.store.helpers import T0, Chain, enroll, gpus
from verifier.findings import SITE_CLAIM_MISMATCH
from verifier.model import Accepted, FindingStatus
from verifier.store.api import Store


def _claims(store: Store) -> list[tuple[str, FindingStatus, tuple[int, ...], str]]:
    return [
        (f.subject, f.status, f.evidence, f.message)
        for f in store.iter_findings(include_resolved=True)
        if f.rule == SITE_CLAIM_MISMATCH
    ]


def test_a_claim_other_than_the_token_site_raises_and_clears(store: Store) -> None:
    enroll(store, "a1", site="fra")
    chain = Chain("a1", inventory=gpus("g1"))
    [first] = store.accept([replace(chain.next(T0), site_claim="fra")], T0)
    assert isinstance(first, Accepted) and _claims(store) == []
    later = T0 + timedelta(minutes=1)
    [moved] = store.accept([replace(chain.next(later), site_claim="iad")], later)
    assert isinstance(moved, Accepted)
    message = (
        "agent a1 claims site 'iad' but enrolled at site 'fra' (its token's site), "
        "where it is counted"
    )
    assert _claims(store) == [("agent:a1", FindingStatus.OPEN, (moved.log_index,), message)]
    # Still counted at the token's site.
    [host] = list(store.iter_fleet("fra"))
    assert host.agent.site_id == "fra" and list(store.iter_fleet("iad")) == []
    back = later + timedelta(minutes=1)
    [cleared] = store.accept([replace(chain.next(back), site_claim="fra")], back)
    assert isinstance(cleared, Accepted)
    [(subject, status, _, _)] = _claims(store)
    assert (subject, status) == ("agent:a1", FindingStatus.RESOLVED)
    [finding] = [f for f in store.iter_findings(include_resolved=True) if f.subject == subject]
    assert finding.cleared_by == cleared.log_index  # the evidence that cleared it


def test_revoking_the_agent_resolves_its_site_claim_finding(store: Store) -> None:
    enroll(store, "a1", site="fra")
    [moved] = store.accept([replace(Chain("a1").next(T0), site_claim="iad")], T0)
    assert isinstance(moved, Accepted)
    store.revoke_agent("a1", T0 + timedelta(minutes=1), "decommissioned")
    [finding] = [
        f for f in store.iter_findings(include_resolved=True) if f.rule == SITE_CLAIM_MISMATCH
    ]
    assert (finding.status, finding.resolved_reason) == (FindingStatus.RESOLVED, "agent revoked")


def test_the_latest_claim_in_a_batch_decides(store: Store) -> None:
    enroll(store, "a1", site="fra")
    enroll(store, "a2", site="fra")
    c1, c2 = Chain("a1"), Chain("a2")
    items = [
        replace(c1.next(T0), site_claim="iad"),
        replace(c1.next(T0 + timedelta(seconds=1)), site_claim="fra"),
        replace(c2.next(T0), site_claim="fra"),
        replace(c2.next(T0 + timedelta(seconds=1)), site_claim="sin"),
    ]
    outcomes = store.accept(items, T0 + timedelta(seconds=2))
    assert all(isinstance(o, Accepted) for o in outcomes)
    assert [(s, st) for s, st, _, _ in _claims(store)] == [("agent:a2", FindingStatus.OPEN)]
