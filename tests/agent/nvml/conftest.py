"""Fixtures of the NVML tests: the fake libnvidia-ml.so.1, built once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .fake_library import build


@pytest.fixture(scope="session")
def fake_library_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the compiled fake `libnvidia-ml.so.1`."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the fake NVML library")
    out = tmp_path_factory.mktemp("fake-nvml")
    build(out)
    return out
