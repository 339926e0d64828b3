"""`reconcile`: holdings, postures, the registry and a policy pack in; findings and totals out
(docs/design.md §14). Pure: no I/O, no clock; memory O(sites x models + authorizations)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from types import MappingProxyType
from typing import TypeVar

from verifier.model import FindingDraft
from verifier.policy import COMPLIANCE_RULES, PolicyPack, UnknownModel, classify
from verifier.policy.catalogue import Eccn
from verifier.reconcile import rules, rules_veu
from verifier.reconcile.attribution import Piece, attribute, state_on, tpp_limit
from verifier.reconcile.context import Context
from verifier.reconcile.model import (
    AuthorizationUsage,
    CountryTotals,
    HoldingRow,
    PostureRow,
    Reconciliation,
    Totals,
)
from verifier.reconcile.tally import UNKNOWN_MODEL, Group, Lot, Tally, n
from verifier.registry_model import Registry

T = TypeVar("T")

_CONTROLLED = (Eccn.A, Eccn.B)


@dataclass(slots=True)
class _Unknown:
    """GPUs at one site whose PCI device id the catalogue does not know."""

    site_id: str
    device: int | None
    count: int = 0
    subsystems: set[int | None] = field(default_factory=set)
    evidence: set[int] = field(default_factory=set)


def _lots(
    rows: Iterable[HoldingRow], ctx: Context
) -> tuple[list[Lot], dict[tuple[str, int | None], _Unknown]]:
    lots: dict[tuple[str, str], Lot] = {}
    unknown: dict[tuple[str, int | None], _Unknown] = {}
    for row in rows:
        if row.count <= 0:
            continue  # nothing held; a negative count is not a holding either
        model = classify(row.pci_device_id, row.pci_subsystem_id, ctx.pack.catalogue)
        if isinstance(model, UnknownModel):
            name, unit_tpp, controlled = UNKNOWN_MODEL, model.assumed_tpp, True
        else:
            name, unit_tpp, controlled = model.model, model.dense_tpp, model.eccn in _CONTROLLED
        lot = lots.get((row.site_id, name))
        if lot is None:
            site = ctx.sites.get(row.site_id)
            entity = None if site is None else ctx.entities.get(site.entity)
            lot = Lot(row.site_id, site, entity, name, unit_tpp, controlled)
            lots[(row.site_id, name)] = lot
        lot.count += row.count
        lot.power_limit_w += max(0, row.power_limit_w)
        lot.first_received = min(lot.first_received, row.first_received)
        lot.evidence.update(row.evidence)
        if isinstance(model, UnknownModel):
            u = unknown.setdefault(
                (row.site_id, row.pci_device_id), _Unknown(row.site_id, row.pci_device_id)
            )
            u.count += row.count
            u.subsystems.add(row.pci_subsystem_id)
            u.evidence.update(row.evidence)
    return list(lots.values()), unknown


def _hex(value: int | None) -> str:
    return "unreadable" if value is None else f"0x{value:08x}"


def _unknown_models(
    ctx: Context, unknown: Mapping[tuple[str, int | None], _Unknown]
) -> list[FindingDraft]:
    out = []
    for u in sorted(
        unknown.values(), key=lambda u: (u.site_id, -1 if u.device is None else u.device)
    ):
        site = ctx.sites.get(u.site_id)
        entity = None if site is None else ctx.entities.get(site.entity)
        if site is not None and not ctx.applies("unknown-gpu-model", entity):
            continue
        subsystems = ", ".join(sorted(_hex(s) for s in u.subsystems))
        unit = ctx.pack.catalogue.max_tpp
        message = (
            f"site {u.site_id}: {n(u.count)} GPUs with PCI device id {_hex(u.device)} "
            f"(subsystem {subsystems}) not in the catalogue of {ctx.pack.id}; counted at its "
            f"highest TPP, {n(u.count)} x {n(unit)} = {n(u.count * unit)} TPP"
        )
        subject = f"model:{_hex(u.device)}@{u.site_id}"
        proof = Group()
        proof.evidence = u.evidence
        out.append(ctx.finding("unknown-gpu-model", subject, message, proof))
    return out


def _frozen(tallies: Mapping[str, Tally]) -> Mapping[str, Totals]:
    return MappingProxyType({k: tallies[k].frozen() for k in sorted(tallies)})


def _totals(
    ctx: Context,
) -> tuple[Totals, dict[str, Mapping[str, Totals]], Mapping[str, CountryTotals]]:
    total = Tally()
    by: dict[str, dict[str, Tally]] = {"site": {}, "country": {}, "entity": {}, "model": {}}
    tiers: dict[str, int | None] = {}
    for lot in ctx.lots:
        country = "?" if lot.site is None else lot.site.country
        entity = "?" if lot.site is None else lot.site.entity
        tiers[country] = None if lot.site is None else ctx.tier(country)
        total.add(lot)
        for axis, key in (
            ("site", lot.site_id),
            ("country", country),
            ("entity", entity),
            ("model", lot.model),
        ):
            by[axis].setdefault(key, Tally()).add(lot)
    frozen = {axis: _frozen(tallies) for axis, tallies in by.items()}
    countries = MappingProxyType(
        {c: CountryTotals(c, tiers[c], t) for c, t in frozen["country"].items()}
    )
    return total.frozen(), frozen, countries


def _usage(ctx: Context) -> tuple[AuthorizationUsage, ...]:
    used: dict[str, tuple[int, int]] = {}
    for piece in ctx.pieces:
        if piece.auth is not None:
            units, tpp = used.get(piece.auth.id, (0, 0))
            used[piece.auth.id] = (units + piece.units, tpp + piece.units * piece.lot.unit_tpp)
    return tuple(
        AuthorizationUsage(
            a.id,
            a.holder,
            a.kind.value,
            state_on(a, ctx.on),
            *used.get(a.id, (0, 0)),
            a.max_units,
            tpp_limit(a),
        )
        for a in sorted(ctx.registry.authorizations, key=lambda a: a.id)
    )


#: One holder's share of the fleet: ("entity", id), or ("site", id) for a site not in the
#: registry (it has no holder). Every rule but the country cap and the safeguards is decided
#: within one holder: attribution uses only the holder's authorizations, shares and
#: allocations are the holder's, and a site belongs to one holder.
PartKey = tuple[str, str]


def part_of(ctx: Context, site_id: str) -> PartKey:
    site = ctx.sites.get(site_id)
    return ("site", site_id) if site is None else ("entity", site.entity)


@dataclass(slots=True)
class Judged:
    """One holder's findings, its attribution, and what it adds to each country's cap."""

    findings: list[FindingDraft]
    pieces: list[Piece]
    caps: dict[str, Group]


def judge_holder(ctx: Context, rows: Iterable[HoldingRow]) -> Judged:
    """Every rule decided within one holder, over the holding rows of its sites."""
    lots, unknown = _lots(rows, ctx)
    part = ctx.scoped(lots)
    entity = next((lot.entity for lot in lots if lot.entity is not None), None)
    held = [] if entity is None else ctx.held_by.get(entity.id, [])
    part.pieces = attribute(lots, held, ctx.on, ctx.resolve)
    findings = [
        *rules.tier3_destination(part),
        *rules.tier3_headquarters(part),
        *rules_veu.uveu_shares(part),
        *rules_veu.nveu_allocation(part),
        *rules.licence_exceeded(part),
        *rules.licence_expired(part),
        *rules.unlicensed_gpu(part),
        *rules.power_implausible(part),
        *_unknown_models(part, unknown),
    ]
    return Judged(findings, part.pieces, rules.cap_groups(part))


def judge_caps(
    ctx: Context, parts: Iterable[Judged], countries: Iterable[str]
) -> list[FindingDraft]:
    """`country-cap-exceeded` for `countries`, over the holders' merged cap groups."""
    wanted = set(countries)
    merged: dict[str, Group] = {}
    for judged in parts:
        for country, g in judged.caps.items():
            if country in wanted:
                merged.setdefault(country, Group()).merge(g)
    found = (rules.country_cap(ctx, c, g) for c, g in sorted(merged.items()))
    return [f for f in found if f is not None]


