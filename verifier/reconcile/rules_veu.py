"""The validated-end-user rules (docs/design.md §5, §14): a UVEU's shares of its compute by
tier and country, and an NVEU's cumulative allocation. Shares are exact `Fraction`s of
controlled TPP: exactly 7% in one Tier 2 country is allowed, exactly 75% in Tier 1 and exactly
50% in the US hold; only the message rounds the percentage."""

from __future__ import annotations

from fractions import Fraction

from verifier.model import FindingDraft
from verifier.policy.model import UveuShares
from verifier.reconcile.context import Context, held
from verifier.reconcile.tally import Group, n, percent, share_text
from verifier.registry_model import Entity, VeuStatus


def _by_entity_country(ctx: Context, kind: VeuStatus) -> dict[str, dict[str, Group]]:
    """Controlled holdings of each entity of `kind`, by resolved country."""
    out: dict[str, dict[str, Group]] = {}
    for lot in ctx.lots:
        e, site = lot.entity, lot.site
        if lot.controlled and e is not None and site is not None and e.veu is kind:
            countries = out.setdefault(e.id, {})
            countries.setdefault(ctx.resolve(site.country), Group()).add(lot, lot.count)
    return out


def _total(groups: dict[str, Group]) -> Group:
    total = Group()
    for g in groups.values():
        total.merge(g)
    return total


def _tier2(
    ctx: Context, shares: UveuShares, e: Entity, countries: dict[str, Group], whole: int
) -> list[FindingDraft]:
    limit = shares.tier2_country_max_share
    out = []
    for country, g in sorted(countries.items()):
        if ctx.tier(country) != 2 or Fraction(g.tpp, whole) <= limit:
            continue
        message = (
            f"UVEU {e.id} holds {share_text(g.tpp, whole)} of its controlled TPP in {country} "
            f"(Tier 2), above the {percent(limit)} allowed in one Tier 2 country ({held(g)})"
        )
        out.append(ctx.finding("uveu-tier2-share", f"entity:{e.id}@{country}", message, g))
    return out


def _tier1(
    ctx: Context, shares: UveuShares, e: Entity, countries: dict[str, Group], whole: int
) -> list[FindingDraft]:
    minimum = shares.tier1_min_share
    tier1 = _total({c: g for c, g in countries.items() if ctx.tier(c) == 1})
    if Fraction(tier1.tpp, whole) >= minimum:
        return []
    message = (
        f"UVEU {e.id} holds {share_text(tier1.tpp, whole)} of its controlled TPP in Tier 1, "
        f"below the {percent(minimum)} required"
    )
    return [ctx.finding("uveu-tier1-share", f"entity:{e.id}@tier1", message, _total(countries))]


def _us(
    ctx: Context, shares: UveuShares, e: Entity, countries: dict[str, Group], whole: int
) -> list[FindingDraft]:
    minimum = shares.us_min_share_if_us_hq
    if e.hq_country != "US":
        return []
    us = countries.get("US", Group()).tpp
    if Fraction(us, whole) >= minimum:
        return []
    message = (
        f"US-headquartered UVEU {e.id} holds {share_text(us, whole)} of its controlled TPP in "
        f"the US, below the {percent(minimum)} required"
    )
    return [ctx.finding("uveu-us-share", f"entity:{e.id}@US", message, _total(countries))]


def uveu_shares(ctx: Context) -> list[FindingDraft]:
    shares = ctx.pack.uveu
    if shares is None:
        return []
    out = []
    for entity_id, countries in sorted(_by_entity_country(ctx, VeuStatus.UVEU).items()):
        e = ctx.entities[entity_id]
        whole = sum(g.tpp for g in countries.values())
        if whole <= 0:
            continue
        if ctx.applies("uveu-tier2-share", e):
            out.extend(_tier2(ctx, shares, e, countries, whole))
        if ctx.applies("uveu-tier1-share", e):
            out.extend(_tier1(ctx, shares, e, countries, whole))
        if ctx.applies("uveu-us-share", e):
            out.extend(_us(ctx, shares, e, countries, whole))
    return out


def nveu_allocation(ctx: Context) -> list[FindingDraft]:
    """An NVEU's controlled holdings in each country that needs a licence, against the pack's
    cumulative allocation on the date (Tier 1 holdings need no allocation)."""
    allocation = ctx.pack.nveu_allocation_tpp(ctx.on)
    if allocation is None:
        return []
    out = []
    for entity_id, countries in sorted(_by_entity_country(ctx, VeuStatus.NVEU).items()):
        e = ctx.entities[entity_id]
        if not ctx.applies("nveu-allocation-exceeded", e):
            continue
        for country, g in sorted(countries.items()):
            if not ctx.pack.licence_required(country, ctx.on) or g.tpp <= allocation:
                continue
            message = (
                f"NVEU {e.id} holds {n(g.tpp)} TPP ({g.arithmetic()}) in {country}, above its "
                f"cumulative allocation {n(allocation)} TPP on {ctx.on} by {n(g.tpp - allocation)}"
            )
            out.append(
                ctx.finding("nveu-allocation-exceeded", f"entity:{e.id}@{country}", message, g)
            )
    return out
