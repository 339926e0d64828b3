"""Parse the compliance registry TOML (DESIGN §6) into a validated `Registry`.

The file is untrusted input from a person: every key is checked (unknown keys are errors), every
value has its type and range checked, ids are unique per kind, and every reference resolves.
Parsing is pure: text in, frozen values out, `RegistryError` on anything wrong.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any, TypeVar

from attest.errors import KeyMaterialError, RegistryError
from attest.keys import PublicKey
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
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_SECTIONS = frozenset({"entity", "site", "authorization", "landmark", "arrangement"})
_MAX_TEXT = 1000

T = TypeVar("T")


class _Table:
    """One `[[section]]` table, read key by key; `done` rejects keys nobody asked for."""

    def __init__(self, raw: object, where: str) -> None:
        if not isinstance(raw, dict):
            raise RegistryError(f"{where}: expected a table")
        self._raw: Mapping[str, Any] = raw
        self._where = where
        self._seen: set[str] = set()

    def _get(self, key: str, required: bool) -> Any:
        self._seen.add(key)
        if key not in self._raw:
            if required:
                raise RegistryError(f"{self._where}: missing key {key!r}")
            return None
        return self._raw[key]

    def _fail(self, key: str, what: str) -> RegistryError:
        return RegistryError(f"{self._where}.{key}: {what}")

    def text(self, key: str, required: bool = True) -> str | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip() or len(value) > _MAX_TEXT:
            raise self._fail(key, "expected a non-empty string")
        if not value.isprintable():
            raise self._fail(key, "must be printable text")
        return value

    def ident(self, key: str) -> str:
        value = self.text(key)
        if value is None or not _ID.match(value):
            raise self._fail(key, f"{value!r} is not an id (letters, digits, . _ : / -)")
        return value

    def country(self, key: str, required: bool = True) -> str | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, str) or not _COUNTRY.match(value):
            raise self._fail(key, f"{value!r} is not an ISO 3166-1 alpha-2 code (e.g. 'DE')")
        return value

    def number(self, key: str, low: float, high: float, required: bool = True) -> float | None:
        value = self._get(key, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(key, "expected a number")
        if not math.isfinite(value) or not low <= value <= high:
            raise self._fail(key, f"{value!r} is outside [{low}, {high}]")
        return float(value)

    def count(self, key: str) -> int | None:
        value = self._get(key, required=False)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._fail(key, "expected a non-negative integer")
        return value

    def day(self, key: str, required: bool = True) -> date | None:
        value = self._get(key, required)
        if value is None:
            return None
        # A TOML datetime is a Python date subclass: a time of day has no meaning here.
        if not isinstance(value, date) or isinstance(value, datetime):
            raise self._fail(key, "expected a date (YYYY-MM-DD)")
        return value

    def items(self, key: str, check: Callable[[str], bool], what: str) -> tuple[str, ...]:
        value = self._get(key, required=False)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._fail(key, "expected a list of strings")
        for item in value:
            if not check(item):
                raise self._fail(key, f"{item!r} is not {what}")
        if len(set(value)) != len(value):
            raise self._fail(key, "lists an item twice")
        return tuple(value)

    def done(self) -> None:
        unknown = sorted(set(self._raw) - self._seen)
        if unknown:
            raise RegistryError(f"{self._where}: unknown keys {unknown}")


def _enum(table: _Table, key: str, kind: type[T], where: str) -> T:
    value = table.text(key)
    try:
        return kind(value)  # type: ignore[call-arg]
    except ValueError:
        names = [m.value for m in kind]  # type: ignore[attr-defined]
        raise RegistryError(f"{where}.{key}: {value!r} is not one of {names}") from None


def _entity(t: _Table, where: str) -> Entity:
    hq = t.country("hq_country") or ""
    entity = Entity(
        id=t.ident("id"),
        name=t.text("name") or "",
        hq_country=hq,
        parent_hq_country=t.country("parent_hq_country", required=False) or hq,
        veu=_enum(t, "veu", VeuStatus, where),
    )
    t.done()
    return entity


def _site(t: _Table, _where: str) -> Site:
    site = Site(
        id=t.ident("id"),
        entity=t.ident("entity"),
        country=t.country("country") or "",
        lat=t.number("lat", -90, 90) or 0.0,
        lon=t.number("lon", -180, 180) or 0.0,
        facility_power_kw=t.number("facility_power_kw", 0, 1e9, required=False),
    )
    t.done()
    return site


def _authorization(t: _Table, where: str) -> Authorization:
    auth = Authorization(
        id=t.ident("id"),
        holder=t.ident("holder"),
        kind=_enum(t, "kind", AuthorizationKind, where),
        countries=t.items("countries", lambda c: bool(_COUNTRY.match(c)), "a country code"),
        sites=t.items("sites", lambda s: bool(_ID.match(s)), "a site id"),
        max_units=t.count("max_units"),
        max_tpp=t.number("max_tpp", 0, 1e18, required=False),
        valid_from=t.day("valid_from") or date.min,
        valid_until=t.day("valid_until", required=False),
    )
    t.done()
    if not auth.countries and not auth.sites:
        raise RegistryError(f"{where}: scope is empty (give countries and/or sites)")
    if auth.valid_until is not None and auth.valid_until < auth.valid_from:
        raise RegistryError(f"{where}: valid_until is before valid_from")
    return auth


def _landmark(t: _Table, where: str) -> Landmark:
    landmark_id = t.ident("id")
    lat = t.number("lat", -90, 90) or 0.0
    lon = t.number("lon", -180, 180) or 0.0
    text = t.text("public_key") or ""
    t.done()
    try:
        key = PublicKey.from_base64(text)
    except KeyMaterialError as exc:
        raise RegistryError(f"{where}.public_key: {exc}") from None
    return Landmark(id=landmark_id, lat=lat, lon=lon, public_key=key.spki_der)


def _arrangement(t: _Table, _where: str) -> Arrangement:
    arrangement = Arrangement(country=t.country("country") or "", since=t.day("since") or date.min)
    t.done()
    return arrangement


def _section(doc: Mapping[str, Any], name: str, build: Callable[[_Table, str], T]) -> tuple[T, ...]:
    raw = doc.get(name, [])
    if not isinstance(raw, list):
        raise RegistryError(f"{name}: expected an array of tables ([[{name}]])")
    return tuple(build(_Table(item, f"{name}[{i}]"), f"{name}[{i}]") for i, item in enumerate(raw))


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


def parse_registry(text: str) -> Registry:
    """Parse and validate a registry file. Raises RegistryError on any defect."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"not valid TOML: {exc}") from None
    unknown = sorted(set(doc) - _SECTIONS)
    if unknown:
        raise RegistryError(f"unknown top-level keys {unknown}")
    registry = Registry(
        entities=_section(doc, "entity", _entity),
        sites=_section(doc, "site", _site),
        authorizations=_section(doc, "authorization", _authorization),
        landmarks=_section(doc, "landmark", _landmark),
        arrangements=_section(doc, "arrangement", _arrangement),
    )
    _check_references(registry)
    return registry
