"""The units' sandbox does not break what the services really do.

systemd is not PID 1 on a build machine, so the two riskiest settings are enforced the way
systemd enforces them, with seccomp (seccomp_exec.c, built with gcc here), around the services'
real code paths (sandbox_workload.py), as an unprivileged user like the service accounts:

- MemoryDenyWriteExecute=yes: the same seccomp rule, with a negative control proving it bites.
- SystemCallFilter= + SystemCallErrorNumber=EPERM: the allow list each unit file declares,
  expanded with `systemd-analyze syscall-filter`; any other call fails with EPERM.
- Where strace exists, the calls made are also listed and compared by name, so a failure says
  which call the unit would refuse.
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
SIDES = ("agent", "verifier")

# System calls libraries make only when euid is 0, so never as a service account: SQLite hands
# its -wal and -shm files to the database's owner with fchown.
ROOT_ONLY_SYSCALLS = frozenset({"fchown"})

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def syscall_groups() -> dict[str, list[str]]:
    """systemd's named system-call groups, as `systemd-analyze syscall-filter` lists them."""
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


def _unit(side: str) -> Path:
    return REPO / "systemd" / f"gpu-attest-{side}.service"


def _open_tempdir(prefix: str, mode: int) -> Path:
    top = Path(tempfile.mkdtemp(prefix=prefix))
    top.chmod(mode)
    return top


def _compile(out: Path, allow: set[str] | None) -> Path:
    defines = []
    if allow is not None:
        (out / "allowed.h").write_text(
            "".join(f"#ifdef __NR_{name}\n__NR_{name},\n#endif\n" for name in sorted(allow))
        )
        defines = ["-DALLOW_LIST", f"-I{out}"]
    binary = out / ("filter_exec" if allow is not None else "mdwe_exec")
    source = str(HERE / "seccomp_exec.c")
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-Wextra", "-Werror", *defines, "-o", str(binary), source],
        check=True,
        capture_output=True,
    )
    probe = subprocess.run([str(binary), "true"], capture_output=True, text=True, check=False)
    if probe.returncode == 77:
        pytest.skip(f"seccomp filters are not available here: {probe.stderr.strip()}")
    return binary


@pytest.fixture(scope="module")
def helpers() -> Iterator[dict[str, Path]]:
    """seccomp_exec builds: "mdwe" (W^X rule only) and one per unit with its allow list."""
    if shutil.which("gcc") is None or platform.machine() != "x86_64":
        pytest.skip("needs gcc on x86-64 to build the seccomp helper")
    top = _open_tempdir("gpu-attest-seccomp-", 0o755)
    try:
        built = {"mdwe": _compile(top, None)}
        if shutil.which("systemd-analyze") is not None:
            groups = syscall_groups()
            for side in SIDES:
                (top / side).mkdir(mode=0o755)
                built[side] = _compile(top / side, allowed_syscalls(_unit(side), groups))
        yield built
    finally:
        shutil.rmtree(top)


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A state directory the unprivileged workload can write (pytest's tmp_path is 0700 root)."""
    top = _open_tempdir("gpu-attest-sandbox-", 0o711)
    try:
        state = top / "state"
        state.mkdir()
        state.chmod(0o777)
        yield state
    finally:
        shutil.rmtree(top)


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


def _workload(side: str, state_dir: Path) -> list[str]:
    return [sys.executable, "-m", "tests.packaging.sandbox_workload", str(state_dir), side]


def _run_workload(argv: list[str]) -> dict[str, object]:
    done = subprocess.run(
        [*_drop_to_nobody(), *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    assert report["grpc_tls_echo"] == "ecnedive"
    assert report["ctypes_callback"] == 42
    assert report["signatures"] is True
    return report


def test_memory_deny_write_execute_rule_bites(helpers: dict[str, Path]) -> None:
    code = (
        "import mmap\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "except PermissionError:\n"
        "    raise SystemExit(0)\n"
        "raise SystemExit(1)\n"
    )
    done = subprocess.run([str(helpers["mdwe"]), sys.executable, "-c", code], check=False)
    assert done.returncode == 0, "the seccomp rule did not refuse a W+X mapping"


@pytest.mark.parametrize("side", SIDES)
def test_services_run_under_memory_deny_write_execute(
    helpers: dict[str, Path], state_dir: Path, side: str
) -> None:
    _run_workload([str(helpers["mdwe"]), *_workload(side, state_dir)])


@needs_analyze
def test_allow_list_rule_bites(helpers: dict[str, Path]) -> None:
    # The verifier's filter removes @privileged, so chroot(2) must fail with EPERM.
    code = (
        "import os\n"
        "try:\n"
        "    os.chroot('/')\n"
        "except PermissionError:\n"
        "    raise SystemExit(0)\n"
        "raise SystemExit(1)\n"
    )
    done = subprocess.run([str(helpers["verifier"]), sys.executable, "-c", code], check=False)
    assert done.returncode == 0, "the allow list did not refuse chroot(2)"


@needs_analyze
@pytest.mark.parametrize("side", SIDES)
def test_services_run_under_their_units_syscall_filter(
    helpers: dict[str, Path], state_dir: Path, side: str
) -> None:
    report = _run_workload([str(helpers[side]), *_workload(side, state_dir)])
    if side == "agent":
        # The clock posture check still reads the kernel's clock state (not "NoPermission").
        assert str(report["clock"]).startswith("ClockState(")


@needs_analyze
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
@pytest.mark.parametrize("side", SIDES)
def test_syscalls_made_are_named_in_the_units_filter(state_dir: Path, side: str) -> None:
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
    if not as_nobody:
        used -= ROOT_ONLY_SYSCALLS
    outside = used - allowed_syscalls(_unit(side), syscall_groups())
    assert not outside, f"{_unit(side).name} would refuse {sorted(outside)}"
