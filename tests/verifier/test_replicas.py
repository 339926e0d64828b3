"""Two `gpu-attest-verifier serve` processes sharing one PostgreSQL database."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import psycopg
import pytest

from tests.verifier.helpers import Chain
from tests.verifier.rpc import Enrolled, Stream, check_receipt, enroll_at, new_token
from tests.verifier.sim import SimAgent, VerifierProcess, mtls
from verifier.exits import VerifierExit
from verifier.store import open_store

PG = "postgresql://postgres@127.0.0.1:5432/test"
AGENTS = 3
ROUNDS = 8


@pytest.fixture
def pg_url() -> Iterator[str]:
    schema = "v_" + secrets.token_hex(6)
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def _send(agent: Enrolled, port: int, raw: bytes, nonce_from: asyncio.Event) -> str:
    """Send one envelope on a fresh stream; 'receipt' or the rejection code."""
    async with mtls(agent, port) as channel:
        stream = Stream(channel)
        await stream.challenge()
        await nonce_from.wait()
        await stream.send(raw)
        message = await stream.recv()
        if message.WhichOneof("kind") == "receipt":
            check_receipt(agent, message.receipt, raw)
            return "receipt"
        assert message.WhichOneof("kind") == "rejection"
        assert await stream.status() in {
            grpc.StatusCode.ALREADY_EXISTS,
            grpc.StatusCode.FAILED_PRECONDITION,
        }
        return message.rejection.code


async def _race(agent: Enrolled, chain: Chain, ports: tuple[int, int]) -> list[str]:
    """Each envelope goes to both replicas at once: exactly one may accept it."""
    outcomes: list[str] = []
    for _ in range(ROUNDS):
        async with mtls(agent, ports[0]) as channel:
            nonce = (await Stream(channel).challenge()).nonce
        raw = chain.next(nonce, datetime.now(UTC))
        go = asyncio.Event()
        tasks = [asyncio.create_task(_send(agent, port, raw, go)) for port in ports]
        await asyncio.sleep(0.05)
        go.set()
        results = await asyncio.gather(*tasks)
        assert sorted(results).count("receipt") == 1, results
        outcomes.extend(r for r in results if r != "receipt")
    return outcomes


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])  # 2: each replica runs two worker processes
async def test_two_replicas_never_accept_twice_and_lose_no_receipt(
    tmp_path: Path, pg_url: str, workers: int
) -> None:
    state = tmp_path / "state"
    first = VerifierProcess(tmp_path, pg_url, state, workers=workers)
    first.start()
    second = VerifierProcess(tmp_path, pg_url, state, workers=workers)
    try:
        await first.wait_ready()
        second.start()
        await second.wait_ready()
        ca_pem = (state / "ca.pem").read_bytes()
        store = open_store(pg_url)
        tokens = [new_token(store) for _ in range(AGENTS * 2)]
        store.close()
        ports = (first.listen, second.listen)
        racers = [await enroll_at(first.enroll, ca_pem, t) for t in tokens[:AGENTS]]
        chains = [Chain(a.agent_id, a.signer) for a in racers]
        movers = [await enroll_at(second.enroll, ca_pem, t) for t in tokens[AGENTS:]]
        sims = [SimAgent(a, Chain(a.agent_id, a.signer)) for a in movers]
        results = await asyncio.gather(
            *(_race(a, c, ports) for a, c in zip(racers, chains, strict=True)),
            *(s.run(list(ports), ROUNDS, per_session=3) for s in sims),
        )
        for codes in results[:AGENTS]:
            assert codes is not None
            assert set(codes) <= {"evidence-replayed", "nonce-replayed"}, codes
        assert first.terminate() == second.terminate() == VerifierExit.OK
    finally:
        for proc in (first, second):
            if proc.proc is not None and proc.proc.poll() is None:
                proc.kill()

    store = open_store(pg_url)
    try:
        assert store.log_size() == AGENTS * 2 * ROUNDS
        everyone = [(a.agent_id, c.sent) for a, c in zip(racers, chains, strict=True)]
        everyone += [(s.enrolled.agent_id, s.chain.sent) for s in sims]
        for agent_id, sent in everyone:
            record = store.get_agent(agent_id)
            assert record is not None and record.last_seq == ROUNDS
            for seq, raw in enumerate(sent, start=1):
                stored = store.get_attestation(agent_id, seq)
                assert stored is not None
                assert store.get_envelope(stored.log_index) == raw
    finally:
        store.close()
