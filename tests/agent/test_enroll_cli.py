"""`gpu-attest-agent enroll` and `once` as a new operator meets them, through the real agent
process against a real `gpu-attest-verifier serve`: a wrong port, a missing CA or nothing
listening ends in exit 11 with the likely cause, within `--timeout` (issue 12, items 13, 14)."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from agent.exits import AgentExit
from attest.v1 import attest_pb2 as pb
from attest.v1 import attest_pb2_grpc as pb_grpc
from tests.verifier.sim import REPO, VerifierProcess, free_port

#: Generous: `--timeout 3s` ends each run in seconds; this only stops a hang hanging the suite.
DEADLINE_S = 120


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VerifierProcess]:
    workdir = tmp_path_factory.mktemp("verifier")
    process = VerifierProcess(workdir, str(workdir / "v.db"), workdir / "state")
    process.start()
    try:
        asyncio.run(process.wait_ready())
        yield process
    finally:
        process.terminate()


def agent(
    tmp_path: Path, *args: str, stdout: int = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args, "--state-dir", str(tmp_path / "agent")],
        cwd=REPO, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=DEADLINE_S,
        check=False,
    )  # fmt: skip


def enroll(tmp_path: Path, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    target = f"127.0.0.1:{port}"
    return agent(tmp_path, "enroll", "--verifier", target, "--token", "gat1_x", *extra)


@pytest.mark.parametrize(
    ("mistake", "cause"),
    [
        ("mtls-port", "it may be the Attest (mTLS) port"),
        ("no-ca", "pass the verifier's CA with --ca"),
        ("nothing-listening", "nothing listens at"),
    ],
)
def test_enroll_gives_up_with_the_likely_cause(
    tmp_path: Path, verifier: VerifierProcess, mistake: str, cause: str
) -> None:
    ca = ["--ca", str(verifier.state_dir / "ca.pem")]
    if mistake == "mtls-port":
        done = enroll(tmp_path, verifier.listen, *ca, "--timeout", "3s")
    elif mistake == "no-ca":
        done = enroll(tmp_path, verifier.enroll, "--timeout", "3s")
    else:
        done = enroll(tmp_path, free_port(), *ca, "--timeout", "3s")
    assert done.returncode == AgentExit.ENROLL, done.stderr
    lines = done.stderr.strip().splitlines()
    assert cause in lines[-1] and "enrollment-failed" in lines[-1]
    assert sum("retrying" in line for line in lines) <= 1, done.stderr  # said once
    assert "ssl_transport_security" not in done.stderr
    assert done.stdout == ""


async def _call_without_client_certificate(verifier: VerifierProcess) -> grpc.StatusCode:
    credentials = grpc.ssl_channel_credentials((verifier.state_dir / "ca.pem").read_bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{verifier.listen}", credentials) as channel:
        try:
            await pb_grpc.AttestationStub(channel).Enroll(pb.EnrollRequest(), timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_the_verifier_log_carries_no_grpc_core_lines(verifier: VerifierProcess) -> None:
    # The mTLS port refuses a client without a certificate: grpc's C core logs that handshake
    # failure (PEER_DID_NOT_RETURN_A_CERTIFICATE) in its own format unless told not to.
    code = asyncio.run(_call_without_client_certificate(verifier))
    assert code == grpc.StatusCode.UNAVAILABLE
    verifier.terminate()  # flushes its log
    assert "ssl_transport_security" not in verifier.log_text()
    verifier.start()  # for the tests after this one
    asyncio.run(verifier.wait_ready())


@pytest.mark.parametrize("value", ["0s", "10", "forever"])
def test_enroll_timeout_must_be_a_duration(tmp_path: Path, value: str) -> None:
    done = enroll(tmp_path, free_port(), "--timeout", value)
    assert done.returncode == AgentExit.CONFIG and "--timeout" in done.stderr
    assert "unrecognized" not in done.stderr


def test_once_refuses_to_write_binary_to_a_terminal(tmp_path: Path) -> None:
    primary, secondary = pty.openpty()
    try:
        done = agent(tmp_path, "once", stdout=secondary)
    finally:
        os.close(secondary)
        os.close(primary)
    assert done.returncode == AgentExit.CONFIG
    assert "terminal" in done.stderr and "--out" in done.stderr
    assert not (tmp_path / "agent").exists()  # checked before anything else


@pytest.mark.parametrize("mode", [0o750, 0o705, 0o777])
def test_a_state_dir_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    """agent.key and the spool live in the state directory: an agent command refuses one that
    group or others can enter (exit 2, which the unit does not restart on) and writes nothing."""
    state = tmp_path / "agent"
    state.mkdir()
    state.chmod(mode)
    done = enroll(tmp_path, free_port(), "--timeout", "1s")
    assert done.returncode == AgentExit.CONFIG
    assert f"{mode:04o}" in done.stderr and "chmod 700" in done.stderr
    assert list(state.iterdir()) == []