def by_part(ctx: Context, rows: Iterable[HoldingRow]) -> dict[PartKey, list[HoldingRow]]:
    out: dict[PartKey, list[HoldingRow]] = {}
    for row in rows:
        out.setdefault(part_of(ctx, row.site_id), []).append(row)
    return out


def ordered(findings: Iterable[FindingDraft]) -> list[FindingDraft]:
    """Findings by rule (docs/design.md §5 order), then subject."""
    order = {rule: i for i, rule in enumerate(COMPLIANCE_RULES)}
    return sorted(findings, key=lambda f: (order[f.rule], f.subject))


def reconcile(
    holdings: Iterable[HoldingRow],
    postures: Iterable[PostureRow],
    registry: Registry,
    pack: PolicyPack,
    on: date,
) -> Reconciliation:
    """Every rule of docs/design.md §5 that inventory can decide, judged on `on` (holdings as
    of the end of that day) against `pack`; findings ordered by rule (§5 order) and subject.
    Judged holder by holder, as `verifier.reconcile.live` does for one holder at a time."""
    ctx = Context(pack, registry, on)
    rows = list(holdings)
    parts = [judge_holder(ctx, part) for _, part in sorted(by_part(ctx, rows).items())]
    ctx.lots, _ = _lots(rows, ctx)
    ctx.pieces = [piece for judged in parts for piece in judged.pieces]
    countries = {c for judged in parts for c in judged.caps}
    findings = ordered(
        [
            *(f for judged in parts for f in judged.findings),
            *judge_caps(ctx, parts, countries),
            *rules.safeguard_failed(ctx, postures),
        ]
    )
    total, by, country_totals = _totals(ctx)
    return Reconciliation(
        on=on,
        pack_id=pack.id,
        findings=tuple(findings),
        total=total,
        by_site=by["site"],
        by_country=country_totals,
        by_entity=by["entity"],
        by_model=by["model"],
        authorizations=_usage(ctx),
    )
