"""Reconciliation against the store: which pack is in force, the fleet judged today or at a past
date, and the compliance findings kept in step with it (docs/design.md §14).

Both `gpu-attest-verifier reconcile` and `serve` (which keeps the findings in step with every
accepted attestation, `LiveCompliance`) go through here, so the stored findings follow one
rule: only today's reconciliation under the pack in force changes them, and a judgment derived
at an earlier log position never overwrites a later one.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime

from attest.errors import PolicyNotFoundError
from verifier.model import FindingDraft, FindingStatus
from verifier.policy import COMPLIANCE_RULES, builtin_packs, find_pack, pack_in_force
from verifier.policy.model import PolicyPack
from verifier.reconcile import reconcile
from verifier.reconcile.live import FindingChanges, LiveReconciliation
from verifier.reconcile.model import ComplianceChanges, Reconciliation
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


def _stale(store: Store, raised: Iterable[FindingDraft]) -> list[tuple[str, str]]:
    """Open compliance findings not raised again (the other rules' are the pipeline's and the
    sweep's)."""
    keys = {(d.rule, d.subject) for d in raised}
    compliance = frozenset(COMPLIANCE_RULES)
    return [
        (f.rule, f.subject)
        for f in store.iter_findings()
        if f.rule in compliance
        and f.status is not FindingStatus.RESOLVED
        and (f.rule, f.subject) not in keys
    ]


def reconcile_today(
    store: Store, pack: PolicyPack, now: datetime
) -> tuple[Reconciliation, list[tuple[str, str]] | None]:
    """Today's full reconciliation under the pack in force, from one snapshot, with the
    findings stored: open or refresh what was raised, resolve what was not. Returns the result
    and the findings resolved (None: a newer judgment was stored meanwhile, by a live
    reconciliation further on; this one was not stored). Raises StoreError."""
    today = now.date()
    with store.current_compliance() as state:
        result = reconcile(state.holdings, state.postures, state.registry, pack, today)
    stale = _stale(store, result.findings)
    stored = store.store_compliance_findings(
        result.findings, stale, epoch=state.epoch, position=state.position, now=now
    )
    return result, stale if stored else None


def _latest(changes: ComplianceChanges) -> int | None:
    """The log index of the newest change: the evidence that cleared what was cleared."""
    indices = [d.log_index for d in changes.deltas]
    indices += [p.evidence[-1] for p in changes.postures if p.evidence]
    return max(indices, default=None)


class LiveCompliance:
    """Today's compliance findings in step with every accepted attestation (docs/design.md
    §14): the first step reconciles in full and keeps the judgment; each later step applies
    the holdings journal from the log position it stands at, judges again only the holders
    and agents it touches, and stores only the findings that changed. A step with nothing new
    reads one indexed range and writes nothing. It starts again in full on a new day, when
    the compliance epoch moved (a revocation, a registry import), or when its findings could
    not be stored. Not thread-safe: one caller steps it."""

    def __init__(self, store: Store, configured: str) -> None:
        self._store = store
        self._configured = configured
        self._live: LiveReconciliation | None = None
        self._epoch = 0
        self._position = 0
        self._pack = ""

    @property
    def pack_id(self) -> str:
        return self._pack

    def step(self, now: datetime) -> FindingChanges | None:
        """Bring the stored findings up to `now`; returns what changed (None: it reconciled
        in full). Raises StoreError, PolicyNotFoundError / PolicyError, or
        PolicyNotFoundError when no pack is in force today."""
        live = self._live
        if live is None or live.on != now.date():
            self._rebase(now)
            return None
        changes = self._store.compliance_changes(self._position)
        if changes.epoch != self._epoch or changes.floor > self._position:
            self._rebase(now)
            return None
        self._position = changes.position
        if not changes.deltas and not changes.postures:
            return FindingChanges()
        found = live.apply(changes.deltas, changes.postures)
        if not found:
            return found
        # The judgment moved on in memory: unless its findings are stored, start again in full
        # next step, or what this step raised or cleared would never reach the store.
        self._live = None
        if self._store.store_compliance_findings(
            found.raised,
            found.cleared,
            epoch=self._epoch,
            position=changes.position,
            now=now,
            cleared_by=_latest(changes),
        ):
            self._live = live
        return found

    def _rebase(self, now: datetime) -> None:
        self._live = None
        today = now.date()
        pack = pack_configured(self._configured, today)
        if pack is None:
            raise PolicyNotFoundError(f"no policy pack in force on {today}")
        with self._store.current_compliance() as state:
            live = LiveReconciliation(state.holdings, state.postures, state.registry, pack, today)
        raised = live.findings()
        stored = self._store.store_compliance_findings(
            raised,
            _stale(self._store, raised),
            epoch=state.epoch,
            position=state.position,
            now=now,
        )
        if stored:
            self._live, self._epoch, self._position = live, state.epoch, state.position
            self._pack = pack.id
