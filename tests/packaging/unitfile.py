"""A reader for systemd unit files, enough to assert what the units under systemd/ say.

It keeps every assignment in order (systemd allows a key several times, and an empty value
resets a list), and the comment block right above each assignment, so tests can insist that
every relaxed setting explains itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Assignment:
    """One `Key=value` line of a section, with the comment lines directly above it."""

    key: str
    value: str
    comment: str
    line: int


@dataclass(frozen=True)
class Unit:
    """A parsed unit: section name -> assignments in file order."""

    sections: dict[str, tuple[Assignment, ...]]

    def values(self, section: str, key: str) -> list[str]:
        """Every value given to `key`, in order, with an empty assignment resetting the list."""
        out: list[str] = []
        for item in self.sections.get(section, ()):
            if item.key == key:
                out = [] if item.value == "" else [*out, item.value]
        return out

    def assignments(self, section: str, key: str) -> list[Assignment]:
        """Every assignment of `key`, including empty ones."""
        return [a for a in self.sections.get(section, ()) if a.key == key]

    def value(self, section: str, key: str) -> str | None:
        """The last value given to `key` (empty string if it was reset), None if never set."""
        found = self.assignments(section, key)
        return found[-1].value if found else None


def parse_unit(text: str) -> Unit:
    """Parse unit-file text; raise ValueError on a line that is no section, key or comment."""
    sections: dict[str, list[Assignment]] = {}
    current: list[Assignment] | None = None
    comment: list[str] = []
    pending = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line:
            comment = []
        elif line[0] in "#;":
            comment.append(line[1:].strip())
        elif line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            comment = []
        elif "=" in line and current is not None:
            key, _, value = line.partition("=")
            current.append(Assignment(key.strip(), value.strip(), " ".join(comment), number))
            comment = []
        else:
            raise ValueError(f"line {number}: {raw!r} is not a unit-file line")
    return Unit({name: tuple(items) for name, items in sections.items()})


def load_unit(path: Path) -> Unit:
    """Parse the unit file at `path`."""
    return parse_unit(path.read_text(encoding="utf-8"))
