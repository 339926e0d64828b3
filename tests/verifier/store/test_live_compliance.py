"""`LiveCompliance` (verifier/compliance.py) on a real store: findings follow each accepted
attestation with a step that judges only what changed, a step with nothing new writes nothing,
a revocation or a registry import makes it start again in full, and of two replicas sharing a
store the one further behind never overwrites the other's findings. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.verifier.reconcile_world import authorization, entity, registry, site
from tests.verifier.store.helpers import Chain, enroll
from tests.verifier.store.test_holdings import gpu
from verifier.compliance import LiveCompliance, reconcile_today
from verifier.model import Finding, FindingStatus
from verifier.policy import builtin_packs, pack_in_force
from verifier.store.api import Store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _open(store: Store, rule: str) -> list[Finding]:
    return [f for f in store.iter_findings() if f.rule == rule and f.status is FindingStatus.OPEN]


def _send(store: Store, chain: Chain, at: datetime, count: int) -> int:
    inventory = tuple(gpu(f"GPU-{chain.agent_id}-{i}") for i in range(count))
    (outcome,) = store.accept([chain.next(at, inventory=inventory)], at)
    assert not isinstance(outcome, Exception), outcome
    return outcome.log_index


def test_findings_follow_each_attestation(store: Store) -> None:
    enroll(store, "a1", "nowhere")  # a site in no registry: unlicensed-gpu, fail closed
    chain = Chain("a1")
    live = LiveCompliance(store, "")
    assert live.step(T0) is None  # the first step reconciles in full
    assert _open(store, "unlicensed-gpu") == []

    index = _send(store, chain, T0 + timedelta(minutes=1), 3)
    changed = live.step(T0 + timedelta(minutes=1))
    assert changed is not None and [f.subject for f in changed.raised] == ["site:nowhere"]
    (finding,) = _open(store, "unlicensed-gpu")
    assert "3 controlled GPUs" in finding.message and index in finding.evidence

    _send(store, chain, T0 + timedelta(minutes=2), 5)
    live.step(T0 + timedelta(minutes=2))
    (grown,) = _open(store, "unlicensed-gpu")
    assert grown.id == finding.id and "5 controlled GPUs" in grown.message

    # A heartbeat that changes nothing: an empty step, nothing written.
    (outcome,) = store.accept([chain.next(T0 + timedelta(minutes=3))], T0 + timedelta(minutes=3))
    assert not isinstance(outcome, Exception)
    quiet = live.step(T0 + timedelta(minutes=3))
    assert quiet is not None and not quiet
    assert _open(store, "unlicensed-gpu") == [grown]

    # Every GPU leaves: the finding resolves, with the evidence that cleared it.
    gone = _send(store, chain, T0 + timedelta(minutes=4), 0)
    changed = live.step(T0 + timedelta(minutes=4))
    assert changed is not None and changed.cleared == (("unlicensed-gpu", "site:nowhere"),)
    resolved = store.get_finding(finding.id)
    assert resolved is not None and resolved.status is FindingStatus.RESOLVED
    assert resolved.cleared_by == gone


def test_a_registry_import_or_a_revocation_starts_it_again_in_full(store: Store) -> None:
    enroll(store, "a1", "site-a")
    _send(store, Chain("a1"), T0, 2)
    live = LiveCompliance(store, "")
    live.step(T0)
    assert [f.subject for f in _open(store, "unlicensed-gpu")] == ["site:site-a"]
    # The site is registered and licensed now: a full run under the new registry clears it.
    store.import_registry(
        registry(
            entity("e1", hq="US"),
            site("site-a", "e1", "AE"),
            authorization("X1", "e1", countries=("AE",)),
        ),
        T0,
    )
    assert live.step(T0 + timedelta(seconds=1)) is None
    assert _open(store, "unlicensed-gpu") == []
    store.import_registry(registry(entity("e1", hq="US"), site("site-a", "e1", "AE")), T0)
    live.step(T0 + timedelta(seconds=2))
    assert [f.subject for f in _open(store, "unlicensed-gpu")] == ["site:site-a"]
    store.revoke_agent("a1", T0, "decommissioned")
    assert live.step(T0 + timedelta(seconds=3)) is None
    assert _open(store, "unlicensed-gpu") == []


def test_replicas_sharing_a_store_converge_and_never_go_back(store: Store) -> None:
    enroll(store, "a1", "nowhere")
    chain = Chain("a1")
    ahead, behind = LiveCompliance(store, ""), LiveCompliance(store, "")
    ahead.step(T0)
    behind.step(T0)
    _send(store, chain, T0 + timedelta(minutes=1), 2)
    behind.step(T0 + timedelta(minutes=1))
    _send(store, chain, T0 + timedelta(minutes=2), 4)  # accepted by the other replica
    ahead.step(T0 + timedelta(minutes=2))
    (finding,) = _open(store, "unlicensed-gpu")
    assert "4 controlled GPUs" in finding.message
    # `behind` reads the journal from where it stands, this replica's change and the other's:
    # it reaches the same judgment, never the older one it last stored.
    behind.step(T0 + timedelta(minutes=3))
    assert "4 controlled GPUs" in _open(store, "unlicensed-gpu")[0].message
    # A full `reconcile` of an older snapshot would be refused the same way; one of now is not.
    pack = pack_in_force(builtin_packs(), T0.date())
    _, resolved = reconcile_today(store, pack, T0 + timedelta(minutes=3))
    assert resolved == []
