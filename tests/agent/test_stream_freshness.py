"""A running agent answers every challenge: each attestation is bound to the nonce that came
with the previous receipt (one message per envelope), so none falls back to offline freshness."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from agent.config import load_config
from attest.model import Freshness
from tests.agent.live import enrolled_agent, run_until
from verifier.server import Running


async def test_every_attestation_of_a_running_agent_is_nonce_fresh(
    tmp_path: Path, running: Running
) -> None:
    agent = await enrolled_agent(tmp_path, running)
    text = agent.config.read_text().replace("interval_seconds = 3600", "interval_seconds = 1")
    agent.config.write_text(text)
    agent = dataclasses.replace(agent, cfg=load_config(agent.config))
    await run_until(agent, lambda: agent.record().last_seq >= 4)
    store = running.core.store
    for seq in range(1, 5):
        accepted = store.get_attestation(agent.identity.agent_id, seq)
        assert accepted is not None
        assert accepted.freshness is Freshness.NONCE, seq
