"""A real `gpu-attest-verifier serve` killed with SIGKILL under load, then restarted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from attest.envelope import envelope_hash
from tests.verifier.sim import VerifierProcess, enroll_sim_agents
from verifier.exits import VerifierExit
from verifier.store import open_store

AGENTS = 4
TOTAL = 30


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])  # 2: the supervisor and its workers all killed
async def test_sigkill_under_load_loses_no_receipted_envelope(tmp_path: Path, workers: int) -> None:
    db = tmp_path / "verifier.db"
    server = VerifierProcess(tmp_path, str(db), tmp_path / "state", workers=workers)
    server.start()
    try:
        await server.wait_ready()
        agents = await enroll_sim_agents(server, f"sqlite:///{db}", AGENTS)
        runs = [asyncio.create_task(a.run([server.listen], TOTAL)) for a in agents]
        while sum(len(a.receipted) for a in agents) < AGENTS * TOTAL // 3:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # poll: the agents' progress is the load to kill under
        server.kill()
        receipted_before = {a.enrolled.agent_id: dict(a.receipted) for a in agents}
        await asyncio.sleep(0.3)
        server.start()
        await asyncio.gather(*runs)
        assert server.terminate() == VerifierExit.OK  # graceful SIGTERM exits 0
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.kill()

    store = open_store(f"sqlite:///{db}")
    try:
        assert store.log_size() == AGENTS * TOTAL  # each envelope exactly once
        for agent in agents:
            agent_id = agent.enrolled.agent_id
            assert agent.reconnects >= 1
            expected = agent.expected_hashes()
            for seq, digest in receipted_before[agent_id].items():
                assert expected[seq] == digest
            for seq, digest in expected.items():
                stored = store.get_attestation(agent_id, seq)
                assert stored is not None and stored.envelope_hash == digest
                assert store.get_envelope(stored.log_index) == agent.chain.sent[seq - 1]
            record = store.get_agent(agent_id)
            assert record is not None and record.last_seq == TOTAL
            assert record.last_hash == envelope_hash(agent.chain.sent[-1])
    finally:
        store.close()
