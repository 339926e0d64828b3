"""Fleet findings through the store: duplicate-gpu at accept time, the periodic sweep, and the
chain findings raised by recorded rejections; both backends."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from attest.errors import ForkError, GapError
from tests.verifier.store.helpers import T0, Chain, enroll, gpus, nonce
from verifier.model import (
    Accepted,
    AuditKind,
    AuditRecord,
    Finding,
    FindingDraft,
    FindingStatus,
    Severity,
)
from verifier.store.api import Store, StoreOptions

GRACE = timedelta(minutes=30)
DEADLINE = StoreOptions().attestation_deadline


def _sweep(store: Store, now: datetime) -> list[Finding]:
    """Sweep, then the open findings; the sweep's counts must agree with them."""
    counts = store.sweep(now, GRACE)
    found = list(store.iter_findings())
    assert counts == Counter(f.rule for f in found)
    return found


def _open(store: Store) -> dict[tuple[str, str], tuple[int, ...]]:
    return {(f.rule, f.subject): f.evidence for f in store.iter_findings()}


def test_duplicate_gpu_is_raised_by_the_accept_that_causes_it(store: Store) -> None:
    enroll(store, "a1")
    enroll(store, "a2")
    first = Chain("a1", inventory=gpus("GPU-1", "GPU-2"))
    second = Chain("a2", inventory=gpus("GPU-3"))
    store.accept([first.next(T0), second.next(T0)], T0)
    assert _open(store) == {}
    later = T0 + timedelta(seconds=30)
    [done] = store.accept([second.next(later, inventory=gpus("GPU-3", "GPU-2"))], later)
    assert isinstance(done, Accepted)
    assert _open(store) == {("duplicate-gpu", "gpu:GPU-2"): (0, 2)}
    [finding] = list(store.iter_findings())
    assert finding.severity is Severity.CRITICAL
    assert "a1" in finding.message
    assert "a2" in finding.message


def test_a_stale_claim_is_no_duplicate(store: Store) -> None:
    enroll(store, "a1")
    enroll(store, "a2")
    store.accept([Chain("a1", inventory=gpus("GPU-1")).next(T0)], T0)
    moved = T0 + DEADLINE + timedelta(seconds=1)
    store.accept([Chain("a2", inventory=gpus("GPU-1")).next(moved)], moved)
    assert _open(store) == {}


def test_sweep_raises_and_resolves_agent_stale(store: Store) -> None:
    enroll(store, "a1")
    chain = Chain("a1", inventory=gpus("GPU-1"))
    store.accept([chain.next(T0, nonce=nonce(store, chain.agent_id))], T0)
    assert _sweep(store, T0 + timedelta(minutes=1)) == []
    overdue = T0 + DEADLINE + timedelta(seconds=1)
    [stale] = _sweep(store, overdue)
    assert (stale.rule, stale.subject, stale.evidence) == ("agent-stale", "agent:a1", (0,))
    # Sweeping again changes nothing and keeps the original opening time.
    [again] = _sweep(store, overdue + timedelta(seconds=10))
    assert again.opened_at == stale.opened_at == overdue
    store.accept([chain.next(overdue, nonce=nonce(store, chain.agent_id, overdue))], overdue)
    assert _sweep(store, overdue + timedelta(seconds=20)) == []
    [resolved] = list(store.iter_findings(include_resolved=True))
    assert resolved.status is FindingStatus.RESOLVED
    assert resolved.resolved_at == overdue + timedelta(seconds=20)


def test_an_enrolled_agent_that_never_attests_goes_stale(store: Store) -> None:
    enroll(store, "a1")
    [stale] = _sweep(store, T0 + DEADLINE + timedelta(seconds=1))
    assert (stale.rule, stale.evidence) == ("agent-stale", ())


def test_revoked_agents_are_not_stale(store: Store) -> None:
    enroll(store, "a1")
    store.revoke_agent("a1", T0, "gone")
    assert _sweep(store, T0 + DEADLINE * 2) == []


