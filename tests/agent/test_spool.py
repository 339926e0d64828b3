"""The spool: order, acknowledgement, full disk, and crash safety under SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.spool import SPOOL_FILE, ChainHead, Spool, SpoolEntry
from attest.envelope import EVIDENCE_PAYLOAD_TYPE, envelope_hash, verify
from attest.errors import SpoolFullError, StoreError
from attest.keys import PublicKey
from attest.wire import decode_envelope, decode_evidence

from .helpers import enrolled_state_dir, machine_file

ROOT = Path(__file__).parents[2]
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _append(spool: Spool, size: int = 100) -> SpoolEntry:
    return spool.append(lambda seq, prev: f"{seq}:".encode() + prev + b"x" * size, NOW)


def test_chain_advances_with_each_entry(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, 1 << 20)
    first, second = _append(spool), _append(spool)
    assert (first.seq, second.seq) == (1, 2)
    assert second.envelope.startswith(b"2:" + envelope_hash(first.envelope))
    assert spool.head() == ChainHead(2, envelope_hash(second.envelope))
    assert [e.seq for e in spool.pending()] == [1, 2]
    spool.acknowledge(1, b"receipt-1", NOW)
    assert [e.seq for e in spool.pending()] == [2] and spool.receipt(1) == b"receipt-1"
    assert spool.drop_through(5) == 1 and spool.depth() == 0
    assert _append(spool).seq == 3  # the chain never goes back
    spool.close()
    reopened = Spool.open(tmp_path, 1 << 20)
    assert reopened.head().seq == 3 and [e.seq for e in reopened.pending()] == [3]
    assert (tmp_path / SPOOL_FILE).stat().st_mode & 0o077 == 0


def test_failed_build_changes_nothing(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, 1 << 20)
    _append(spool)

    def broken(seq: int, prev: bytes) -> bytes:
        raise RuntimeError("signer gone")

    with pytest.raises(RuntimeError):
        spool.append(broken, NOW)
    assert spool.head().seq == 1 and _append(spool).seq == 2


def test_adopt_head_only_when_empty(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, 1 << 20)
    _append(spool)
    with pytest.raises(StoreError):
        spool.adopt_head(ChainHead(9, b"h" * 32))
    spool.drop_through(1)
    spool.adopt_head(ChainHead(9, b"h" * 32))
    assert _append(spool).envelope.startswith(b"10:" + b"h" * 32)


def test_size_cap_is_a_full_disk_and_corrupts_nothing(tmp_path: Path) -> None:
    """SQLite's max_page_count yields SQLITE_FULL exactly as a full file system does."""
    spool = Spool.open(tmp_path, 128 * 1024)
    stored = []
    with pytest.raises(SpoolFullError, match="full") as info:
        for _ in range(1000):
            stored.append(_append(spool, size=3000))  # noqa: PERF401 - stops at the raise
    assert info.value.code == "spool-full"
    assert len(stored) > 5
    assert spool.integrity_ok()
    assert spool.head() == ChainHead(stored[-1].seq, stored[-1].hash)
    assert [e.envelope for e in spool.pending()] == [e.envelope for e in stored]
    with pytest.raises(SpoolFullError):
        _append(spool, size=3000)  # still full, still nothing changed
    for entry in stored[: len(stored) // 2]:
        spool.acknowledge(entry.seq, b"r", NOW)  # draining works while full
    assert _append(spool, size=3000).seq == stored[-1].seq + 1  # room again: chain continues
    spool.close()
    with sqlite3.connect(tmp_path / SPOOL_FILE) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _run_worker(state_dir: Path, machine: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.agent.spool_worker", str(state_dir), str(machine), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def _check_chain(state_dir: Path, key: PublicKey) -> list[int]:
    spool = Spool.open(state_dir, 1 << 30)
    assert spool.integrity_ok()
    entries = spool.pending(0, 100_000)
    prev = b""
    for expected_seq, entry in enumerate(entries, start=1):
        assert entry.hash == envelope_hash(entry.envelope)
        payload = verify(decode_envelope(entry.envelope), EVIDENCE_PAYLOAD_TYPE, {key.keyid: key})
        evidence = decode_evidence(payload.payload)
        assert (evidence.seq, entry.seq, evidence.prev_hash) == (expected_seq, expected_seq, prev)
        prev = entry.hash
    assert spool.head() == ChainHead(len(entries), prev)
    spool.close()
    return [e.seq for e in entries]


def test_sigkill_at_any_moment_loses_nothing_and_forks_nothing(tmp_path: Path) -> None:
    enrolled = enrolled_state_dir(tmp_path / "state")
    machine = machine_file(tmp_path)
    rng = random.Random(7)
    committed: list[int] = []
    for _ in range(6):
        child = _run_worker(enrolled.state_dir, machine)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        for _ in range(rng.randint(1, 12)):
            line = child.stdout.readline().split()
            committed.append(int(line[1]))
        os.kill(child.pid, signal.SIGKILL)  # somewhere inside the next build/sign/commit
        child.wait()
        child.stdout.close()
    seqs = _check_chain(enrolled.state_dir, enrolled.agent.public_key)
    assert set(committed) <= set(seqs)  # every announced commit survived
    assert seqs == list(range(1, len(seqs) + 1))  # contiguous: no gap, no duplicate


def test_write_failure_stops_production_and_keeps_the_spool(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes the kernel refuse to grow the file (EFBIG), like a full disk."""
    enrolled = enrolled_state_dir(tmp_path / "state")
    machine = machine_file(tmp_path)
    child = _run_worker(enrolled.state_dir, machine, "--fsize", "300000")
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 3
    error = out.splitlines()[-1]
    assert error.startswith(("error store-error", "error spool-full")), error
    committed = [int(line.split()[1]) for line in out.splitlines() if line.startswith("committed")]
    assert committed
    seqs = _check_chain(enrolled.state_dir, enrolled.agent.public_key)
    assert seqs == committed
    child = _run_worker(enrolled.state_dir, machine)  # the limit is gone: the chain continues
    assert child.stdout is not None
    child.stdout.readline()
    assert child.stdout.readline().split() == ["committed", str(committed[-1] + 1)]
    child.kill()
    child.wait()
    child.stdout.close()
    assert _check_chain(enrolled.state_dir, enrolled.agent.public_key)[-1] >= committed[-1] + 1


def test_kept_receipts_are_bounded_and_listed_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent.spool.RECEIPTS_KEPT", 3)
    spool = Spool.open(tmp_path, 1 << 20)
    entries = [_append(spool) for _ in range(5)]
    for entry in entries:
        spool.acknowledge(entry.seq, b"receipt-%d" % entry.seq, NOW)
    kept = spool.receipts()
    assert [k.seq for k in kept] == [3, 4, 5]
    assert [k.receipt for k in kept] == [b"receipt-3", b"receipt-4", b"receipt-5"]
    assert kept[0].envelope_hash == entries[2].hash and kept[0].received_at == NOW.isoformat()
