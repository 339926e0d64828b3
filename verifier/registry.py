"""Parse the compliance registry TOML (docs/design.md §6) into a validated `Registry`.

The file is untrusted input from a person: every key is checked (unknown keys are errors), every
value has its type and range checked, ids are unique per kind, and every reference resolves.
Parsing is pure: text in, frozen values out, `RegistryError` on anything wrong.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from attest import tomlconf as tc
from attest.errors import KeyMaterialError, RegistryError
from attest.keys import PublicKey
from verifier.policy.countries import iso_country
from verifier.registry_model import (
    Arrangement,
    Authorization,
    AuthorizationKind,
    Entity,
    Landmark,
    Registry,
    Site,
    VeuStatus,
)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
_TEXT = tc.text(max_len=1000, printable=True)
_LAT = tc.number(-90, 90)
_LON = tc.number(-180, 180)

T = TypeVar("T")


def _matching(pattern: re.Pattern[str], what: str) -> tc.Check[str]:
    def check(value: object) -> str:
        if not isinstance(value, str) or not pattern.match(value):
            raise tc.Invalid(f"{tc.got(value)} is not {what}")
        return value

    return check


_IDENT = _matching(_ID, "an id (letters, digits, . _ : / -)")
# The policy packs' list of assigned codes, not just two letters: a registry site in "UK"
# would match no tier of any pack and count as the default tier instead of GB's.
_ISO_COUNTRY = iso_country


def _enum(kind: Callable[[str], T], names: list[str]) -> tc.Check[T]:
    """A value of a string enum, e.g. `_enum(VeuStatus, [...])`."""
    as_name = tc.one_of(names)
    return lambda value: kind(as_name(value))


_VEU = _enum(VeuStatus, [m.value for m in VeuStatus])
_KIND = _enum(AuthorizationKind, [m.value for m in AuthorizationKind])


#: The longest per-site offline deadline: a year without evidence is not a deadline.
MAX_OFFLINE_DEADLINE = timedelta(days=366)


def _deadline(value: object) -> timedelta:
    """A duration such as "7d" (attest.tomlconf.parse_duration), positive and at most a year."""
    if not isinstance(value, str):
        raise tc.Invalid(f"{tc.got(value)} is not a duration string such as '7d'")
    deadline = tc.parse_duration(value)
    if not timedelta(0) < deadline <= MAX_OFFLINE_DEADLINE:
        raise tc.Invalid(f"{value!r} is not between 1s and {MAX_OFFLINE_DEADLINE.days}d")
    return deadline


def _public_key(value: object) -> PublicKey:
    """Base64 SubjectPublicKeyInfo DER of a supported key."""
    try:
        return PublicKey.from_base64(_TEXT(value))
    except KeyMaterialError as exc:
        raise tc.Invalid(str(exc)) from None


def _entity(t: tc.Table) -> Entity:
    hq = t.get("hq_country", _ISO_COUNTRY)
    return Entity(
        id=t.get("id", _IDENT),
        name=t.get("name", _TEXT),
        hq_country=hq,
        parent_hq_country=t.get("parent_hq_country", _ISO_COUNTRY, hq),
        veu=t.get("veu", _VEU),
    )


def _site(t: tc.Table) -> Site:
    return Site(
        id=t.get("id", _IDENT),
        entity=t.get("entity", _IDENT),
        country=t.get("country", _ISO_COUNTRY),
        lat=t.get("lat", _LAT),
        lon=t.get("lon", _LON),
        facility_power_kw=t.opt("facility_power_kw", tc.number(0, 1e9)),
        offline_deadline=t.opt("offline_deadline", _deadline),
    )


def _authorization(t: tc.Table) -> Authorization:
    auth = Authorization(
        id=t.get("id", _IDENT),
        holder=t.get("holder", _IDENT),
        kind=t.get("kind", _KIND),
        countries=t.get("countries", tc.list_of(_ISO_COUNTRY, unique=True), ()),
        sites=t.get("sites", tc.list_of(_IDENT, unique=True), ()),
        max_units=t.opt("max_units", tc.integer(0)),
        max_tpp=t.opt("max_tpp", tc.number(0, 1e18)),
        valid_from=t.get("valid_from", tc.day),
        valid_until=t.opt("valid_until", tc.day),
    )
    if not auth.countries and not auth.sites:
        raise t.fail(None, "scope is empty (give countries and/or sites)")
    if auth.valid_until is not None and auth.valid_until < auth.valid_from:
        raise t.fail("valid_until", "is before valid_from")
    return auth


def _landmark(t: tc.Table) -> Landmark:
    landmark_id = t.get("id", _IDENT)
    lat, lon = t.get("lat", _LAT), t.get("lon", _LON)
    key = t.get("public_key", _public_key)
    return Landmark(id=landmark_id, lat=lat, lon=lon, public_key=key.spki_der)


def _arrangement(t: tc.Table) -> Arrangement:
    return Arrangement(country=t.get("country", _ISO_COUNTRY), since=t.get("since", tc.day))


def _section(root: tc.Table, name: str, build: Callable[[tc.Table], T]) -> tuple[T, ...]:
    items = []
    for table in root.tables(name):
        items.append(build(table))
        table.done()
    return tuple(items)


def _unique(kind: str, keys: list[Any]) -> None:
    seen: set[Any] = set()
    for key in keys:
        if key in seen:
            raise RegistryError(f"{kind}: {key!r} appears twice")
        seen.add(key)


def _check_references(registry: Registry) -> None:
    _unique("entity", [e.id for e in registry.entities])
    _unique("site", [s.id for s in registry.sites])
    _unique("authorization", [a.id for a in registry.authorizations])
    _unique("landmark", [m.id for m in registry.landmarks])
    _unique("arrangement", [(g.country, g.since) for g in registry.arrangements])
    entities = {e.id for e in registry.entities}
    sites = {s.id for s in registry.sites}
    for site in registry.sites:
        if site.entity not in entities:
            raise RegistryError(f"site {site.id!r}: unknown entity {site.entity!r}")
    for auth in registry.authorizations:
        if auth.holder not in entities:
            raise RegistryError(f"authorization {auth.id!r}: unknown holder {auth.holder!r}")
        for site_id in auth.sites:
            if site_id not in sites:
                raise RegistryError(f"authorization {auth.id!r}: unknown site {site_id!r}")


def parse_registry(text: str, source: str = "registry.toml") -> Registry:
    """Parse and validate a registry file. Raises RegistryError on any defect."""
    return _from_table(tc.parse(text, source, RegistryError))


def load_registry(path: Path) -> Registry:
    """Read, parse and validate the registry file at `path`. Raises RegistryError."""
    return _from_table(tc.load(path, RegistryError))


def read_registry_file(path: Path) -> tuple[Registry, bytes]:
    """The registry file at `path` parsed, and its bytes as read (what an import keeps and
    digests: the parsed value is of exactly those bytes). Raises RegistryError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RegistryError(f"{path}: cannot read the file: it does not exist") from None
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read the file: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RegistryError(
            f"{path}: cannot read the file: not UTF-8 text ({exc.reason})"
        ) from None
    return parse_registry(text, str(path)), raw


def _from_table(root: tc.Table) -> Registry:
    registry = Registry(
        entities=_section(root, "entity", _entity),
        sites=_section(root, "site", _site),
        authorizations=_section(root, "authorization", _authorization),
        landmarks=_section(root, "landmark", _landmark),
        arrangements=_section(root, "arrangement", _arrangement),
    )
    root.done()
    try:
        _check_references(registry)
    except RegistryError as exc:
        raise RegistryError(f"{root.source}: {exc}") from None
    return registry
