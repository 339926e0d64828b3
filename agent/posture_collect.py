"""Collectors for the posture facts: files under a root directory, adjtimex, and the firewall.

Thin shell around `agent.posture`: nothing here decides pass or fail. Commands (nft, iptables)
are run without a shell, with a timeout, and only when the root is the live "/"; a fixture tree
may instead hold their saved output under `run/gpu-attest-posture/{nft,iptables}.txt`.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from agent.hostfacts import LIVE_ROOT, read_small_file, read_text
from agent.posture import (
    NOT_COLLECTED,
    ClockState,
    DmNode,
    KeyFileStat,
    MountEntry,
    PostureFacts,
    expand_includes,
)
from attest.model import Reading, Unavailable

_SECURE_BOOT_VAR = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
_COMMAND_TIMEOUT_S = 5.0
_SAVED_OUTPUT = "run/gpu-attest-posture"
_AUDITD_PIDFILE = "run/auditd.pid"


def _under(root: Path, absolute: str) -> Path:
    return root / absolute.lstrip("/")


def _read_bytes(path: Path) -> Reading[bytes]:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return Unavailable("NotFound")
    except PermissionError:
        return Unavailable("NoPermission")
    except OSError:
        return Unavailable("IOError")


def _unescape_mount(field: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as octal.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def parse_mounts(text: str) -> tuple[MountEntry, ...]:
    """Entries of /proc/mounts (or /proc/self/mounts) in file order."""
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            entries.append(
                MountEntry(_unescape_mount(parts[0]), _unescape_mount(parts[1]), parts[2])
            )
    return tuple(entries)


def collect_dm_nodes(root: Path) -> dict[str, DmNode]:
    nodes: dict[str, DmNode] = {}
    block = _under(root, "/sys/block")
    try:
        candidates = sorted(p for p in block.iterdir() if p.name.startswith("dm-"))
    except OSError:
        return nodes
    for path in candidates:
        name = read_text(path, "dm/name")
        uuid = read_text(path, "dm/uuid")
        try:
            slaves = tuple(sorted(p.name for p in (path / "slaves").iterdir()))
        except OSError:
            slaves = ()
        nodes[path.name] = DmNode(
            name=name if isinstance(name, str) else "",
            uuid=uuid if isinstance(uuid, str) else "",
            slaves=slaves,
        )
    return nodes


def collect_sshd_config(root: Path) -> Reading[tuple[str, ...]]:
    main = read_text(root, "etc/ssh/sshd_config")
    if isinstance(main, Unavailable):
        return main
    files: dict[str, tuple[str, ...]] = {}
    ssh_dir = _under(root, "/etc/ssh")
    for path in sorted(ssh_dir.rglob("*")):
        if path.is_file() and path.name != "sshd_config":
            text = read_text(path.parent, path.name)
            if isinstance(text, str):
                files["/" + str(path.relative_to(root))] = tuple(text.splitlines())
    return expand_includes(tuple(main.splitlines()), files)


def collect_process_names(root: Path, scan: bool = True) -> Reading[frozenset[str]]:
    """Names of running processes that matter to posture (the audit daemon).

    auditd's pid file answers in two reads; only without it are all of /proc/*/comm scanned,
    and with `scan=False` the answer is then Unavailable("NotCollected").
    """
    proc = _under(root, "/proc")
    pid = read_text(root, _AUDITD_PIDFILE)
    if isinstance(pid, str) and pid.isdigit():
        comm = read_text(proc, f"{pid}/comm")
        if comm == "auditd":
            return frozenset({comm})
    if not scan:
        return NOT_COLLECTED
    try:
        entries = [e.name for e in os.scandir(proc) if e.name.isdigit()]
    except FileNotFoundError:
        return Unavailable("NotFound")
    except OSError:
        return Unavailable("NoPermission")
    names = set()
    for name in entries:
        try:
            names.add(read_small_file(os.path.join(proc, name, "comm")).strip())  # noqa: PTH118
        except OSError:
            continue  # the process exited while we looked
    return frozenset(names)


class _Timex(ctypes.Structure):
    # struct timex of <sys/timex.h> on 64-bit Linux: 20 longs-ish fields then padding.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("padding", ctypes.c_int * 11),
    ]


@functools.cache
def _adjtimex() -> Callable[..., int] | None:
    # The symbols of the running process include libc's; find_library would fork ldconfig.
    try:
        function: Callable[..., int] = ctypes.CDLL(None, use_errno=True).adjtimex
    except (OSError, AttributeError):
        return None
    return function


def collect_clock() -> Reading[ClockState]:
    """Read the kernel clock discipline state with adjtimex(modes=0), which needs no privilege."""
    adjtimex = _adjtimex()
    if adjtimex is None:
        return Unavailable("NoLibc")
    timex = _Timex()
    state = adjtimex(ctypes.byref(timex))
    if state < 0:
        return Unavailable("NoPermission" if ctypes.get_errno() == 1 else "SyscallFailed")
    return ClockState(state=state, status=timex.status, maxerror_us=timex.maxerror)


def _run(argv: list[str]) -> Reading[str]:
    exe = shutil.which(argv[0])
    if exe is None:
        return Unavailable("NotInstalled")
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [exe, *argv[1:]],
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Unavailable("Timeout")
    except OSError:
        return Unavailable("ExecFailed")
    if done.returncode != 0:
        denied = "ermission" in done.stderr or "not permitted" in done.stderr
        return Unavailable("NoPermission" if denied else "CommandFailed")
    return done.stdout


def collect_firewall(root: Path) -> tuple[Reading[str], Reading[str]]:
    if root != LIVE_ROOT:
        return (
            read_text(root, f"{_SAVED_OUTPUT}/nft.txt"),
            read_text(root, f"{_SAVED_OUTPUT}/iptables.txt"),
        )
    return _run(["nft", "list", "ruleset"]), _run(["iptables-save"])


def collect_key_file(path: Path) -> Reading[KeyFileStat]:
    try:
        info = path.stat()
    except FileNotFoundError:
        return Unavailable("NotFound")
    except PermissionError:
        return Unavailable("NoPermission")
    return KeyFileStat(mode=info.st_mode, uid=info.st_uid, expected_uid=os.geteuid())


def collect_posture_facts(
    root: Path,
    state_dir: Path,
    key_file: Path,
    *,
    with_commands: bool = True,
    scan_processes: bool = True,
) -> PostureFacts:
    """Gather every posture fact. Never raises for missing or unreadable sources.

    `with_commands=False` skips the firewall commands (they fork) and `scan_processes=False`
    the scan of /proc when auditd has no pid file; their facts are then NOT_COLLECTED and the
    daemon fills them from a slower cadence.
    """
    efi_dir = _under(root, "/sys/firmware/efi")
    efi_booted: Reading[bool] = efi_dir.is_dir()
    mounts_text = read_text(root, "proc/self/mounts")
    if isinstance(mounts_text, Unavailable):
        mounts_text = read_text(root, "proc/mounts")
    nft, iptables = (
        collect_firewall(root)
        if with_commands
        else (Unavailable("NotCollected"), Unavailable("NotCollected"))
    )
    return PostureFacts(
        efi_booted=efi_booted,
        secure_boot_var=_read_bytes(efi_dir / "efivars" / _SECURE_BOOT_VAR),
        lockdown=read_text(root, "sys/kernel/security/lockdown"),
        state_dir=str(state_dir),
        mounts=parse_mounts(mounts_text) if isinstance(mounts_text, str) else mounts_text,
        dm_nodes=collect_dm_nodes(root),
        nft_ruleset=nft,
        iptables_rules=iptables,
        sshd_config=collect_sshd_config(root),
        process_names=collect_process_names(root, scan=scan_processes),
        clock=collect_clock() if root == LIVE_ROOT else _fixture_clock(root),
        key_file=collect_key_file(key_file),
    )


def _fixture_clock(root: Path) -> Reading[ClockState]:
    text = read_text(root, f"{_SAVED_OUTPUT}/adjtimex.txt")
    if isinstance(text, Unavailable):
        return text
    try:
        state, status, maxerror = (int(v) for v in text.split())
    except ValueError:
        return Unavailable("Unparsable")
    return ClockState(state=state, status=status, maxerror_us=maxerror)
