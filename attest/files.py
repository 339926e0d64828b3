"""Durable file writes: a file is replaced whole or not at all, and survives a crash once written.

Each write goes to a temporary file beside the target (created exclusively, mode set before
any byte is written), is fsync'd, renamed over the target, and the directory is fsync'd.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from attest.errors import StatePermissionError


def write_secret_file(path: Path, data: bytes) -> None:
    """Atomically create or replace `path` with mode 0600 holding `data`."""
    write_file_atomically(path, data, 0o600)


def write_public_file(path: Path, data: bytes) -> None:
    """Atomically create or replace `path` with mode 0644 holding `data` (certificates)."""
    write_file_atomically(path, data, 0o644)


def write_file_atomically(path: Path, data: bytes, mode: int) -> None:
    """Atomically create or replace `path` with `mode` (whatever the umask) holding `data`;
    the parent directory is created (0700: it holds keys) when missing. Never leaves a partial
    file behind."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # pid + random suffix: two writers (threads or processes) never share a temporary file.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def replace_durably(source: Path, target: Path) -> None:
    """Rename `source` over `target` (same directory) and make the rename durable."""
    source.replace(target)
    fsync_dir(target.parent)


def remove_durably(*paths: Path) -> None:
    """Remove the files that exist among `paths` (of one directory) and make that durable."""
    for path in paths:
        path.unlink(missing_ok=True)
    if paths:
        fsync_dir(paths[0].parent)


def fsync_dir(path: Path) -> None:
    """Make the entries of directory `path` durable (after a create, rename or unlink in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def require_private_dir(path: Path) -> None:
    """Raise StatePermissionError when the existing directory `path` is open to group or
    others (or is not a directory): private keys and evidence live there. A missing `path`
    passes; whoever creates it creates it 0700."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StatePermissionError(
            f"cannot inspect state directory {path}: {exc.strerror}"
        ) from None
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISDIR(info.st_mode):
        raise StatePermissionError(f"state directory {path} is not a directory")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise StatePermissionError(
            f"state directory {path} has mode {mode:04o}, open to group or others; "
            f"it must be 0700 (chmod 700 {path})"
        )