def test_sweep_raises_gpu_missing_after_the_grace_period(store: Store) -> None:
    enroll(store, "a1")
    chain = Chain("a1", inventory=gpus("GPU-1", "GPU-2"))
    store.accept([chain.next(T0, nonce=nonce(store, chain.agent_id))], T0)
    t1 = T0 + timedelta(minutes=1)
    store.accept(
        [chain.next(t1, nonce=nonce(store, chain.agent_id, t1), inventory=gpus("GPU-1"))], t1
    )
    # Keep the agent fresh with unchanged heartbeats so only GPU-2 goes missing.
    t2 = T0 + GRACE + timedelta(minutes=1)
    store.accept([chain.next(t2, nonce=nonce(store, chain.agent_id, t2))], t2)
    found = {(f.rule, f.subject): f for f in _sweep(store, t2)}
    assert set(found) == {("gpu-missing", "gpu:GPU-2")}
    assert found["gpu-missing", "gpu:GPU-2"].evidence == (0,)
    # It comes back: resolved.
    t3 = t2 + timedelta(minutes=1)
    store.accept(
        [chain.next(t3, nonce=nonce(store, chain.agent_id, t3), inventory=gpus("GPU-1", "GPU-2"))],
        t3,
    )
    assert _sweep(store, t3) == []


def test_a_gpu_that_moved_to_another_agent_is_not_missing(store: Store) -> None:
    enroll(store, "a1")
    enroll(store, "a2")
    old, new = Chain("a1", inventory=gpus("GPU-1")), Chain("a2", inventory=gpus())
    store.accept([old.next(T0), new.next(T0)], T0)
    t1 = T0 + timedelta(minutes=1)
    store.accept([old.next(t1, inventory=gpus())], t1)
    t2 = T0 + DEADLINE * 2
    store.accept([new.next(t2, inventory=gpus("GPU-1"))], t2)
    found = _sweep(store, t2 + GRACE)
    assert ("gpu-missing", "gpu:GPU-1") not in {(f.rule, f.subject) for f in found}


def test_sweep_resolves_a_duplicate_once_one_claim_goes_stale(store: Store) -> None:
    enroll(store, "a1")
    enroll(store, "a2")
    store.accept(
        [
            Chain("a1", inventory=gpus("GPU-1")).next(T0),
            Chain("a2", inventory=gpus("GPU-1")).next(T0),
        ],
        T0,
    )
    assert ("duplicate-gpu", "gpu:GPU-1") in _open(store)
    swept = _sweep(store, T0 + timedelta(seconds=10))
    assert [f.rule for f in swept] == ["duplicate-gpu"]
    later = T0 + DEADLINE + timedelta(seconds=1)
    assert "duplicate-gpu" not in {f.rule for f in _sweep(store, later)}


def test_recorded_fork_and_gap_raise_findings_with_evidence(store: Store) -> None:
    enroll(store, "a1")
    chain = Chain("a1")
    store.accept([chain.next(T0), chain.next(T0)], T0)
    fork = AuditRecord(AuditKind.REJECTION, T0, "a1", ForkError.code, "fork", b"h" * 32, seq=1)
    gap = AuditRecord(AuditKind.REJECTION, T0, "a1", GapError.code, "gap", b"g" * 32, seq=7)
    store.record_rejection(fork)
    store.record_rejection(gap)
    assert _open(store) == {("evidence-fork", "agent:a1"): (0,), ("evidence-gap", "agent:a1"): (1,)}
    gap_finding = next(f for f in store.iter_findings() if f.rule == "evidence-gap")
    assert "2 to 7" in gap_finding.message
    # Each rejection is audited, and so is the opening of the finding it raised (kind finding).
    audit = [r for r in store.list_audit(limit=4) if r.kind is AuditKind.REJECTION]
    assert [(r.kind, r.code, r.seq) for r in audit] == [
        (AuditKind.REJECTION, GapError.code, 7),
        (AuditKind.REJECTION, ForkError.code, 1),
    ]
    # A rejection naming no known agent is audited only.
    store.record_rejection(AuditRecord(AuditKind.REJECTION, T0, "ghost", GapError.code, "x"))
    assert len(list(store.iter_findings())) == 2


def test_upsert_is_idempotent_and_reopens_resolved(store: Store) -> None:
    draft = FindingDraft("evidence-gap", Severity.HIGH, "agent:x", "m", (3,))
    store.upsert_findings([draft], T0)
    store.upsert_findings([draft], T0 + timedelta(1))
    [one] = list(store.iter_findings())
    assert (one.opened_at, one.updated_at) == (T0, T0)
    store.resolve_findings([("evidence-gap", "agent:x")], T0 + timedelta(2))
    assert list(store.iter_findings()) == []
    store.upsert_findings([draft], T0 + timedelta(3))
    [reopened] = list(store.iter_findings())
    assert reopened.opened_at == T0 + timedelta(3)
    assert reopened.resolved_at is None
    assert len(list(store.iter_findings(include_resolved=True))) == 1
