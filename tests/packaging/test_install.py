"""The packages as an operator uses them, in a clean Debian 12 root (tests/packaging/debroot.py).

`apt-get install` of the three built packages (apt resolves their Depends), then as each service
account: the agent's simulated inventory, enrollment against the verifier serving inside the
root on loopback, `once`, and the verifier's `ingest` of that envelope; the landmark's key. Then
an upgrade to a higher version keeps the state and an edited conffile; `remove` keeps
configuration and state; `purge` leaves nothing of the packages but what Debian keeps: the
accounts (docs/design.md §11, packaging/README.md).

systemd is not PID 1 in the root: the units are not started here (tests/packaging/test_units.py
checks them); their command lines are what runs, as their `User=`.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.packaging import debroot
from tests.packaging.conftest import REPO

# Package builds (shared by the session), lintian and apt are minutes on a loaded 2-core VM.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PACKAGES = ("gpu-attest-agent", "gpu-attest-verifier", "gpu-attest-landmark")
#: package: (account, state directory, conffile)
SERVICES = {
    "gpu-attest-agent": ("gpu-attest", "/var/lib/gpu-attest", "/etc/gpu-attest/agent.toml"),
    "gpu-attest-verifier": (
        "gpu-attest-verifier", "/var/lib/gpu-attest-verifier", "/etc/gpu-attest/verifier.toml"),
    "gpu-attest-landmark": (
        "gpu-attest-landmark", "/var/lib/gpu-attest-landmark", "/etc/gpu-attest/landmark.toml"),
}  # fmt: skip
AGENT_CONFIG = "/etc/gpu-attest/agent.toml"
VERIFIER = ("gpu-attest-verifier", "--config", "/etc/gpu-attest/verifier.toml")
LANDMARK_CONFIG = "/etc/gpu-attest/landmark.toml"
#: What the test brings into the root (the operator's files); not the packages'.
INPUTS = "/srv/gpu-attest-test"
#: Paths a purge may leave behind: package manager bookkeeping, logs and caches, and the test's
#: own inputs. Nothing of the packages themselves.
BOOKKEEPING = ("/var/lib/dpkg/", "/var/lib/apt/", "/var/log/", "/var/cache/", INPUTS)
#: Made by ca-certificates' maintainer scripts (update-ca-certificates), owned by no package.
GENERATED = ("/etc/ssl/certs/", "/etc/ca-certificates.conf", "/usr/local/share/ca-certificates")


@pytest.fixture
def root(tmp_path: Path) -> Iterator[debroot.Root]:
    tarball = debroot.require_root_tarball()
    path = debroot.unpack(tarball, tmp_path / "root")
    try:
        with debroot.Root(path) as inside:
            yield inside
    finally:
        shutil.rmtree(path, ignore_errors=True)  # ~300 MB: not kept for pytest's tmp retention


def _next_version(debs: dict[str, Path], out: Path) -> dict[str, Path]:
    """The same packages with a higher version (VERSION+1): the trees repacked by dpkg-deb, the
    landmark's exact dependency on the verifier moved with it."""
    built = {}
    out.mkdir()
    for name, deb in debs.items():
        tree = out / name
        subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
        control = tree / "DEBIAN" / "control"
        fields = control.read_text()
        version = next(
            line.split(": ", 1)[1] for line in fields.splitlines() if line.startswith("Version:")
        )
        control.write_text(fields.replace(version, version + "+1"))
        target = out / f"{name}_{version}+1_{deb.name.rsplit('_', 1)[1]}"
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(target)],
            check=True, capture_output=True,
        )  # fmt: skip
        built[name] = target
    return built


def _bring(root: debroot.Root, debs: dict[str, Path], into: str) -> list[str]:
    target = root.path / into.lstrip("/")
    target.mkdir(parents=True)
    paths = []
    for deb in debs.values():
        shutil.copy(deb, target / deb.name)
        paths.append(f"{into}/{deb.name}")
    return paths


def _ids(root: debroot.Root, account: str) -> tuple[int, int, str, str]:
    """uid, gid, home, shell of an account in the root's own passwd."""
    for line in (root.path / "etc" / "passwd").read_text().splitlines():
        name, _, uid, gid, _, home, shell = line.split(":")
        if name == account:
            return int(uid), int(gid), home, shell
    raise AssertionError(f"no account {account} in the root")


