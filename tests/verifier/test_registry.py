"""The registry TOML parser (property-tested: it is a parser of a person's input). The
registry's round trip through both store backends is in tests/verifier/store/test_registry.py."""

from __future__ import annotations

import contextlib
import json
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest.errors import RegistryError
from attest.keys import SoftwareSigner
from verifier.policy.countries import ISO_3166_ALPHA2
from verifier.registry import parse_registry
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

KEYS = [SoftwareSigner.generate(a).public_key for a in ("ed25519", "ecdsa-p256-sha256")]

EXAMPLE = f"""
[[entity]]
id = "acme"
name = "Acme Cloud Inc."
hq_country = "US"
veu = "uveu"

[[site]]
id = "acme-fra1"
entity = "acme"
country = "DE"
lat = 50.11
lon = 8.68
facility_power_kw = 12000

[[authorization]]
id = "D1234567"
holder = "acme"
kind = "licence"
countries = ["AE"]
sites = []
max_units = 1000
max_tpp = 15832000
valid_from = 2025-06-01
valid_until = 2027-06-01

[[landmark]]
id = "lm-fra"
lat = 50.11
lon = 8.68
public_key = "{KEYS[0].to_base64()}"

[[arrangement]]
country = "AE"
since = 2025-03-01
"""


def test_the_design_example_parses() -> None:
    registry = parse_registry(EXAMPLE)
    assert registry.entities == (Entity("acme", "Acme Cloud Inc.", "US", "US", VeuStatus.UVEU),)
    assert registry.sites == (Site("acme-fra1", "acme", "DE", 50.11, 8.68, 12000.0),)
    [auth] = registry.authorizations
    assert (auth.kind, auth.countries, auth.sites, auth.max_units, auth.max_tpp) == (
        AuthorizationKind.LICENCE,
        ("AE",),
        (),
        1000,
        15832000.0,
    )
    assert (auth.valid_from, auth.valid_until) == (date(2025, 6, 1), date(2027, 6, 1))
    assert registry.landmarks[0].public_key == KEYS[0].spki_der
    assert registry.arrangements == (Arrangement("AE", date(2025, 3, 1)),)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (('veu = "uveu"', 'veu = "uveu"\ncolour = "red"'), r"\[entity\[0\]\] colour: unknown key"),
        (("[[arrangement]]", "[[arrangements]]"), "arrangements: unknown key"),
        (('entity = "acme"', 'entity = "nobody"'), "unknown entity"),
        (('holder = "acme"', 'holder = "nobody"'), "unknown holder"),
        (("sites = []", 'sites = ["nowhere"]'), "unknown site"),
        (('countries = ["AE"]', "countries = []"), "scope is empty"),
        (('country = "DE"', 'country = "Germany"'), "ISO 3166"),
        # Two letters but no assigned code: no policy pack could ever place it in a tier.
        (('country = "DE"', 'country = "UK"'), "ISO 3166"),
        (('hq_country = "US"', 'hq_country = "XX"'), "ISO 3166"),
        (
            ("lat = 50.11\nlon = 8.68\nfacility", "lat = 91.0\nlon = 8.68\nfacility"),
            "between -90 and 90",
        ),
        (("valid_until = 2027-06-01", "valid_until = 2024-06-01"), "before valid_from"),
        (("valid_from = 2025-06-01", "valid_from = 2025-06-01T00:00:00"), "must be a date"),
        (("max_units = 1000", "max_units = -1"), "integer >= 0"),
        (("max_units = 1000", "max_units = true"), "integer >= 0"),
        (("lat = 50.11\nlon = 8.68\nfacility", "lat = nan\nlon = 8.68\nfacility"), "finite"),
        (('public_key = "', 'public_key = "!!'), "public_key"),
        (('id = "acme-fra1"', 'id = "acme,fra1"'), "not an id"),
        (('name = "Acme Cloud Inc."', "name = 7"), "non-empty string"),
        (("[[site]]", "site = 3\n[[x]]"), "site: unknown key"),
    ],
)
def test_defects_are_registry_errors(change: tuple[str, str], complaint: str) -> None:
    old, new = change
    assert old in EXAMPLE
    with pytest.raises(RegistryError, match=complaint):
        parse_registry(EXAMPLE.replace(old, new, 1))


def test_duplicate_ids_and_bad_toml() -> None:
    with pytest.raises(RegistryError, match="twice"):
        parse_registry(EXAMPLE + EXAMPLE[EXAMPLE.index("[[site]]") : EXAMPLE.index("[[auth")])
    with pytest.raises(RegistryError, match="not valid TOML"):
        parse_registry("[[entity]\n")
    with pytest.raises(RegistryError, match="array of tables"):
        parse_registry("entity = 1\n")
    with pytest.raises(RegistryError, match="must be a table"):
        parse_registry("entity = [1]\n")


# --- property tests --------------------------------------------------------------------------

IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,12}", fullmatch=True)
COUNTRIES = st.sampled_from(sorted(ISO_3166_ALPHA2))
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1).filter(
    lambda s: s.strip() != "" and s.isprintable()
)
DATES = st.dates(date(2000, 1, 1), date(2099, 12, 31))


