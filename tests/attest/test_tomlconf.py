"""The TOML toolkit (attest.tomlconf), HOST:PORT and loopback (attest.hostport), durations."""

from __future__ import annotations

import math
import tomllib
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest import tomlconf as tc
from attest.errors import ConfigError, MachineFileError, RegistryError
from attest.hostport import HostPort, parse_host_port, require_loopback


def _stream(text: str) -> float:
    """A miniature verifier.toml: one [stream] table with one number."""
    root = tc.parse(text, "verifier.toml")
    stream = root.table("stream")
    rate = stream.get("rate_per_s", tc.number(0, 1e6, above=True), 2.0)
    stream.done()
    root.done()
    return rate


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+nan"])
def test_nan_and_infinities_are_refused_naming_file_table_and_key(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _stream(f"[stream]\nrate_per_s = {value}\n")
    shown = repr(float(value))
    assert str(caught.value) == (
        f"verifier.toml: [stream] rate_per_s: must be a finite number, got {shown}"
    )


def test_numbers_in_range_defaults_and_bounds() -> None:
    assert _stream("") == 2.0
    assert _stream("[stream]\nrate_per_s = 5") == 5.0  # an integer is a number
    with pytest.raises(ConfigError, match="above 0 and at most 1e"):
        _stream("[stream]\nrate_per_s = 0")
    with pytest.raises(ConfigError, match="must be a number, got true"):
        _stream("[stream]\nrate_per_s = true")


def test_unknown_keys_name_file_table_and_key_with_a_hint() -> None:
    with pytest.raises(ConfigError) as caught:
        _stream("[stream]\nrate_per_sec = 1\n")
    assert str(caught.value) == (
        "verifier.toml: [stream] rate_per_sec: unknown key; did you mean 'rate_per_s'?"
    )
    with pytest.raises(ConfigError, match=r"^verifier.toml: colour: unknown key \(and 1 more\)$"):
        _stream('colour = "red"\nzebra = 1\n')


def test_the_caller_chooses_the_error_class() -> None:
    with pytest.raises(RegistryError, match=r"^registry.toml: not valid TOML"):
        tc.parse("[[entity]\n", "registry.toml", RegistryError)
    root = tc.parse("[[gpu]]\ncount = -1\n", "m.toml", MachineFileError)
    [gpu] = root.tables("gpu")
    with pytest.raises(MachineFileError, match=r"^m.toml: \[gpu\[0\]\] count: must be an integer"):
        gpu.get("count", tc.integer(0, 1024))
    with pytest.raises(MachineFileError, match=r"^m.toml: \[gpu\[0\]\] model: missing"):
        gpu.get("model", tc.text())


def test_tables_and_arrays_of_tables() -> None:
    root = tc.parse("a = 1\nb = [1]\n[t]\n[t.u]\nx = 1\n", "f.toml")
    with pytest.raises(ConfigError, match=r"^f.toml: a: must be a table, got 1$"):
        root.table("a")
    with pytest.raises(ConfigError, match=r"^f.toml: b\[0\]: must be a table, got 1$"):
        root.tables("b")
    with pytest.raises(ConfigError, match=r"array of tables \(\[\[a\]\]\)"):
        root.tables("a")
    inner = root.table("t").table("u")
    with pytest.raises(ConfigError, match=r"^f.toml: \[t.u\] x: must be true or false, got 1$"):
        inner.get("x", tc.boolean)
    assert root.tables("none") == [] and "x" not in root.table("empty")


def test_typed_getters() -> None:
    root = tc.parse(
        'name = "n"\nn = 3\nflag = true\nnames = ["a", "b"]\nday = 2025-06-01\n'
        'when = 2025-06-01T00:00:00\ncolour = "red"\ndup = ["a", "a"]\naddr = "[::1]:80"\n',
        "f.toml",
    )
    assert root.get("name", tc.text()) == "n"
    assert root.get("n", tc.integer(0, 5)) == 3
    assert root.get("flag", tc.boolean) is True
    assert root.get("names", tc.list_of(tc.text())) == ("a", "b")
    assert root.get("day", tc.day) == date(2025, 6, 1)
    assert root.get("addr", tc.host_port()) == HostPort("::1", 80)
    assert root.opt("absent", tc.integer()) is None
    assert root.get("absent", tc.integer(), 7) == 7
    with pytest.raises(ConfigError, match="when: must be a date"):
        root.get("when", tc.day)
    with pytest.raises(ConfigError, match=r"colour: must be one of \['blue', 'green'\]"):
        root.get("colour", tc.one_of(("green", "blue")))
    with pytest.raises(ConfigError, match="dup: lists an item twice"):
        root.get("dup", tc.list_of(tc.text(), unique=True))
    with pytest.raises(ConfigError, match="names: item 1: must be one of"):
        root.get("names", tc.list_of(tc.one_of(("a",))))
    with pytest.raises(ConfigError, match="n: must be an integer from 5 to 9, got 3"):
        root.get("n", tc.integer(5, 9))
    root.done()


def test_text_checks() -> None:
    check = tc.text(max_len=5)
    with pytest.raises(tc.Invalid, match="non-empty string"):
        check("  ")
    with pytest.raises(tc.Invalid, match="at most 5"):
        check("toolong")
    with pytest.raises(tc.Invalid, match="printable"):
        check("a\x00b")
    with pytest.raises(tc.Invalid, match="printable"):
        tc.text(printable=True)("a\nb")
    assert tc.text(empty=True)("") == ""


def test_load_reports_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent.toml: cannot read the file: it does not exist"):
        tc.load(tmp_path / "absent.toml")
    (tmp_path / "latin1.toml").write_bytes(b'a = "\xe9"\n')
    with pytest.raises(ConfigError, match=r"latin1.toml: cannot read the file: not UTF-8"):
        tc.load(tmp_path / "latin1.toml")
    with pytest.raises(ConfigError, match="cannot read the file"):
        tc.load(tmp_path)
    (tmp_path / "ok.toml").write_text("a = 1\n")
    assert tc.load(tmp_path / "ok.toml").source == str(tmp_path / "ok.toml")


# --- durations -----------------------------------------------------------------------------------


def test_durations_have_one_set_of_suffixes() -> None:
    assert tc.parse_duration("90s") == timedelta(seconds=90)
    assert tc.parse_duration("15m") == timedelta(minutes=15)
    assert tc.parse_duration(" 24h ") == timedelta(hours=24)
    assert tc.parse_duration("7d") == timedelta(days=7)
    for bad in ("", "24", "h", "1.5h", "-1h", "1w", "1 h", "10ms", "²h", "1234567890d"):
        with pytest.raises(tc.Invalid, match="is not a duration"):
            tc.parse_duration(bad)


# --- HOST:PORT and loopback ----------------------------------------------------------------------


def test_host_port_parsing() -> None:
    assert HostPort.parse("verifier.example:7443") == HostPort("verifier.example", 7443)
    assert str(HostPort.parse("[::1]:9465")) == "[::1]:9465"
    assert HostPort.parse("0.0.0.0:0", any_port=True).port == 0
    for bad in ("nohost", ":1", "a:", "a:0", "a:65536", "a:x", "a b:1", "a/b:1", "a:²", "[::1:1"):
        with pytest.raises(ValueError, match="not"):
            HostPort.parse(bad)
    with pytest.raises(ConfigError, match=r"^--verifier: 'a:0' is not HOST:PORT$"):
        parse_host_port("a:0", "--verifier")


def test_one_loopback_check() -> None:
    for address in ("127.0.0.1:1", "127.9.9.9:1", "[::1]:1", "localhost:1"):
        assert HostPort.parse(address).is_loopback, address
        require_loopback(HostPort.parse(address), "x")
    for address in ("0.0.0.0:1", "10.0.0.1:1", "[::]:1", "verifier.example:1", "localhost.:1"):
        assert not HostPort.parse(address).is_loopback, address
    with pytest.raises(ConfigError, match=r"^metrics_listen is allowed only on a loopback address"):
        require_loopback(HostPort("10.0.0.1", 1), "metrics_listen")


# --- properties ----------------------------------------------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.dates(),
    st.datetimes(),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)
