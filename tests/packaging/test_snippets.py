"""sysusers.d and tmpfiles.d snippets, applied by systemd's own tools inside a scratch root."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-sysusers") is None or shutil.which("systemd-tmpfiles") is None,
    reason="systemd-sysusers / systemd-tmpfiles are not installed",
)


def _root_with_snippets(root: Path) -> Path:
    (root / "etc").mkdir()
    for kind in ("sysusers.d", "tmpfiles.d"):
        target = root / "usr" / "lib" / kind
        target.mkdir(parents=True)
        for snippet in (SYSTEMD_DIR / kind).glob("*.conf"):
            shutil.copy(snippet, target / snippet.name)
    return root


def _passwd(root: Path) -> dict[str, list[str]]:
    lines = (root / "etc" / "passwd").read_text().splitlines()
    return {fields[0]: fields for fields in (line.split(":") for line in lines)}


def test_sysusers_creates_one_locked_system_account_per_service(tmp_path: Path) -> None:
    root = _root_with_snippets(tmp_path)
    subprocess.run(["systemd-sysusers", f"--root={root}"], check=True, capture_output=True)
    accounts = _passwd(root)
    agent, verifier = accounts["gpu-attest"], accounts["gpu-attest-verifier"]
    assert agent[5:] == ["/var/lib/gpu-attest", "/usr/sbin/nologin"]
    assert verifier[5:] == ["/var/lib/gpu-attest-verifier", "/usr/sbin/nologin"]
    # Separate accounts: a host running both never lets one read the other's keys.
    assert agent[2] != verifier[2]
    assert int(agent[2]) < 1000
    assert int(verifier[2]) < 1000
    landmark = accounts["gpu-attest-landmark"]
    assert landmark[5:] == ["/var/lib/gpu-attest-landmark", "/usr/sbin/nologin"]
    assert landmark[2] not in {agent[2], verifier[2]} and int(landmark[2]) < 1000


@pytest.mark.skipif(os.geteuid() != 0, reason="tmpfiles can only chown as root")
def test_tmpfiles_makes_private_state_dirs_and_opens_only_the_dmi_serial(tmp_path: Path) -> None:
    root = _root_with_snippets(tmp_path)
    dmi = root / "sys" / "devices" / "virtual" / "dmi" / "id"
    dmi.mkdir(parents=True)
    (dmi / "product_serial").write_text("SERIAL\n")
    (dmi / "product_serial").chmod(0o400)
    (dmi / "board_serial").write_text("BOARD\n")
    (dmi / "board_serial").chmod(0o400)
    subprocess.run(["systemd-sysusers", f"--root={root}"], check=True, capture_output=True)
    subprocess.run(
        ["systemd-tmpfiles", f"--root={root}", "--create"], check=True, capture_output=True
    )
    accounts = _passwd(root)
    for name in ("gpu-attest", "gpu-attest-verifier", "gpu-attest-landmark"):
        info = (root / "var" / "lib" / name).stat()
        assert stat.S_IMODE(info.st_mode) == 0o700
        assert info.st_uid == int(accounts[name][2])
    serial = (dmi / "product_serial").stat()
    assert stat.S_IMODE(serial.st_mode) == 0o440
    assert (serial.st_uid, serial.st_gid) == (0, int(accounts["gpu-attest"][3]))
    # Nothing else of the DMI table is opened up.
    assert stat.S_IMODE((dmi / "board_serial").stat().st_mode) == 0o400


def test_tmpfiles_skips_the_dmi_line_on_hosts_without_dmi(tmp_path: Path) -> None:
    root = _root_with_snippets(tmp_path)
    subprocess.run(["systemd-sysusers", f"--root={root}"], check=True, capture_output=True)
    done = subprocess.run(
        ["systemd-tmpfiles", f"--root={root}", "--create"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert not (root / "sys").exists()
