"""A clean Debian 12 root to install the built packages into, as an operator's node would be.

The root is made once by `mmdebstrap` from Debian's mirror (minbase, plus systemd as every node
has it) and cached as a tarball under build/. The packages' Depends are *not* installed in it:
its apt lists and a download of those Depends are kept in it (/var/cache/gpu-attest-depends),
so `apt-get install ./*.deb` inside it resolves them as on a real node, yet offline. Each test
unpacks a fresh copy and works in it through `Root`: one holder process owns a mount, PID and
network namespace (only loopback, so nothing inside reaches a mirror or collides with this
host's ports), /proc is mounted in the root, and every command enters those namespaces and
chroots. systemd is not PID 1 there, as in any container: the maintainer scripts' paths for that
case are the ones exercised (packaging/README.md). Killing the holder ends everything inside.

Needs root, mmdebstrap (first run only: a mirror), unshare, nsenter and ip. `unavailable_reason`
says why a host cannot; `require_root_tarball` skips with it, or fails in CI (.ci/run installs
what is missing), so the install test never silently stops running there.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "build"
MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
#: Where the packages' Depends wait, downloaded but not installed (apt's archive dir at install).
DEPENDS_CACHE = "/var/cache/gpu-attest-depends"
#: What the packages depend on beyond minbase (DEBIAN/control: python3, libc6; systemd is in).
DEPENDS = ("python3",)
MMDEBSTRAP = (
    "mmdebstrap",
    "--quiet",
    "--variant=minbase",
    "--include=systemd",
    # The lists stay, so apt inside resolves Depends without a network.
    "--skip=cleanup/apt/lists",
    '--customize-hook=mkdir -p "$1' + DEPENDS_CACHE + '/partial"',
    # With their Recommends, as apt on a node installs them (mmdebstrap's own apt skips them).
    (
        '--customize-hook=chroot "$1" apt-get install --download-only --yes -q'
        f" -o APT::Install-Recommends=true -o Dir::Cache::Archives={DEPENDS_CACHE}"
        f" {' '.join(DEPENDS)}"
    ),
    SUITE,
)
TOOLS = ("mmdebstrap", "unshare", "nsenter", "ip", "chroot")
ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "DEBIAN_FRONTEND": "noninteractive",
}


def tarball_path() -> Path:
    """The cached root, named by a hash of the recipe: changing the recipe makes a new one."""
    recipe = hashlib.sha256("\0".join((*MMDEBSTRAP, MIRROR)).encode()).hexdigest()[:12]
    return CACHE / f"debian-{SUITE}-root-{recipe}.tar"


def unavailable_reason() -> str | None:
    """Why no root can be made or entered here, or None."""
    if os.geteuid() != 0:
        return "making and entering a Debian root needs root (chroot, namespaces)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (apt-get install mmdebstrap iproute2)"
    probe = subprocess.run(
        ["unshare", "--mount", "--pid", "--net", "--fork", "true"],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    if probe.returncode != 0:
        return f"cannot make mount/PID/network namespaces: {probe.stderr.strip()}"
    return None


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the Debian install test: {reason}")
    pytest.skip(reason)


def require_root_tarball() -> Path:
    """The cached root tarball, made now if missing; skips (fails in CI) where it cannot be."""
    reason = unavailable_reason()
    if reason is not None:
        _skip_or_fail(reason)
    tarball = tarball_path()
    if tarball.exists():
        return tarball
    CACHE.mkdir(exist_ok=True)
    partial = tarball.with_suffix(".partial.tar")
    done = subprocess.run(
        [*MMDEBSTRAP, str(partial), MIRROR],
        capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        _skip_or_fail(f"mmdebstrap could not make a {SUITE} root: {done.stderr.strip()[-600:]}")
    partial.rename(tarball)
    for stale in CACHE.glob(f"debian-{SUITE}-root-*.tar"):
        if stale != tarball:
            stale.unlink()
    return tarball


def unpack(tarball: Path, into: Path) -> Path:
    """A fresh copy of the root (owners, modes and device nodes kept: we are root)."""
    into.mkdir()
    subprocess.run(["tar", "-xf", str(tarball), "-C", str(into)], check=True, timeout=300)
    return into


def tree(root: Path) -> set[str]:
    """Every path in the root, as seen from inside it ("/etc/passwd"); /proc and /tmp excluded."""
    paths = set()
    for directory, dirs, files in os.walk(root):
        inside = "/" + os.path.relpath(directory, root).removeprefix(".").lstrip("/")
        if inside in ("/proc", "/tmp"):
            dirs.clear()
            continue
        for name in (*dirs, *files):
            paths.add(os.path.join(inside, name))
    return paths


def owned_by_installed_packages(root: Path) -> set[str]:
    """Every path some installed package of the root ships (dpkg's file lists)."""
    owned: set[str] = set()
    for listing in (root / "var/lib/dpkg/info").glob("*.list"):
        owned.update(line for line in listing.read_text().splitlines() if line != "/.")
    return owned


class Root:
    """Commands inside an unpacked root, in namespaces of their own (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._holder: subprocess.Popen[bytes] | None = None
        self._pid = 0

    def __enter__(self) -> Root:
        self._holder = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--net", "--fork", "--kill-child=SIGKILL",
             f"--mount-proc={self.path / 'proc'}",
             "sh", "-c", "ip link set lo up && exec sleep infinity"],
            env=ENV,
        )  # fmt: skip
        children = Path(f"/proc/{self._holder.pid}/task/{self._holder.pid}/children")
        deadline = time.monotonic() + 30
        while not self._pid:
            if self._holder.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError("the namespace holder did not start")
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int(children.read_text().split()[0])
                # Past `ip link set lo up`: the holder's child is now `sleep`.
                if Path(f"/proc/{pid}/comm").read_text().strip() == "sleep":
                    self._pid = pid
            time.sleep(0.05)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # SIGKILL (unshare blocks the others while it waits); its end kills its child, PID 1 of
        # the namespace, whose end kills the rest.
        if self._holder is not None:
            self._holder.kill()
            self._holder.wait(timeout=30)

    def argv(self, command: Sequence[str], user: str | None = None) -> list[str]:
        as_user = ["runuser", "-u", user, "--"] if user else []
        return ["nsenter", "-t", str(self._pid), "--mount", "--net", "--pid",
                "chroot", str(self.path), *as_user, *command]  # fmt: skip

    def run(
        self, *command: str, user: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside; with `check`, a non-zero exit fails the test with its output."""
        done = subprocess.run(
            self.argv(command, user), env=ENV, capture_output=True, text=True,
            check=False, timeout=timeout,
        )  # fmt: skip
        if check and done.returncode != 0:
            pytest.fail(
                f"in the root{f' as {user}' if user else ''}: {' '.join(command)} exited "
                f"{done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done

    def sh(self, script: str, user: str | None = None) -> str:
        """Run a shell script inside (for redirections); its stdout."""
        return self.run("sh", "-ec", script, user=user).stdout

    def apt_get(self, *args: str) -> str:
        """apt-get with the Depends cache as its archive dir; offline, since only lo is up."""
        return self.run(
            "apt-get", "-y", "-q", "-o", "Dpkg::Use-Pty=0",
            "-o", f"Dir::Cache::Archives={DEPENDS_CACHE}", *args, timeout=300,
        ).stdout  # fmt: skip

    @contextlib.contextmanager
    def background(self, *command: str, user: str, ready: str) -> Iterator[None]:
        """A service inside, started, awaited until its log shows `ready`, stopped by SIGTERM."""
        log = f"/tmp/{command[0]}.{time.monotonic_ns()}.log"
        pidfile = log + ".pid"
        process = subprocess.Popen(
            self.argv(["sh", "-c", f'echo $$ > {pidfile}; exec "$@" > {log} 2>&1', "sh",
                       "runuser", "-u", user, "--", *command]),
            env=ENV,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            host_log = self.path / log.lstrip("/")
            while ready not in (host_log.read_text() if host_log.exists() else ""):
                if process.poll() is not None or time.monotonic() > deadline:
                    text = host_log.read_text() if host_log.exists() else ""
                    pytest.fail(f"{' '.join(command)} did not get ready:\n{text[-3000:]}")
                time.sleep(0.1)
            yield
        finally:
            # runuser passes SIGTERM on to the service and waits for it.
            self.run("sh", "-c", f"kill -TERM $(cat {pidfile})", check=False)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
