"""Durable, atomic file writes (attest.files)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from attest import files


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_secret_file_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    files.write_secret_file(path, b"one")
    files.write_secret_file(path, b"two")
    assert path.read_bytes() == b"two"
    assert _mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]  # no temporary file left


def test_public_files_are_0644_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        files.write_public_file(tmp_path / "sub" / "ca.pem", b"pem")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "sub" / "ca.pem") == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    files.write_secret_file(path, b"old")
    with pytest.raises(TypeError):
        files.write_secret_file(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]


def test_replace_and_remove_durably(tmp_path: Path) -> None:
    files.write_secret_file(tmp_path / "a.pending", b"new")
    files.write_secret_file(tmp_path / "a", b"old")
    files.replace_durably(tmp_path / "a.pending", tmp_path / "a")
    assert (tmp_path / "a").read_bytes() == b"new"
    files.remove_durably(tmp_path / "a", tmp_path / "never-there")
    assert list(tmp_path.iterdir()) == []