def _check_installed(root: debroot.Root, version: str) -> None:
    for package, (account, state_dir, conffile) in SERVICES.items():
        status = root.run("dpkg-query", "-W", "-f", "${Status} ${Version}", package).stdout
        assert status == f"install ok installed {version}", package
        uid, gid, home, shell = _ids(root, account)
        assert uid < 1000 and home == state_dir and shell == "/usr/sbin/nologin"
        state = (root.path / state_dir.lstrip("/")).stat()
        assert (stat.S_IMODE(state.st_mode), state.st_uid, state.st_gid) == (0o700, uid, gid)
        config = (root.path / conffile.lstrip("/")).stat()
        assert (stat.S_IMODE(config.st_mode), config.st_uid, config.st_gid) == (0o640, 0, gid)
        assert f"root {account} 640 {conffile}" in root.run("dpkg-statoverride", "--list").stdout
        service = f"{package}.service"
        wants = root.path / "etc/systemd/system/multi-user.target.wants" / service
        assert wants.is_symlink(), f"{service} is not enabled"
    # The venvs run on the root's own interpreter, not the build machine's.
    for side in ("agent", "verifier"):
        python = root.path / "opt/gpu-attest" / side / "bin" / "python3"
        assert str(python.readlink()) == "/usr/bin/python3"
        assert (root.path / "usr/bin/python3").exists()


def _agent_once(root: debroot.Root, out: str) -> None:
    # The shell (root) opens the file; the agent, as its account, writes the envelope to it.
    root.sh(f"runuser -u gpu-attest -- gpu-attest-agent once --config {AGENT_CONFIG} > {out}")
    (root.path / out.lstrip("/")).chmod(0o644)


def _ingest(root: debroot.Root, envelope: str) -> dict[str, object]:
    done = root.run(*VERIFIER, "ingest", "--json", envelope, user="gpu-attest-verifier")
    [result] = json.loads(done.stdout)
    assert isinstance(result, dict)
    return result


def _use(root: debroot.Root) -> str:
    """Inventory, enrollment, once, ingest and the landmark key; the enrolled agent's id."""
    inputs = root.path / INPUTS.lstrip("/")
    inputs.mkdir(mode=0o755, parents=True, exist_ok=True)
    shutil.copy(REPO / "examples" / "machines" / "h100-node.toml", inputs / "machine.toml")
    (inputs / "machine.toml").chmod(0o644)
    machine = f"{INPUTS}/machine.toml"

    done = root.run(
        "gpu-attest-agent", "inventory", "--json", "--simulate", machine, user="gpu-attest"
    )
    inventory = json.loads(done.stdout)
    assert inventory["status"]["state"] == "ok"
    assert len(inventory["gpus"]) == inventory["status"]["device_count"] > 0

    # The operator's edit of the conffile (kept across the upgrade below).
    agent_toml = root.path / AGENT_CONFIG.lstrip("/")
    text = agent_toml.read_text()
    assert 'verifier = "verifier.example.internal:7443"' in text
    agent_toml.write_text(
        text.replace("verifier.example.internal:7443", "127.0.0.1:7443")
        + f'simulate = "{machine}"\n'
    )

    with root.background(*VERIFIER, "serve", user="gpu-attest-verifier", ready="verifier serving"):
        metrics = root.run(
            "/opt/gpu-attest/verifier/bin/python", "-c",
            "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9464/metrics').read()"
            ".decode())",
        ).stdout  # fmt: skip
        assert "gpu_attest_verifier_" in metrics
        token = root.run(
            *VERIFIER, "token", "create", "--site", "acme-fra1", user="gpu-attest-verifier"
        ).stdout.strip()
        ca = root.run(*VERIFIER, "ca", "export", user="gpu-attest-verifier").stdout
        (inputs / "ca.pem").write_text(ca)
        (inputs / "ca.pem").chmod(0o644)
        done = root.run(
            "gpu-attest-agent", "enroll", "--config", AGENT_CONFIG,
            "--verifier", "127.0.0.1:7444", "--token", token, "--ca", f"{INPUTS}/ca.pem",
            "--timeout", "30s", user="gpu-attest",
        )  # fmt: skip
        assert done.stdout.startswith("enrolled as agent agt-")
        agent_id = done.stdout.split()[3]
    uid, _, _, _ = _ids(root, "gpu-attest")
    key = (root.path / "var/lib/gpu-attest/agent.key").stat()
    assert (stat.S_IMODE(key.st_mode), key.st_uid) == (0o600, uid)

    _agent_once(root, f"{INPUTS}/e1.dsse")
    result = _ingest(root, f"{INPUTS}/e1.dsse")
    assert (result["result"], result["seq"], result["agent_id"]) == ("accepted", 1, agent_id)

    # The landmark refuses to run until the operator names it (exit 3, one line) ...
    done = root.run(
        "gpu-attest-verifier", "landmark", "key", "--config", LANDMARK_CONFIG,
        user="gpu-attest-landmark", check=False,
    )  # fmt: skip
    assert done.returncode == 3
    assert "id: missing" in done.stderr and "Traceback" not in done.stderr
    landmark_toml = root.path / LANDMARK_CONFIG.lstrip("/")
    landmark_toml.write_text(
        landmark_toml.read_text()
        .replace('# id = "lm-fra1"', 'id = "lm-fra1"')
        .replace("# lat = ", "lat = ")
        .replace("# lon = ", "lon = ")
    )
    # ... then makes its key as its own account and prints its registry stanza.
    done = root.run(
        "gpu-attest-verifier", "landmark", "enroll", "--config", LANDMARK_CONFIG,
        user="gpu-attest-landmark",
    )  # fmt: skip
    assert '[[landmark]]\nid = "lm-fra1"' in done.stdout
    uid, _, _, _ = _ids(root, "gpu-attest-landmark")
    key = (root.path / "var/lib/gpu-attest-landmark/landmark.key").stat()
    assert (stat.S_IMODE(key.st_mode), key.st_uid) == (0o600, uid)
    return agent_id