def finite(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


@st.composite
def registries(draw: st.DrawFn) -> Registry:
    entity_ids = draw(st.lists(IDS, min_size=1, max_size=3, unique=True))
    entities = tuple(
        Entity(
            i,
            draw(TEXT),
            hq := draw(COUNTRIES),
            draw(st.one_of(st.just(hq), COUNTRIES)),
            draw(st.sampled_from(VeuStatus)),
        )
        for i in entity_ids
    )
    site_ids = draw(st.lists(IDS, max_size=3, unique=True))
    sites = tuple(
        Site(
            i,
            draw(st.sampled_from(entity_ids)),
            draw(COUNTRIES),
            draw(finite(-90, 90)),
            draw(finite(-180, 180)),
            draw(st.one_of(st.none(), finite(0, 1e9))),
        )
        for i in site_ids
    )
    authorizations = []
    for i in draw(st.lists(IDS, max_size=3, unique=True)):
        start = draw(DATES)
        countries = tuple(draw(st.lists(COUNTRIES, max_size=3, unique=True)))
        scoped_sites = (
            tuple(draw(st.lists(st.sampled_from(site_ids), unique=True))) if site_ids else ()
        )
        if not countries and not scoped_sites:
            countries = ("US",)
        authorizations.append(
            Authorization(
                id=i,
                holder=draw(st.sampled_from(entity_ids)),
                kind=draw(st.sampled_from(AuthorizationKind)),
                countries=countries,
                sites=scoped_sites,
                max_units=draw(st.one_of(st.none(), st.integers(0, 10**9))),
                max_tpp=draw(st.one_of(st.none(), finite(0, 1e15))),
                valid_from=start,
                valid_until=draw(st.one_of(st.none(), st.dates(start, date(2099, 12, 31)))),
            )
        )
    landmarks = tuple(
        Landmark(
            i,
            draw(finite(-90, 90)),
            draw(finite(-180, 180)),
            draw(st.sampled_from(KEYS)).spki_der,
        )
        for i in draw(st.lists(IDS, max_size=2, unique=True))
    )
    arrangements = tuple(
        Arrangement(c, d)
        for c, d in draw(st.lists(st.tuples(COUNTRIES, DATES), max_size=3, unique=True))
    )
    return Registry(entities, sites, tuple(authorizations), landmarks, arrangements)


def _toml_value(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool | int):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(value)


def to_toml(registry: Registry) -> str:
    """A test-side writer, so that generated registries can be fed to the parser."""
    blocks = []
    keys = {k.spki_der: k.to_base64() for k in KEYS}
    for section, items in (
        ("entity", registry.entities),
        ("site", registry.sites),
        ("authorization", registry.authorizations),
        ("landmark", registry.landmarks),
        ("arrangement", registry.arrangements),
    ):
        for item in items:
            lines = [f"[[{section}]]"]
            for name, raw in vars(item).items():
                if raw is None:
                    continue
                value = keys[raw] if name == "public_key" else getattr(raw, "value", raw)
                lines.append(f"{name} = {_toml_value(value)}")
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


@given(registries())
def test_what_is_written_parses_back_equal(registry: Registry) -> None:
    assert parse_registry(to_toml(registry)) == registry


@given(
    registries(),
    st.sampled_from(["entity", "site", "authorization", "landmark", "arrangement"]),
    st.from_regex(r"[a-z_]{1,10}", fullmatch=True),
)
def test_any_unknown_key_is_refused(registry: Registry, section: str, key: str) -> None:
    text = to_toml(registry)
    marker = f"[[{section}]]\n"
    known = {
        "id",
        "name",
        "hq_country",
        "parent_hq_country",
        "veu",
        "entity",
        "country",
        "lat",
        "lon",
        "facility_power_kw",
        "holder",
        "kind",
        "countries",
        "sites",
        "max_units",
        "max_tpp",
        "valid_from",
        "valid_until",
        "public_key",
        "since",
    }
    if marker not in text or key in known:
        return
    with pytest.raises(RegistryError, match="unknown key"):
        parse_registry(text.replace(marker, f"{marker}{key} = 1\n", 1))


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_arbitrary_text_only_ever_raises_registry_error(text: str) -> None:
    with contextlib.suppress(RegistryError):
        parse_registry(text)


@given(registries(), st.data())
def test_mutated_files_only_ever_raise_registry_error(
    registry: Registry, data: st.DataObject
) -> None:
    text = to_toml(registry)
    position = data.draw(st.integers(0, len(text)))
    junk = data.draw(st.text(max_size=8))
    with contextlib.suppress(RegistryError):
        parse_registry(text[:position] + junk + text[position + 1 :])


@pytest.mark.parametrize(
    ("value", "expected"),
    [('"7d"', timedelta(days=7)), ('"36h"', timedelta(hours=36)), ('"366d"', timedelta(days=366))],
)
def test_a_site_offline_deadline_is_a_duration(value: str, expected: timedelta) -> None:
    text = EXAMPLE.replace("facility_power_kw = 12000", f"offline_deadline = {value}")
    assert parse_registry(text).sites[0].offline_deadline == expected
    assert parse_registry(EXAMPLE).sites[0].offline_deadline is None  # optional


@pytest.mark.parametrize(
    ("value", "complaint"),
    [("7", "duration string"), ('"0s"', "between 1s and 366d"), ('"367d"', "between 1s and 366d"),
     ('"a week"', "not a duration")],
)  # fmt: skip
def test_a_bad_offline_deadline_names_site_and_key(value: str, complaint: str) -> None:
    text = EXAMPLE.replace("facility_power_kw = 12000", f"offline_deadline = {value}")
    with pytest.raises(RegistryError, match=rf"\[site\[0\]\] offline_deadline: .*{complaint}"):
        parse_registry(text)
