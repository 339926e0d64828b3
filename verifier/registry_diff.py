"""What a registry import would change, and what in that change needs `--force`: pure functions
over two `Registry` values (the stored one and the file's), the GPUs the fleet holds per site
and today's date. `registry import --dry-run` prints the first; the import refuses without
`--force` when the second is not empty (docs/design.md §6)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from verifier.registry_model import Arrangement, Registry

#: The registry's kinds, in the order they are listed.
KINDS = ("entities", "sites", "authorizations", "landmarks", "arrangements")


@dataclass(frozen=True)
class KindDiff:
    """One kind's change, by id: what the new registry adds, drops and changes in place."""

    kind: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


@dataclass(frozen=True)
class RegistryDiff:
    kinds: tuple[KindDiff, ...]

    @property
    def empty(self) -> bool:
        return all(k.empty for k in self.kinds)

    def of(self, kind: str) -> KindDiff:
        return next(k for k in self.kinds if k.kind == kind)


def arrangement_id(arrangement: Arrangement) -> str:
    """An arrangement has no id of its own: country and start date identify it."""
    return f"{arrangement.country}@{arrangement.since.isoformat()}"


def _kind(kind: str, old: Mapping[str, object], new: Mapping[str, object]) -> KindDiff:
    return KindDiff(
        kind=kind,
        added=tuple(sorted(new.keys() - old.keys())),
        removed=tuple(sorted(old.keys() - new.keys())),
        changed=tuple(sorted(k for k in old.keys() & new.keys() if old[k] != new[k])),
    )


def _items(registry: Registry, kind: str) -> dict[str, object]:
    items: Sequence[object] = getattr(registry, kind)
    if kind == "arrangements":
        return {arrangement_id(a): a for a in registry.arrangements}
    return {getattr(item, "id"): item for item in items}  # noqa: B009 - every other kind has one


def diff_registries(old: Registry, new: Registry) -> RegistryDiff:
    """The change from `old` to `new`, kind by kind, ids sorted."""
    return RegistryDiff(tuple(_kind(k, _items(old, k), _items(new, k)) for k in KINDS))


def import_warnings(
    old: Registry, new: Registry, gpus_by_site: Mapping[str, int], today: date
) -> list[str]:
    """One line per change that needs `--force`: a site or an entity removed while agents
    enrolled at it (at its sites) still hold present GPUs, and an authorization added or changed
    that has already expired (valid on `valid_until` itself, expired from the day after)."""
    diff = diff_registries(old, new)
    warnings = []
    for site_id in diff.of("sites").removed:
        held = gpus_by_site.get(site_id, 0)
        if held:
            warnings.append(f"site {site_id} is removed but holds {held} GPU(s)")
    for entity_id in diff.of("entities").removed:
        held = sum(gpus_by_site.get(s.id, 0) for s in old.sites if s.entity == entity_id)
        if held:
            warnings.append(f"entity {entity_id} is removed but its sites hold {held} GPU(s)")
    brought = diff.of("authorizations")
    for auth in new.authorizations:
        if auth.id not in brought.added and auth.id not in brought.changed:
            continue
        if auth.valid_until is not None and auth.valid_until < today:
            warnings.append(
                f"authorization {auth.id} expired on {auth.valid_until.isoformat()} "
                f"(valid until the end of that day; today is {today.isoformat()})"
            )
    return warnings
