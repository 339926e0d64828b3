"""The agent and the verifier write the same log lines (attest/logfmt.py): real processes, each
in its JSON mode, log on stderr (stdout stays for command output) lines with the same keys and
the same UTC RFC 3339 millisecond timestamps."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.exits import AgentExit
from agent.logs import LOGGER_NAME, get_logger
from agent.logs import setup_logging as setup_agent_logging
from attest import logfmt
from tests.agent.helpers import LineReader, enrolled_state_dir, machine_file
from tests.verifier.sim import free_port
from verifier.cli import main as verifier_main
from verifier.exits import VerifierExit

ROOT = Path(__file__).resolve().parent.parent
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
BASE = list(logfmt.BASE_KEYS)


def _json_lines(text: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert lines, "no log line"
    for line in lines:
        assert list(line)[:4] == BASE, line
        assert isinstance(line["ts"], str) and TS.match(line["ts"]), line
    return lines


def _agent_lines(tmp_path: Path) -> tuple[str, str, int]:
    """`gpu-attest-agent once` with log_format = "json": it logs the seq it wrote."""
    tmp_path.mkdir()
    enrolled = enrolled_state_dir(tmp_path / "state")
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{enrolled.state_dir}"\nlog_format = "json"\n')
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli", "once", "--config", str(config),
         "--simulate", str(machine_file(tmp_path)), "--out", str(tmp_path / "one.env")],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done.stdout, done.stderr, done.returncode


def _verifier_lines(tmp_path: Path) -> tuple[str, str, int]:
    """`gpu-attest-verifier --log-json serve` until SIGTERM: it logs its ports and its stop."""
    tmp_path.mkdir()
    config = tmp_path / "verifier.toml"
    config.write_text(
        f'listen = "127.0.0.1:{free_port()}"\nenroll_listen = "127.0.0.1:{free_port()}"\n'
        f'state_dir = "{tmp_path / "verifier"}"\nmetrics_listen = ""\n'
    )
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(30)
    proc = subprocess.Popen(
        [sys.executable, "-m", "verifier.cli", "--log-json", "--config", str(config), "serve"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")},
    )  # fmt: skip
    assert proc.stderr is not None and proc.stdout is not None
    try:
        reader = LineReader(proc.stderr)
        # READY=1 comes once the SIGTERM handler is in place.
        assert notify.recv(4096).startswith(b"READY=1")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        reader.wait_for('"stopped"')
        out = proc.stdout.read()
    finally:
        notify.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    return out, "\n".join(reader.seen), code


def test_both_programs_log_the_same_json_lines_on_stderr(tmp_path: Path) -> None:
    agent_out, agent_err, agent_code = _agent_lines(tmp_path / "agent")
    verifier_out, verifier_err, verifier_code = _verifier_lines(tmp_path / "verifier")
    assert (agent_code, verifier_code) == (AgentExit.OK, VerifierExit.OK), agent_err
    assert agent_out == verifier_out == ""  # logs never mix into command output
    agent, verifier = _json_lines(agent_err), _json_lines(verifier_err)
    wrote = next(line for line in agent if str(line["msg"]).startswith("wrote seq 1"))
    serving = next(line for line in verifier if str(line["msg"]).startswith("verifier serving"))
    assert list(wrote) == list(serving) == BASE
    assert (wrote["level"], serving["level"]) == ("info", "info")
    assert str(wrote["logger"]).startswith("gpu_attest.agent.")
    assert str(serving["logger"]).startswith("verifier.")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Take the handlers the programs' set-up installs off again after the test."""
    loggers = [logging.getLogger(), logging.getLogger(LOGGER_NAME)]
    saved = [(lg, lg.level, lg.propagate, list(lg.handlers)) for lg in loggers]
    yield
    for lg, level, propagate, handlers in saved:
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


@pytest.mark.usefixtures("restore_logging")
def test_each_program_sets_up_the_one_format(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """In process, through each program's own set-up: same keys, extras carried, stderr only."""
    setup_agent_logging("json")
    get_logger("cli").warning("spool %s", "full", extra={"code": "spool-full", "seq": 7})
    bad = tmp_path / "broken.toml"
    bad.write_text("[[[\n")
    assert verifier_main(["--log-json", "--config", str(bad), "agents"]) == VerifierExit.CONFIG
    capsys.readouterr()
    logging.getLogger("verifier.server").warning("store %s", "down", extra={"agent_id": "a-1"})
    out, err = capsys.readouterr()
    assert out == ""
    verifier_line = _json_lines(err)[-1]
    assert verifier_line == {
        "ts": verifier_line["ts"],
        "level": "warning",
        "logger": "verifier.server",
        "msg": "store down",
        "agent_id": "a-1",
    }
    get_logger("cli").warning("spool %s", "full", extra={"code": "spool-full", "seq": 7})
    agent_line = _json_lines(capsys.readouterr().err)[-1]
    assert agent_line == {
        "ts": agent_line["ts"],
        "level": "warning",
        "logger": "gpu_attest.agent.cli",
        "msg": "spool full",
        "code": "spool-full",
        "seq": 7,
    }
