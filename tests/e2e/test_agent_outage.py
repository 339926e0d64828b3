"""The agent against the real verifier, as real processes over loopback with mTLS.

- The verifier is down for several cycles, then back: every spooled envelope arrives once, in
  order (the verifier's log holds exactly the agent's receipts, seq 1..N, no rejection).
- The agent is killed with SIGKILL at arbitrary moments while it sends: after each restart the
  chain continues; nothing is lost, nothing is duplicated.
- SIGTERM drains: the agent exits 0 with its spool empty once receipts are in.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.exits import AgentExit
from agent.identity import load_identity
from agent.spool import SPOOL_FILE, Spool
from tests.agent.helpers import LineReader, machine_file
from tests.verifier.sim import free_port
from verifier.exits import VerifierExit
from verifier.model import AuditKind
from verifier.store import open_store

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.slow


def _cli(*args: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from verifier.cli import main; sys.exit(main())",
        *args,
    ]


@dataclass
class Verifier:
    config: Path
    state_dir: Path
    listen: int
    enroll_port: int
    process: subprocess.Popen[str] | None = None
    output: LineReader | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            _cli("--config", str(self.config), "serve"),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        self.output = LineReader(self.process.stdout)
        self.output.wait_for("verifier serving")

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            assert self.process.wait(timeout=30) == VerifierExit.OK
            assert self.process.stdout is not None
            self.process.stdout.close()
            self.process = None

    def run(self, *args: str) -> str:
        done = subprocess.run(
            _cli("--config", str(self.config), *args),
            cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        return done.stdout


@dataclass
class Agent:
    config: Path
    state_dir: Path
    process: subprocess.Popen[str] | None = None
    output: LineReader | None = None

    def start(self) -> LineReader:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(self.config)],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        self.output = LineReader(self.process.stderr)
        return self.output

    def signal(self, sig: signal.Signals) -> int:
        assert self.process is not None and self.process.stderr is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        self.process.stderr.close()
        self.process = None
        return code


@pytest.fixture
def verifier(tmp_path: Path) -> Iterator[Verifier]:
    listen, enroll_port = free_port(), free_port()
    config = tmp_path / "verifier.toml"
    config.write_text(
        f'listen = "127.0.0.1:{listen}"\nenroll_listen = "127.0.0.1:{enroll_port}"\n'
        f'state_dir = "{tmp_path / "verifier"}"\nmetrics_listen = ""\n'
    )
    v = Verifier(config, tmp_path / "verifier", listen, enroll_port)
    try:
        v.start()
        yield v
    finally:
        if v.process is not None:
            v.process.kill()
            v.process.wait()
            assert v.process.stdout is not None
            v.process.stdout.close()


@pytest.fixture
def agent(tmp_path: Path, verifier: Verifier) -> Iterator[Agent]:
    state_dir = tmp_path / "agent"
    token = verifier.run("token", "create", "--site", "acme-fra1").strip()
    ca = tmp_path / "ca.pem"
    ca.write_text(verifier.run("ca", "export"))
    machine = machine_file(tmp_path)
    subprocess.run(
        [sys.executable, "-m", "agent.cli", "enroll", "--verifier",
         f"127.0.0.1:{verifier.enroll_port}", "--token", token, "--ca", str(ca),
         "--state-dir", str(state_dir), "--simulate", str(machine),
         "--attest", f"127.0.0.1:{verifier.listen}"],
        cwd=ROOT, check=True, timeout=60, capture_output=True,
    )  # fmt: skip
    config = tmp_path / "agent.toml"
    config.write_text(
        f'state_dir = "{state_dir}"\n'  # the Attest address comes from enroll --attest
        f'simulate = "{machine}"\ninterval_seconds = 1\nbackoff_initial_seconds = 0.2\n'
        "backoff_cap_seconds = 1\n"
    )
    a = Agent(config, state_dir)
    try:
        yield a
    finally:
        if a.process is not None:
            a.process.kill()
            a.process.wait()
            assert a.process.stderr is not None
            a.process.stderr.close()


def _check_delivered_once_in_order(agent: Agent, verifier: Verifier) -> int:
    """Compare the verifier's store with the agent's spool; return the chain length."""
    agent_id = load_identity(agent.state_dir).agent_id
    spool = Spool.open(agent.state_dir, 1 << 30)
    head, depth = spool.head(), spool.depth()
    spool.close()
    with sqlite3.connect(agent.state_dir / SPOOL_FILE) as db:
        receipts = dict(db.execute("SELECT seq, envelope_hash FROM receipts ORDER BY seq"))
    store = open_store(f"sqlite:///{verifier.state_dir / 'verifier.db'}")
    try:
        records = [store.get_attestation(agent_id, seq) for seq in range(1, head.seq + 2)]
        log = store.log_entries(0, store.log_size())
        audit = store.list_audit(1000)
    finally:
        store.close()
    assert records[-1] is None  # nothing beyond the agent's head
    accepted = [r for r in records if r is not None]
    assert [r.seq for r in accepted] == list(range(1, head.seq + 1))  # no gap
    assert accepted[-1].envelope_hash == head.hash  # the same chain, not a fork
    for record in accepted:
        if record.seq in receipts:
            assert bytes(receipts[record.seq]) == record.envelope_hash
    assert [e.envelope_hash for e in log] == [r.envelope_hash for r in accepted]  # once, in order
    # No rejection of any kind (findings the live reconciliation opened are not rejections).
    assert [a for a in audit if a.code and a.kind is not AuditKind.FINDING] == []
    assert depth == 0
    return head.seq


def test_verifier_outage_then_every_envelope_arrives_once_in_order(
    agent: Agent, verifier: Verifier
) -> None:
    out = agent.start()
    out.wait_for("verifier accepted seq 2")
    verifier.stop()
    out.wait_for("reconnecting in")
    for _ in range(4):  # several cycles while the verifier is down
        line = out.wait_for("(offline)")
    spooled = int(line.split("spooled seq ")[1].split()[0])
    verifier.start()
    out.wait_for(f"verifier accepted seq {spooled}", timeout=60)  # the backlog, replayed
    out.wait_for(f"verifier accepted seq {spooled + 1}", timeout=60)  # and live again
    assert agent.signal(signal.SIGTERM) == AgentExit.OK  # drains, then exits 0
    verifier.stop()
    assert _check_delivered_once_in_order(agent, verifier) >= spooled + 1


def test_sigkill_while_sending_loses_and_duplicates_nothing(
    agent: Agent, verifier: Verifier
) -> None:
    rng = random.Random(11)
    for _ in range(4):
        agent.start().wait_for("spooled seq")
        time.sleep(rng.uniform(0.0, 1.5))  # anywhere: building, committing, sending, acking
        assert agent.signal(signal.SIGKILL) == -signal.SIGKILL
    out = agent.start()
    spooled = int(out.wait_for("spooled seq").split("spooled seq ")[1].split()[0])
    out.wait_for(f"verifier accepted seq {spooled}", timeout=60)
    assert agent.signal(signal.SIGTERM) == AgentExit.OK
    verifier.stop()
    assert _check_delivered_once_in_order(agent, verifier) >= spooled


def test_enroll_retries_until_the_verifier_answers(tmp_path: Path, verifier: Verifier) -> None:
    token = verifier.run("token", "create", "--site", "acme-fra1").strip()
    ca = tmp_path / "ca.pem"
    ca.write_text(verifier.run("ca", "export"))
    verifier.stop()
    enroll = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "enroll", "--verifier",
         f"127.0.0.1:{verifier.enroll_port}", "--token", token, "--ca", str(ca),
         "--state-dir", str(tmp_path / "agent")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert enroll.stdout is not None
    try:
        out = LineReader(enroll.stdout)
        out.wait_for("retrying for up to")  # the verifier is down: it waits (--timeout 2m)
        verifier.start()
        out.wait_for("enrolled as agent agt-", timeout=60)
        assert enroll.wait(timeout=30) == AgentExit.OK
    finally:
        enroll.kill()
        enroll.wait()
        enroll.stdout.close()
    assert load_identity(tmp_path / "agent").site_id == "acme-fra1"
