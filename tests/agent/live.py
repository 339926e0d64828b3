"""An enrolled agent against a running verifier (loopback, mTLS, SQLite): what the end-to-end
agent tests share. The verifier fixtures themselves come from tests/verifier/conftest.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.cli import main
from agent.client import Backoff, EnrollRequest, enroll
from agent.config import AgentConfig, load_config
from agent.daemon import Daemon
from agent.exits import AgentExit
from agent.identity import Identity
from attest.hostport import HostPort
from attest.sdnotify import Notifier
from attest.wire import decode_envelope
from tests.verifier.sim import free_port
from verifier.enroll import create_token
from verifier.model import AgentRecord
from verifier.server import Running

from .helpers import machine_file


@dataclass
class Agent:
    running: Running
    config: Path
    cfg: AgentConfig
    identity: Identity

    @property
    def state_dir(self) -> Path:
        return self.cfg.state_dir

    def record(self) -> AgentRecord:
        record = self.running.core.store.get_agent(self.identity.agent_id)
        assert record is not None
        return record

    def current_keyid(self) -> str:
        [key] = self.record().current_keys
        return key.keyid

    def signed_by(self, seq: int) -> str:
        """The key id on the envelope the verifier accepted at `seq`."""
        store = self.running.core.store
        accepted = store.get_attestation(self.identity.agent_id, seq)
        assert accepted is not None
        raw = store.get_envelope(accepted.log_index)
        assert raw is not None
        return decode_envelope(raw).signatures[0].keyid

    def cli(self, command: str, *args: str) -> int:
        return main([command, "--config", str(self.config), *args])


async def enrolled_agent(tmp_path: Path, running: Running, metrics: bool = False) -> Agent:
    token = create_token(running.core.store, "acme-fra1", timedelta(hours=1), datetime.now(UTC))
    state = tmp_path / "agent"
    identity = await enroll(
        EnrollRequest(
            target=HostPort("127.0.0.1", running.ports["enroll"]), token=token,
            ca_pem=running.core.ca.pem, state_dir=state, hostname="gpu-node-017",
            machine_id="m-1", attest_target=HostPort("127.0.0.1", running.ports["listen"]),
        ),
        Backoff(0.05, 0.5),
    )  # fmt: skip
    config = tmp_path / "agent.toml"
    # A long interval: the agent attests when the stream opens, so each (re)connect is one seq.
    config.write_text(
        f'state_dir = "{state}"\nsimulate = "{machine_file(tmp_path)}"\n'
        "interval_seconds = 3600\nbackoff_initial_seconds = 0.05\nbackoff_cap_seconds = 0.5\n"
        + (f'metrics_listen = "127.0.0.1:{free_port()}"\n' if metrics else "")
    )
    return Agent(running, config, load_config(config), identity)


async def run_until(agent: Agent, done: Callable[[], bool], limit_s: float = 30.0) -> Daemon:
    """Run the daemon in-process until `done()` holds, then stop it (SIGTERM's path)."""
    daemon = Daemon(agent.cfg, lambda: agent.cfg, Notifier({}))
    task = asyncio.create_task(daemon.run())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    try:
        while not done():
            if task.done():
                task.result()
                raise AssertionError("the daemon stopped by itself")
            if loop.time() > deadline:
                raise AssertionError("the daemon did not get there in time")
            await asyncio.sleep(0.05)
    finally:
        daemon.stop()
        assert await asyncio.wait_for(task, timeout=30) == AgentExit.OK
    return daemon