_CHECKS: list[tc.Check[object]] = [
    tc.text(),
    tc.text(max_len=3, empty=True, printable=True),
    tc.integer(),
    tc.integer(-5, 5),
    tc.number(-1.0, 1.0),
    tc.number(0, math.inf, above=True),
    tc.boolean,
    tc.day,
    tc.one_of(("a", "b")),
    tc.list_of(tc.text(), unique=True),
    tc.list_of(tc.list_of(tc.integer())),
    tc.host_port(),
    tc.host_port(any_port=True),
]


def _read_everything(root: tc.Table, keys: list[str], checks: list[int]) -> None:
    """Read every key of `root` as a table, an array of tables or a value through a check."""
    for position, key in enumerate(sorted(keys)):
        check = _CHECKS[checks[position % len(checks)] % len(_CHECKS)]
        if position % 3 == 0:
            root.table(key).done()
        elif position % 3 == 1:
            for table in root.tables(key):
                table.opt("x", check)
                table.done()
        else:
            root.get(key, check)
    root.done()


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.text(max_size=5), _VALUES, max_size=6),
    st.lists(st.integers(0, 100), min_size=1, max_size=6),
)
def test_any_decoded_document_is_read_or_refused_with_the_typed_error(
    data: dict[str, object], checks: list[int]
) -> None:
    try:
        _read_everything(tc.Table(data, "f.toml", MachineFileError), list(data), checks)
    except MachineFileError as exc:
        assert str(exc).startswith("f.toml")


