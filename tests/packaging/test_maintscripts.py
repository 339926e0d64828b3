"""Maintainer scripts: valid POSIX sh, shellcheck-clean, and a real install/remove/purge cycle.

The cycle runs the generated scripts the way dpkg does for `dpkg --root` installs: DPKG_ROOT
names the target tree and systemd is not running there. systemd-sysusers, systemd-tmpfiles and
deb-systemd-helper are the real tools, working inside a scratch root, so nothing on this host
changes. This also shows the scripts work where systemd is not PID 1 (containers, chroots).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = sorted((REPO / "packaging" / "maintscripts").glob("*.in"))
PACKAGES = ("gpu-attest-agent", "gpu-attest-verifier")
SCRIPTS = ("postinst", "prerm", "postrm")


def _generated(staged: Path) -> list[Path]:
    return [staged / pkg / "DEBIAN" / name for pkg in PACKAGES for name in SCRIPTS]


def test_every_script_is_generated_and_executable(staged: Path) -> None:
    for script in _generated(staged):
        assert stat.S_IMODE(script.stat().st_mode) == 0o755, script
        text = script.read_text()
        assert text.startswith("#!/bin/sh\n")
        assert "\nset -e\n" in text
        assert "@" not in text.replace("$@", ""), f"unsubstituted placeholder in {script}"


def test_scripts_parse_as_posix_sh(staged: Path) -> None:
    for script in [*TEMPLATES, *_generated(staged)]:
        done = subprocess.run(
            ["sh", "-n", str(script)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{script}: {done.stderr}"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_is_clean(staged: Path) -> None:
    scripts = [*TEMPLATES, *_generated(staged), REPO / "packaging" / "build-deb.sh"]
    done = subprocess.run(
        ["shellcheck", "--shell=sh", *map(str, scripts[:-1])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout
    done = subprocess.run(
        ["shellcheck", str(scripts[-1])], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout


def test_unknown_action_fails(staged: Path) -> None:
    for script in _generated(staged):
        done = subprocess.run(
            ["sh", str(script), "bogus"], capture_output=True, text=True, check=False
        )
        assert done.returncode == 1
        assert "unknown argument" in done.stderr


needs_tools = pytest.mark.skipif(
    os.geteuid() != 0
    or any(
        shutil.which(tool) is None
        for tool in ("systemd-sysusers", "systemd-tmpfiles", "deb-systemd-helper")
    ),
    reason="needs root plus systemd-sysusers, systemd-tmpfiles and deb-systemd-helper",
)


def _target_root(tmp_path: Path, staged: Path, package: str) -> Path:
    """A scratch system with the package's files unpacked, as dpkg --root would leave it."""
    root = tmp_path / "root"
    shutil.copytree(staged / package, root, symlinks=True, ignore=shutil.ignore_patterns("DEBIAN"))
    (root / "var" / "lib" / "dpkg").mkdir(parents=True)
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    return root


def _run(staged: Path, root: Path, package: str, script: str, *args: str) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "DPKG_ROOT": str(root),
        "DPKG_MAINTSCRIPT_PACKAGE": package,
        "DPKG_MAINTSCRIPT_NAME": script,
    }
    done = subprocess.run(
        ["sh", str(staged / package / "DEBIAN" / script), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"{script} {args}: {done.stderr}"


def _wants_link(root: Path, package: str) -> Path:
    return root / "etc/systemd/system/multi-user.target.wants" / f"{package}.service"


@needs_tools
@pytest.mark.parametrize(
    ("package", "account", "state", "conffile"),
    [
        ("gpu-attest-agent", "gpu-attest", "var/lib/gpu-attest", "etc/gpu-attest/agent.toml"),
        (
            "gpu-attest-verifier",
            "gpu-attest-verifier",
            "var/lib/gpu-attest-verifier",
            "etc/gpu-attest/verifier.toml",
        ),
    ],
)
def test_install_upgrade_remove_purge_cycle(
    tmp_path: Path, staged: Path, package: str, account: str, state: str, conffile: str
) -> None:
    root = _target_root(tmp_path, staged, package)

    _run(staged, root, package, "postinst", "configure", "")
    passwd = {
        line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().split()
    }
    uid, gid = int(passwd[account][2]), int(passwd[account][3])
    info = (root / state).stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (uid, 0o700)
    if (root / conffile).exists():
        conf = (root / conffile).stat()
        assert (conf.st_uid, conf.st_gid, stat.S_IMODE(conf.st_mode)) == (0, gid, 0o640)
    # Enabled for the next boot, never started now.
    assert _wants_link(root, package).is_symlink()

    # An upgrade re-runs configure with the old version: idempotent, nothing lost.
    (root / state / "agent.key").write_bytes(b"key")
    _run(staged, root, package, "prerm", "upgrade", "0.1.0")
    _run(staged, root, package, "postinst", "configure", "0.0.9")
    assert (root / state / "agent.key").read_bytes() == b"key"

    # remove keeps state and configuration, purge deletes the state and the enablement.
    _run(staged, root, package, "prerm", "remove")
    _run(staged, root, package, "postrm", "remove")
    assert (root / state / "agent.key").exists()
    _run(staged, root, package, "postrm", "purge")
    assert not (root / state).exists()
    assert not _wants_link(root, package).exists()
    assert not (root / "etc/systemd/system" / f"{package}.service").exists()


@needs_tools
def test_an_administrators_disable_survives_upgrade(tmp_path: Path, staged: Path) -> None:
    package = "gpu-attest-agent"
    root = _target_root(tmp_path, staged, package)
    _run(staged, root, package, "postinst", "configure", "")
    env = {"PATH": os.environ["PATH"], "DPKG_ROOT": str(root)}
    subprocess.run(
        ["deb-systemd-helper", "disable", f"{package}.service"],
        env={**env, "DPKG_MAINTSCRIPT_PACKAGE": package},
        check=True,
        capture_output=True,
    )
    assert not _wants_link(root, package).exists()
    _run(staged, root, package, "postinst", "configure", "0.0.9")
    assert not _wants_link(root, package).exists()
