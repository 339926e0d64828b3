"""Reading custom policy packs (verifier/policy/load.py): every problem is refused with the
typed error, naming file, table and key, and a pack is never read with a float, an unknown key
or country, overlapping dates or a figure without a source (property-tested: a parser of a
person's input)."""

from __future__ import annotations

import importlib.resources
import tomllib
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest.errors import PolicyError, PolicyNotFoundError
from verifier.policy import find_pack, load_pack, parse_pack

SRC = 'source = "https://example.org/rule"\nsource_label = "primary"\n'

MINIMAL = f"""
[pack]
id = "custom-1"
title = "A custom pack"
effective_from = 2026-01-01
{SRC}
[tiers]
default = 2
licence_required = [2, 3]
tier1 = "allies"
tier2 = "others"
tier3 = "embargoed"
{SRC}
[[tier]]
tier = 3
countries = ["KP", "MO"]
valid_from = 2026-01-01
{SRC}
[country_cap]
tier = 2
tpp = 1000
tpp_with_arrangement = 2000
valid_from = 2026-01-01
{SRC}
[[holder]]
kind = "none"
rules = ["country-cap-exceeded", "unknown-gpu-model"]
safeguards = []
{SRC}
[[holder]]
kind = "uveu"
rules = []
safeguards = ["secure-boot"]
{SRC}
[[holder]]
kind = "nveu"
rules = []
safeguards = []
{SRC}
[thresholds]
a_tpp = 4800
a_density_tpp = 1600
a_density = "5.92"
b_tpp = 2400
b_density = "1.6"
b_alt_tpp = 1600
b_alt_density = "3.2"
{SRC}
[[catalogue]]
model = "H100-SXM"
name = "NVIDIA H100"
pci_device_id = 0x233010DE
dense_tops = "1979"
bit_length = 8
dense_tpp = 15832
die_area_mm2 = "814"
eccn = "3A090.a"
board_power_w = 700
ids_source = "capture"
ids_label = "capture"
{SRC}
[[catalogue]]
model = "Other"
name = "Another"
pci_device_id = 0x200010DE
dense_tops = "100"
bit_length = 8
dense_tpp = 800
eccn = "3A090.a"
board_power_w = 100
ids_source = "recalled"
ids_label = "recalled"
{SRC}"""


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_pack(text, "bad.toml")
    return str(caught.value).splitlines()


def test_the_minimal_pack_is_valid() -> None:
    pack = parse_pack(MINIMAL, "ok.toml")
    assert pack.id == "custom-1" and pack.origin == "ok.toml"
    assert pack.catalogue.max_tpp == 15_832
    assert pack.country_cap is not None and pack.country_cap.tpp == 1000


