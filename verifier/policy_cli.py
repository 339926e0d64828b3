"""`gpu-attest-verifier policy ...`: the policy packs (docs/design.md §13). Needs no verifier
state: the packs are data shipped with the verifier, or a file named on the command line.

    policy list [--json]             the built-in packs and their effective dates
    policy show ID|FILE [--json]     the whole pack: tiers, caps, shares, allocations,
                                     thresholds, catalogue; unverified figures are marked
    policy validate FILE [--json]    exit 0 when valid, 3 with one line per problem
"""

from __future__ import annotations

import argparse
from pathlib import Path

from attest.errors import PolicyError
from verifier.exits import VerifierExit
from verifier.policy import builtin_packs, find_pack, load_pack
from verifier.policy.catalogue import CatalogueEntry, Source
from verifier.policy.model import PolicyPack
from verifier.policy.view import approx_text, exact_text, pack_view, percent_text
from verifier.views import print_json


def add_policy_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    policy = sub.add_parser("policy", help="policy packs (no verifier state needed)")
    actions = policy.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", parents=[common], help="the built-in policy packs")
    listing.add_argument("--json", action="store_true")
    show = actions.add_parser("show", parents=[common], help="print a whole policy pack")
    show.add_argument("pack", help="a built-in pack id (policy list) or a FILE.toml")
    show.add_argument("--json", action="store_true")
    validate = actions.add_parser("validate", parents=[common], help="check a policy pack file")
    validate.add_argument("file", type=Path)
    validate.add_argument("--json", action="store_true")


def run_policy_command(args: argparse.Namespace) -> int:
    """Run `policy list|show|validate`. Raises PolicyNotFoundError for an unknown pack id and
    PolicyError for an invalid pack file given to `show`."""
    if args.action == "list":
        return _list(args.json)
    if args.action == "show":
        return _show(find_pack(args.pack), args.json)
    return _validate(args.file, args.json)


def _until(pack: PolicyPack) -> str:
    return pack.effective_until.isoformat() if pack.effective_until else "open-ended"


def _list(as_json: bool) -> int:
    packs = builtin_packs()
    if as_json:
        print_json(
            [
                {"id": p.id, "title": p.title, "effective_from": p.effective_from.isoformat(),
                 "effective_until": p.effective_until and p.effective_until.isoformat(),
                 "origin": p.origin}
                for p in packs
            ]
        )  # fmt: skip
        return VerifierExit.OK
    for p in packs:
        print(f"{p.id:18}  from {p.effective_from.isoformat()}  until {_until(p):10}  {p.title}")
    return VerifierExit.OK


def _validate(path: Path, as_json: bool) -> int:
    try:
        pack = load_pack(path)
    except PolicyError as exc:
        problems = str(exc).splitlines()
        if as_json:
            print_json({"file": str(path), "valid": False, "problems": problems})
        else:
            print("\n".join(problems))
        return VerifierExit.CONFIG
    if as_json:
        print_json({"file": str(path), "valid": True, "problems": [], "id": pack.id})
    else:
        unverified = sum(not e.verified for e in pack.catalogue.entries)
        models = len(pack.catalogue.entries)
        print(f"{path}: valid: pack {pack.id}, in force from {pack.effective_from.isoformat()}, "
              f"{models} catalogue models ({unverified} unverified)")  # fmt: skip
    return VerifierExit.OK


def _show(pack: PolicyPack, as_json: bool) -> int:
    if as_json:
        print_json(pack_view(pack))
        return VerifierExit.OK
    print("\n".join(render(pack)))
    return VerifierExit.OK


# --- text ----------------------------------------------------------------------------------------


def _mark(source: Source) -> str:
    label = source.label.value
    return f"[{label}]" if source.verified else f"[{label}, UNVERIFIED]"


def _cite(source: Source, indent: str = "    ") -> list[str]:
    lines = [f"{indent}source {_mark(source)}: {source.ref}"]
    return lines + ([f"{indent}note: {source.note}"] if source.note else [])


def _n(value: int) -> str:
    return f"{value:,}"


def _dates(first: object, last: object) -> str:
    return f"from {first}" + (f" until {last}" if last else "")


def _header(pack: PolicyPack) -> list[str]:
    lines = [
        f"{pack.id}: {pack.title}",
        f"  in force from {pack.effective_from} ({_until(pack)}); {pack.origin}",
        *_cite(pack.source, "  "),
    ]
    lines += [f"  milestone {m.date}: {m.what} {_mark(m.source)}" for m in pack.milestones]
    return lines


