"""Closing the SQLite store while another thread is inside a transaction waits for it: closing
a connection another thread is stepping crashed the process (seen in CI: `serve` shutting down
while the live reconciliation's thread was still reading)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from attest.errors import StoreError
from verifier.store.sqlbase import Db
from verifier.store.sqlite import SqliteStore


def test_close_waits_for_a_read_in_flight_then_refuses_new_ones(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "v.db")
    inside, release = threading.Event(), threading.Event()
    results: list[object] = []

    def slow_read(db: Db) -> int:
        inside.set()
        release.wait(5)
        time.sleep(0.05)
        return int(db.all("SELECT COUNT(*) FROM agents")[0][0])

    reader = threading.Thread(
        target=lambda: results.append(store._transact(slow_read, write=False))
    )
    reader.start()
    assert inside.wait(5)
    closer = threading.Thread(target=store.close)
    closer.start()
    time.sleep(0.1)
    assert closer.is_alive(), "close returned while a transaction was still running"
    release.set()
    reader.join(5)
    closer.join(5)
    assert not closer.is_alive()
    assert results == [0]
    with pytest.raises(StoreError, match="closed"):
        store._transact(slow_read, write=False)
