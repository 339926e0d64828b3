"""Posture: every check's pass, fail and unknown, from literal facts and from fixture trees."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from agent import posture as p
from agent.posture_collect import collect_posture_facts, collect_process_names, parse_mounts
from agent.simulate import SimulatedInventory, parse_machine
from attest.keys import load_or_create_private_key
from attest.model import (
    DriverInfo,
    GpuState,
    Inventory,
    InventoryState,
    InventoryStatus,
    PostureResult,
    Unavailable,
)

from .helpers import MACHINE_8X_H100

FIXTURES = Path(__file__).parent / "fixtures" / "hosts"
PASS, FAIL, UNKNOWN = PostureResult.PASS, PostureResult.FAIL, PostureResult.UNKNOWN
NA = Unavailable("NoPermission")


def _inventory(machine: str = MACHINE_8X_H100) -> Inventory:
    return SimulatedInventory(parse_machine(machine)).collect(None)


def test_secure_boot() -> None:
    assert p.check_secure_boot(True, b"\x06\x00\x00\x00\x01").result is PASS
    assert p.check_secure_boot(True, b"\x06\x00\x00\x00\x00").result is FAIL
    assert p.check_secure_boot(False, Unavailable("NotFound")).result is FAIL
    assert p.check_secure_boot(True, Unavailable("NotFound")).result is FAIL
    assert p.check_secure_boot(True, NA).result is UNKNOWN
    assert p.check_secure_boot(True, b"\x01").result is UNKNOWN


def test_lockdown() -> None:
    assert p.check_lockdown("none [integrity] confidentiality").result is PASS
    assert p.check_lockdown("none integrity [confidentiality]").result is PASS
    assert p.check_lockdown("[none] integrity confidentiality").result is FAIL
    assert p.check_lockdown(Unavailable("NotFound")).result is FAIL
    assert p.check_lockdown(NA).result is UNKNOWN
    assert p.check_lockdown("garbage").result is UNKNOWN


def test_state_dir_encryption_follows_lvm_to_dm_crypt() -> None:
    nodes = {
        "dm-0": p.DmNode("luks-1", "CRYPT-LUKS2-abc-luks-1", ()),
        "dm-1": p.DmNode("vg-var", "LVM-xyz", ("dm-0",)),
        "dm-2": p.DmNode("vg-plain", "LVM-uvw", ()),
    }
    mounts = parse_mounts(
        "/dev/sda1 / ext4 rw 0 0\n/dev/mapper/vg-var /var/lib ext4 rw 0 0\n"
        "/dev/dm-2 /srv xfs rw 0 0\nfoo:/export /mnt/nfs nfs4 rw 0 0\n"
    )
    check = p.check_state_dir_encrypted
    assert check("/var/lib/gpu-attest", mounts, nodes).result is PASS
    assert check("/srv/gpu-attest", mounts, nodes).result is FAIL  # LVM without crypt
    assert check("/opt/gpu-attest", mounts, nodes).result is FAIL  # plain partition
    assert check("/mnt/nfs/x", mounts, nodes).result is UNKNOWN  # not a block device
    assert check("/x", Unavailable("NotFound"), nodes).result is UNKNOWN
    assert check("/x", (), nodes).result is UNKNOWN
    cyclic = {"dm-0": p.DmNode("a", "LVM-a", ("dm-1",)), "dm-1": p.DmNode("b", "LVM-b", ("dm-0",))}
    assert check("/", parse_mounts("/dev/dm-0 / ext4 rw 0 0"), cyclic).result is FAIL


def test_mount_names_are_unescaped() -> None:
    (entry,) = parse_mounts("/dev/sdb1 /mnt/with\\040space ext4 rw 0 0")
    assert entry.mountpoint == "/mnt/with space"


def test_firewall() -> None:
    hook = "table ip f {\n chain in {\n  type filter hook input priority 0;"
    nft_drop = hook + " policy drop;\n }\n}"
    nft_rule = hook + "\n  tcp dport 22 drop\n }\n}"
    nft_open = hook + " policy accept;\n }\n}"
    assert p.check_firewall(nft_drop, NA).result is PASS
    assert p.check_firewall(nft_rule, NA).result is PASS
    assert p.check_firewall(nft_open, NA).result is FAIL
    assert p.check_firewall(NA, "*filter\n:INPUT DROP [0:0]\nCOMMIT\n").result is PASS
    assert p.check_firewall(NA, "*filter\n-A INPUT -p tcp -j ACCEPT\n").result is PASS
    assert p.check_firewall("", ":INPUT ACCEPT [0:0]\n").result is FAIL
    assert p.check_firewall(NA, Unavailable("NotInstalled")).result is UNKNOWN


def test_ssh_defaults_includes_and_match_blocks() -> None:
    root, password = p.check_ssh(())
    assert (root.result, password.result) == (FAIL, FAIL)  # OpenSSH defaults
    assert "prohibit-password" in root.detail
    files = {"/etc/ssh/sshd_config.d/10-a.conf": ("PermitRootLogin no",)}
    lines = p.expand_includes(("Include sshd_config.d/*.conf", "PermitRootLogin yes"), files)
    assert p.check_ssh(lines)[0].result is PASS  # the first value wins, includes inline
    lines = ("Match User x", "PasswordAuthentication no")
    assert p.check_ssh(lines)[1].result is FAIL  # a Match block is not the global value
    assert p.check_ssh(("PasswordAuthentication=no",))[1].result is PASS
    assert {c.result for c in p.check_ssh(NA)} == {UNKNOWN}


def test_audit_clock_and_key_file() -> None:
    assert p.check_audit_daemon(frozenset({"auditd", "sshd"})).result is PASS
    assert p.check_audit_daemon(frozenset({"sshd"})).result is FAIL
    assert p.check_audit_daemon(NA).result is UNKNOWN
    assert p.check_clock(p.ClockState(0, 0x2001, 4000)).result is PASS
    assert p.check_clock(p.ClockState(5, 0x40, 16_000_000)).result is FAIL
    assert p.check_clock(p.ClockState(0, 0x40, 100)).result is FAIL
    assert p.check_clock(p.ClockState(0, 0, 20_000_000)).result is FAIL
    assert p.check_clock(NA).result is UNKNOWN
    assert p.check_key_file(p.KeyFileStat(0o100600, 990, 990)).result is PASS
    assert p.check_key_file(p.KeyFileStat(0o100640, 990, 990)).result is FAIL
    assert p.check_key_file(p.KeyFileStat(0o100600, 0, 990)).result is FAIL
    assert p.check_key_file(Unavailable("NotFound")).result is UNKNOWN


def test_gpu_checks_from_the_inventory() -> None:
    inventory = _inventory()
    assert p.check_persistence_mode(inventory).result is PASS
    assert p.check_confidential_computing(inventory).result is FAIL
    gpus = inventory.gpus
    off = dataclasses.replace(gpus[0], persistence_mode=False)
    assert p.check_persistence_mode(dataclasses.replace(inventory, gpus=(off,))).result is FAIL
    lost = dataclasses.replace(gpus[0], state=GpuState.LOST)
    assert p.check_persistence_mode(dataclasses.replace(inventory, gpus=(lost,))).result is UNKNOWN
    none = Inventory(
        DriverInfo(NA, NA, NA), InventoryStatus(InventoryState.LIBRARY_NOT_FOUND, "no lib"), ()
    )
    assert p.check_persistence_mode(none).result is UNKNOWN
    assert p.check_confidential_computing(none).result is UNKNOWN


def test_cc_on_passes() -> None:
    path = Path(__file__).parents[2] / "examples" / "machines" / "h100-cc-node.toml"
    if not path.exists():
        pytest.skip("no confidential-computing machine example")
    inventory = SimulatedInventory(parse_machine(path.read_text())).collect(None)
    assert p.check_confidential_computing(inventory).result is PASS


def test_hardened_tree_passes_every_host_check(tmp_path: Path) -> None:
    key = tmp_path / "agent.key"
    load_or_create_private_key(key)
    facts = collect_posture_facts(FIXTURES / "hardened", Path("/var/lib/gpu-attest"), key)
    checks = p.evaluate(facts, _inventory())
    results = {c.name: c.result for c in checks}
    assert results.pop(p.CONFIDENTIAL_COMPUTING) is FAIL  # the 8x H100 machine has CC off
    assert set(results.values()) == {PASS}, [c for c in checks if c.result is not PASS]
    assert len(checks) == 11 and len({c.name for c in checks}) == 11


def test_lax_tree_fails_every_host_check(tmp_path: Path) -> None:
    key = tmp_path / "agent.key"
    load_or_create_private_key(key)
    key.chmod(0o644)
    if os.geteuid() == 0:
        os.chown(key, 65534, 65534)
    facts = collect_posture_facts(FIXTURES / "lax", Path("/var/lib/gpu-attest"), key)
    checks = p.evaluate(facts, _inventory())
    failing = {c.name for c in checks if c.result is FAIL}
    assert failing == {c.name for c in checks} - {p.NVIDIA_PERSISTENCE}, checks


def test_empty_tree_is_unknown_or_fail_never_pass(tmp_path: Path) -> None:
    facts = collect_posture_facts(tmp_path, tmp_path / "state", tmp_path / "agent.key")
    checks = p.evaluate(facts, _inventory())
    by_name = {c.name: c for c in checks}
    assert by_name[p.SECURE_BOOT].result is FAIL  # no /sys/firmware/efi: legacy boot
    for name in (p.STATE_DIR_ENCRYPTED, p.FIREWALL, p.SSH_ROOT_LOGIN, p.AUDIT_DAEMON,
                 p.CLOCK_SYNC, p.AGENT_KEY_FILE):  # fmt: skip
        assert by_name[name].result is UNKNOWN, by_name[name]


@given(st.lists(st.text(max_size=60), max_size=20))
@example(["="])  # found by hypothesis in CI: a line of only "=" split into nothing
def test_sshd_parser_never_raises(lines: list[str]) -> None:
    root, password = p.check_ssh(tuple(lines))
    assert root.result in (PASS, FAIL) and password.result in (PASS, FAIL)


@given(st.text(max_size=400), st.text(max_size=400), st.text(max_size=200))
def test_firewall_lockdown_mounts_never_raise(nft: str, ipt: str, text: str) -> None:
    p.check_firewall(nft, ipt)
    p.check_lockdown(text)
    p.check_state_dir_encrypted("/var/lib/gpu-attest", parse_mounts(text), {})


def test_audit_daemon_found_by_pid_file_or_scan() -> None:
    hardened = FIXTURES / "hardened"  # run/auditd.pid names /proc/812, whose comm is auditd
    assert collect_process_names(hardened, scan=False) == frozenset({"auditd"})
    lax = FIXTURES / "lax"
    assert collect_process_names(lax, scan=False) == Unavailable("NotCollected")
    assert collect_process_names(lax) == frozenset({"init"})
