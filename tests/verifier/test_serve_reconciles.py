"""`serve` keeps the compliance findings in step with the evidence by itself (docs/design.md
§14): after it accepted evidence it reconciles today under the pack in force, so nobody has to
remember to run `reconcile` for a finding to appear. Real server, real gRPC over mTLS."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from attest.errors import ConfigError
from tests.verifier.conftest import make_config
from tests.verifier.helpers import Chain
from tests.verifier.rpc import enroll_agent, new_token
from tests.verifier.test_grpc import attest_n
from verifier.config import FleetConfig
from verifier.server import start


async def test_accepted_evidence_is_reconciled_without_running_reconcile(tmp_path: Path) -> None:
    config = replace(make_config(tmp_path), fleet=FleetConfig(reconcile_interval_s=1))
    running = await start(config)
    try:
        store = running.core.store
        # site-a is in no registry: its GPUs need a licence nobody holds (unlicensed-gpu).
        agent = await enroll_agent(running, new_token(store))
        await attest_n(running, agent, Chain(agent.agent_id, agent.signer), 1)
        rules: set[str] = set()
        for _ in range(200):  # bounded: the loop runs every second
            rules = {f.rule for f in store.iter_findings()}
            if "unlicensed-gpu" in rules:
                break
            await asyncio.sleep(0.1)
        assert "unlicensed-gpu" in rules
    finally:
        await running.stop(0)


async def test_each_accepted_attestation_is_judged_without_waiting_for_the_interval(
    tmp_path: Path,
) -> None:
    """With an hour between full rounds, a finding still follows the attestation that caused
    it: every commit of accepted evidence wakes the live reconciliation."""
    config = replace(make_config(tmp_path), fleet=FleetConfig(reconcile_interval_s=3600))
    running = await start(config)
    try:
        store = running.core.store
        agent = await enroll_agent(running, new_token(store))
        await attest_n(running, agent, Chain(agent.agent_id, agent.signer), 1)
        rules: set[str] = set()
        for _ in range(100):  # bounded: 10 s, far below the interval
            rules = {f.rule for f in store.iter_findings()}
            if "unlicensed-gpu" in rules:
                break
            await asyncio.sleep(0.1)
        assert "unlicensed-gpu" in rules
    finally:
        await running.stop(0)


async def test_a_policy_pack_that_cannot_be_had_stops_serve_at_start(tmp_path: Path) -> None:
    config = replace(make_config(tmp_path), policy="no-such-pack")
    with pytest.raises(ConfigError, match="policy"):
        await start(config)