def _swap(old: str, new: str, text: str = MINIMAL) -> str:
    assert text.count(old) >= 1, old
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("dense_tpp = 15832", "dense_tpp = 1.5",
         "bad.toml: [catalogue[0]] dense_tpp: must be an integer >= 1, got 1.5"),
        ("dense_tpp = 15832", "dense_tpp = nan",
         "bad.toml: [catalogue[0]] dense_tpp: must be an integer >= 1, got nan"),
        ("tpp = 1000", "tpp = inf",
         "bad.toml: [country_cap] tpp: must be an integer >= 0, got inf"),
        ('die_area_mm2 = "814"', "die_area_mm2 = 814.0",
         ('bad.toml: [catalogue[0]] die_area_mm2: must be a positive integer or a decimal string '
         'such as "608.5" (never a float), got 814.0')),
        ("dense_tpp = 15832", "dense_tpp = 15833",
         "bad.toml: [catalogue[0]] dense_tpp: is 15833, but dense_tops x bit_length = 15832"),
        ('eccn = "3A090.a"\nboard_power_w = 700', 'eccn = "3A090.b"\nboard_power_w = 700',
         "bad.toml: [catalogue[0]] eccn: is 3A090.b, but the thresholds give 3A090.a"),
        ('countries = ["KP", "MO"]', 'countries = ["KP", "UK"]',
         "bad.toml: [tier[0]] countries: item 1: 'UK' is not an ISO 3166-1 alpha-2 country code"),
        ("tpp_with_arrangement = 2000\n", "tpp_with_arrangement = 2000\ntppp = 1\n",
         "bad.toml: [country_cap] tppp: unknown key; did you mean 'tpp'?"),
        ("tpp_with_arrangement = 2000\nvalid_from = 2026-01-01\n" + SRC,
         "tpp_with_arrangement = 2000\nvalid_from = 2026-01-01\n",
         "bad.toml: [country_cap] source: missing (this key is required)"),
        ('source_label = "primary"\n\n[tiers]', 'source_label = "official"\n\n[tiers]',
         ("bad.toml: [pack] source_label: must be one of ['capture', 'primary', 'recalled', "
         "'secondary'], got 'official'")),
        ("pci_device_id = 0x233010DE", "pci_device_id = 0x23301002",
         ("bad.toml: [catalogue[0]] pci_device_id: must end in NVIDIA's vendor id 10DE, "
         "got 0x23301002")),
        ('rules = ["country-cap-exceeded", "unknown-gpu-model"]', 'rules = ["tier4-destination"]',
         "bad.toml: [holder[0]] rules: item 0: must be one of"),
        ('safeguards = ["secure-boot"]', 'safeguards = ["secure_boot"]',
         "bad.toml: [holder[1]] safeguards: item 0: must be one of"),
        ("effective_from = 2026-01-01",
         "effective_from = 2026-01-01\neffective_until = 2025-01-01",
         "bad.toml: [pack] effective_until: 2025-01-01 is before effective_from 2026-01-01"),
        ('model = "Other"', 'model = "H100-SXM"',
         "bad.toml: [catalogue[1]] model: 'H100-SXM' is given twice"),
        ("pci_device_id = 0x200010DE", "pci_device_id = 0x233010DE",
         "bad.toml: [catalogue[1]] pci_device_id: 0x233010de (device id) is already 'H100-SXM'"),
        ('kind = "nveu"', 'kind = "uveu"', "bad.toml: [holder[2]] kind: 'uveu' is given twice"),
    ],
)  # fmt: skip
def test_a_defect_is_named_by_file_table_and_key(old: str, new: str, expected: str) -> None:
    found = problems(_swap(old, new))
    assert any(line.startswith(expected) for line in found), found


def test_overlapping_tier_dates_are_refused() -> None:
    text = (
        MINIMAL
        + f"""
[[tier]]
tier = 2
countries = ["MO"]
valid_from = 2026-06-01
{SRC}"""
    )
    assert problems(text) == [
        (
            "bad.toml: [tier[1]] countries: MO is also in tier 3 from 2026-01-01 ([tier[0]]): the "
            "date ranges overlap"
        )
    ]
    ended = _swap("valid_from = 2026-01-01\n" + SRC + "\n[country_cap]",
                  "valid_from = 2026-01-01\nvalid_until = 2026-05-31\n" + SRC + "\n[country_cap]",
                  text)  # fmt: skip
    pack = parse_pack(ended, "ok.toml")
    assert pack.tier_of("MO", date(2026, 5, 31)) == 3
    assert pack.tier_of("MO", date(2026, 6, 1)) == 2


def test_a_rule_needing_a_missing_table_is_refused() -> None:
    text = _swap("[country_cap]\ntier = 2\ntpp = 1000\ntpp_with_arrangement = 2000\n"
                 "valid_from = 2026-01-01\n" + SRC, "")  # fmt: skip
    assert problems(text) == [
        "bad.toml: [holder[0]] rules: country-cap-exceeded needs a [country_cap] table in the pack"
    ]


def test_nveu_steps_must_ascend() -> None:
    steps = "".join(
        f"[[nveu_allocation]]\nvalid_from = {day}\ncumulative_tpp = {tpp}\n{SRC}"
        for day, tpp in (("2026-01-01", 10), ("2026-06-01", 5), ("2026-03-01", 20))
    )
    assert problems(MINIMAL + steps) == [
        "bad.toml: [nveu_allocation[1]] cumulative_tpp: is below the previous step's (cumulative)",
        "bad.toml: [nveu_allocation[2]] valid_from: steps must be in ascending date order",
    ]


