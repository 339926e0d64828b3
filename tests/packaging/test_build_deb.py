"""packaging/build-deb.sh: the package trees (fast) and a real offline .deb build (slow).

The fast tests inspect the trees of `--stage-only`, which holds every file of the packages
except the virtualenv. The slow test inspects the agent package the session builds for real,
offline, from the wheel directory `make wheelhouse` fills (build/wheelhouse; conftest.py `debs`:
without it the test says so and skips, and fails in CI).
"""

from __future__ import annotations

import hashlib
import re
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.packaging.conftest import REPO

EXPECTED_FILES = {
    "gpu-attest-agent": {
        "usr/lib/systemd/system/gpu-attest-agent.service",
        "usr/lib/sysusers.d/gpu-attest.conf",
        "usr/lib/tmpfiles.d/gpu-attest.conf",
        "usr/share/doc/gpu-attest-agent/README.md",
        "usr/share/doc/gpu-attest-agent/copyright",
        "usr/share/doc/gpu-attest-agent/changelog.gz",
        "usr/share/lintian/overrides/gpu-attest-agent",
    },
    "gpu-attest-verifier": {
        "usr/lib/systemd/system/gpu-attest-verifier.service",
        "usr/lib/sysusers.d/gpu-attest-verifier.conf",
        "usr/lib/tmpfiles.d/gpu-attest-verifier.conf",
        "usr/share/doc/gpu-attest-verifier/README.md",
        "usr/share/doc/gpu-attest-verifier/copyright",
        "usr/share/doc/gpu-attest-verifier/changelog.gz",
        "usr/share/lintian/overrides/gpu-attest-verifier",
    },
    "gpu-attest-landmark": {
        "usr/lib/systemd/system/gpu-attest-landmark.service",
        "usr/lib/sysusers.d/gpu-attest-landmark.conf",
        "usr/lib/tmpfiles.d/gpu-attest-landmark.conf",
        "usr/share/doc/gpu-attest-landmark/README.md",
        "usr/share/doc/gpu-attest-landmark/copyright",
        "usr/share/doc/gpu-attest-landmark/changelog.gz",
        "usr/share/lintian/overrides/gpu-attest-landmark",
    },
}
COMMANDS = {
    "gpu-attest-agent": {"gpu-attest-agent": "/opt/gpu-attest/agent/bin/gpu-attest-agent"},
    "gpu-attest-verifier": {
        "gpu-attest-verifier": "/opt/gpu-attest/verifier/bin/gpu-attest-verifier",
        "gpu-attest-report": "/opt/gpu-attest/verifier/bin/gpu-attest-report",
    },
    # The landmark runs the verifier package's command (`gpu-attest-verifier landmark serve`).
    "gpu-attest-landmark": {},
}
CONFFILES = {
    "gpu-attest-agent": ("etc/gpu-attest/agent.toml", REPO / "examples" / "agent.toml"),
    "gpu-attest-verifier": ("etc/gpu-attest/verifier.toml", REPO / "examples" / "verifier.toml"),
    "gpu-attest-landmark": ("etc/gpu-attest/landmark.toml", REPO / "examples" / "landmark.toml"),
}
STATE_DIRS = {
    "gpu-attest-agent": "/var/lib/gpu-attest",
    "gpu-attest-verifier": "/var/lib/gpu-attest-verifier",
    "gpu-attest-landmark": "/var/lib/gpu-attest-landmark",
}
REQUIRED_CONTROL_FIELDS = (
    "Package",
    "Version",
    "Architecture",
    "Maintainer",
    "Installed-Size",
    "Depends",
    "Section",
    "Priority",
    "Description",
)


def parse_control(text: str) -> dict[str, str]:
    """Fields of a DEBIAN/control paragraph; continuation lines join the field's value."""
    fields: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if line.startswith(" "):
            fields[last] += "\n" + line
        else:
            last, _, value = line.partition(":")
            fields[last] = value.strip()
    return fields


def _check_control(fields: dict[str, str], package: str) -> None:
    for name in REQUIRED_CONTROL_FIELDS:
        assert fields.get(name), f"{package}: missing {name}"
    assert fields["Package"] == package
    assert re.fullmatch(r"[0-9][A-Za-z0-9.+~-]*", fields["Version"])
    assert re.search(r"python3 \(>= 3\.1\d\), python3 \(<< 3\.\d+\)", fields["Depends"])
    assert "libc6" in fields["Depends"]
    if package == "gpu-attest-landmark":
        assert f"gpu-attest-verifier (= {fields['Version']})" in fields["Depends"]
    summary, *body = fields["Description"].splitlines()
    assert 0 < len(summary) <= 80
    assert body
    assert all(line.startswith(" ") and len(line) <= 80 for line in body)


@pytest.mark.parametrize("package", sorted(EXPECTED_FILES))
def test_tree_holds_units_snippets_docs_and_commands(staged: Path, package: str) -> None:
    tree = staged / package
    for relative in EXPECTED_FILES[package]:
        assert stat.S_IMODE((tree / relative).stat().st_mode) == 0o644, relative
    for command, target in COMMANDS[package].items():
        link = tree / "usr" / "bin" / command
        assert link.is_symlink()
        assert str(link.readlink()) == target
    shipped = {
        p.relative_to(tree).as_posix()
        for p in tree.rglob("*")
        if (p.is_file() or p.is_symlink()) and "DEBIAN" not in p.parts
    }
    conffile, example = CONFFILES[package]
    expected = EXPECTED_FILES[package] | {f"usr/bin/{c}" for c in COMMANDS[package]}
    if example.exists():
        expected.add(conffile)
    assert shipped == expected
    for directory in (p for p in tree.rglob("*") if p.is_dir()):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755, directory


