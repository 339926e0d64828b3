"""Read a policy pack (docs/design.md §13): the built-in packs shipped in
verifier/policy/packs/ (installed with the wheel as package data), or a custom pack file.

Problems are collected table by table instead of stopping at the first, so `policy validate`
lists them all (the first of each table, then the checks across tables); `PolicyError`'s
message holds one line per problem, each naming file, table and key. Reading is the only I/O.
"""

from __future__ import annotations

import functools
import importlib.resources
import itertools
from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path
from typing import Final, TypeVar

from attest import tomlconf as tc
from attest.errors import PolicyError, PolicyNotFoundError
from verifier.policy import tables
from verifier.policy.catalogue import Catalogue, CatalogueEntry
from verifier.policy.model import HolderRules, NveuStep, PolicyPack, TierListing, Tiers
from verifier.registry_model import VeuStatus

T = TypeVar("T")
BUILT_IN: Final = "built-in"
_PACKS: Final = "verifier.policy.packs"
#: The compliance rules that need a table of the pack to be decided.
_RULE_NEEDS: Final = {
    "country-cap-exceeded": "country_cap",
    "uveu-tier2-share": "uveu",
    "uveu-tier1-share": "uveu",
    "uveu-us-share": "uveu",
    "nveu-allocation-exceeded": "nveu_allocation",
}


class _Reader:
    """Reads the tables of one pack, keeping every problem instead of raising the first."""

    def __init__(self, root: tc.Table) -> None:
        self.root = root
        self.problems: list[str] = []

    def one(self, name: str, build: Callable[[tc.Table], T], *, required: bool) -> T | None:
        try:
            if name not in self.root:
                self.root.table(name)  # asked for, so never an unknown key
                if required:
                    raise self.root.fail(name, "missing (this table is required)")
                return None
            table = self.root.table(name)
            value = build(table)
            table.done()
        except PolicyError as exc:
            self.problems.append(str(exc))
            return None
        return value

    def many(self, name: str, build: Callable[[tc.Table], T]) -> list[tuple[tc.Table, T]]:
        try:
            found = self.root.tables(name)
        except PolicyError as exc:
            self.problems.append(str(exc))
            return []
        read = []
        for table in found:
            try:
                value = build(table)
                table.done()
            except PolicyError as exc:
                self.problems.append(str(exc))
                continue
            read.append((table, value))
        return read

    def complain(self, table: tc.Table, key: str | None, message: str) -> None:
        self.problems.append(str(table.fail(key, message)))


def _last(until: date | None) -> date:
    return date.max if until is None else until


def _check_tiers(reader: _Reader, listings: list[tuple[tc.Table, TierListing]]) -> None:
    """A country is in one tier at a time: two listings naming it must not share a day."""
    seen: dict[str, list[tuple[tc.Table, TierListing]]] = {}
    for table, listing in listings:
        for country in listing.countries:
            for other_table, other in seen.get(country, []):
                if listing.valid_from <= _last(other.valid_until) and other.valid_from <= _last(
                    listing.valid_until
                ):
                    reader.complain(
                        table, "countries",
                        f"{country} is also in tier {other.tier} from "
                        f"{other.valid_from.isoformat()} ([{other_table.path}]): the date ranges "
                        "overlap",
                    )  # fmt: skip
            seen.setdefault(country, []).append((table, listing))


def _check_nveu(reader: _Reader, steps: list[tuple[tc.Table, NveuStep]]) -> None:
    for (_, before), (table, step) in itertools.pairwise(steps):
        if step.valid_from <= before.valid_from:
            reader.complain(table, "valid_from", "steps must be in ascending date order")
        elif step.cumulative_tpp < before.cumulative_tpp:
            reader.complain(table, "cumulative_tpp", "is below the previous step's (cumulative)")


def _check_holders(
    reader: _Reader, holders: list[tuple[tc.Table, HolderRules]], present: set[str]
) -> None:
    kinds: set[VeuStatus] = set()
    for table, holder in holders:
        if holder.kind in kinds:
            reader.complain(table, "kind", f"{holder.kind.value!r} is given twice")
        kinds.add(holder.kind)
        for rule in holder.rules:
            needed = _RULE_NEEDS.get(rule)
            if needed is not None and needed not in present:
                reader.complain(table, "rules", f"{rule} needs a [{needed}] table in the pack")
    missing = sorted(k.value for k in set(VeuStatus) - kinds)
    if missing and holders:
        reader.complain(reader.root, "holder", f"no [[holder]] for kind {', '.join(missing)}")


