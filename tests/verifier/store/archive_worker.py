"""A `log archive` run for the crash test: archives everything before a far date into segments
of a few envelopes each, printing `SEGMENT name` after each segment's transaction committed.
The test SIGKILLs it at some point of the loop."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from verifier.log_cli import archive_before
from verifier.store import open_store
from verifier.store.api import StoreOptions
from verifier.store.segments import Placement


class _Printing:
    """The store, printing each committed segment (the run's progress) as it goes."""

    def __init__(self, url: str, directory: Path) -> None:
        self.store = open_store(url, StoreOptions(archive_dir=directory))

    def log_size(self) -> int:
        return self.store.log_size()

    def archive_candidates(
        self, before: datetime, start: int, stop: int, limit: int
    ) -> list[tuple[bytes, bytes, int]]:
        return self.store.archive_candidates(before, start, stop, limit)

    def mark_archived(self, placements: list[Placement], log_indices: list[int]) -> int:
        deleted = self.store.mark_archived(placements, log_indices)
        sys.stdout.write(f"SEGMENT {placements[0].segment.hex()}\n")
        sys.stdout.flush()
        return deleted


if __name__ == "__main__":
    directory = Path(sys.argv[2])
    archive_before(
        _Printing(sys.argv[1], directory), directory, datetime(2100, 1, 1, tzinfo=UTC),
        segment_blobs=5,
    )  # fmt: skip
    sys.stdout.write("DONE\n")
