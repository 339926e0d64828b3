"""PostgreSQL restarted under load: the store reconnects by itself, and every envelope
acknowledged before, during or after the restart is in the database."""

from __future__ import annotations

import subprocess
import threading
import time
from datetime import timedelta

import psycopg
import pytest

from attest.errors import ReplayError, StoreUnavailableError
from tests.verifier.store.conftest import PG_ADMIN, pg_schema_url
from tests.verifier.store.helpers import T0, Chain, enroll
from verifier.model import Accepted
from verifier.store import open_store
from verifier.store.api import Store, StoreOptions

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CLUSTER = ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main"]
WAIT_S = 60.0


def _pg_is_up() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def _ensure_pg_up() -> None:
    """Leave the shared cluster running whatever happened in the test."""
    deadline = time.monotonic() + WAIT_S
    while not _pg_is_up():
        subprocess.run([*CLUSTER, "start"], check=False, capture_output=True, timeout=60)
        if time.monotonic() > deadline:
            raise RuntimeError("PostgreSQL did not come back")
        time.sleep(0.5)


class Load:
    """Agents accepting their chains in a loop, as the servicer would, recording receipts."""

    def __init__(self, store: Store, agents: list[str]) -> None:
        self.store = store
        self.acks: list[tuple[str, int, int]] = []
        self.unavailable = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(a,)) for a in agents]

    def _run(self, agent: str) -> None:
        chain = Chain(agent)
        while not self.stop.is_set():
            item = chain.next(T0, advance=False)
            try:
                outcome = self.store.accept([item], T0)[0]
            except StoreUnavailableError:
                self.unavailable += 1
                continue  # no receipt: the agent resends the same envelope
            if isinstance(outcome, Accepted):
                self.acks.append((agent, item.seq, outcome.log_index))
            else:
                # Committed by an attempt whose answer was lost: durable, but no receipt.
                assert isinstance(outcome, ReplayError), outcome
            chain.seq, chain.last_hash = item.seq, item.envelope_hash

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + WAIT_S
        while len(self.acks) < count:
            assert time.monotonic() < deadline, f"only {len(self.acks)} of {count} receipts"
            time.sleep(0.05)


def test_the_store_recovers_from_a_restart_under_load(pg_schema: str) -> None:
    options = StoreOptions(unavailable_timeout=timedelta(seconds=20), pool_size=4)
    store = open_store(pg_schema_url(pg_schema), options)
    agents = [f"r{i}" for i in range(4)]
    for agent in agents:
        enroll(store, agent)
    load = Load(store, agents)
    for thread in load.threads:
        thread.start()
    try:
        load.wait_for(40)
        subprocess.run([*CLUSTER, "restart"], check=True, capture_output=True, timeout=60)
        load.wait_for(len(load.acks) + 40)
    finally:
        load.stop.set()
        for thread in load.threads:
            thread.join()
        _ensure_pg_up()
    try:
        for agent, seq, index in load.acks:
            record = store.get_attestation(agent, seq)
            assert record is not None, (agent, seq)
            assert record.log_index == index
        size = store.log_size()
        assert [e.log_index for e in store.log_entries(0, size)] == list(range(size))
    finally:
        store.close()