@pytest.mark.parametrize("package", sorted(CONFFILES))
def test_conffile_is_the_example_mode_0640_and_declared(staged: Path, package: str) -> None:
    conffile, example = CONFFILES[package]
    declared = staged / package / "DEBIAN" / "conffiles"
    if not example.exists():
        assert not declared.exists()
        pytest.skip(f"{example.relative_to(REPO)} is not written yet")
    shipped = staged / package / conffile
    # The example verbatim, except that state_dir names the directory the unit makes writable.
    state_dir = STATE_DIRS[package]
    assert tomllib.loads(shipped.read_text())["state_dir"] == state_dir

    def without_state_dir(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith("state_dir")]

    assert without_state_dir(shipped.read_text()) == without_state_dir(example.read_text())
    assert stat.S_IMODE(shipped.stat().st_mode) == 0o640
    assert declared.read_text() == f"/{conffile}\n"


@pytest.mark.parametrize("package", sorted(EXPECTED_FILES))
def test_control_and_md5sums(staged: Path, package: str) -> None:
    debian = staged / package / "DEBIAN"
    _check_control(parse_control((debian / "control").read_text()), package)
    sums = {}
    for line in (debian / "md5sums").read_text().splitlines():
        digest, _, relative = line.partition("  ")
        sums[relative] = digest
    files = {
        p.relative_to(staged / package).as_posix(): p
        for p in (staged / package).rglob("*")
        if p.is_file() and not p.is_symlink() and "DEBIAN" not in p.parts
    }
    assert set(sums) == set(files)
    for relative, path in files.items():
        assert sums[relative] == hashlib.md5(path.read_bytes()).hexdigest()


def _dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], check=True, capture_output=True, text=True).stdout


@pytest.mark.slow
@pytest.mark.timeout(600)  # the session's package build may run in its setup
def test_offline_build_of_the_agent_package(debs: dict[str, Path], tmp_path: Path) -> None:
    # Built once per session by the `debs` fixture (conftest.py), offline from build/wheelhouse,
    # with the package's venv made from the system interpreter it will run with.
    deb = debs["gpu-attest-agent"]
    assert re.fullmatch(r"gpu-attest-agent_[0-9][A-Za-z0-9.+~]*_[a-z0-9]+\.deb", deb.name)

    fields = parse_control(_dpkg_deb("-f", str(deb)))
    _check_control(fields, "gpu-attest-agent")
    assert re.search(r"libc6 \(>= 2\.\d+\)", fields["Depends"])
    assert int(fields["Installed-Size"]) > 10_000

    entries = {}
    for line in _dpkg_deb("-c", str(deb)).splitlines():
        mode, owner, _size, _date, _time, name, *rest = line.split()
        entries[name.removeprefix("./")] = (mode, owner, rest)
    assert all(owner == "root/root" for _, owner, _ in entries.values())
    venv = "opt/gpu-attest/agent/"
    assert entries[venv + "bin/gpu-attest-agent"][0] == "-rwxr-xr-x"
    assert entries[venv + "bin/python3"][2] == ["->", "/usr/bin/python3"]
    assert entries["usr/bin/gpu-attest-agent"][2] == ["->", "/" + venv + "bin/gpu-attest-agent"]
    assert entries["usr/lib/systemd/system/gpu-attest-agent.service"][0] == "-rw-r--r--"
    # No installer and no other side's command inside the production venv.
    assert not any(n.startswith(venv + "bin/pip") for n in entries)
    assert venv + "bin/gpu-attest-verifier" not in entries
    # Byte-code is shipped (the venv is read-only at run time) and no file is group/world
    # writable.
    assert any(n.endswith(".pyc") and "/agent/__pycache__/" in n for n in entries)
    writable = [
        name
        for name, (mode, _, _) in entries.items()
        if mode[0] != "l" and (mode[5] == "w" or mode[8] == "w")
    ]
    assert not writable
    conffile, example = CONFFILES["gpu-attest-agent"]
    if example.exists():
        assert entries[conffile][0] == "-rw-r-----"
        info = subprocess.run(
            ["dpkg-deb", "--ctrl-tarfile", str(deb)], check=True, capture_output=True
        ).stdout
        assert f"/{conffile}".encode() in info
    control = _dpkg_deb("-I", str(deb))
    for script in ("postinst", "prerm", "postrm"):
        assert re.search(rf"\*\s+{script}\s+#!/bin/sh", control), script

    # The venv names its final home only; the build directory appears nowhere.
    extract = tmp_path / "x"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(extract)], check=True)
    cfg = (extract / venv / "pyvenv.cfg").read_text()
    assert "home = /usr/bin" in cfg
    assert str(tmp_path) not in cfg
    shebang = (extract / venv / "bin" / "gpu-attest-agent").read_text().splitlines()[0]
    assert shebang == "#!/opt/gpu-attest/agent/bin/python"
