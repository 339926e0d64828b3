"""`log archive` in the store (docs/design.md §9): envelopes move into content-addressed
segment files and every reader still gets the same bytes; a crash between writing a segment and
the transaction that indexes it loses nothing, and a rerun completes. SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import zlib
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest.errors import StoreError
from tests.verifier.store.conftest import Backend
from tests.verifier.store.helpers import T0, Chain, enroll, gpus
from verifier.log_cli import ARCHIVE_WINDOW, archive_before
from verifier.model import Accepted, VerifiedAttestation
from verifier.store.api import Store, StoreOptions
from verifier.store.segments import build_segment, find_in_frame, write_segment


def _fill(store: Store, hours: int) -> list[VerifiedAttestation]:
    """Two agents, one attestation each per hour from T0; returns them in log order (item i at
    log index i)."""
    items = []
    chains = [Chain("a1", inventory=gpus("GPU-1")), Chain("a2", inventory=gpus("GPU-2"))]
    for chain in chains:
        enroll(store, chain.agent_id)
    for hour in range(hours):
        for chain in chains:
            at = T0 + timedelta(hours=hour)
            item = chain.next(at, salt=b"x" * 300)
            (outcome,) = store.accept([item], at)
            assert isinstance(outcome, Accepted), outcome
            items.append(item)
    return items


@pytest.fixture
def archive(backend: Backend, tmp_path: Path) -> tuple[Store, Path]:
    directory = tmp_path / "archive"
    return backend.open(StoreOptions(archive_dir=directory)), directory


def test_archived_envelopes_read_back_verbatim_and_recent_ones_stay(
    backend: Backend, archive: tuple[Store, Path]
) -> None:
    store, directory = archive
    items = _fill(store, 5)
    before = T0 + timedelta(hours=3)  # hours 0, 1, 2: six envelopes
    run = archive_before(store, directory, before, segment_blobs=4)
    assert run.envelopes == 6 and len(run.segments) == 2
    assert run.envelope_bytes == sum(len(i.envelope) for i in items[:6])
    assert run.segment_bytes < run.envelope_bytes  # compressed
    assert backend.query("SELECT COUNT(*) FROM envelopes") == [(4,)]
    assert backend.query("SELECT COUNT(*) FROM blob_archive") == [(6,)]
    for index, item in enumerate(items):
        assert store.get_envelope(index) == item.envelope
    # The log is untouched: its roots and proofs come from leaf hashes and nodes.
    entries = store.log_entries(0, len(items))
    assert [e.envelope_hash for e in entries] == [i.envelope_hash for i in items]
    # Each segment is named by its content.
    for path in run.segments:
        assert path.parent == directory and path.stat().st_mode & 0o777 == 0o600
    # Re-runnable: nothing left to move; a later date moves the rest.
    assert archive_before(store, directory, before).envelopes == 0
    assert archive_before(store, directory, T0 + timedelta(days=1)).envelopes == 4
    assert backend.query("SELECT COUNT(*) FROM envelopes") == [(0,)]
    for index, item in enumerate(items):
        assert store.get_envelope(index) == item.envelope


def test_a_crash_after_the_segment_is_written_loses_nothing_and_a_rerun_completes(
    backend: Backend, archive: tuple[Store, Path]
) -> None:
    store, directory = archive
    items = _fill(store, 3)
    before = T0 + timedelta(days=1)
    # The run's first step, then the process dies before the indexing transaction.
    candidates = store.archive_candidates(before, 0, ARCHIVE_WINDOW, 4)
    data, _ = build_segment([(h, body) for h, body, _ in candidates])
    orphan = write_segment(directory, data)
    (directory / f".{orphan.name}.tmp-1-dead").write_bytes(data[:10])  # a kill -9 mid-write
    store.close()
    store = backend.open(StoreOptions(archive_dir=directory))
    for index, item in enumerate(items):
        assert store.get_envelope(index) == item.envelope
    assert backend.query("SELECT COUNT(*) FROM blob_archive") == [(0,)]
    run = archive_before(store, directory, before, segment_blobs=4)
    assert run.envelopes == len(items)
    assert run.segments[0] == orphan  # the same envelopes made the same segment
    for index, item in enumerate(items):
        assert store.get_envelope(index) == item.envelope


def test_an_altered_or_missing_segment_is_refused_never_believed(
    archive: tuple[Store, Path],
) -> None:
    store, directory = archive
    _fill(store, 1)
    [segment] = archive_before(store, directory, T0 + timedelta(days=1)).segments
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x40
    segment.write_bytes(bytes(data))
    with pytest.raises(StoreError):
        store.get_envelope(0)
    segment.unlink()
    with pytest.raises(StoreError, match="cannot be read"):
        store.get_envelope(0)


def test_sqlite_archives_beside_its_database_and_postgresql_needs_a_directory(
    backend: Backend, tmp_path: Path
) -> None:
    """Without a configured directory a SQLite store reads segments beside its database (the
    state directory); a PostgreSQL store has none, and says so rather than answer None."""
    if backend.name == "sqlite":
        directory = Path(backend.url.removeprefix("sqlite:///")).parent / "archive"
    else:
        directory = tmp_path / "archive"
    items = _fill(backend.open(StoreOptions(archive_dir=directory)), 1)
    archive_before(backend.open(StoreOptions(archive_dir=directory)), directory, T0 + timedelta(1))
    bare = backend.open(StoreOptions())
    if backend.name == "sqlite":
        assert bare.get_envelope(0) == items[0].envelope
    else:
        with pytest.raises(StoreError, match="no archive directory"):
            bare.get_envelope(0)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.binary(min_size=32, max_size=32))
def test_any_frame_bytes_give_the_envelope_none_or_a_store_error(
    frame: bytes, digest: bytes
) -> None:
    for candidate in (frame, zlib.compress(frame)):
        try:
            found = find_in_frame(candidate, digest)
        except StoreError:
            continue
        assert found is None  # random bytes never hash to the digest asked for


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=300), st.data())
def test_a_flipped_segment_byte_never_yields_other_bytes(body: bytes, data: st.DataObject) -> None:
    digest = hashlib.sha256(body).digest()
    segment, [placement] = build_segment([(digest, body)])
    flipped = bytearray(segment)
    position = data.draw(st.integers(0, len(flipped) - 1))
    flipped[position] ^= data.draw(st.integers(1, 255))
    try:
        found = find_in_frame(bytes(flipped), digest)
    except StoreError:
        return
    assert found in (None, body)
    assert placement.frame_length == len(segment)


@pytest.mark.parametrize("after_segments", [0, 1, 3])
def test_sigkill_during_an_archive_run_loses_nothing_and_a_rerun_completes(
    backend: Backend, archive: tuple[Store, Path], after_segments: int
) -> None:
    """A real `kill -9` of a process in its archive loop, after some segments committed and
    while it writes or indexes the next: every envelope still reads back, and a rerun ends
    with every one archived exactly once."""
    store, directory = archive
    items = _fill(store, 15)  # 30 envelopes: six segments of five
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.verifier.store.archive_worker", backend.url, str(directory)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert worker.stdout is not None
    try:
        for _ in range(after_segments):
            assert worker.stdout.readline().startswith("SEGMENT")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        worker.stdout.close()
    for index, item in enumerate(items):
        assert store.get_envelope(index) == item.envelope
    archive_before(store, directory, T0 + timedelta(days=1), segment_blobs=5)
    assert backend.query("SELECT COUNT(*) FROM envelopes") == [(0,)]
    assert backend.query("SELECT COUNT(*) FROM blob_archive") == [(len(items),)]
    for index, item in enumerate(items):
        assert store.get_envelope(index) == item.envelope


def test_envelopes_stored_before_migration_14_read_back_and_archive(
    backend: Backend, archive: tuple[Store, Path]
) -> None:
    """A database from before migration 0014 kept envelope bytes in `blobs`, by hash: they
    read back by log index and `log archive` drains them with the newer ones."""
    store, directory = archive
    items = _fill(store, 2)
    backend.envelopes_to_blobs(below=3)
    assert backend.query("SELECT COUNT(*) FROM blobs") == [(3,)]
    for index, item in enumerate(items):
        assert store.get_envelope(index) == item.envelope
    assert store.get_envelope(len(items)) is None
    run = archive_before(store, directory, T0 + timedelta(days=1), segment_blobs=4)
    assert run.envelopes == len(items)
    assert backend.query("SELECT COUNT(*) FROM blobs") == [(0,)]
    assert backend.query("SELECT COUNT(*) FROM envelopes") == [(0,)]
    for index, item in enumerate(items):
        assert store.get_envelope(index) == item.envelope