def _check_catalogue(reader: _Reader, entries: list[tuple[tc.Table, CatalogueEntry]]) -> None:
    models: set[str] = set()
    claimed: dict[tuple[int, int | None], str] = {}
    for table, entry in entries:
        if entry.model in models:
            reader.complain(table, "model", f"{entry.model!r} is given twice")
        models.add(entry.model)
        if entry.pci_device_id is None:
            continue
        keys: Iterable[int | None] = entry.pci_subsystem_ids or (None,)
        for subsystem in keys:
            owner = claimed.setdefault((entry.pci_device_id, subsystem), entry.model)
            if owner != entry.model:
                what = "device id" if subsystem is None else f"subsystem id {subsystem:#010x}"
                reader.complain(
                    table, "pci_device_id",
                    f"{entry.pci_device_id:#010x} ({what}) is already {owner!r}",
                )  # fmt: skip


def _from_table(root: tc.Table, origin: str) -> PolicyPack:
    r = _Reader(root)
    header = r.one("pack", tables.read_pack_header, required=True)
    tiers_header = r.one("tiers", tables.read_tiers_header, required=True)
    thresholds = r.one("thresholds", tables.read_thresholds, required=True)
    cap = r.one("country_cap", tables.read_country_cap, required=False)
    lpp = r.one("lpp", tables.read_lpp, required=False)
    aia = r.one("aia", tables.read_aia, required=False)
    uveu = r.one("uveu", tables.read_uveu, required=False)
    milestones = r.many("milestone", tables.read_milestone)
    listings = r.many("tier", tables.read_tier)
    aliases = r.many("alias", tables.read_alias)
    nveu = r.many("nveu_allocation", tables.read_nveu)
    holders = r.many("holder", tables.read_holder)
    entries = r.many("catalogue", lambda t: tables.read_entry(t, thresholds))
    try:
        root.done()
    except PolicyError as exc:
        r.problems.append(str(exc))
    _check_tiers(r, listings)
    _check_nveu(r, nveu)
    # a table that is there but invalid has its own complaint: do not add "missing" to it
    _check_holders(r, holders, {name for name in _RULE_NEEDS.values() if name in root})
    _check_catalogue(r, entries)
    for table, alias in aliases:
        if [a.country for _, a in aliases].count(alias.country) > 1:
            r.complain(table, "country", f"{alias.country} has more than one alias")
    if not holders:
        r.problems.append(str(root.fail("holder", "missing (at least one [[holder]] per kind)")))
    if r.problems or header is None or tiers_header is None or thresholds is None:
        raise PolicyError("\n".join(r.problems))
    pack_id, title, start, end, source = header
    default, required, words, tiers_source = tiers_header
    return PolicyPack(
        id=pack_id, title=title, effective_from=start, effective_until=end, source=source,
        origin=origin, milestones=tuple(m for _, m in milestones),
        tiers=Tiers(
            default, required, words, tuple(t for _, t in listings),
            tuple(a for _, a in aliases), tiers_source,
        ),
        country_cap=cap, lpp=lpp, aia=aia, uveu=uveu, nveu=tuple(s for _, s in nveu),
        holders=tuple(h for _, h in holders), thresholds=thresholds,
        catalogue=Catalogue(tuple(e for _, e in entries)),
    )  # fmt: skip


def parse_pack(text: str, source: str, origin: str | None = None) -> PolicyPack:
    """Parse and validate pack text read from `source`. Raises PolicyError (one line per
    problem)."""
    return _from_table(tc.parse(text, source, PolicyError), origin or source)


def load_pack(path: Path) -> PolicyPack:
    """Read and validate the pack file at `path`. Raises PolicyError."""
    return _from_table(tc.load(path, PolicyError), str(path))


@functools.cache
def builtin_packs() -> tuple[PolicyPack, ...]:
    """The packs shipped with the verifier, in order of their effective dates."""
    files = importlib.resources.files(_PACKS)
    packs = [
        parse_pack(item.read_text(encoding="utf-8"), item.name, BUILT_IN)
        for item in files.iterdir()
        if item.name.endswith(".toml")
    ]
    return tuple(sorted(packs, key=lambda p: (p.effective_from, p.id)))


def find_pack(name: str) -> PolicyPack:
    """A built-in pack by id, or a custom pack from a file path (a name ending in .toml).
    Raises PolicyNotFoundError for an unknown id, PolicyError for an invalid file."""
    for pack in builtin_packs():
        if pack.id == name:
            return pack
    if name.endswith(".toml"):
        return load_pack(Path(name))
    known = ", ".join(p.id for p in builtin_packs())
    raise PolicyNotFoundError(f"no policy pack {name!r} (built-in: {known}; or a FILE.toml)")
