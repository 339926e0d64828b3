"""Fixtures of the packaging tests: the package trees that packaging/build-deb.sh lays out."""

from __future__ import annotations

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
