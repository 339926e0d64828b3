"""The units' sandbox does not break what the services really do.

systemd is not PID 1 on a build machine, so the two riskiest settings are checked the way
systemd enforces them, against the services' real code paths (sandbox_workload.py):

- MemoryDenyWriteExecute=yes: the same seccomp rule, built from mdwe_exec.c with gcc here, with a
  negative control proving the rule bites.
- SystemCallFilter=: every system call the workload makes (traced with strace, as an
  unprivileged user like the service accounts) must be inside the filter that the unit file
  itself declares, expanded with `systemd-analyze syscall-filter`. A call outside would fail
  with EPERM (SystemCallErrorNumber=EPERM) under systemd.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.packaging.conftest import REPO
from tests.packaging.unitfile import load_unit

HERE = Path(__file__).resolve().parent
NOBODY = 65534


@pytest.fixture(scope="module")
def mdwe_exec() -> Iterator[Path]:
    """The seccomp helper, built where an unprivileged user may run it."""
    if shutil.which("gcc") is None or platform.machine() != "x86_64":
        pytest.skip("needs gcc on x86-64 to build the seccomp helper")
    top = Path(tempfile.mkdtemp(prefix="gpu-attest-mdwe-"))
    try:
        top.chmod(0o755)
        binary = top / "mdwe_exec"
        source = HERE / "mdwe_exec.c"
        subprocess.run(
            ["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(binary), str(source)],
            check=True,
            capture_output=True,
        )
        probe = subprocess.run([str(binary), "true"], capture_output=True, text=True, check=False)
        if probe.returncode == 77:
            pytest.skip(f"seccomp filters are not available here: {probe.stderr.strip()}")
        yield binary
    finally:
        shutil.rmtree(top)


def _workload(side: str, state_dir: Path) -> list[str]:
    return [sys.executable, "-m", "tests.packaging.sandbox_workload", str(state_dir), side]


# System calls libraries make only when euid is 0, so never as a service account: SQLite hands
# its -wal and -shm files to the database's owner with fchown.
ROOT_ONLY_SYSCALLS = frozenset({"fchown"})


def _drop_to_nobody() -> list[str]:
    """setpriv arguments that run as nobody like the service accounts, or [] when that is not
    possible here (not root, or this interpreter lives where nobody cannot reach it)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return []
    prefix = [
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        "--inh-caps=-all",
    ]
    # Through a shell: setpriv itself may still exec what nobody could not reach (a pyenv
    # interpreter under /root), the helpers it runs may not.
    probe = subprocess.run(
        [*prefix, "/bin/sh", "-c", 'exec "$0" -c "import grpc"', sys.executable],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    return prefix if probe.returncode == 0 else []


def _unprivileged(argv: list[str]) -> list[str]:
    return [*_drop_to_nobody(), *argv]


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A state directory the unprivileged workload can write (pytest's tmp_path is 0700 root)."""
    top = Path(tempfile.mkdtemp(prefix="gpu-attest-sandbox-"))
    try:
        top.chmod(0o711)
        state = top / "state"
        state.mkdir()
        state.chmod(0o777)
        yield state
    finally:
        shutil.rmtree(top)


def test_memory_deny_write_execute_blocks_wx_mappings(mdwe_exec: Path) -> None:
    code = (
        "import mmap\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "except PermissionError:\n"
        "    raise SystemExit(0)\n"
        "raise SystemExit(1)\n"
    )
    done = subprocess.run([str(mdwe_exec), sys.executable, "-c", code], check=False)
    assert done.returncode == 0, "the seccomp rule did not refuse a W+X mapping"


@pytest.mark.parametrize("side", ["agent", "verifier"])
def test_services_run_under_memory_deny_write_execute(
    mdwe_exec: Path, state_dir: Path, side: str
) -> None:
    argv = _unprivileged([str(mdwe_exec), *_workload(side, state_dir)])
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["grpc_tls_echo"] == "ecnedive"
    assert report["ctypes_callback"] == 42
    assert report["signatures"] is True


def _syscall_groups() -> dict[str, list[str]]:
    text = subprocess.run(
        ["systemd-analyze", "syscall-filter", "--no-pager"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and current is not None:
            item = line.strip()
            if item and not item.startswith("#"):
                current.append(item)
        else:
            current = None
    return groups


def _expand(items: list[str], groups: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    for item in items:
        out |= _expand(groups[item], groups) if item.startswith("@") else {item}
    return out


def allowed_syscalls(unit_path: Path, groups: dict[str, list[str]]) -> set[str]:
    """The allow list a unit's SystemCallFilter= lines produce (first allow, then ~ removals)."""
    allowed: set[str] = set()
    for value in load_unit(unit_path).values("Service", "SystemCallFilter"):
        if value.startswith("~"):
            allowed -= _expand(value[1:].split(), groups)
        else:
            allowed |= _expand(value.split(), groups)
    return allowed


@pytest.mark.skipif(
    shutil.which("strace") is None or shutil.which("systemd-analyze") is None,
    reason="needs strace and systemd-analyze",
)
@pytest.mark.parametrize("side", ["agent", "verifier"])
def test_syscalls_stay_inside_the_units_filter(state_dir: Path, side: str) -> None:
    trace = state_dir / "trace.txt"
    # strace stays root (it must read the interpreter's path) and runs the workload as nobody.
    as_nobody = ["-u", "nobody"] if _drop_to_nobody() else []
    argv = ["strace", "-f", "-qq", *as_nobody, "-o", str(trace), *_workload(side, state_dir)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    if "ptrace" in done.stderr and done.returncode != 0:
        pytest.skip(f"ptrace is not permitted here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr[-4000:]
    used = {
        match[1]
        for line in trace.read_text().splitlines()
        if (match := re.match(r"^\d+\s+(\w+)\(", line))
    }
    assert {"connect", "sendmsg", "fdatasync"} & used, "the trace looks empty"
    if side == "agent":
        # The reason for the unit's adjtimex/clock_adjtime exception is still there.
        assert {"adjtimex", "clock_adjtime"} & used
    unit = REPO / "systemd" / f"gpu-attest-{side}.service"
    if os.geteuid() == 0 and not _drop_to_nobody():
        used -= ROOT_ONLY_SYSCALLS
    outside = used - allowed_syscalls(unit, _syscall_groups())
    assert not outside, f"{unit.name} would refuse {sorted(outside)}"
