"""The built packages: lintian finds no error in any, and a second build is byte-identical.

Lintian's warnings are allowed only if packaging/README.md names and justifies each tag (the
deliberate departures are overridden in packaging/lintian-overrides.in, shipped in each package).
Reproducibility: two builds of one tree with the same wheelhouse and SOURCE_DATE_EPOCH must give
the same bytes; when they do not, the failure names the members and the files inside that
differ. Both builds start from one snapshot of the tree (conftest.py `source_tree`).
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.packaging.conftest import REPO, build_debs

# Package builds (shared by the session), lintian and apt are minutes on a loaded 2-core VM.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

#: The lintian tags packaging/README.md justifies; any other warning fails the test.
JUSTIFIED_WARNINGS = {"unusual-interpreter", "script-not-executable", "no-manual-page"}


def test_lintian_reports_no_error_and_only_justified_warnings(debs: dict[str, Path]) -> None:
    if shutil.which("lintian") is None:
        pytest.skip("lintian is not installed (.ci/run installs it)")
    done = subprocess.run(
        ["lintian", "--allow-root", "--tag-display-limit", "0", *map(str, debs.values())],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    tags = re.findall(r"^([EWIPX]): (\S+): (\S+)", done.stdout, re.MULTILINE)
    errors = [f"{package}: {tag}" for level, package, tag in tags if level == "E"]
    assert errors == [], done.stdout
    assert done.returncode == 0, done.stdout + done.stderr
    warned = {tag for level, _, tag in tags if level == "W"}
    assert warned <= JUSTIFIED_WARNINGS, done.stdout
    readme = (REPO / "packaging" / "README.md").read_text()
    for tag in JUSTIFIED_WARNINGS:
        assert f"`{tag}`" in readme, f"packaging/README.md does not justify {tag}"


def _members(deb: Path) -> dict[str, bytes]:
    """The ar members of a .deb by name (debian-binary, control.tar.xz, data.tar.xz)."""
    data = deb.read_bytes()
    assert data.startswith(b"!<arch>\n")
    found, at = {}, 8
    while at < len(data):
        header = data[at : at + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
        found[name] = data[at + 60 : at + 60 + size]
        at += 60 + size + (size & 1)
    return found


def _entries(member: bytes) -> dict[str, tuple[object, ...]]:
    """Each file of a tar member: its metadata and content."""
    entries: dict[str, tuple[object, ...]] = {}
    with tarfile.open(fileobj=io.BytesIO(member), mode="r:*") as tar:
        for info in tar:
            content = tar.extractfile(info) if info.isfile() else None
            entries[info.name] = (
                info.mode, info.uid, info.gid, info.uname, info.gname, info.mtime,
                info.linkname, info.type, content.read() if content else b"",
            )  # fmt: skip
    return entries


def _differences(left: Path, right: Path) -> list[str]:
    ours, theirs = _members(left), _members(right)
    if set(ours) != set(theirs):
        return [f"members {sorted(ours)} != {sorted(theirs)}"]
    found = []
    for name in ours:
        if ours[name] == theirs[name]:
            continue
        if name == "debian-binary":
            found.append(name)
            continue
        a, b = _entries(ours[name]), _entries(theirs[name])
        files = sorted(n for n in set(a) | set(b) if a.get(n) != b.get(n))
        found.append(f"{name}: {files[:20]}")
    return found


def test_two_builds_are_byte_identical(
    debs: dict[str, Path], source_tree: Path, tmp_path: Path, source_date_epoch: str
) -> None:
    again = build_debs(source_tree, tmp_path / "again", source_date_epoch)
    assert set(again) == set(debs)
    for package, deb in debs.items():
        if deb.read_bytes() != again[package].read_bytes():
            pytest.fail(f"{package} differs: {_differences(deb, again[package])}")
