"""A hostile enrolled agent, through the real server (gRPC over mTLS on loopback) and the real
CLI: evidence larger than hardware can report, names that forge output lines or drive a
terminal, and more bytes per hour than any host needs are refused with a typed error, audited,
and never stored; what is stored prints as inert text (docs/protocol.md §4, attest/text.py)."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from attest import model
from attest.errors import ByteBudgetError, ConfigError
from attest.keys import SoftwareSigner
from tests.verifier.conftest import make_config
from tests.verifier.helpers import Chain, evidence, gpu, seal
from tests.verifier.rpc import Enrolled, Stream, enroll_agent, mtls_channel, new_token
from tests.verifier.sim import REPO
from verifier.config import load_config
from verifier.errors_map import mapping_for
from verifier.server import Running, start

ESC = "\x1b"


def now() -> datetime:
    return datetime.now(UTC)


def uuid_of(n: int) -> str:
    return f"GPU-{n:08x}-0000-4000-8000-000000000000"


async def _answer(running: Running, agent: Enrolled, chain: Chain, **changes: object) -> str:
    """Send the agent's next envelope (with `changes`) on a fresh stream and return the answer:
    "receipt", or the rejection's code (the chain then forgets the refused envelope)."""
    async with mtls_channel(running, agent) as channel:
        stream = Stream(channel)
        challenge = await stream.challenge()
        seq, prev = chain.seq, chain.prev
        raw = chain.next(challenge.nonce, now(), **changes)
        await stream.send(raw)
        message = await stream.recv()
        if message.WhichOneof("kind") == "receipt":
            await stream.call.done_writing()
            return "receipt"
        assert message.WhichOneof("kind") == "rejection", message
        code = message.rejection.code
        assert code in (await stream.call.details() or "")
        chain.seq, chain.prev = seq, prev
        chain.sent.pop()
        return code


def _hostile_gpu(name: str, n: int = 0) -> model.Gpu:
    return replace(gpu(uuid_of(n), n), name=name)


HOSTILE: dict[str, dict[str, object]] = {
    # 65 GPUs on one host: more than any board carries.
    "too-many-gpus": {
        "gpus": tuple(gpu(uuid_of(n), n) for n in range(65)),
        "inventory": model.InventoryStatus(model.InventoryState.OK, "", 65),
    },
    # 3,300-character names, as in the disk-filling attack.
    "huge-name": {"gpus": (_hostile_gpu("N" * 3300),)},
    # A newline and a forged host line, an OSC title sequence, NUL, a bidi override.
    "forged-line": {"gpus": (_hostile_gpu("H100\nevil-host  site=site-a  agent=agt-0  gpus=8"),)},
    "osc-sequence": {"gpus": (_hostile_gpu(f"H100{ESC}]0;owned{ESC}\\"),)},
    "nul": {"gpus": (_hostile_gpu("H100\x00"),)},
    "bidi-override": {
        "gpus": (
            _hostile_gpu(
                "H100 \u202e)gninrut(",
            ),
        )
    },
    "uuid-grammar": {"gpus": (replace(gpu(uuid_of(0)), uuid="GPU-\n" + "0" * 36),)},
    "bus-id-grammar": {
        "gpus": (replace(gpu(uuid_of(0)), pci=model.PciInfo("00:18\x1b[2J", 1, 1)),),
    },
    "hostname-grammar": {
        "host": replace(evidence("a", 1, b"", b"", now()).host, hostname="node-1\nforged-host"),
    },
}


@pytest.mark.parametrize("attack", sorted(HOSTILE))
async def test_evidence_beyond_hardware_or_grammar_is_refused_and_audited(
    running: Running, attack: str
) -> None:
    store = running.core.store
    agent = await enroll_agent(running, new_token(store))
    chain = Chain(agent.agent_id, agent.signer)
    assert await _answer(running, agent, chain, **HOSTILE[attack]) == "evidence-out-of-bounds"
    assert store.log_size() == 0  # nothing was stored
    assert "evidence-out-of-bounds" in {a.code for a in store.list_audit()}
    # The agent's honest evidence is still accepted at the same seq.
    assert await _answer(running, agent, chain) == "receipt"