def test_shares_are_integer_fractions() -> None:
    uveu = 'tier1_min_share = "3/4"\ntier2_country_max_share = {}\nus_min_share_if_us_hq = "1/2"\n'
    ok = parse_pack(MINIMAL + "[uveu]\n" + uveu.format('"7/100"') + SRC, "ok.toml")
    assert ok.uveu is not None and str(ok.uveu.tier2_country_max_share) == "7/100"
    for bad in ("0.07", '"7%"', '"8/7"', '"1/0"'):
        [line] = problems(MINIMAL + "[uveu]\n" + uveu.format(bad) + SRC)
        assert line.startswith("bad.toml: [uveu] tier2_country_max_share: must be a fraction")


def test_every_problem_is_listed_not_only_the_first() -> None:
    text = _swap("dense_tpp = 15832", "dense_tpp = 1.5", _swap("tpp = 1000", "tpp = -1"))
    text += "\nsurprise = 1\n"
    found = problems(text)
    assert [line.split(":")[1].strip() for line in found] == [
        "[country_cap] tpp",
        "[catalogue[0]] dense_tpp",
        "[catalogue[1]] surprise",
    ]


def test_missing_tables_are_named() -> None:
    assert problems("") == [
        "bad.toml: pack: missing (this table is required)",
        "bad.toml: tiers: missing (this table is required)",
        "bad.toml: thresholds: missing (this table is required)",
        "bad.toml: holder: missing (at least one [[holder]] per kind)",
    ]


def test_load_pack_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(_swap("bit_length = 8", "bit_length = 0"), encoding="utf-8")
    with pytest.raises(PolicyError, match=rf"^{path}: \[catalogue\[0\]\] bit_length: must be"):
        load_pack(path)
    with pytest.raises(PolicyError, match="does not exist"):
        load_pack(tmp_path / "absent.toml")
    path.write_text(MINIMAL, encoding="utf-8")
    assert find_pack(str(path)).id == "custom-1"


def test_an_unknown_pack_name_is_not_found() -> None:
    with pytest.raises(PolicyNotFoundError, match="built-in: aidr-2025, baseline-2025-05"):
        find_pack("aidr-2024")


def test_built_in_pack_files_install_as_package_data() -> None:
    # pyproject.toml ships "*.toml" of every package; packs/ is one (it has an __init__.py)
    names = sorted(p.name for p in importlib.resources.files("verifier.policy.packs").iterdir())
    assert {"aidr-2025.toml", "baseline-2025-05.toml"} <= set(names)
    config = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))
    assert "*.toml" in config["tool"]["setuptools"]["package-data"]["*"]


def test_no_float_anywhere_in_the_built_in_packs() -> None:
    def floats(value: object) -> int:
        if isinstance(value, float):
            return 1
        if isinstance(value, dict):
            return sum(floats(v) for v in value.values())
        if isinstance(value, list):
            return sum(floats(v) for v in value)
        return 0

    for item in importlib.resources.files("verifier.policy.packs").iterdir():
        if item.name.endswith(".toml"):
            assert floats(tomllib.loads(item.read_text(encoding="utf-8"))) == 0, item.name


_TOMLISH = st.text(alphabet='[]{}=".,#\n abcxyz0123456789-:_+/etruflsnaiTZ', max_size=120)
_KEYS = st.sampled_from(
    ["pack", "tiers", "tier", "catalogue", "holder", "thresholds", "uveu", "country_cap",
     "nveu_allocation", "alias", "dense_tpp", "tpp", "countries", "valid_from", "x"]
)  # fmt: skip
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.dates() | st.sampled_from(["7/100", "608.5", "KH", "3A090.a", "none", "primary"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(_TOMLISH)
def test_arbitrary_tomlish_text_raises_only_the_typed_error(text: str) -> None:
    try:
        parse_pack(text, "r.toml")
    except PolicyError as exc:
        assert all(line.startswith("r.toml") for line in str(exc).splitlines())


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _VALUES, max_size=8))
def test_arbitrary_documents_raise_only_the_typed_error(data: dict[str, object]) -> None:
    from attest import tomlconf  # noqa: PLC0415
    from verifier.policy.load import _from_table  # noqa: PLC0415

    try:
        _from_table(tomlconf.Table(data, "d.toml", PolicyError), "d.toml")
    except PolicyError as exc:
        assert all(line.startswith("d.toml") for line in str(exc).splitlines())
