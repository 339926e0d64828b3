"""Test-side protocol agent (docs/protocol.md §8) and a `gpu-attest-verifier serve` harness.

Written from attest only (no agent/ import, layering). The agent keeps a spool: an envelope is
spooled before it is sent and removed only when a receipt signed by the pinned verifier key
names it; on every (re)connect it drops what the challenge's last_seq says is already held.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from attest import wire
from attest.envelope import envelope_hash
from tests.verifier.helpers import Chain
from tests.verifier.rpc import Enrolled, Stream, check_receipt, enroll_at, new_token
from verifier.store import open_store

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class VerifierProcess:
    """One `gpu-attest-verifier serve` subprocess with its own config file."""

    workdir: Path
    database: str
    state_dir: Path
    listen: int = field(default_factory=free_port)
    enroll: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    #: `serve` worker processes (verifier/supervisor.py); 1 is a single process
    workers: int = 1
    #: a port for metrics_listen; 0 serves none
    metrics: int = 0
    env: dict[str, str] | None = None
    _starts_seen: int = 0

    def write_config(self) -> Path:
        path = self.workdir / f"verifier-{self.listen}.toml"
        path.write_text(
            f'listen = "127.0.0.1:{self.listen}"\nenroll_listen = "127.0.0.1:{self.enroll}"\n'
            f'state_dir = "{self.state_dir}"\ndatabase = "{self.database}"\n'
            f'metrics_listen = "{f"127.0.0.1:{self.metrics}" if self.metrics else ""}"\n'
            f"workers = {self.workers}\n"
            "[stream]\nrate_per_s = 1000.0\nrate_burst = 1000\n"
        )
        return path

    def _all_serving(self) -> int:
        """How often the log says every worker serves (once per start of a supervisor)."""
        path = self.workdir / f"verifier-{self.listen}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return text.count(f"all {self.workers} workers serving")

    def start(self) -> None:
        self._starts_seen = self._all_serving()
        log = (self.workdir / f"verifier-{self.listen}.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "verifier.cli", "--config", str(self.write_config()), "serve"],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=self.env,
        )  # fmt: skip
        log.close()

    async def wait_ready(self, within_s: float = 30.0) -> None:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log_text()
            ca = self.state_dir / "ca.pem"
            if ca.exists():
                creds = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
                async with grpc.aio.secure_channel(f"127.0.0.1:{self.enroll}", creds) as ch:
                    try:
                        reply = await health_pb2_grpc.HealthStub(ch).Check(
                            health_pb2.HealthCheckRequest(), timeout=1
                        )
                        if reply.status == health_pb2.HealthCheckResponse.SERVING and (
                            self.workers == 1 or self._all_serving() > self._starts_seen
                        ):
                            return
                    except grpc.aio.AioRpcError:
                        pass
            await asyncio.sleep(0.1)
        raise TimeoutError(self.log_text())

    def worker_pids(self) -> list[int]:
        """The pids of the supervisor's workers (none for a single process)."""
        assert self.proc is not None
        with contextlib.suppress(psutil.Error):
            return [child.pid for child in psutil.Process(self.proc.pid).children()]
        return []

    def kill(self) -> None:
        """SIGKILL the verifier and its workers, as systemd kills a unit's control group."""
        assert self.proc is not None
        workers = self.worker_pids() if self.proc.poll() is None else []
        self.proc.send_signal(signal.SIGKILL)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def log_text(self) -> str:
        path = self.workdir / f"verifier-{self.listen}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def mtls(agent: Enrolled, port: int) -> grpc.aio.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=agent.ca_pem,
        private_key=agent.signer.private_pem(),
        certificate_chain=agent.cert_pem,
    )
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", creds)


@dataclass
class SimAgent:
    """A protocol-following agent with an in-memory spool."""

    enrolled: Enrolled
    chain: Chain
    spool: dict[int, bytes] = field(default_factory=dict)
    receipted: dict[int, bytes] = field(default_factory=dict)  # seq -> envelope hash
    rejections: list[str] = field(default_factory=list)
    reconnects: int = 0

    async def _exchange(self, stream: Stream, raw: bytes) -> bytes:
        """Send one envelope and wait for its receipt; return the newest challenge nonce."""
        await stream.send(raw)
        while True:
            message = await stream.recv()
            kind = message.WhichOneof("kind")
            if kind == "receipt":
                receipt = check_receipt(self.enrolled, message.receipt, raw)
                self.receipted[receipt.seq] = receipt.envelope_hash
                self.spool.pop(receipt.seq, None)
                assert message.HasField("next_challenge")
                return wire.challenge_from_pb(message.next_challenge).nonce
            if kind == "rejection":
                self.rejections.append(message.rejection.code)
                raise ConnectionError(message.rejection.code)

    async def session(self, port: int, total: int, per_session: int | None = None) -> None:
        async with mtls(self.enrolled, port) as channel:
            stream = Stream(channel)
            challenge = await stream.challenge()
            for seq in [s for s in self.spool if s <= challenge.last_seq]:
                del self.spool[seq]  # held by the verifier; its receipt was lost
            nonce = challenge.nonce
            for seq in sorted(self.spool):
                nonce = await self._exchange(stream, self.spool[seq])
            limit = min(total, self.chain.seq + (per_session or total))
            while self.chain.seq < limit:
                raw = self.chain.next(nonce, datetime.now(UTC))
                self.spool[self.chain.seq] = raw
                nonce = await self._exchange(stream, raw)
            await stream.call.done_writing()

    async def run(
        self,
        ports: list[int],
        total: int,
        deadline_s: float = 90.0,
        per_session: int | None = None,
    ) -> None:
        """Attest until `total` envelopes exist and the spool is empty, reconnecting as needed.

        With `per_session`, the agent hops to the next port after that many new envelopes.
        """
        deadline = time.monotonic() + deadline_s
        attempt = 0
        while self.chain.seq < total or self.spool:
            if time.monotonic() > deadline:
                raise TimeoutError(f"agent {self.enrolled.agent_id} did not finish")
            try:
                await self.session(ports[attempt % len(ports)], total, per_session)
                attempt += 1
            except (grpc.aio.AioRpcError, ConnectionError, AssertionError):
                self.reconnects += 1
                attempt += 1
                await asyncio.sleep(0.05)

    def expected_hashes(self) -> dict[int, bytes]:
        return {i + 1: envelope_hash(raw) for i, raw in enumerate(self.chain.sent)}


async def enroll_sim_agents(server: VerifierProcess, store_url: str, count: int) -> list[SimAgent]:
    """`count` agents enrolled at `server` with tokens written to the store at `store_url`."""
    ca_pem = (server.state_dir / "ca.pem").read_bytes()
    store = open_store(store_url)
    try:
        tokens = [new_token(store) for _ in range(count)]
    finally:
        store.close()
    agents = []
    for token in tokens:
        enrolled = await enroll_at(server.enroll, ca_pem, token)
        agents.append(SimAgent(enrolled, Chain(enrolled.agent_id, enrolled.signer)))
    return agents