async def test_an_agent_over_its_byte_budget_is_refused_and_audited(tmp_path: Path) -> None:
    signer = SoftwareSigner.generate("ecdsa-p256-sha256")
    one = len(seal(signer, evidence("agt-" + "0" * 20, 1, b"", b"\x00" * 32, now())))
    # Room for two envelopes per hour: the third is refused (the bucket refills at under one
    # byte per second, so the test does not depend on timing).
    running = await start(make_config(tmp_path, agent_bytes_per_hour=2 * one + one // 2))
    try:
        store = running.core.store
        agent = await enroll_agent(running, new_token(store))
        bystander = await enroll_agent(running, new_token(store))
        chain = Chain(agent.agent_id, agent.signer)
        assert await _answer(running, agent, chain) == "receipt"
        assert await _answer(running, agent, chain) == "receipt"
        assert await _answer(running, agent, chain) == "byte-budget-exceeded"
        assert "byte-budget-exceeded" in {a.code for a in store.list_audit()}
        assert store.log_size() == 2
        # Another agent's budget is its own.
        other = Chain(bystander.agent_id, bystander.signer)
        assert await _answer(running, bystander, other) == "receipt"
    finally:
        await running.stop(0)


async def test_fleet_text_shows_stored_hostile_text_as_inert_escapes(
    running: Running, config_file: Path
) -> None:
    """Text stored before the boundary check existed (or by any path around it) still prints
    as one inert line per host and GPU: no raw ESC, NUL, bidi override or forged line."""
    store = running.core.store
    agent = await enroll_agent(running, new_token(store))
    chain = Chain(agent.agent_id, agent.signer)
    assert await _answer(running, agent, chain) == "receipt"
    hostile = f"H100\nevil-host  site=x  agent=y  gpus=8{ESC}]0;owned\x07\x00\u202eZ"
    db = sqlite3.connect(running.core.config.database)
    with db:
        db.execute("UPDATE gpu_sightings SET name = ?", (hostile,))
    db.close()
    config = config_file.parent / "hostile.toml"
    config.write_text(
        f'state_dir = "{running.core.config.state_dir}"\n'
        f'database = "{running.core.config.database}"\nmetrics_listen = ""\n'
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "verifier.cli", "--config", str(config), "fleet"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2, lines  # the host, its one GPU: nothing forged
    assert not any(line.startswith("evil-host") for line in lines)
    for bad in (ESC, "\x00", "\x07", "\u202e"):
        assert bad not in done.stdout
    assert "\\n" in lines[1] and "\\x1b" in lines[1] and "\\u202e" in lines[1]


async def test_rejections_keep_other_streams_working(running: Running) -> None:
    store = running.core.store
    hostile = await enroll_agent(running, new_token(store))
    honest = await enroll_agent(running, new_token(store))
    bad = Chain(hostile.agent_id, hostile.signer)
    good = Chain(honest.agent_id, honest.signer)
    assert await _answer(running, hostile, bad, **HOSTILE["forged-line"]) == (
        "evidence-out-of-bounds"
    )
    assert await _answer(running, honest, good) == "receipt"
    record = store.get_agent(honest.agent_id)
    assert record is not None and record.last_seq == 1


def test_status_of_a_budget_refusal_is_resource_exhausted() -> None:
    mapping = mapping_for(ByteBudgetError("x"))
    assert mapping.status == grpc.StatusCode.RESOURCE_EXHAUSTED and mapping.retryable


def test_a_budget_smaller_than_one_envelope_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "v.toml"
    path.write_text("[stream]\nmax_message_bytes = 4096\nagent_bytes_per_hour = 1000\n")
    with pytest.raises(ConfigError, match="agent_bytes_per_hour"):
        load_config(path)