_TOMLISH = st.text(alphabet='[]{}=".,#\n abcxyz0123456789-:_+etruflsnaiTZ', max_size=80)


@settings(max_examples=500, deadline=None)
@given(_TOMLISH, st.lists(st.integers(0, 100), min_size=1, max_size=6))
def test_arbitrary_tomlish_text_never_raises_anything_but_the_typed_error(
    text: str, checks: list[int]
) -> None:
    try:
        keys = list(tomllib.loads(text))
    except tomllib.TOMLDecodeError:
        with pytest.raises(RegistryError, match=r"^r.toml: not valid TOML"):
            tc.parse(text, "r.toml", RegistryError)
        return
    try:
        _read_everything(tc.parse(text, "r.toml", RegistryError), keys, checks)
    except RegistryError as exc:
        assert str(exc).startswith("r.toml")


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers())
def test_number_checks_return_finite_values_in_range_or_refuse(value: float) -> None:
    try:
        got = tc.number(-10.0, 10.0)(value)
    except tc.Invalid:
        assert not (isinstance(value, int) or math.isfinite(value)) or abs(value) > 10
        return
    assert math.isfinite(got) and -10.0 <= got <= 10.0


def test_datetime_is_a_date_subclass_and_refused() -> None:
    assert isinstance(datetime(2025, 1, 1), date)
    with pytest.raises(tc.Invalid):
        tc.day(datetime(2025, 1, 1))


@pytest.mark.parametrize(
    ("seconds", "text"), [(90, "90s"), (900, "15m"), (129600, "36h"), (604800, "7d"), (61, "61s")]
)
def test_format_duration_is_what_parse_duration_reads(seconds: int, text: str) -> None:
    assert tc.format_duration(timedelta(seconds=seconds)) == text
    assert tc.parse_duration(text) == timedelta(seconds=seconds)


def test_a_duration_check_takes_its_range_inclusive_and_says_it() -> None:
    check = tc.duration(timedelta(minutes=1), timedelta(days=7))
    assert check("1m") == timedelta(minutes=1) and check("7d") == timedelta(days=7)
    for bad, complaint in (
        ("30s", "'30s': must be from 1m to 7d"),
        ("8d", "from 1m to 7d"),
        (3600, 'must be a duration such as "1h"'),
        ("soon", "not a duration"),
    ):
        with pytest.raises(tc.Invalid, match=complaint):
            check(bad)
