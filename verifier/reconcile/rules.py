"""The reconciliation rules of destinations, caps, licences, power, posture and the catalogue
(docs/design.md §5, §14), each a pure function of the `Context` returning findings."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from fractions import Fraction

from verifier.model import FindingDraft
from verifier.reconcile.attribution import tpp_limit
from verifier.reconcile.context import Context, held
from verifier.reconcile.model import PostureRow
from verifier.reconcile.tally import Group, n
from verifier.registry_model import AuthorizationKind, VeuStatus


def tier3_destination(ctx: Context) -> list[FindingDraft]:
    groups: dict[str, Group] = {}
    for lot in ctx.lots:
        site = lot.site
        if site is None or not lot.controlled or ctx.tier(site.country) != 3:
            continue
        if ctx.applies("tier3-destination", lot.entity):
            groups.setdefault(lot.site_id, Group()).add(lot, lot.count)
    return [
        ctx.finding(
            "tier3-destination",
            f"site:{site_id}",
            f"site {site_id} ({ctx.tier_text(ctx.sites[site_id].country)}) holds {held(g)}",
            g,
        )
        for site_id, g in sorted(groups.items())
    ]


def tier3_headquarters(ctx: Context) -> list[FindingDraft]:
    groups: dict[str, Group] = {}
    for lot in ctx.lots:
        e = lot.entity
        if not lot.controlled or e is None or not ctx.applies("tier3-headquarters", e):
            continue
        if 3 in (ctx.tier(e.hq_country), ctx.tier(e.parent_hq_country)):
            groups.setdefault(e.id, Group()).add(lot, lot.count)
    out = []
    for entity_id, g in sorted(groups.items()):
        e = ctx.entities[entity_id]
        where = f"headquarters {ctx.tier_text(e.hq_country)}"
        if e.parent_hq_country != e.hq_country:
            where += f", parent headquarters {ctx.tier_text(e.parent_hq_country)}"
        message = f"entity {entity_id} ({where}) holds {held(g)}"
        out.append(ctx.finding("tier3-headquarters", f"entity:{entity_id}", message, g))
    return out


def _lpp_exempt(ctx: Context, kind: AuthorizationKind | None) -> bool:
    lpp = ctx.pack.lpp
    return kind is AuthorizationKind.LPP and lpp is not None and not lpp.counts_against_country_cap


def cap_groups(ctx: Context) -> dict[str, Group]:
    """Holdings of holders without VEU status, by resolved country (HK counts as CN), less GPUs
    held under LPP where the pack says LPP does not count against the cap. Each holder's part
    is summed on its own (`verifier.reconcile.engine`), then merged per country."""
    groups: dict[str, Group] = {}
    for piece in ctx.pieces:
        e, site = piece.lot.entity, piece.lot.site
        if e is None or site is None or e.veu is not VeuStatus.NONE:
            continue
        if not ctx.applies("country-cap-exceeded", e):
            continue
        if not piece.expired and _lpp_exempt(ctx, None if piece.auth is None else piece.auth.kind):
            continue
        groups.setdefault(ctx.resolve(site.country), Group()).add(piece.lot, piece.units)
    return groups


def country_cap(ctx: Context, country: str, g: Group) -> FindingDraft | None:
    """The finding of one resolved country whose merged non-VEU holdings are `g`, if over."""
    since = [
        a.since
        for a in ctx.registry.arrangements
        if ctx.resolve(a.country) == country and a.since <= ctx.on
    ]
    cap = ctx.pack.country_cap_tpp(country, ctx.on, arrangement=bool(since))
    if cap is None or g.tpp <= cap:
        return None
    doubled = f" (under the arrangement in force since {min(since)})" if since else ""
    message = (
        f"{country} non-VEU holdings {n(g.tpp)} TPP ({g.arithmetic()}) exceed the country "
        f"cap {n(cap)} TPP{doubled} by {n(g.tpp - cap)} TPP"
    )
    return ctx.finding("country-cap-exceeded", f"country:{country}", message, g)


def _usage(ctx: Context, *, expired: bool) -> dict[str, Group]:
    groups: dict[str, Group] = {}
    for piece in ctx.pieces:
        if piece.auth is not None and piece.expired == expired:
            groups.setdefault(piece.auth.id, Group()).add(piece.lot, piece.units)
    return groups


def licence_exceeded(ctx: Context) -> list[FindingDraft]:
    auths = ctx.authorizations
    out = []
    for auth_id, g in sorted(_usage(ctx, expired=False).items()):
        auth = auths[auth_id]
        if not ctx.applies("licence-exceeded", ctx.entities.get(auth.holder)):
            continue
        over = []
        if auth.max_units is not None and g.units > auth.max_units:
            over.append(f"{n(g.units)} GPUs > max_units {n(auth.max_units)}")
        limit = tpp_limit(auth)
        if limit is not None and g.tpp > limit:
            over.append(f"{n(g.tpp)} TPP > max_tpp {n(limit)}")
        if over:
            message = (
                f"authorization {auth_id} ({auth.kind.value}, holder {auth.holder}) carries "
                f"{held(g)}: {'; '.join(over)}"
            )
            out.append(ctx.finding("licence-exceeded", f"authorization:{auth_id}", message, g))
    return out


def licence_expired(ctx: Context) -> list[FindingDraft]:
    auths = ctx.authorizations
    groups: dict[str, Group] = {}
    for piece in ctx.pieces:
        if piece.auth is None or not piece.expired or not ctx.licence_needed(piece.lot):
            continue
        if ctx.applies("licence-expired", piece.lot.entity):
            groups.setdefault(piece.auth.id, Group()).add(piece.lot, piece.units)
    out = []
    for auth_id, g in sorted(groups.items()):
        auth = auths[auth_id]
        message = (
            f"authorization {auth_id} ({auth.kind.value}, holder {auth.holder}) was valid "
            f"through {auth.valid_until} and no valid authorization replaces it on {ctx.on}; "
            f"{held(g)} are still held under it"
        )
        out.append(ctx.finding("licence-expired", f"authorization:{auth_id}", message, g))
    return out


def unlicensed_gpu(ctx: Context) -> list[FindingDraft]:
    groups: dict[str, Group] = {}
    for piece in ctx.pieces:
        lot = piece.lot
        if piece.auth is not None or not ctx.licence_needed(lot):
            continue
        if lot.site is None or ctx.applies("unlicensed-gpu", lot.entity):
            groups.setdefault(lot.site_id, Group()).add(lot, piece.units)
    out = []
    for site_id, g in sorted(groups.items()):
        site = ctx.sites.get(site_id)
        if site is None:
            where = f"site {site_id} (not in the registry)"
        else:
            where = f"site {site_id} ({ctx.tier_text(site.country)}, holder {site.entity})"
        message = f"{where} holds {held(g)} that no authorization valid on {ctx.on} covers"
        out.append(ctx.finding("unlicensed-gpu", f"site:{site_id}", message, g))
    return out


def power_implausible(ctx: Context) -> list[FindingDraft]:
    watts: dict[str, int] = {}
    units: dict[str, int] = {}
    proof: dict[str, Group] = {}
    for lot in ctx.lots:
        watts[lot.site_id] = watts.get(lot.site_id, 0) + lot.power_limit_w
        units[lot.site_id] = units.get(lot.site_id, 0) + lot.count
        proof.setdefault(lot.site_id, Group()).evidence.update(lot.evidence)
    out = []
    for site_id, w in sorted(watts.items()):
        site = ctx.sites.get(site_id)
        if site is None or site.facility_power_kw is None:
            continue
        # The registry's figure as written (repr of the float), so 0.1 kW is 100 W exactly.
        facility_w = Fraction(repr(site.facility_power_kw)) * 1000
        if w <= facility_w or not ctx.applies("power-implausible", ctx.entities.get(site.entity)):
            continue
        message = (
            f"site {site_id}: {n(units[site_id])} GPUs attest power limits of {n(w)} W, above "
            f"the declared facility power {site.facility_power_kw:,} kW ({n(int(facility_w))} W)"
        )
        out.append(ctx.finding("power-implausible", f"site:{site_id}", message, proof[site_id]))
    return out


def safeguard_failed(ctx: Context, postures: Iterable[PostureRow]) -> list[FindingDraft]:
    """Every posture check the pack requires of the holder's kind must attest "pass"; "fail",
    "unknown" and a missing check all fail (fail closed). Two rows for one agent (the store
    gives one) are judged together: a check passes only if it passes in both."""
    failing: dict[str, dict[str, str]] = {}
    where: dict[str, tuple[str, str, str]] = {}
    proof: dict[str, Group] = {}
    for row in postures:
        site = ctx.sites.get(row.site_id)
        entity = None if site is None else ctx.entities.get(site.entity)
        if entity is None or not ctx.applies("safeguard-failed", entity):
            continue
        mine = failing.setdefault(row.agent_id, {})
        for check in ctx.safeguards(entity):
            status = row.checks.get(check, "missing")
            if status != "pass":
                mine[check] = min(status, mine.get(check, status))
        where[row.agent_id] = min(
            where.get(row.agent_id, (row.site_id, ctx.kind_name(entity), entity.id)),
            (row.site_id, ctx.kind_name(entity), entity.id),
        )
        proof.setdefault(row.agent_id, Group()).evidence.update(row.evidence)
    out = []
    for agent_id, checks in sorted(failing.items()):
        if not checks:
            continue
        site_id, kind, entity_id = where[agent_id]
        listed = ", ".join(f"{c}={checks[c]}" for c in sorted(checks, key=_check_order(ctx)))
        message = (
            f"agent {agent_id} at site {site_id} ({kind} {entity_id}) fails required "
            f"safeguards: {listed}"
        )
        out.append(ctx.finding("safeguard-failed", f"agent:{agent_id}", message, proof[agent_id]))
    return out


def _check_order(ctx: Context) -> Callable[[str], tuple[int, str]]:
    """The pack's order of safeguard checks, so a message lists them as `policy show` does."""
    order = {c: i for h in ctx.pack.holders for i, c in enumerate(h.safeguards)}
    return lambda check: (order.get(check, len(order)), check)
