"""Safeguard posture: pure evaluation of collected facts into pass | fail | unknown checks.

`agent.posture_collect` gathers `PostureFacts` from a root directory and a few commands; every
function here is pure, so each verdict can be tested from literal facts. A fact that could not
be collected is an `Unavailable`, and its check is `unknown` with the reason in the detail.
Check names are stable (kebab-case): policies and the verifier refer to them.
"""

from __future__ import annotations

import fnmatch
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field

from attest.model import (
    GpuState,
    Inventory,
    InventoryState,
    PostureCheck,
    PostureResult,
    Reading,
    Unavailable,
)

SECURE_BOOT = "secure-boot"
KERNEL_LOCKDOWN = "kernel-lockdown"
STATE_DIR_ENCRYPTED = "state-dir-encrypted"
FIREWALL = "firewall-ruleset"
SSH_ROOT_LOGIN = "ssh-root-login-disabled"
SSH_PASSWORD_AUTH = "ssh-password-auth-disabled"  # noqa: S105 - a check name
AUDIT_DAEMON = "audit-daemon-running"
CLOCK_SYNC = "clock-synchronized"
AGENT_KEY_FILE = "agent-key-file"
NVIDIA_PERSISTENCE = "nvidia-persistence-mode"
CONFIDENTIAL_COMPUTING = "confidential-computing"

# adjtimex(2): TIME_ERROR return value and the STA_UNSYNC status bit.
TIME_ERROR = 5
STA_UNSYNC = 0x0040
# Beyond this estimated maximum error the kernel itself would call the clock unsynchronized.
MAX_CLOCK_ERROR_US = 16_000_000
NOT_COLLECTED = Unavailable("NotCollected")
_AUDIT_DAEMONS = frozenset({"auditd", "go-audit", "auditbeat"})


@dataclass(frozen=True)
class MountEntry:
    device: str
    mountpoint: str
    fstype: str


@dataclass(frozen=True)
class DmNode:
    """A device-mapper node from /sys/block/dm-N: its name, uuid and the nodes beneath it."""

    name: str
    uuid: str
    slaves: tuple[str, ...]


@dataclass(frozen=True)
class ClockState:
    """adjtimex(2) read with modes=0: its return value, status bits and maximum error."""

    state: int
    status: int
    maxerror_us: int


@dataclass(frozen=True)
class KeyFileStat:
    mode: int
    uid: int
    expected_uid: int


@dataclass(frozen=True)
class PostureFacts:
    """Raw facts for every check; each may be Unavailable."""

    efi_booted: Reading[bool]
    secure_boot_var: Reading[bytes]  # the SecureBoot efivar: 4 attribute bytes, then the value
    lockdown: Reading[str]
    state_dir: str
    mounts: Reading[tuple[MountEntry, ...]]
    dm_nodes: Mapping[str, DmNode] = field(default_factory=dict)
    nft_ruleset: Reading[str] = NOT_COLLECTED
    iptables_rules: Reading[str] = NOT_COLLECTED
    sshd_config: Reading[tuple[str, ...]] = NOT_COLLECTED  # lines, includes inlined
    process_names: Reading[frozenset[str]] = NOT_COLLECTED
    clock: Reading[ClockState] = NOT_COLLECTED
    key_file: Reading[KeyFileStat] = NOT_COLLECTED


def _check(name: str, result: PostureResult, detail: str) -> PostureCheck:
    return PostureCheck(name=name, result=result, detail=detail)


def _unknown(name: str, what: str, reason: Unavailable) -> PostureCheck:
    return _check(name, PostureResult.UNKNOWN, f"{what} unavailable: {reason.reason}")


