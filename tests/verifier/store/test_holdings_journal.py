"""The holdings journal (migration 0008, docs/design.md §14): what incremental reconciliation
applies must bring it, after every kind of inventory change, to exactly what the current
holdings read counts; an unchanged heartbeat journals nothing; a revocation and a registry
import move the epoch; a judgment of an older log position is never stored over a newer one.
Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from tests.verifier.reconcile_world import AIDR, authorization, entity, registry, site
from tests.verifier.store.helpers import Chain, enroll
from tests.verifier.store.test_holdings import H200, gpu, h200
from verifier.model import FindingDraft, FindingStatus, GpuClaim, Severity
from verifier.reconcile.live import LiveReconciliation
from verifier.reconcile.model import HoldingRow
from verifier.store.api import Store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LOST_PLACEHOLDER = GpuClaim(uuid="unknown-gpu-index-1", lost=True)


def _counts(rows: list[HoldingRow]) -> list[tuple[object, ...]]:
    return sorted(
        (r.site_id, r.pci_device_id, r.pci_subsystem_id, r.count, r.power_limit_w)
        for r in rows
        if r.count
    )


def _current(store: Store) -> tuple[int, list[HoldingRow]]:
    with store.current_compliance() as state:
        list(state.postures)
        return state.position, list(state.holdings)


def test_the_journal_brings_live_holdings_to_the_current_read(store: Store) -> None:
    enroll(store, "a1", "site-a")
    enroll(store, "a2", "site-b")
    a1, a2 = Chain("a1"), Chain("a2")
    position, rows = _current(store)
    live = LiveReconciliation(rows, [], registry(), AIDR, T0.date())
    at = T0

    def send(chain: Chain, inventory: tuple[GpuClaim, ...], *, unreadable: bool = False) -> None:
        nonlocal position, at
        at += timedelta(minutes=1)
        item = chain.next(at, inventory=inventory)
        if unreadable:
            item = replace(item, inventory_read=False)
        (outcome,) = store.accept([item], at)
        assert not isinstance(outcome, Exception), outcome
        changes = store.compliance_changes(position)
        assert changes.floor <= position
        live.apply(changes.deltas, changes.postures)
        position = changes.position
        assert _counts(live.rows()) == _counts(_current(store)[1]), inventory

    steps: list[tuple[Chain, tuple[GpuClaim, ...], bool]] = [
        (a1, (gpu("GPU-1"), gpu("GPU-2"), h200("GPU-3")), False),  # first inventory
        (a2, (gpu("GPU-4"), gpu("GPU-5")), False),
        (a1, (gpu("GPU-1"), h200("GPU-3")), False),  # GPU-2 left
        (a1, (gpu("GPU-1", watts=350), h200("GPU-3")), False),  # a power limit changed
        (a1, (gpu("GPU-1", watts=350), LOST_PLACEHOLDER), False),  # GPU-3 fell off the bus
        (a2, (gpu("GPU-4"), gpu("GPU-5"), h200("GPU-3")), False),  # a2 reports it: released
        (a1, (), True),  # a1's driver is gone: what it held stays held
        (a1, (gpu("GPU-1", device=H200),), False),  # GPU-1 reads as another model now
    ]
    for chain, inventory, unreadable in steps:
        send(chain, inventory, unreadable=unreadable)

    # An unchanged heartbeat journals nothing: applying it costs one empty read.
    at += timedelta(minutes=1)
    (outcome,) = store.accept([a2.next(at, inventory=a2.inventory)], at)
    assert not isinstance(outcome, Exception)
    quiet = store.compliance_changes(position)
    assert (quiet.deltas, quiet.postures) == ((), ())
    assert quiet.position == position + 1


def test_a_revocation_and_a_registry_import_move_the_epoch(store: Store) -> None:
    enroll(store, "a1", "site-a")
    first = store.compliance_changes(0).epoch
    store.revoke_agent("a1", T0, "decommissioned")
    revoked = store.compliance_changes(0).epoch
    assert revoked > first
    store.import_registry(
        registry(
            entity("e1"), site("site-a", "e1", "DE"), authorization("X", "e1", countries=("DE",))
        ),
        T0,
    )
    assert store.compliance_changes(0).epoch > revoked


def test_an_older_judgment_is_not_stored_over_a_newer_one(store: Store) -> None:
    draft = FindingDraft("unlicensed-gpu", Severity.HIGH, "site:site-a", "newer", (5,))
    epoch = store.compliance_changes(0).epoch
    assert store.store_compliance_findings([draft], [], epoch=epoch, position=6, now=T0)
    older = replace(draft, message="older")
    assert not store.store_compliance_findings([older], [], epoch=epoch, position=5, now=T0)
    # Nor one of another epoch, whatever its position.
    assert not store.store_compliance_findings([older], [], epoch=epoch + 1, position=9, now=T0)
    (stored,) = [f for f in store.iter_findings() if f.rule == "unlicensed-gpu"]
    assert stored.message == "newer"
    # The same position may be written again (a full run after a live step at that position),
    # and a clearance records the evidence that cleared it.
    key = ("unlicensed-gpu", "site:site-a")
    assert store.store_compliance_findings([], [key], epoch=epoch, position=6, now=T0, cleared_by=6)
    (resolved,) = [f for f in store.iter_findings(include_resolved=True) if f.rule == key[0]]
    assert resolved.status is FindingStatus.RESOLVED


def test_journal_rows_are_pruned_after_a_day_and_readers_behind_start_again(
    store: Store,
) -> None:
    enroll(store, "a1", "site-a")
    chain = Chain("a1")
    (outcome,) = store.accept([chain.next(T0, inventory=(gpu("GPU-1"),))], T0)
    assert not isinstance(outcome, Exception)
    assert len(store.compliance_changes(0).deltas) == 1
    store.sweep(T0 + timedelta(hours=23), timedelta(hours=1))
    assert store.compliance_changes(0).floor == 0  # not a day old yet
    store.sweep(T0 + timedelta(days=1, seconds=1), timedelta(hours=1))
    behind = store.compliance_changes(0)
    assert behind.floor == outcome.log_index + 1 and behind.deltas == ()
