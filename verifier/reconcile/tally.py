"""Accumulators and number formatting for reconciliation: a `Lot` is the GPUs of one model at
one site, a `Group` sums lots with a per-model breakdown so a message can show its arithmetic.
Everything is integer; a share is shown from its exact `Fraction`, rounded for display only."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from fractions import Fraction
from typing import Final

from verifier.reconcile.model import Totals
from verifier.registry_model import Entity, Site

#: At most this many log indices back one finding: enough to find the evidence, bounded.
MAX_EVIDENCE: Final = 16

#: The model name of GPUs whose PCI ids the catalogue does not know.
UNKNOWN_MODEL: Final = "unknown"


@dataclass(slots=True)
class Lot:
    """The GPUs of one model at one site (rows of several PCI identities may merge into it)."""

    site_id: str
    site: Site | None  # None: the site is not in the registry
    entity: Entity | None
    model: str
    unit_tpp: int
    controlled: bool
    count: int = 0
    power_limit_w: int = 0
    first_received: date = date.max
    evidence: set[int] = field(default_factory=set)


@dataclass(slots=True)
class Group:
    """Controlled GPUs summed over lots (or parts of lots), by model."""

    units: int = 0
    tpp: int = 0
    models: dict[str, tuple[int, int]] = field(default_factory=dict)  # model -> (units, unit tpp)
    evidence: set[int] = field(default_factory=set)

    def add(self, lot: Lot, units: int) -> None:
        if units <= 0:
            return
        self.units += units
        self.tpp += units * lot.unit_tpp
        held, _ = self.models.get(lot.model, (0, lot.unit_tpp))
        self.models[lot.model] = (held + units, lot.unit_tpp)
        self.evidence.update(lot.evidence)

    def merge(self, other: Group) -> None:
        """Add another group's GPUs (of other lots) to this one."""
        self.units += other.units
        self.tpp += other.tpp
        for model, (units, tpp) in other.models.items():
            held, _ = self.models.get(model, (0, tpp))
            self.models[model] = (held + units, tpp)
        self.evidence.update(other.evidence)

    def arithmetic(self) -> str:
        """'51,020 x H100-SXM at 15,832 + 3 x A100 at 4,992', largest unit TPP first."""
        parts = sorted(self.models.items(), key=lambda kv: (-kv[1][1], kv[0]))
        return " + ".join(f"{n(units)} x {model} at {n(tpp)}" for model, (units, tpp) in parts)

    def proof(self) -> tuple[int, ...]:
        return tuple(sorted(self.evidence)[:MAX_EVIDENCE])


@dataclass(slots=True)
class Tally:
    """All GPUs and the controlled ones, for the totals."""

    units: int = 0
    tpp: int = 0
    controlled_units: int = 0
    controlled_tpp: int = 0

    def add(self, lot: Lot) -> None:
        self.units += lot.count
        self.tpp += lot.count * lot.unit_tpp
        if lot.controlled:
            self.controlled_units += lot.count
            self.controlled_tpp += lot.count * lot.unit_tpp

    def frozen(self) -> Totals:
        return Totals(self.units, self.tpp, self.controlled_units, self.controlled_tpp)


def n(value: int) -> str:
    """An integer with thousands separators, as a licence officer reads it."""
    return f"{value:,}"


def percent(share: Fraction) -> str:
    """A share as a percentage with two decimals, rounded half to even, for display only."""
    hundredths = round(share * 10000)
    return f"{hundredths // 100}.{hundredths % 100:02d}%"


def share_text(part: int, whole: int) -> str:
    """'8,000 / 100,000 TPP = 8.00%'."""
    return f"{n(part)} / {n(whole)} TPP = {percent(Fraction(part, whole))}"