def check_secure_boot(efi_booted: Reading[bool], var: Reading[bytes]) -> PostureCheck:
    if efi_booted is False:
        return _check(SECURE_BOOT, PostureResult.FAIL, "booted without UEFI; no Secure Boot")
    if isinstance(var, Unavailable):
        if var.reason == "NotFound" and efi_booted is True:
            return _check(SECURE_BOOT, PostureResult.FAIL, "SecureBoot EFI variable absent")
        return _unknown(SECURE_BOOT, "SecureBoot EFI variable", var)
    if len(var) != 5:
        return _check(SECURE_BOOT, PostureResult.UNKNOWN, f"SecureBoot variable has {len(var)} B")
    if var[4] == 1:
        return _check(SECURE_BOOT, PostureResult.PASS, "Secure Boot enabled")
    return _check(SECURE_BOOT, PostureResult.FAIL, "Secure Boot disabled")


def check_lockdown(text: Reading[str]) -> PostureCheck:
    """/sys/kernel/security/lockdown reads e.g. "none [integrity] confidentiality"."""
    if isinstance(text, Unavailable):
        if text.reason == "NotFound":
            return _check(KERNEL_LOCKDOWN, PostureResult.FAIL, "kernel has no lockdown LSM")
        return _unknown(KERNEL_LOCKDOWN, "lockdown state", text)
    selected = [w.strip("[]") for w in text.split() if w.startswith("[") and w.endswith("]")]
    if len(selected) != 1:
        return _check(KERNEL_LOCKDOWN, PostureResult.UNKNOWN, f"unparsable lockdown {text!r}")
    mode = selected[0]
    result = PostureResult.FAIL if mode == "none" else PostureResult.PASS
    return _check(KERNEL_LOCKDOWN, result, f"lockdown mode {mode}")


def _mount_for(path: str, mounts: tuple[MountEntry, ...]) -> MountEntry | None:
    best: MountEntry | None = None
    for entry in mounts:
        mp = entry.mountpoint.rstrip("/") or "/"
        inside = path == mp or path.startswith(mp + "/") or mp == "/"
        # The last matching mount wins among equals: it is the one stacked on top.
        if inside and (best is None or len(mp) >= len(best.mountpoint.rstrip("/") or "/")):
            best = entry
    return best


def _dm_node_of(device: str, nodes: Mapping[str, DmNode]) -> str | None:
    base = device.rsplit("/", 1)[-1]
    if device.startswith("/dev/dm-") and base in nodes:
        return base
    if device.startswith("/dev/mapper/"):
        for node_id, node in nodes.items():
            if node.name == base:
                return node_id
    return None


def _crypt_below(node_id: str, nodes: Mapping[str, DmNode], seen: frozenset[str]) -> str | None:
    node = nodes.get(node_id)
    if node is None or node_id in seen:
        return None
    if node.uuid.startswith("CRYPT-"):
        return node.name or node_id
    for slave in node.slaves:
        found = _crypt_below(slave, nodes, seen | {node_id})
        if found is not None:
            return found
    return None


def check_state_dir_encrypted(
    state_dir: str, mounts: Reading[tuple[MountEntry, ...]], nodes: Mapping[str, DmNode]
) -> PostureCheck:
    """Pass when the filesystem holding the state dir sits on dm-crypt (possibly under LVM)."""
    name = STATE_DIR_ENCRYPTED
    if isinstance(mounts, Unavailable):
        return _unknown(name, "mount table", mounts)
    entry = _mount_for(state_dir, mounts)
    if entry is None:
        return _check(name, PostureResult.UNKNOWN, f"no mount holds {state_dir}")
    where = f"{state_dir} is on {entry.device} ({entry.fstype})"
    if not entry.device.startswith("/dev/"):
        return _check(name, PostureResult.UNKNOWN, f"{where}: not a block device")
    node_id = _dm_node_of(entry.device, nodes)
    if node_id is not None:
        crypt = _crypt_below(node_id, nodes, frozenset())
        if crypt is not None:
            return _check(name, PostureResult.PASS, f"{where}: dm-crypt {crypt}")
    return _check(name, PostureResult.FAIL, f"{where}: no dm-crypt layer")


