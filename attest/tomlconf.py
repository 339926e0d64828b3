"""The toolkit of every TOML file a person writes for gpu-attest (agent.toml, verifier.toml, the
compliance registry, simulated-machine files, identity.toml).

A file is read as a `Table`, key by key, each key through a *check*: a function from the raw
TOML value to a typed one that raises `Invalid` with what is wrong. The table adds the place
to the complaint and raises the caller's error class (a `ConfigError` subclass), so every
message names file, table and key:

    verifier.toml: [stream] rate_per_s: must be a finite number, got nan

`Table.done()` then rejects the keys nobody asked for, so a typo never falls back to a default.

Durations: in TOML a duration is a number under a key whose suffix names its unit
(`interval_seconds`, `challenge_ttl_s`, `commit_interval_ms`, `client_cert_days`); as text (on
a command line) it is a whole number and one suffix of `DURATION_UNITS`, read by
`parse_duration`: 90s, 15m, 24h, 7d.
"""

from __future__ import annotations

import difflib
import enum
import math
import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Final, TypeVar

from attest.errors import ConfigError
from attest.hostport import HostPort

T = TypeVar("T")
Check = Callable[[object], T]
#: The largest TOML integer: an integer check without an upper bound.
MAX_INT: Final = 2**63 - 1
DURATION_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^([0-9]{1,9})([smhd])$")


class Invalid(ValueError):  # noqa: N818 - a complaint about a value, not a failure of ours
    """What is wrong with one value; the `Table` that reads it adds file, table and key."""


class _Required(enum.Enum):
    REQUIRED = 0


REQUIRED: Final = _Required.REQUIRED


