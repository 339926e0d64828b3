"""The database connection dropped under load (what a PostgreSQL restart does to the verifier):
the verifier recovers by itself, agents resend what was not receipted, nothing is lost or
stored twice. Only this verifier's backends are terminated, so the shared server stays up."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.verifier.sim import VerifierProcess, enroll_sim_agents
from verifier.exits import VerifierExit
from verifier.store import open_store

PG = "postgresql://postgres@127.0.0.1:5432/test"
AGENTS = 3
TOTAL = 24


@pytest.fixture
def pg_app() -> Iterator[tuple[str, str]]:
    schema = "o_" + secrets.token_hex(6)
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema, f"{PG}?application_name={schema}&options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _terminate(application: str) -> int:
    with psycopg.connect(PG, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (application,),
        ).fetchall()
    return len(rows)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
async def test_dropped_database_connections_under_load(
    tmp_path: Path, pg_app: tuple[str, str], workers: int
) -> None:
    application, url = pg_app
    server = VerifierProcess(tmp_path, url, tmp_path / "state", workers=workers)
    server.start()
    try:
        await server.wait_ready()
        agents = await enroll_sim_agents(
            server, url.replace(f"application_name={application}&", ""), AGENTS
        )
        runs = [asyncio.create_task(a.run([server.listen], TOTAL)) for a in agents]
        for threshold in (AGENTS * TOTAL // 4, AGENTS * TOTAL // 2):
            while sum(len(a.receipted) for a in agents) < threshold:  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # poll: the agents' progress is the load
            assert await asyncio.to_thread(_terminate, application) >= 1
        await asyncio.gather(*runs)
        assert server.terminate() == VerifierExit.OK
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.kill()

    store = open_store(url)
    try:
        assert store.log_size() == AGENTS * TOTAL
        for agent in agents:
            for seq, digest in agent.expected_hashes().items():
                stored = store.get_attestation(agent.enrolled.agent_id, seq)
                assert stored is not None and stored.envelope_hash == digest
            assert set(agent.receipted.items()) <= set(agent.expected_hashes().items())
    finally:
        store.close()