def _nft_filters_input(ruleset: str) -> bool:
    in_input_chain = False
    for raw in ruleset.splitlines():
        line = raw.strip()
        if line.startswith("chain "):
            in_input_chain = False
        elif line.startswith("type filter hook input"):
            in_input_chain = True
            if "policy drop" in line or "policy reject" in line:
                return True
        elif in_input_chain and line and line != "}" and not line.startswith("#"):
            return True
    return False


def _iptables_filters_input(rules: str) -> bool:
    for raw in rules.splitlines():
        line = raw.strip()
        if line.startswith((":INPUT DROP", ":INPUT REJECT", "-A INPUT")):
            return True
    return False


def check_firewall(nft: Reading[str], iptables: Reading[str]) -> PostureCheck:
    """Pass when nftables or iptables filters inbound traffic (a rule or a drop policy)."""
    if isinstance(nft, str) and _nft_filters_input(nft):
        return _check(FIREWALL, PostureResult.PASS, "nftables filters the input hook")
    if isinstance(iptables, str) and _iptables_filters_input(iptables):
        return _check(FIREWALL, PostureResult.PASS, "iptables filters the INPUT chain")
    if isinstance(nft, Unavailable) and isinstance(iptables, Unavailable):
        return _check(
            FIREWALL,
            PostureResult.UNKNOWN,
            f"ruleset unavailable: nft {nft.reason}, iptables {iptables.reason}",
        )
    return _check(FIREWALL, PostureResult.FAIL, "no rule or drop policy on inbound traffic")


def sshd_setting(lines: tuple[str, ...], keyword: str) -> str | None:
    """The global value sshd would use for `keyword`: the first one, before any Match block."""
    wanted = keyword.lower()
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace("=", " ", 1).split(None, 1)
        if not parts:  # a line of only "=": sshd refuses it; it sets nothing
            continue
        key = parts[0].lower()
        if key == "match":
            return None
        if key == wanted and len(parts) == 2:
            return parts[1].strip().strip('"').lower()
    return None


def check_ssh(lines: Reading[tuple[str, ...]]) -> tuple[PostureCheck, PostureCheck]:
    """Root login and password authentication; OpenSSH defaults apply when a key is absent."""
    if isinstance(lines, Unavailable):
        return (
            _unknown(SSH_ROOT_LOGIN, "sshd_config", lines),
            _unknown(SSH_PASSWORD_AUTH, "sshd_config", lines),
        )
    root = sshd_setting(lines, "PermitRootLogin") or "prohibit-password"
    password = sshd_setting(lines, "PasswordAuthentication") or "yes"
    root_check = _check(
        SSH_ROOT_LOGIN,
        PostureResult.PASS if root == "no" else PostureResult.FAIL,
        f"PermitRootLogin {root}",
    )
    password_off = password == "no"  # noqa: S105 - an sshd keyword value
    password_check = _check(
        SSH_PASSWORD_AUTH,
        PostureResult.PASS if password_off else PostureResult.FAIL,
        f"PasswordAuthentication {password}",
    )
    return root_check, password_check


def check_audit_daemon(names: Reading[frozenset[str]]) -> PostureCheck:
    if isinstance(names, Unavailable):
        return _unknown(AUDIT_DAEMON, "process list", names)
    running = sorted(names & _AUDIT_DAEMONS)
    if running:
        return _check(AUDIT_DAEMON, PostureResult.PASS, f"{', '.join(running)} running")
    return _check(AUDIT_DAEMON, PostureResult.FAIL, "no audit daemon running")


def check_clock(clock: Reading[ClockState]) -> PostureCheck:
    if isinstance(clock, Unavailable):
        return _unknown(CLOCK_SYNC, "adjtimex", clock)
    if clock.state == TIME_ERROR or clock.status & STA_UNSYNC:
        return _check(CLOCK_SYNC, PostureResult.FAIL, "kernel clock is not synchronized")
    if clock.maxerror_us >= MAX_CLOCK_ERROR_US:
        return _check(CLOCK_SYNC, PostureResult.FAIL, f"max error {clock.maxerror_us} us")
    return _check(CLOCK_SYNC, PostureResult.PASS, f"synchronized, max error {clock.maxerror_us} us")


