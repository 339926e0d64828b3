"""Incremental reconciliation (docs/design.md §14): today's findings kept in step with the
accepted evidence one change at a time, without judging the whole fleet again.

A full `reconcile` is judged holder by holder (`engine.judge_holder`); every rule but two is
decided within one holder. `LiveReconciliation` keeps each holder's judgment and, for a change
at one site, judges again only that site's holder, the country caps that holder contributes to
(merging the other holders' kept contributions) and the safeguards of the agents whose posture
changed. The cost of a change is the size of one holder (its sites x models), never of the
fleet; applying nothing costs nothing. After any sequence of changes the findings equal those
of a full `reconcile` over the same rows: `tests/verifier/test_reconcile_live.py` checks it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date

from verifier.model import FindingDraft
from verifier.policy import PolicyPack
from verifier.reconcile import rules
from verifier.reconcile.context import Context
from verifier.reconcile.engine import (
    PartKey,
    by_part,
    judge_caps,
    judge_holder,
    ordered,
    part_of,
)
from verifier.reconcile.model import HoldingDelta, HoldingRow, PostureRow
from verifier.registry_model import Registry

#: A holding row's identity: site, PCI device id, PCI subsystem id.
RowKey = tuple[str, int | None, int | None]
#: A finding's identity in the store: (rule, subject).
FindingKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class FindingChanges:
    """What a change did to the findings: raised or refreshed (new, or a different message or
    evidence), and cleared (no longer raised)."""

    raised: tuple[FindingDraft, ...] = ()
    cleared: tuple[FindingKey, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.raised or self.cleared)


def _key(row: HoldingRow | HoldingDelta) -> RowKey:
    return (row.site_id, row.pci_device_id, row.pci_subsystem_id)


def _by_key(findings: Iterable[FindingDraft]) -> dict[FindingKey, FindingDraft]:
    return {(f.rule, f.subject): f for f in findings}


class LiveReconciliation:
    """Today's compliance findings over holding rows that change by `HoldingDelta`s and
    postures that change by `PostureRow`s; judged against one registry and pack on one date
    (a new day, registry or pack needs a new instance)."""

    def __init__(
        self,
        holdings: Iterable[HoldingRow],
        postures: Iterable[PostureRow],
        registry: Registry,
        pack: PolicyPack,
        on: date,
    ) -> None:
        self.on = on
        self._ctx = Context(pack, registry, on)
        self._rows: dict[RowKey, HoldingRow] = {}
        self._parts: dict[PartKey, set[RowKey]] = {}
        for row in holdings:
            if row.count > 0:
                self._put(row)
        self._judged = {
            part: judge_holder(self._ctx, rows)
            for part, rows in by_part(self._ctx, self._rows.values()).items()
        }
        self._contributors: dict[str, set[PartKey]] = {}
        for part, judged in self._judged.items():
            for country in judged.caps:
                self._contributors.setdefault(country, set()).add(part)
        self._caps = _by_key(judge_caps(self._ctx, self._judged.values(), self._contributors))
        self._safeguards = _by_key(rules.safeguard_failed(self._ctx, postures))

    # --- what it holds ------------------------------------------------------------------------

    def rows(self) -> list[HoldingRow]:
        """The holding rows as they stand, by site and PCI identity."""
        return [self._rows[k] for k in sorted(self._rows, key=_sortable)]

    def findings(self) -> list[FindingDraft]:
        """Every finding as it stands, in `reconcile`'s order."""
        held = (f for judged in self._judged.values() for f in judged.findings)
        return ordered([*held, *self._caps.values(), *self._safeguards.values()])

    # --- changes -------------------------------------------------------------------------------

    def apply(
        self, deltas: Iterable[HoldingDelta], postures: Iterable[PostureRow] = ()
    ) -> FindingChanges:
        """Apply holding changes (in log order) and postures (the latest per agent wins); judge
        again only what they touch. Returns the findings raised, refreshed and cleared."""
        dirty: set[PartKey] = set()
        for delta in deltas:
            self._shift(delta)
            dirty.add(part_of(self._ctx, delta.site_id))
        before: list[FindingDraft] = []
        after: list[FindingDraft] = []
        countries: set[str] = set()
        for part in dirty:
            old = self._judged.pop(part, None)
            keys = self._parts.get(part, set())
            new = judge_holder(self._ctx, (self._rows[k] for k in keys)) if keys else None
            touched: set[str] = set()
            for judged, out in ((old, before), (new, after)):
                if judged is not None:
                    out.extend(judged.findings)
                    touched.update(judged.caps)
            if new is not None:
                self._judged[part] = new
            for country in touched:
                holders = self._contributors.setdefault(country, set())
                if new is not None and country in new.caps:
                    holders.add(part)
                else:
                    holders.discard(part)
            countries |= touched
        for country in countries:
            old_cap = self._caps.pop(("country-cap-exceeded", f"country:{country}"), None)
            if old_cap is not None:
                before.append(old_cap)
        holders = {p for c in countries for p in self._contributors.get(c, ())}
        new_caps = judge_caps(self._ctx, (self._judged[p] for p in holders), countries)
        self._caps.update(_by_key(new_caps))
        after.extend(new_caps)
        latest = {row.agent_id: row for row in postures}
        for agent_id, row in latest.items():
            old_safeguard = self._safeguards.pop(("safeguard-failed", f"agent:{agent_id}"), None)
            if old_safeguard is not None:
                before.append(old_safeguard)
            mine = rules.safeguard_failed(self._ctx, [row])
            self._safeguards.update(_by_key(mine))
            after.extend(mine)
        return _difference(_by_key(before), _by_key(after))

    def _put(self, row: HoldingRow) -> None:
        key = _key(row)
        self._rows[key] = row
        self._parts.setdefault(part_of(self._ctx, row.site_id), set()).add(key)

    def _shift(self, delta: HoldingDelta) -> None:
        key = _key(delta)
        old = self._rows.get(key)
        if old is None:
            old = HoldingRow(*key, count=0, power_limit_w=0, first_received=date.max)
        count = old.count + delta.count
        if count <= 0:
            self._rows.pop(key, None)
            part = self._parts.get(part_of(self._ctx, delta.site_id))
            if part is not None:
                part.discard(key)
            return
        first = min(old.first_received, delta.received) if delta.count > 0 else old.first_received
        self._put(
            replace(
                old,
                count=count,
                power_limit_w=old.power_limit_w + delta.power_limit_w,
                first_received=first,
                # The oldest evidence kept and the newest change, as the store's rows carry.
                evidence=tuple(sorted({*old.evidence[:1], delta.log_index})),
            )
        )


def _difference(
    before: dict[FindingKey, FindingDraft], after: dict[FindingKey, FindingDraft]
) -> FindingChanges:
    raised = tuple(f for k, f in sorted(after.items()) if before.get(k) != f)
    cleared = tuple(sorted(k for k in before if k not in after))
    return FindingChanges(raised, cleared)


def _sortable(key: RowKey) -> tuple[str, int, int]:
    site, device, subsystem = key
    return (site, -1 if device is None else device, -1 if subsystem is None else subsystem)


__all__ = ["FindingChanges", "LiveReconciliation"]
