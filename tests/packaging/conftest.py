"""Fixtures of the packaging tests: the package trees of `build-deb.sh --stage-only`, and the
packages built for real (once per session, offline from build/wheelhouse)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_DEB = REPO / "packaging" / "build-deb.sh"


@pytest.fixture(scope="session")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both package trees as build-deb.sh --stage-only lays them out (everything but the venv)."""
    out = tmp_path_factory.mktemp("stage")
    # The trees need the interpreter only for the version and Depends, so the test's own will do
    # (a machine without /usr/bin/python3 >= 3.11 can still check them).
    subprocess.run(
        [str(BUILD_DEB), "--stage-only", str(out), "--python", sys.executable],
        check=True,
        capture_output=True,
        text=True,
    )
    return out


WHEELHOUSE = REPO / "build" / "wheelhouse"


def build_debs(tree: Path, out: Path, epoch: str) -> dict[str, Path]:
    """Every package built for real from `tree` (a snapshot of this one) and offline from
    build/wheelhouse (`make wheelhouse`), by package name; skips where that cannot be done, and
    fails in CI, which fills the wheelhouse."""
    reason = None
    if shutil.which("dpkg-deb") is None:
        reason = "dpkg-deb is not installed"
    elif not any(WHEELHOUSE.glob("grpcio-*.whl")):
        reason = "no wheelhouse for an offline build: run `make wheelhouse` once"
    elif not Path("/usr/bin/python3").exists():
        reason = "no /usr/bin/python3 to build the packages' virtualenvs from"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must build the packages: {reason}")
        pytest.skip(reason)
    out.mkdir(parents=True, exist_ok=True)
    script = tree / "packaging" / "build-deb.sh"
    done = subprocess.run(
        [str(script), "--wheel-dir", str(WHEELHOUSE), "--out", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "SOURCE_DATE_EPOCH": epoch},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return {deb.name.split("_")[0]: deb for deb in sorted(out.glob("*.deb"))}


@pytest.fixture(scope="session")
def source_date_epoch() -> str:
    """One SOURCE_DATE_EPOCH for every build of the session (a commit landing meanwhile in a
    shared checkout must not make two builds differ)."""
    done = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%ct"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return done.stdout.strip() or "1700000000"


@pytest.fixture(scope="session")
def source_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files of this checkout that git tracks or would (as build-deb.sh takes them), copied
    once: every build of the session starts from the same bytes, whatever lands meanwhile in a
    checkout shared with other work."""
    tree = tmp_path_factory.mktemp("source")
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file() and not source.is_symlink():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name)
    return tree


@pytest.fixture(scope="session")
def debs(
    tmp_path_factory: pytest.TempPathFactory, source_tree: Path, source_date_epoch: str
) -> dict[str, Path]:
    """The three packages as `make deb` builds them (default compression), once per session."""
    return build_debs(source_tree, tmp_path_factory.mktemp("debs"), source_date_epoch)