def _tiers(pack: PolicyPack) -> list[str]:
    t = pack.tiers
    required = ", ".join(str(n) for n in t.licence_required)
    lines = [f"tiers (unlisted countries: tier {t.default}; licence needed in tiers {required})"]
    lines += [f"  tier {n}: {text}" for n, text in enumerate(t.descriptions, 1)]
    lines += _cite(t.source)
    for x in t.listings:
        when = _dates(x.valid_from, x.valid_until)
        lines.append(f"  tier {x.tier} {when}: {' '.join(x.countries)}")
        lines += _cite(x.source)
    for a in t.aliases:
        lines.append(f"  {a.country} counts as {a.resolves_to} from {a.valid_from}")
        lines += _cite(a.source)
    return lines


def _limits(pack: PolicyPack) -> list[str]:
    lines: list[str] = []
    if (cap := pack.country_cap) is not None:
        when = _dates(cap.valid_from, cap.valid_until)
        lines.append(f"country cap (tier {cap.tier} countries, {when}): "
                     f"{_n(cap.tpp)} TPP; {_n(cap.tpp_with_arrangement)} TPP under a "
                     "government-to-government arrangement")  # fmt: skip
        lines += _cite(cap.source)
    if (lpp := pack.lpp) is not None:
        counts = "counts" if lpp.counts_against_country_cap else "does not count"
        lines.append(f"LPP: {_n(lpp.tpp_per_consignee_per_year)} TPP per consignee per calendar "
                     f"year ({counts} against the country cap)")  # fmt: skip
        lines += _cite(lpp.source)
    if (aia := pack.aia) is not None:
        lines.append(f"AIA: certification reporting from {_n(aia.reporting_threshold_tpp)} TPP")
        lines += _cite(aia.source)
    if (u := pack.uveu) is not None:
        lines.append(f"UVEU shares: at least {percent_text(u.tier1_min_share)} in tier 1; at most "
                     f"{percent_text(u.tier2_country_max_share)} in any one tier-2 country; a "
                     f"US-headquartered UVEU at least {percent_text(u.us_min_share_if_us_hq)} in "
                     "the US")  # fmt: skip
        lines += _cite(u.source)
    for step in pack.nveu:
        lines.append(f"NVEU allocation from {step.valid_from}: {_n(step.cumulative_tpp)} TPP "
                     "cumulative")  # fmt: skip
        lines += _cite(step.source)
    return lines


def _holders(pack: PolicyPack) -> list[str]:
    lines = ["rules and safeguards by holder (the registry entity's veu)"]
    for h in pack.holders:
        lines.append(f"  {h.kind.value}: rules {', '.join(h.rules)}")
        lines.append(f"    safeguards: {', '.join(h.safeguards) or '(none)'}")
        lines += _cite(h.source, "    ")
    return lines


def _entry(e: CatalogueEntry) -> list[str]:
    pci = "(no PCI id)" if e.pci_device_id is None else f"0x{e.pci_device_id:08X}"
    subs = "".join(f"/0x{s:08X}" for s in e.pci_subsystem_ids)
    density = e.performance_density
    pd = "n/p" if density is None else f"{approx_text(density)} ({exact_text(density)})"
    area = "n/p" if e.die_area_mm2 is None else exact_text(e.die_area_mm2)
    return [
        f"  {e.model}: {e.name}, {pci}{subs}",
        (
            f"    TPP {_n(e.dense_tpp)} = {exact_text(e.dense_tops)} dense TOPS x "
            f"{e.bit_length} bit; die {area} mm2, PD {pd}; {e.eccn.value}; {e.board_power_w} W"
        ),
        *_cite(e.source, "    "),
        f"    ids and power {_mark(e.ids_source)}: {e.ids_source.ref}",
    ]


def render(pack: PolicyPack) -> list[str]:
    """The whole pack as readable text, every figure with its source."""
    th = pack.thresholds
    lines = [*_header(pack), *_tiers(pack), *_limits(pack), *_holders(pack)]
    lines.append(f"3A090 thresholds: .a TPP >= {_n(th.a_tpp)}, or TPP >= {_n(th.a_density_tpp)} "
                 f"and PD >= {exact_text(th.a_density)}; .b {_n(th.b_tpp)} <= TPP < "
                 f"{_n(th.a_tpp)} and {exact_text(th.b_density)} <= PD < "
                 f"{exact_text(th.a_density)}, or TPP >= {_n(th.b_alt_tpp)} and "
                 f"{exact_text(th.b_alt_density)} <= PD < {exact_text(th.a_density)}")  # fmt: skip
    lines += _cite(th.source)
    lines.append(f"catalogue (a GPU whose PCI ids match no entry counts at the highest TPP, "
                 f"{_n(pack.catalogue.max_tpp)})")  # fmt: skip
    for entry in pack.catalogue.entries:
        lines += _entry(entry)
    return lines
