"""Reconciliation against the store: which pack is in force, the fleet judged today or at a past
date, and the compliance findings kept in step with it (docs/design.md §14).

Both `gpu-attest-verifier reconcile` and `serve` (which reconciles by itself after accepted
evidence, at most once per `fleet.reconcile_interval_s`) go through here, so the stored findings
follow one rule: only today's reconciliation under the pack in force changes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime

from attest.errors import PolicyNotFoundError
from verifier.model import FindingDraft, FindingStatus
from verifier.policy import COMPLIANCE_RULES, builtin_packs, find_pack, pack_in_force
from verifier.policy.model import PolicyPack
from verifier.reconcile import reconcile
from verifier.reconcile.model import Reconciliation
from verifier.registry_model import Registry
from verifier.store.api import Store


def pack_configured(configured: str, on: date) -> PolicyPack | None:
    """The pack in force: the config's `policy` (a built-in id or a pack file; raises
    PolicyNotFoundError / PolicyError when it cannot be had), else the built-in pack in force
    on `on`, or None when none is."""
    if configured:
        return find_pack(configured)
    try:
        return pack_in_force(builtin_packs(), on)
    except PolicyNotFoundError:
        return None


def judge(
    store: Store,
    registry: Registry,
    pack: PolicyPack,
    on: date,
    *,
    current: bool,
    postures: bool = True,
) -> Reconciliation:
    """The fleet judged on `on`: today from the holdings the accept path keeps current, a past
    date from the presence history as of the end of that day; both are sites x models rows,
    never one per GPU."""
    at = None if current else on
    return reconcile(
        store.holdings(at),
        store.postures(at) if postures else iter(()),
        registry,
        pack,
        on,
    )


def store_findings(
    store: Store, drafts: Iterable[FindingDraft], now: datetime
) -> list[tuple[str, str]]:
    """Open or refresh what was raised; resolve the open compliance findings not raised again
    (findings of the other rules are the pipeline's and the sweep's). Returns the resolved."""
    raised = list(drafts)
    keys = {(d.rule, d.subject) for d in raised}
    compliance = frozenset(COMPLIANCE_RULES)
    stale = [
        (f.rule, f.subject)
        for f in store.iter_findings()
        if f.rule in compliance
        and f.status is not FindingStatus.RESOLVED
        and (f.rule, f.subject) not in keys
    ]
    store.upsert_findings(raised, now)
    if stale:
        store.resolve_findings(stale, now)
    return stale


def reconcile_and_store(store: Store, pack: PolicyPack, now: datetime) -> Reconciliation:
    """Today's reconciliation under the pack in force, with the findings stored (what `serve`
    runs after accepted evidence). Raises StoreError when the store fails."""
    today = now.date()
    result = judge(store, store.load_registry(today), pack, today, current=True)
    store_findings(store, result.findings, now)
    return result
