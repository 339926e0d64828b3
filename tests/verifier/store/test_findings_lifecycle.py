"""The findings lifecycle through the store, both backends: open -> acknowledged -> resolved,
stable ids, the evidence that cleared a finding, audit of every transition, and a recurrence
opening a new episode (docs/design.md §5)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from attest.errors import FindingResolvedError, FindingUnknownError
from tests.verifier.store.helpers import T0, Chain, enroll, gpus, nonce
from verifier.model import AuditKind, Finding, FindingDraft, FindingStatus, Severity
from verifier.store.api import Store, StoreOptions

GAP = FindingDraft("evidence-gap", Severity.HIGH, "agent:x", "m", (3,))
DEADLINE = StoreOptions().attestation_deadline


def _all(store: Store) -> list[Finding]:
    return list(store.iter_findings(include_resolved=True))


def _transitions(store: Store) -> list[str]:
    return [r.code for r in reversed(store.list_audit(limit=50)) if r.kind is AuditKind.FINDING]


def test_ids_are_stable_and_reraising_never_duplicates(store: Store) -> None:
    other = FindingDraft("evidence-gap", Severity.HIGH, "agent:y", "m", (4,))
    store.upsert_findings([GAP, other], T0)
    first, second = _all(store)
    assert first.id != second.id and min(first.id, second.id) >= 1
    # Re-running the rule (same or changed message) keeps the one row and its id.
    changed = FindingDraft("evidence-gap", Severity.HIGH, "agent:x", "m2", (3, 5))
    store.upsert_findings([GAP, changed], T0 + timedelta(seconds=1))
    again = {f.subject: f for f in _all(store)}
    assert len(again) == 2
    assert (again["agent:x"].id, again["agent:x"].message) == (first.id, "m2")
    assert again["agent:x"].opened_at == T0
    assert _transitions(store) == ["opened", "opened"]


def test_ack_then_reraise_stays_acknowledged_then_resolves(store: Store) -> None:
    store.upsert_findings([GAP], T0)
    [opened] = _all(store)
    assert opened.status is FindingStatus.OPEN and opened.acknowledged_at is None
    acked = store.acknowledge_finding(opened.id, "alice", "known outage", T0 + timedelta(1))
    assert acked.status is FindingStatus.ACKNOWLEDGED
    assert (acked.acknowledged_by, acked.ack_reason) == ("alice", "known outage")
    assert acked.acknowledged_at == T0 + timedelta(1)
    # Acknowledging again is idempotent: the first acknowledgment stands.
    twice = store.acknowledge_finding(opened.id, "bob", "other", T0 + timedelta(2))
    assert (twice.acknowledged_by, twice.acknowledged_at) == ("alice", T0 + timedelta(1))
    # The condition still holds: raising it again keeps it acknowledged, one row, same id.
    store.upsert_findings([GAP], T0 + timedelta(3))
    [still] = _all(store)
    assert (still.id, still.status) == (opened.id, FindingStatus.ACKNOWLEDGED)
    # An acknowledged finding is still an active one: listed without --all.
    assert [f.id for f in store.iter_findings()] == [opened.id]
    store.resolve_findings([("evidence-gap", "agent:x")], T0 + timedelta(4), cleared_by=9)
    [resolved] = _all(store)
    assert resolved.status is FindingStatus.RESOLVED
    assert (resolved.cleared_by, resolved.resolved_reason) == (9, "condition cleared")
    assert resolved.resolved_at == T0 + timedelta(4)
    assert list(store.iter_findings()) == []
    with pytest.raises(FindingResolvedError):
        store.acknowledge_finding(opened.id, "alice", "late", T0 + timedelta(5))
    assert _transitions(store) == [
        "opened",
        "acknowledged by alice: known outage",
        "resolved (condition cleared, log 9)",
    ]


def test_a_recurrence_opens_a_new_episode(store: Store) -> None:
    store.upsert_findings([GAP], T0)
    [first] = _all(store)
    store.acknowledge_finding(first.id, "alice", "r", T0)
    store.resolve_findings([("evidence-gap", "agent:x")], T0 + timedelta(1), reason="gone")
    store.upsert_findings([GAP], T0 + timedelta(2))
    [again] = _all(store)
    assert again.id > first.id
    assert again.status is FindingStatus.OPEN and again.acknowledged_at is None
    assert (again.opened_at, again.resolved_at, again.cleared_by) == (T0 + timedelta(2), None, None)
    assert store.get_finding(first.id) is None
    with pytest.raises(FindingUnknownError):
        store.acknowledge_finding(first.id, "alice", "r", T0 + timedelta(3))
    assert _transitions(store)[-2:] == ["resolved (gone)", "opened"]


def test_unknown_id_is_refused(store: Store) -> None:
    with pytest.raises(FindingUnknownError, match="no finding with id 42"):
        store.acknowledge_finding(42, "alice", "r", T0)


def test_sweep_records_the_evidence_that_cleared_agent_stale(store: Store) -> None:
    enroll(store, "a1")
    chain = Chain("a1", inventory=gpus("GPU-1"))
    store.accept([chain.next(T0, nonce=nonce(store, "a1"))], T0)  # log index 0
    overdue = T0 + DEADLINE + timedelta(seconds=1)
    store.sweep(overdue, timedelta(hours=1))
    [stale] = list(store.iter_findings())
    store.acknowledge_finding(stale.id, "ops", "host rebooting", overdue)
    store.sweep(overdue + timedelta(seconds=1), timedelta(hours=1))
    assert [f.status for f in store.iter_findings()] == [FindingStatus.ACKNOWLEDGED]
    back = overdue + timedelta(seconds=2)
    store.accept([chain.next(back, nonce=nonce(store, "a1", back))], back)  # log index 1
    store.sweep(back, timedelta(hours=1))
    [done] = _all(store)
    assert (done.id, done.status, done.cleared_by) == (stale.id, FindingStatus.RESOLVED, 1)