def check_key_file(key: Reading[KeyFileStat]) -> PostureCheck:
    if isinstance(key, Unavailable):
        return _unknown(AGENT_KEY_FILE, "agent key file", key)
    mode = stat.S_IMODE(key.mode)
    problems = []
    if mode & 0o077:
        problems.append(f"mode {mode:04o} lets others access it")
    if key.uid != key.expected_uid:
        problems.append(f"owned by uid {key.uid}, not the agent's uid {key.expected_uid}")
    if problems:
        return _check(AGENT_KEY_FILE, PostureResult.FAIL, "; ".join(problems))
    return _check(AGENT_KEY_FILE, PostureResult.PASS, f"mode {mode:04o}, owner uid {key.uid}")


def _gpu_flags(inventory: Inventory, what: str) -> tuple[list[str], list[str], list[str]]:
    on: list[str] = []
    off: list[str] = []
    unknown: list[str] = []
    for gpu in inventory.gpus:
        if gpu.state is not GpuState.OK:
            unknown.append(gpu.uuid)
            continue
        if what == "persistence":
            value: Reading[bool] = gpu.persistence_mode
        else:
            value = gpu.cc if isinstance(gpu.cc, Unavailable) else gpu.cc.enabled
        if isinstance(value, Unavailable):
            unknown.append(gpu.uuid)
        else:
            (on if value else off).append(gpu.uuid)
    return on, off, unknown


def _gpu_check(name: str, inventory: Inventory, what: str) -> PostureCheck:
    if inventory.status.state is not InventoryState.OK or not inventory.gpus:
        return _check(
            name,
            PostureResult.UNKNOWN,
            f"no GPUs in the inventory (state {inventory.status.state.value})",
        )
    on, off, unknown = _gpu_flags(inventory, what)
    if off:
        return _check(name, PostureResult.FAIL, f"off on {len(off)} of {len(inventory.gpus)} GPUs")
    if unknown:
        return _check(name, PostureResult.UNKNOWN, f"unreadable on {len(unknown)} GPUs")
    return _check(name, PostureResult.PASS, f"on for all {len(on)} GPUs")


def check_persistence_mode(inventory: Inventory) -> PostureCheck:
    return _gpu_check(NVIDIA_PERSISTENCE, inventory, "persistence")


def check_confidential_computing(inventory: Inventory) -> PostureCheck:
    return _gpu_check(CONFIDENTIAL_COMPUTING, inventory, "cc")


def evaluate(facts: PostureFacts, inventory: Inventory) -> tuple[PostureCheck, ...]:
    """Every check, in a stable order."""
    root_login, password_auth = check_ssh(facts.sshd_config)
    return (
        check_secure_boot(facts.efi_booted, facts.secure_boot_var),
        check_lockdown(facts.lockdown),
        check_state_dir_encrypted(facts.state_dir, facts.mounts, facts.dm_nodes),
        check_firewall(facts.nft_ruleset, facts.iptables_rules),
        root_login,
        password_auth,
        check_audit_daemon(facts.process_names),
        check_clock(facts.clock),
        check_key_file(facts.key_file),
        check_persistence_mode(inventory),
        check_confidential_computing(inventory),
    )


def expand_includes(
    lines: tuple[str, ...], files: Mapping[str, tuple[str, ...]], depth: int = 0
) -> tuple[str, ...]:
    """Inline sshd `Include` directives (globs, relative to /etc/ssh) from `files`.

    `files` maps absolute paths to their lines; sshd reads glob matches in lexical order.
    """
    if depth > 8:
        return lines
    out: list[str] = []
    for raw in lines:
        parts = raw.split("#", 1)[0].split()
        if parts and parts[0].lower() == "include":
            for pattern in parts[1:]:
                absolute = pattern if pattern.startswith("/") else f"/etc/ssh/{pattern}"
                for path in sorted(p for p in files if fnmatch.fnmatch(p, absolute)):
                    out.extend(expand_includes(files[path], files, depth + 1))
        else:
            out.append(raw)
    return tuple(out)