def got(value: object) -> str:
    """A short rendering of an offending value, for messages (TOML's spelling where it has one)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value.isoformat() if isinstance(value, date) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- checks ------------------------------------------------------------------------------------


def text(*, max_len: int = 1000, empty: bool = False, printable: bool = False) -> Check[str]:
    """A string of at most `max_len` characters, never holding NUL; non-blank unless `empty`."""
    kind = "a string" if empty else "a non-empty string"

    def check(value: object) -> str:
        if not isinstance(value, str) or (not empty and not value.strip()):
            raise Invalid(f"must be {kind}, got {got(value)}")
        if len(value) > max_len:
            raise Invalid(f"must be at most {max_len} characters long")
        if "\x00" in value or (printable and not value.isprintable()):
            raise Invalid(f"must be printable text, got {got(value)}")
        return value

    return check


def integer(low: int = 0, high: int = MAX_INT) -> Check[int]:
    """An integer (not a boolean) from `low` to `high`."""
    span = f">= {low}" if high == MAX_INT else f"from {low} to {high}"

    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise Invalid(f"must be an integer {span}, got {got(value)}")
        return value

    return check


def number(low: float, high: float, *, above: bool = False) -> Check[float]:
    """A finite number (an integer is taken too) from `low` (or above it, with `above`) to
    `high`; NaN and the infinities are refused."""
    span = f"above {low:g} and at most {high:g}" if above else f"between {low:g} and {high:g}"

    def check(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(f"must be a number, got {got(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise Invalid(f"must be a finite number, got {got(value)}")
        if not (low < value if above else low <= value) or not value <= high:
            raise Invalid(f"must be {span}, got {got(value)}")
        return float(value)

    return check


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, got {got(value)}")
    return value


def day(value: object) -> date:
    """A TOML local date; a date-time is refused (a time of day would mean nothing here)."""
    if not isinstance(value, date) or isinstance(value, datetime):
        raise Invalid(f"must be a date (YYYY-MM-DD), got {got(value)}")
    return value


def one_of(options: Collection[str]) -> Check[str]:
    def check(value: object) -> str:
        if not isinstance(value, str) or value not in options:
            raise Invalid(f"must be one of {sorted(options)}, got {got(value)}")
        return value

    return check


def list_of(item: Check[T], *, unique: bool = False) -> Check[tuple[T, ...]]:
    """A list whose every element passes `item`; with `unique`, no element twice."""

    def check(value: object) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise Invalid(f"must be a list, got {got(value)}")
        items: list[T] = []
        for position, element in enumerate(value):
            try:
                items.append(item(element))
            except Invalid as exc:
                raise Invalid(f"item {position}: {exc}") from None
        if unique and len(set(items)) != len(items):
            raise Invalid("lists an item twice")
        return tuple(items)

    return check


def host_port(*, any_port: bool = False) -> Check[HostPort]:
    """A `HOST:PORT` string (see `HostPort.parse`)."""

    def check(value: object) -> HostPort:
        if not isinstance(value, str):
            raise Invalid(f"must be a HOST:PORT string, got {got(value)}")
        try:
            return HostPort.parse(value, any_port=any_port)
        except ValueError as exc:
            raise Invalid(str(exc)) from None

    return check


def parse_duration(value: str) -> timedelta:
    """'90s', '15m', '24h', '7d' (one suffix of DURATION_UNITS) as a timedelta; raise Invalid."""
    match = _DURATION.match(value.strip())
    if not match:
        raise Invalid(
            f"{value!r} is not a duration: a whole number and one of s, m, h, d (30m, 24h, 7d)"
        )
    return timedelta(seconds=int(match.group(1)) * DURATION_UNITS[match.group(2)])


#: YYYY-MM-DD only: date.fromisoformat would also take 20250630 and 2025-W26-1.
_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_day(value: str) -> date:
    """A calendar date written YYYY-MM-DD (command-line dates); raise Invalid."""
    if not _ISO_DAY.fullmatch(value):
        raise Invalid(f"{value!r}: a date is YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise Invalid(f"{value!r} is not a calendar date") from None


def format_duration(value: timedelta) -> str:
    """A duration as `parse_duration` reads it: whole seconds in the largest unit of
    DURATION_UNITS that divides them exactly ("7d", "36h", "90s")."""
    seconds = int(value.total_seconds())
    for unit, size in sorted(DURATION_UNITS.items(), key=lambda u: -u[1]):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def duration(low: timedelta, high: timedelta) -> Check[timedelta]:
    """A duration string such as "1h" (`parse_duration`) from `low` to `high`."""
    span = f"from {format_duration(low)} to {format_duration(high)}"

    def check(value: object) -> timedelta:
        if not isinstance(value, str):
            raise Invalid(f'must be a duration such as "1h", got {got(value)}')
        span_of = parse_duration(value)
        if not low <= span_of <= high:
            raise Invalid(f"{value!r}: must be {span}")
        return span_of

    return check


# --- tables ------------------------------------------------------------------------------------


class Table:
    """One TOML table being read: `get`/`opt` take a key through a check, `table`/`tables`
    descend, `done` refuses whatever key was not asked for. Raises `error` (ConfigError or a
    subclass) for anything wrong, naming `source` (the file), the table and the key."""

    def __init__(
        self,
        data: Mapping[str, object],
        source: str,
        error: type[ConfigError] = ConfigError,
        path: str = "",
    ) -> None:
        self.source, self.path, self.error = source, path, error
        self._data = data
        self._seen: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def fail(self, key: str | None, message: str) -> ConfigError:
        """The error to raise about `key` (None: about the table itself)."""
        return self.error(f"{self._where(key)}: {message}")

    def _where(self, key: str | None) -> str:
        table = f" [{self.path}]" if self.path else ""
        return f"{self.source}:{table}" + ("" if key is None else f" {key}")

    def get(self, key: str, check: Check[T], default: T | _Required = REQUIRED) -> T:
        """The value of `key` through `check`; `default` (unchecked) when the key is absent."""
        self._seen.add(key)
        if key not in self._data:
            if isinstance(default, _Required):
                raise self.fail(key, "missing (this key is required)")
            return default
        try:
            return check(self._data[key])
        except Invalid as exc:
            raise self.fail(key, str(exc)) from None

    def opt(self, key: str, check: Check[T]) -> T | None:
        """The value of `key` through `check`, or None when the key is absent."""
        self._seen.add(key)
        return self.get(key, check) if key in self._data else None

    def table(self, key: str) -> Table:
        """The sub-table `key` (an empty one when absent)."""
        self._seen.add(key)
        raw = self._data.get(key, {})
        if not isinstance(raw, dict):
            raise self.fail(key, f"must be a table, got {got(raw)}")
        return Table(raw, self.source, self.error, f"{self.path}.{key}" if self.path else key)

    def tables(self, key: str) -> list[Table]:
        """The array of tables `[[key]]` (empty when absent)."""
        self._seen.add(key)
        raw = self._data.get(key, [])
        if not isinstance(raw, list):
            raise self.fail(key, f"must be an array of tables ([[{key}]]), got {got(raw)}")
        prefix = f"{self.path}.{key}" if self.path else key
        found = []
        for position, item in enumerate(raw):
            if not isinstance(item, dict):
                raise self.fail(f"{key}[{position}]", f"must be a table, got {got(item)}")
            found.append(Table(item, self.source, self.error, f"{prefix}[{position}]"))
        return found

    def done(self) -> None:
        """Raise unless every key of the table was asked for."""
        unknown = sorted(set(self._data) - self._seen, key=str)
        if not unknown:
            return
        key = str(unknown[0])
        hint = difflib.get_close_matches(key, sorted(self._seen), n=1)
        others = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        raise self.fail(key, f"unknown key{others}{suggestion}")


def parse(content: str, source: str, error: type[ConfigError] = ConfigError) -> Table:
    """The top-level table of TOML text read from `source`; raise `error` when not TOML."""
    try:
        data = tomllib.loads(content)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{source}: not valid TOML: {exc}") from None
    return Table(data, source, error)


def load(path: Path, error: type[ConfigError] = ConfigError) -> Table:
    """The top-level table of the TOML file at `path`; raise `error` when it cannot be read
    (missing, unreadable, not UTF-8) or is not TOML."""
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: cannot read the file: it does not exist") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: cannot read the file: not UTF-8 text ({exc.reason})") from None
    return parse(content, str(path), error)