def _state(root: debroot.Root) -> dict[str, bytes]:
    kept = (
        "var/lib/gpu-attest/agent.key", "var/lib/gpu-attest/identity.toml",
        "var/lib/gpu-attest-landmark/landmark.key", "etc/gpu-attest/agent.toml",
        "etc/gpu-attest/landmark.toml",
    )  # fmt: skip
    return {name: (root.path / name).read_bytes() for name in kept}


def test_install_use_upgrade_remove_purge_in_a_clean_debian_root(
    root: debroot.Root, debs: dict[str, Path], tmp_path: Path
) -> None:
    clean = debroot.tree(root.path)
    version = subprocess.run(
        ["dpkg-deb", "-f", str(debs["gpu-attest-agent"]), "Version"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    first = _bring(root, debs, f"{INPUTS}/debs")
    second = _bring(root, _next_version(debs, tmp_path / "next"), f"{INPUTS}/debs-next")

    root.apt_get("install", *first)
    _check_installed(root, version)
    agent_id = _use(root)

    before = _state(root)
    root.apt_get("install", *second)
    _check_installed(root, version + "+1")
    assert _state(root) == before  # keys, identity and the edited conffiles kept
    _agent_once(root, f"{INPUTS}/e2.dsse")  # the chain goes on from the same state
    result = _ingest(root, f"{INPUTS}/e2.dsse")
    assert (result["result"], result["seq"], result["agent_id"]) == ("accepted", 2, agent_id)

    root.apt_get("remove", *PACKAGES)
    for package, (_, state_dir, conffile) in SERVICES.items():
        status = root.run("dpkg-query", "-W", "-f", "${Status}", package).stdout
        assert status == "deinstall ok config-files"
        assert (root.path / state_dir.lstrip("/")).is_dir()  # keys, spool, database kept
        assert (root.path / conffile.lstrip("/")).is_file()
        masked = root.path / "etc/systemd/system" / f"{package}.service"
        assert str(masked.readlink()) == "/dev/null"
    assert not (root.path / "opt/gpu-attest").exists()
    assert not list((root.path / "usr/bin").glob("gpu-attest-*"))

    root.apt_get("purge", *PACKAGES)
    root.apt_get("autoremove", "--purge")  # what apt installed for them (python3 ...)
    overrides = root.run("dpkg-statoverride", "--list", check=False)  # exit 1: none at all
    assert "gpu-attest" not in overrides.stdout
    after = debroot.tree(root.path)
    ours = sorted(p for p in after if "gpu-attest" in p and not p.startswith(BOOKKEEPING))
    assert ours == []
    # Anything else new belongs to a package apt keeps (ca-certificates, a Recommends of
    # python3.11 that something still installed recommends too) or is made by one.
    owned = debroot.owned_by_installed_packages(root.path)
    left = sorted(p for p in after - clean - owned if not p.startswith((*BOOKKEEPING, *GENERATED)))
    assert left == [], left[:50]
    # dpkg deletes a directory the last package shipping it leaves, if empty and no package
    # owns it; minbase creates /opt without a package owning it.
    assert sorted(clean - after) in ([], ["/opt"])
    # The accounts stay, as Debian keeps system users (files they owned must keep an owner).
    for account, _, _ in SERVICES.values():
        _ids(root, account)
