"""`gpu-attest-verifier reconcile` and `holdings`: the fleet judged against the registry and a
policy pack (docs/design.md §14), offline on a state directory or against PostgreSQL.

    reconcile [--at DATE] [--policy ID|FILE] [--json]
        holdings as of the end of DATE (UTC; default today), the registry as it stood then, the
        pack in force then (or --policy); prints every finding with its arithmetic and the
        totals. For today, under the pack in force, it also stores the findings and resolves
        the compliance findings it no longer raises; a past --at, or another pack named by
        --policy, only reports (so trying a pack never rewrites the findings' history). Exit 5
        when it raised a finding.
    holdings [--at DATE] [--by site|country|entity|authorization|model] [--policy ID|FILE]
             [--json]
        GPUs and TPP per group (default: by country, with each country's tier).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from attest import tomlconf as tc
from attest.text import escape
from verifier import locate, location
from verifier.compliance import judge, pack_configured, reconcile_today
from verifier.config import VerifierConfig
from verifier.exits import VerifierExit
from verifier.location import SiteLocation
from verifier.model import FindingDraft
from verifier.policy import builtin_packs, find_pack, pack_in_force
from verifier.policy.model import PolicyPack
from verifier.reconcile.model import Reconciliation, Totals
from verifier.store.api import Store
from verifier.views import jsonable, print_json

GROUPINGS = ("site", "country", "entity", "authorization", "model")


def _today() -> date:
    return datetime.now(UTC).date()


def parse_date(text: str) -> date:
    """An --at argument: YYYY-MM-DD, not after today (UTC): holdings of a day to come are
    not known yet."""
    try:
        on = tc.parse_day(text)
    except tc.Invalid as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if on > _today():
        raise argparse.ArgumentTypeError(f"{text!r} is after today (UTC)")
    return on


def add_compliance_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    rec = sub.add_parser(
        "reconcile", parents=[common], help="judge holdings against the registry and a pack"
    )
    hold = sub.add_parser("holdings", parents=[common], help="GPUs and TPP per group")
    for p in (rec, hold):
        p.add_argument(
            "--at",
            type=parse_date,
            metavar="DATE",
            help="as of the end of this UTC day (YYYY-MM-DD; default today)",
        )
        p.add_argument(
            "--policy",
            metavar="ID|FILE",
            help="a policy pack (default: the built-in pack in force at DATE)",
        )
        p.add_argument("--json", action="store_true")  # fmt: skip
    hold.add_argument("--by", choices=GROUPINGS, default="country")


def run_compliance_command(
    args: argparse.Namespace, store: Store, config: VerifierConfig | None = None
) -> int:
    """Run `reconcile` or `holdings` under the config's `policy` ("" = the built-in
    pack in force at the date) and its location deadline. Raises PolicyNotFoundError
    / PolicyError for a bad pack or no pack in force at the date, StoreError when the store
    fails."""
    config = config or VerifierConfig()
    configured, fleet = config.policy, config.fleet
    on: date = args.at or _today()
    in_force = pack_configured(configured, on)
    if args.policy:
        pack = find_pack(args.policy)
    elif in_force is not None:
        pack = in_force
    else:
        pack = pack_in_force(builtin_packs(), on)  # raises: no pack in force at that date
    current = on == _today()
    registry = store.load_registry(on)
    if args.command == "holdings":
        result = judge(store, registry, pack, on, current=current, postures=False)
        countries = {site.id: site.country for site in registry.sites}
        return _holdings(args, result, pack, countries)
    # The stored findings follow the regime in force: a finding resolved only because another
    # pack was tried would lose its id and history, and reopen as a new one when tried back.
    if not current:
        why = "a past date"
    elif in_force is None or pack.id != in_force.id:
        why = f"not the pack in force ({in_force.id if in_force else 'none'})"
    else:
        why = ""
    resolved: list[tuple[str, str]] | None = None
    now = datetime.now(UTC)
    if why:
        result = judge(store, registry, pack, on, current=current)
    else:
        result, resolved = reconcile_today(store, pack, now)
        if resolved is None:
            why = "serve stored a judgment of later evidence meanwhile"
    # Location (docs/design.md §16) does not depend on the pack: today it is checked and its
    # findings stored whatever pack is tried; a past date is judged as of the end of that day.
    if current:
        done = locate.run_pass(
            store,
            now,
            deadline=fleet.location_deadline,
            clock_skew=config.stream.clock_skew,
            clearance=location.tier3_clearance(pack, on),
        )
        sites, drafts = list(done.judged), list(done.raised)
    else:
        end = datetime.combine(on + timedelta(days=1), time.min, UTC) - timedelta(microseconds=1)
        sites = locate.judge_at(
            store, registry, end, fleet.location_deadline, location.tier3_clearance(pack, on)
        )
        drafts = location.findings(sites) if registry.landmarks else []
    _report(args.json, result, resolved, why, sites=sites, drafts=drafts)
    return VerifierExit.FINDINGS if result.findings or drafts else VerifierExit.OK


def _finding(d: FindingDraft) -> dict[str, Any]:
    return {
        "rule": d.rule,
        "severity": d.severity.value,
        "subject": d.subject,
        "message": d.message,
        "evidence": list(d.evidence),
    }


def _totals_text(t: Totals) -> str:
    return (
        f"{t.units:,} GPUs, {t.tpp:,} TPP ({t.controlled_units:,} controlled, "
        f"{t.controlled_tpp:,} TPP)"
    )


def _report(
    as_json: bool,
    r: Reconciliation,
    resolved: list[tuple[str, str]] | None,
    why: str,
    *,
    sites: Sequence[SiteLocation],
    drafts: Sequence[FindingDraft],
) -> None:
    if as_json:
        print_json(
            {
                "at": r.on.isoformat(),
                "pack": r.pack_id,
                "stored": resolved is not None,
                "not_stored_because": why,
                "findings": [_finding(d) for d in (*r.findings, *drafts)],
                "locations": [location.as_json(s) for s in sites],
                "resolved": [{"rule": k[0], "subject": k[1]} for k in resolved or ()],
                "totals": jsonable(r.total),
                "by_country": [jsonable(c) for c in r.by_country.values()],
                "authorizations": jsonable(r.authorizations),
            }
        )
        return
    print(f"reconciliation at the end of {r.on.isoformat()} (UTC) under {escape(r.pack_id)}")
    print(f"holdings: {_totals_text(r.total)}")
    for d in (*r.findings, *drafts):
        print(escape(f"{d.severity.value:8} {d.rule} {d.subject}: {d.message}"))
    if not r.findings and not drafts:
        print("no findings")
    for site in sites:
        print(escape(f"location {site.site_id}: {site.status}: {site.reason}"))
    if resolved is None:
        print(f"{why}: reported only; the open findings were not changed")
    else:
        print(f"stored {len(r.findings)} finding(s); resolved {len(resolved)} that no longer hold")


def _holdings(
    args: argparse.Namespace, r: Reconciliation, pack: PolicyPack, countries: Mapping[str, str]
) -> int:
    rows = _holding_rows(args.by, r, pack, countries)
    if args.json:
        print_json(
            {"at": r.on.isoformat(), "pack": r.pack_id, "by": args.by, "rows": rows,
             "totals": jsonable(r.total)}
        )  # fmt: skip
        return VerifierExit.OK
    print(f"holdings at the end of {r.on.isoformat()} (UTC) by {args.by}, {escape(r.pack_id)}")
    for row in rows:
        print(escape(_holding_line(args.by, row)))
    if not rows:
        print("no GPUs held")
    print(f"total: {_totals_text(r.total)}")
    return VerifierExit.OK


def _holding_line(by: str, row: Mapping[str, Any]) -> str:
    if by == "authorization":
        units, tpp = row["max_units"], row["max_tpp"]
        limits = (
            f"{'no unit limit' if units is None else f'at most {units:,} GPUs'}, "
            f"{'no TPP limit' if tpp is None else f'at most {tpp:,} TPP'}"
        )
        return (
            f"{row['id']} ({row['kind']}, {row['holder']}, {row['state']}): "
            f"{row['used_units']:,} GPUs, {row['used_tpp']:,} TPP; {limits}"
        )
    tier = f" (tier {row['tier']})" if row.get("tier") is not None else ""
    country = f" in {row['country']}" if by == "site" and row.get("country") else ""
    return (
        f"{row[by]}{country}{tier}: {row['units']:,} GPUs, {row['tpp']:,} TPP "
        f"({row['controlled_units']:,} controlled, {row['controlled_tpp']:,} TPP)"
    )


def _holding_rows(
    by: str, r: Reconciliation, pack: PolicyPack, countries: Mapping[str, str]
) -> list[dict[str, Any]]:
    if by == "authorization":
        return [jsonable(a) for a in r.authorizations]
    if by == "country":
        return [
            {"country": c.country, "tier": c.tier, **jsonable(c.totals)}
            for c in r.by_country.values()
        ]
    groups: Mapping[str, Totals] = {"site": r.by_site, "entity": r.by_entity}.get(by, r.by_model)
    rows = [{by: key, **jsonable(t)} for key, t in groups.items()]
    if by == "site":
        for row in rows:  # the site's country and its tier (None: not in the registry)
            country = countries.get(row["site"])
            row["country"] = country
            row["tier"] = None if country is None else pack.tier_of(country, r.on)
    return rows
