"""`gpu-attest-agent run` as a real process: notify protocol, SIGHUP reload, SIGTERM exit 0,
and the CLI's documented exit codes."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from agent.cli import main
from agent.exits import AgentExit
from agent.identity import retire_enrollment, state_lock
from agent.spool import Spool
from attest.errors import SpoolFullError
from tests.verifier.sim import free_port

from .helpers import LineReader, enrolled_state_dir, machine_file

ROOT = Path(__file__).parents[2]
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _start(config: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        cwd=ROOT,
        env={**os.environ, **env},
        stderr=subprocess.PIPE,
        text=True,
    )


def test_run_notifies_reloads_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    """No verifier listens: the agent keeps producing into its spool and stays healthy."""
    enrolled = enrolled_state_dir(tmp_path / "state")
    machine = machine_file(tmp_path)
    config = tmp_path / "agent.toml"
    body = (
        f'verifier = "127.0.0.1:{free_port()}"\nstate_dir = "{enrolled.state_dir}"\n'
        f'simulate = "{machine}"\ninsecure_plaintext = true\nbackoff_cap_seconds = 1\n'
    )
    config.write_text(body + "interval_seconds = 1\n")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    received: queue.Queue[bytes] = queue.Queue()

    def pump() -> None:
        with contextlib.suppress(OSError):
            while True:
                received.put(notify.recv(4096))

    threading.Thread(target=pump, daemon=True).start()
    child = _start(config, {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"})
    assert child.stderr is not None
    out = LineReader(child.stderr)
    try:
        assert received.get(timeout=30).startswith(b"READY=1")
        assert received.get(timeout=30) == b"WATCHDOG=1"
        out.wait_for("INSECURE: plaintext gRPC")  # warned at every start
        out.wait_for("spooled seq 2 (offline)")
        config.write_text(body + "interval_seconds = 7\n")
        child.send_signal(signal.SIGHUP)
        out.wait_for("configuration reloaded: interval 7s")
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == AgentExit.OK
        out.wait_for("envelopes remain spooled")
        states = set()
        while not received.empty():
            states.add(received.get().split(b"\n")[0])
        assert {b"RELOADING=1", b"READY=1", b"STOPPING=1"} <= states
    finally:
        child.kill()
        child.wait()
        child.stderr.close()
        notify.shutdown(socket.SHUT_RDWR)
        notify.close()
    spool = Spool.open(enrolled.state_dir, 1 << 20)
    assert spool.depth() >= 2 and spool.integrity_ok()  # kept for when the verifier is back
    spool.close()


def test_exit_codes(tmp_path: Path, capsys: object) -> None:
    assert main(["run", "--state-dir", str(tmp_path), "--config", str(tmp_path / "no.toml")]) == (
        AgentExit.CONFIG
    )
    (tmp_path / "agent.toml").write_text("bogus = 1\n")
    assert main(["once", "--config", str(tmp_path / "agent.toml")]) == AgentExit.CONFIG
    (tmp_path / "agent.toml").write_text(f'state_dir = "{tmp_path}"\n')
    assert main(["once", "--config", str(tmp_path / "agent.toml")]) == AgentExit.NOT_ENROLLED
    assert main(["frobnicate"]) == AgentExit.CONFIG


def test_once_writes_an_envelope_and_advances_the_chain(tmp_path: Path) -> None:
    enrolled = enrolled_state_dir(tmp_path / "state")
    machine = machine_file(tmp_path)
    (tmp_path / "agent.toml").write_text(f'state_dir = "{enrolled.state_dir}"\n')
    for name in ("one.env", "two.env"):
        argv = ["once", "--config", str(tmp_path / "agent.toml"), "--simulate", str(machine)]
        assert main([*argv, "--out", str(tmp_path / name)]) == AgentExit.OK
    spool = Spool.open(enrolled.state_dir, 1 << 20)
    first, second = spool.pending()
    assert (tmp_path / "one.env").read_bytes() == first.envelope
    assert (tmp_path / "two.env").read_bytes() == second.envelope
    assert spool.head().seq == 2
    spool.close()


def test_once_refuses_while_another_agent_holds_the_state_dir(tmp_path: Path) -> None:
    enrolled = enrolled_state_dir(tmp_path / "state")
    machine = machine_file(tmp_path)
    (tmp_path / "agent.toml").write_text(f'state_dir = "{enrolled.state_dir}"\n')
    argv = ["once", "--config", str(tmp_path / "agent.toml"), "--simulate", str(machine)]
    with state_lock(enrolled.state_dir):  # as `run` holds it
        assert main([*argv, "--out", str(tmp_path / "refused.env")]) == AgentExit.CONFIG
    assert not (tmp_path / "refused.env").exists()
    assert main([*argv, "--out", str(tmp_path / "one.env")]) == AgentExit.OK
    spool = Spool.open(enrolled.state_dir, 1 << 20)
    assert spool.head().seq == 1  # the refused run took no seq
    spool.close()


def test_enroll_refuses_to_replace_an_identity_without_force(tmp_path: Path) -> None:
    enrolled = enrolled_state_dir(tmp_path / "state")
    Spool.open(enrolled.state_dir, 1 << 20).close()
    argv = ["enroll", "--verifier", "127.0.0.1:1", "--token", "t", "--state-dir"]
    assert main([*argv, str(enrolled.state_dir)]) == AgentExit.CONFIG
    assert (enrolled.state_dir / "identity.toml").exists()


def test_retire_enrollment_keeps_the_old_chain(tmp_path: Path) -> None:
    enrolled = enrolled_state_dir(tmp_path / "state")
    spool = Spool.open(enrolled.state_dir, 1 << 20)
    spool.append(lambda seq, prev: b"env", NOW)
    spool.close()
    retired = retire_enrollment(enrolled.state_dir, "20260601T000000Z")
    assert not (enrolled.state_dir / "identity.toml").exists()
    assert (retired / "identity.toml").exists() and (retired / "agent.key").exists()
    old = Spool.open(retired, 1 << 20)
    assert old.head().seq == 1
    old.close()
    assert Spool.open(enrolled.state_dir, 1 << 20).head().seq == 0  # a new agent starts at 1


def test_full_spool_stops_production_with_a_log_line_and_a_metric(tmp_path: Path) -> None:
    enrolled = enrolled_state_dir(tmp_path / "state")
    machine = machine_file(tmp_path)
    metrics_port = free_port()
    config = tmp_path / "agent.toml"
    config.write_text(
        f'verifier = "127.0.0.1:{free_port()}"\nstate_dir = "{enrolled.state_dir}"\n'
        f'simulate = "{machine}"\ninsecure_plaintext = true\ninterval_seconds = 1\n'
        f'spool_max_bytes = 65536\nmetrics_listen = "127.0.0.1:{metrics_port}"\n'
    )
    spool = Spool.open(enrolled.state_dir, 65536)
    with contextlib.suppress(SpoolFullError):
        for _ in range(100):  # fill it now rather than one attestation per second
            spool.append(lambda seq, prev: b"x" * 3000, NOW)
    spool.close()
    child = _start(config, {})
    assert child.stderr is not None
    out = LineReader(child.stderr)
    try:
        line = out.wait_for("is full")
        assert "spool-full" in line and "no new evidence" in line
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as response:
            text = response.read().decode()
        assert "gpu_attest_agent_spool_full 1.0" in text
        assert 'gpu_attest_agent_attestations_total{result="spool_full"}' in text
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == AgentExit.OK
    finally:
        child.kill()
        child.wait()
        child.stderr.close()
    spool = Spool.open(enrolled.state_dir, 1 << 20)
    assert spool.integrity_ok() and spool.depth() == spool.head().seq > 0
    spool.close()
