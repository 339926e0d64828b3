"""Fleet states through the store, both backends: a GPU fallen off the bus is `lost` and raises
gpu-lost (never gpu-missing) until reported again; a revoked agent's findings resolve with the
reason recorded; gpu-missing grouped by host."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

from tests.verifier.store.helpers import H100, T0, Chain, enroll, gpus, nonce
from verifier.model import FindingStatus, GpuClaim
from verifier.store.api import Store, StoreOptions

GRACE = timedelta(minutes=30)
DEADLINE = StoreOptions().attestation_deadline
LOST_PLACEHOLDER = GpuClaim(uuid="unknown-gpu-index-1", lost=True)


def _sighting(store: Store, uuid: str, agent: str = "a1") -> tuple[bool, bool]:
    [s] = [s for s in store.gpu_sightings(uuid) if s.agent_id == agent]
    return s.present, s.lost


def _open(store: Store) -> dict[tuple[str, str], FindingStatus]:
    return {(f.rule, f.subject): f.status for f in store.iter_findings()}


def test_a_gpu_that_fell_off_the_bus_is_lost_until_reported_again(store: Store) -> None:
    enroll(store, "a1")
    chain = Chain("a1", inventory=gpus("GPU-1", "GPU-2"))
    store.accept([chain.next(T0, nonce=nonce(store, "a1"))], T0)  # log 0
    t1 = T0 + timedelta(seconds=30)
    fell = (gpus("GPU-1")[0], LOST_PLACEHOLDER)
    store.accept([chain.next(t1, nonce=nonce(store, "a1", t1), inventory=fell)], t1)  # log 1
    assert _sighting(store, "GPU-2") == (False, True)
    assert store.gpu_sightings("unknown-gpu-index-1") == []  # a placeholder is no identity
    # Long after the grace period: gpu-lost, never gpu-missing, while the agent keeps reporting.
    later = t1 + GRACE + timedelta(minutes=1)
    store.accept([chain.next(later, nonce=nonce(store, "a1", later))], later)  # log 2
    store.sweep(later, GRACE)
    assert _open(store) == {("gpu-lost", "gpu:GPU-2"): FindingStatus.OPEN}
    [lost] = list(store.iter_findings())
    assert lost.evidence == (1,) and "fell off the bus" in lost.message
    back = later + timedelta(seconds=10)
    store.accept(
        [chain.next(back, nonce=nonce(store, "a1", back), inventory=gpus("GPU-1", "GPU-2"))], back
    )
    assert _sighting(store, "GPU-2") == (True, False)
    store.sweep(back, GRACE)
    assert _open(store) == {}
    [done] = list(store.iter_findings(include_resolved=True))
    assert (done.id, done.cleared_by, done.resolved_reason) == (lost.id, 3, "condition cleared")


def test_a_lost_gpu_that_kept_its_uuid_is_lost_and_still_present(store: Store) -> None:
    enroll(store, "a1")
    claim = GpuClaim(
        uuid="GPU-9", pci_device_id=H100, serial="1650", board_part_number="699-2G", lost=True
    )
    store.accept([Chain("a1", inventory=(claim,)).next(T0, nonce=nonce(store, "a1"))], T0)
    [s] = store.gpu_sightings("GPU-9")
    assert (s.present, s.lost, s.serial, s.board_part_number) == (True, True, "1650", "699-2G")
    store.sweep(T0 + timedelta(seconds=1), GRACE)
    assert _open(store) == {("gpu-lost", "gpu:GPU-9"): FindingStatus.OPEN}


def test_revoking_an_agent_resolves_its_findings_with_the_reason(store: Store) -> None:
    enroll(store, "a1")
    enroll(store, "a2")
    a1, a2 = Chain("a1", inventory=gpus("GPU-1", "GPU-2")), Chain("a2", inventory=gpus("GPU-1"))
    store.accept([a1.next(T0, nonce=nonce(store, "a1")), a2.next(T0, nonce=nonce(store, "a2"))], T0)
    overdue = T0 + DEADLINE + timedelta(seconds=1)
    store.accept([a2.next(overdue, nonce=nonce(store, "a2", overdue))], overdue)
    store.sweep(overdue, GRACE)
    assert set(_open(store)) == {("agent-stale", "agent:a1")}
    # a2 is fresh; GPU-1 is claimed by both, but a1's claim is stale: no duplicate yet.
    late = T0 + GRACE + timedelta(minutes=1)
    store.sweep(late, GRACE)
    assert ("gpu-missing", "gpu:GPU-2") in _open(store)
    store.revoke_agent("a1", late, "decommissioned")
    assert not any(s.endswith(("a1", "GPU-2")) for _, s in _open(store))
    resolved = [
        f for f in store.iter_findings(include_resolved=True) if f.status is FindingStatus.RESOLVED
    ]
    by_revocation = {f.subject for f in resolved if f.resolved_reason == "agent revoked"}
    assert by_revocation == {"agent:a1", "gpu:GPU-2"}
    # The duplicate of GPU-1 (both claimed it fresh at T0) had cleared before, by itself.
    assert {(f.rule, f.resolved_reason) for f in resolved if f.subject == "gpu:GPU-1"} == {
        ("duplicate-gpu", "condition cleared")
    }
    # The sweep does not raise them again: the revoked agent's GPUs left the holdings.
    store.sweep(late + timedelta(minutes=1), GRACE)
    assert not any(s.endswith(("a1", "GPU-2")) for _, s in _open(store))


def test_gpu_missing_grouped_by_host(store: Store) -> None:
    for agent in ("a1", "a2"):
        enroll(store, agent)
    a1 = Chain("a1", inventory=gpus(*(f"GPU-{i}" for i in range(5))))
    a2 = Chain("a2", inventory=gpus("GPU-9"))
    store.accept([a1.next(T0), a2.next(T0)], T0)
    t1 = T0 + timedelta(seconds=10)
    store.accept([a1.next(t1, inventory=()), a2.next(t1, inventory=())], t1)
    store.sweep(t1 + GRACE + timedelta(hours=1), GRACE)
    groups = store.missing_by_host(first=3)
    assert [(g.agent_id, g.hostname, g.count) for g in groups] == [
        ("a1", "host-a1", 5),
        ("a2", "host-a2", 1),
    ]
    assert [u for _, u in groups[0].first] == ["GPU-0", "GPU-1", "GPU-2"]
    ids = {f.subject: f.id for f in store.iter_findings()}
    assert groups[1].first == ((ids["gpu:GPU-9"], "GPU-9"),)


def _held(store: Store, at: date | None = None) -> int:
    return sum(row.count for row in store.holdings(at))


def test_a_lost_gpu_stays_counted_in_the_holdings(store: Store) -> None:
    enroll(store, "a1")
    chain = Chain("a1", inventory=gpus("GPU-1", "GPU-2"))
    store.accept([chain.next(T0)], T0)
    t1 = T0 + timedelta(seconds=30)
    store.accept([chain.next(t1, inventory=(gpus("GPU-1")[0], LOST_PLACEHOLDER))], t1)
    assert (_held(store), _held(store, T0.date())) == (2, 2)  # lost: still held
    t2 = t1 + timedelta(seconds=30)
    store.accept([chain.next(t2, inventory=(gpus("GPU-1")[0], LOST_PLACEHOLDER))], t2)
    assert (_held(store), _held(store, T0.date())) == (2, 2)
    t3 = t2 + timedelta(seconds=30)
    store.accept([chain.next(t3, inventory=gpus("GPU-1", "GPU-2"))], t3)  # back: one interval
    assert (_held(store), _held(store, T0.date())) == (2, 2)
    t4 = t3 + timedelta(seconds=30)
    store.accept([chain.next(t4, inventory=gpus("GPU-1"))], t4)  # removed, not lost
    assert (_held(store), _held(store, T0.date())) == (1, 1)
    store.revoke_agent("a1", t4, "gone")
    assert _held(store) == 0


def test_a_gpu_that_turns_lost_under_its_own_uuid_is_seen_at_once(store: Store) -> None:
    """Nothing else about the GPU changes: the lost flag alone is an inventory change."""
    enroll(store, "a1")
    ok = GpuClaim(uuid="GPU-7", pci_device_id=H100, serial="1651")
    chain = Chain("a1", inventory=(ok,))
    store.accept([chain.next(T0)], T0)
    assert _sighting(store, "GPU-7") == (True, False)
    t1 = T0 + timedelta(seconds=30)
    store.accept([chain.next(t1, inventory=(replace(ok, lost=True),))], t1)
    assert _sighting(store, "GPU-7") == (True, True)
    assert _held(store) == 1


def test_a_gpu_lost_under_its_own_uuid_then_unlisted_stays_lost_and_held(store: Store) -> None:
    """NVML first reports the GPU LOST under its UUID; after a driver reload it is not listed at
    all. It is still held and lost (not gone), now and --at alike, until reported again."""
    enroll(store, "a1")
    ok, other = GpuClaim(uuid="GPU-7", pci_device_id=H100), GpuClaim("GPU-8", pci_device_id=H100)
    chain = Chain("a1", inventory=(ok, other))
    store.accept([chain.next(T0)], T0)
    t1 = T0 + timedelta(seconds=30)
    store.accept([chain.next(t1, inventory=(replace(ok, lost=True), other))], t1)
    t2 = t1 + timedelta(seconds=30)
    store.accept([chain.next(t2, inventory=(other,))], t2)
    assert _sighting(store, "GPU-7") == (False, True)
    assert (_held(store), _held(store, t2.date())) == (2, 2)


def test_a_lost_gpu_reported_by_another_host_is_that_hosts_alone(store: Store) -> None:
    """A repaired board installed in another host: held there, no longer by the host that lost
    it, so it is not counted at both sites; gpu-lost resolves at the next sweep."""
    enroll(store, "a1", "site-a")
    enroll(store, "b1", "site-b")
    a1 = Chain("a1", inventory=gpus("GPU-1", "GPU-2"))
    store.accept([a1.next(T0)], T0)
    t1 = T0 + timedelta(seconds=30)
    store.accept([a1.next(t1, inventory=(gpus("GPU-1")[0], LOST_PLACEHOLDER))], t1)
    store.sweep(t1 + GRACE * 2, GRACE)
    assert ("gpu-lost", "gpu:GPU-2") in _open(store)
    t2 = t1 + timedelta(days=1)
    b1 = Chain("b1", inventory=gpus("GPU-2"))
    store.accept([b1.next(t2)], t2)
    t3 = t2 + timedelta(seconds=30)
    store.accept([a1.next(t3, inventory=gpus("GPU-1"))], t3)
    assert sorted((r.site_id, r.count) for r in store.holdings()) == [("site-a", 1), ("site-b", 1)]
    assert _held(store, t3.date()) == 2
    assert _held(store, t1.date()) == 2  # the day it was lost it was still a1's
    assert _sighting(store, "GPU-2", "a1") == (False, False)
    store.sweep(t3, GRACE)
    assert ("gpu-lost", "gpu:GPU-2") not in _open(store)


def test_gpus_out_of_sight_of_an_unreadable_inventory_stay_held_as_lost(store: Store) -> None:
    """An agent without a working driver attests an inventory it could not read (no GPUs
    listed). Its GPUs did not leave: they stay held and counted, as lost (gpu-lost), until
    reported again; unloading the driver must not take them out of the holdings."""
    enroll(store, "a1")
    chain = Chain("a1", inventory=gpus("GPU-1", "GPU-2"))
    store.accept([chain.next(T0)], T0)
    t1 = T0 + timedelta(seconds=30)
    blind = replace(chain.next(t1, inventory=()), inventory_read=False)
    store.accept([blind], t1)
    assert (_sighting(store, "GPU-1"), _sighting(store, "GPU-2")) == ((False, True),) * 2
    assert (_held(store), _held(store, t1.date())) == (2, 2)
    store.sweep(t1 + GRACE * 2, GRACE)
    assert {("gpu-lost", "gpu:GPU-1"), ("gpu-lost", "gpu:GPU-2")} <= set(_open(store))
    t2 = t1 + GRACE * 3
    store.accept([chain.next(t2, inventory=gpus("GPU-1", "GPU-2"))], t2)
    assert _sighting(store, "GPU-1") == (True, False)
    store.sweep(t2, GRACE)
    assert not any(rule == "gpu-lost" for rule, _ in _open(store))
