"""What every reconciliation rule reads: the pack, the registry indexed by id, the date, the
lots and their attribution, and the questions asked of them (tier, applicability)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import date

from verifier.model import FindingDraft, Severity
from verifier.policy import PolicyPack
from verifier.reconcile.attribution import Piece
from verifier.reconcile.tally import Group, Lot
from verifier.registry_model import Authorization, Entity, Registry, Site, VeuStatus

#: Severity per rule (docs/design.md §14): a Tier 3 destination or holder is what the regime
#: exists to stop; caps and licences are the legal limits; shares, power and posture are
#: conditions whose breach needs review; an unknown model is already counted at the highest TPP.
SEVERITY = {
    "tier3-destination": Severity.CRITICAL,
    "tier3-headquarters": Severity.CRITICAL,
    "country-cap-exceeded": Severity.HIGH,
    "nveu-allocation-exceeded": Severity.HIGH,
    "licence-exceeded": Severity.HIGH,
    "licence-expired": Severity.HIGH,
    "unlicensed-gpu": Severity.HIGH,
    "safeguard-failed": Severity.HIGH,
    "uveu-tier2-share": Severity.MEDIUM,
    "uveu-tier1-share": Severity.MEDIUM,
    "uveu-us-share": Severity.MEDIUM,
    "power-implausible": Severity.MEDIUM,
    "unknown-gpu-model": Severity.LOW,
}

_KIND_NAMES = {VeuStatus.UVEU: "UVEU", VeuStatus.NVEU: "NVEU", VeuStatus.NONE: "non-VEU"}


@dataclass
class Context:
    pack: PolicyPack
    registry: Registry
    on: date
    lots: list[Lot] = field(default_factory=list)
    pieces: list[Piece] = field(default_factory=list)
    sites: dict[str, Site] = field(default_factory=dict)
    entities: dict[str, Entity] = field(default_factory=dict)
    authorizations: dict[str, Authorization] = field(default_factory=dict)
    held_by: dict[str, list[Authorization]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sites = {s.id: s for s in self.registry.sites}
        self.entities = {e.id: e for e in self.registry.entities}
        self.authorizations = {a.id: a for a in self.registry.authorizations}
        for auth in self.registry.authorizations:
            self.held_by.setdefault(auth.holder, []).append(auth)

    def scoped(self, lots: list[Lot]) -> Context:
        """This context over some lots only (one holder's), their attribution not yet made."""
        part = copy.copy(self)
        part.lots, part.pieces = lots, []
        return part

    def resolve(self, country: str) -> str:
        return self.pack.resolve_country(country, self.on)

    def tier(self, country: str) -> int:
        return self.pack.tier_of(country, self.on)

    def tier_text(self, country: str) -> str:
        """'AE, Tier 2' or 'HK (as CN), Tier 3'."""
        resolved = self.resolve(country)
        alias = f" (as {resolved})" if resolved != country else ""
        return f"{country}{alias}, Tier {self.tier(country)}"

    def applies(self, rule: str, entity: Entity | None) -> bool:
        """Whether the pack applies `rule` to this holder; a site not in the registry has no
        holder and is judged as a holder without VEU status (fail closed)."""
        kind = VeuStatus.NONE if entity is None else entity.veu
        return any(rule in h.rules for h in self.pack.holders if h.kind is kind)

    def safeguards(self, entity: Entity) -> tuple[str, ...]:
        return tuple(c for h in self.pack.holders if h.kind is entity.veu for c in h.safeguards)

    def licence_needed(self, lot: Lot) -> bool:
        """A licence is needed for the site's destination tier, or worldwide for a holder
        headquartered (or parented) in Tier 3; a site not in the registry always needs one."""
        if lot.site is None or lot.entity is None:
            return True
        if self.pack.licence_required(lot.site.country, self.on):
            return True
        return 3 in (self.tier(lot.entity.hq_country), self.tier(lot.entity.parent_hq_country))

    @staticmethod
    def kind_name(entity: Entity) -> str:
        return _KIND_NAMES[entity.veu]

    @staticmethod
    def finding(rule: str, subject: str, message: str, group: Group | None) -> FindingDraft:
        proof = () if group is None else group.proof()
        return FindingDraft(rule, SEVERITY[rule], subject, message, proof)


def held(group: Group) -> str:
    """'10 controlled GPUs, 158,320 TPP (10 x H100-SXM at 15,832)'."""
    return f"{group.units:,} controlled GPUs, {group.tpp:,} TPP ({group.arithmetic()})"
