"""The hardened units say what packaging/README.md promises, and systemd itself agrees.

Keylime's units run with `User=` and nothing else (keylime's own packaging); these tests pin every
sandbox setting so that loosening one is a visible, reviewed change, and every relaxed setting
must carry an "Exception:" comment that says why.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.exits import AgentExit
from attest.exits import ExitCode
from tests.packaging.unitfile import Unit, load_unit, parse_unit
from verifier.exits import VerifierExit

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
AGENT = SYSTEMD_DIR / "gpu-attest-agent.service"
VERIFIER = SYSTEMD_DIR / "gpu-attest-verifier.service"
LANDMARK = SYSTEMD_DIR / "gpu-attest-landmark.service"
UNITS = {"agent": AGENT, "verifier": VERIFIER, "landmark": LANDMARK}
# The landmark is a command of gpu-attest-verifier (`landmark serve`), with its exit codes.
EXIT_CODES: dict[str, type[ExitCode]] = {
    "agent": AgentExit,
    "verifier": VerifierExit,
    "landmark": VerifierExit,
}

# Settings both units must carry, with the exact value.
COMMON_HARDENING = {
    "Type": "notify",
    "NotifyAccess": "main",
    "Restart": "on-failure",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateMounts": "yes",
    "NoNewPrivileges": "yes",
    "DevicePolicy": "closed",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "SystemCallArchitectures": "native",
    "SystemCallErrorNumber": "EPERM",
    "MemoryDenyWriteExecute": "yes",
    "LockPersonality": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectHostname": "yes",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "RemoveIPC": "yes",
    "UMask": "0077",
    "StateDirectoryMode": "0700",
    "ConfigurationDirectory": "gpu-attest",
}

IDENTITY = {
    "agent": {
        "User": "gpu-attest",
        "Group": "gpu-attest",
        "StateDirectory": "gpu-attest",
        "ReadWritePaths": "/var/lib/gpu-attest",
        "ExecStart": "/usr/bin/gpu-attest-agent run --config /etc/gpu-attest/agent.toml",
    },
    "verifier": {
        "User": "gpu-attest-verifier",
        "Group": "gpu-attest-verifier",
        "StateDirectory": "gpu-attest-verifier",
        "ReadWritePaths": "/var/lib/gpu-attest-verifier",
        "ExecStart": "/usr/bin/gpu-attest-verifier serve --config /etc/gpu-attest/verifier.toml",
    },
    "landmark": {
        "User": "gpu-attest-landmark",
        "Group": "gpu-attest-landmark",
        "StateDirectory": "gpu-attest-landmark",
        "ReadWritePaths": "/var/lib/gpu-attest-landmark",
        "ExecStart": "/usr/bin/gpu-attest-verifier landmark serve "
        "--config /etc/gpu-attest/landmark.toml",
    },
}

# Relaxations from the strictest value, each allowed only with an "Exception:" comment.
AGENT_EXCEPTIONS = {
    "ProtectProc": "default",
    "ProcSubset": "all",
    "ProtectClock": "no",
    "DevicePolicy": "closed",
}


def _seconds(value: str) -> int:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match[1]) * (60 if match[2] == "min" else 1)


@pytest.mark.parametrize("side", sorted(UNITS))
def test_common_hardening(side: str) -> None:
    unit = load_unit(UNITS[side])
    for key, expected in {**COMMON_HARDENING, **IDENTITY[side]}.items():
        assert unit.value("Service", key) == expected, f"{side}: {key}"


@pytest.mark.parametrize("side", sorted(UNITS))
def test_watchdog_and_restart_policy(side: str) -> None:
    unit = load_unit(UNITS[side])
    watchdog = unit.value("Service", "WatchdogSec")
    assert watchdog is not None
    assert 30 <= _seconds(watchdog) <= 300
    assert unit.value("Unit", "StartLimitBurst") is not None
    assert unit.value("Install", "WantedBy") == "multi-user.target"


@pytest.mark.parametrize("side", sorted(UNITS))
def test_capabilities_are_only_ever_empty(side: str) -> None:
    unit = load_unit(UNITS[side])
    for key in ("CapabilityBoundingSet", "AmbientCapabilities"):
        assert [a.value for a in unit.assignments("Service", key)] == [""], key


@pytest.mark.parametrize("side", sorted(UNITS))
def test_syscall_filter_starts_from_system_service(side: str) -> None:
    filters = load_unit(UNITS[side]).values("Service", "SystemCallFilter")
    assert filters[0].split()[0] == "@system-service"
    assert all(f.startswith("~") for f in filters[1:])
    assert "@resources" in filters[-1]


def test_agent_devices_are_the_nvidia_nodes_only() -> None:
    unit = load_unit(AGENT)
    assert unit.value("Service", "PrivateDevices") is None
    assert set(unit.values("Service", "DeviceAllow")) == {
        "char-nvidia rw",
        "char-nvidiactl rw",
        "char-nvidia-frontend rw",
        "char-nvidia-uvm rw",
        "char-nvidia-caps r",
    }
    assert "modprobe@nvidia.service" in (unit.value("Unit", "After") or "").split()


def test_agent_exceptions_are_explained() -> None:
    unit = load_unit(AGENT)
    for key, value in AGENT_EXCEPTIONS.items():
        (assignment,) = unit.assignments("Service", key)
        assert assignment.value == value
        assert "Exception:" in assignment.comment, f"{key}= needs an 'Exception:' comment"
    adjtimex = unit.assignments("Service", "SystemCallFilter")[0]
    assert adjtimex.value == "@system-service adjtimex clock_adjtime"
    assert "Exception:" in adjtimex.comment


def test_agent_waits_for_enrollment_and_does_not_loop_on_fatal_errors() -> None:
    unit = load_unit(AGENT)
    assert unit.value("Unit", "ConditionPathExists") == "/var/lib/gpu-attest/identity.toml"
    # Which exit codes stop the restarts: test_restart_prevent_exit_status_is_the_registry.
    assert AgentExit.restart_prevented() == {
        AgentExit.CONFIG,
        AgentExit.NOT_ENROLLED,
        AgentExit.KEY,
    }
    assert unit.value("Service", "MemoryMax") is not None
    assert unit.value("Service", "CPUWeight") is not None


@pytest.mark.parametrize("unit_path", [VERIFIER, LANDMARK], ids=["verifier", "landmark"])
def test_services_open_to_the_network_get_the_tightest_box(unit_path: Path) -> None:
    unit = load_unit(unit_path)
    expected = {
        "PrivateDevices": "yes",
        "PrivateUsers": "yes",
        "ProtectClock": "yes",
        "ProtectProc": "invisible",
    }
    for key, value in expected.items():
        assert unit.value("Service", key) == value, key
    assert unit.values("Service", "DeviceAllow") == []
    assert VerifierExit.restart_prevented() == {VerifierExit.USAGE, VerifierExit.CONFIG}
    assert unit.values("Service", "SystemCallFilter")[-1] == "~@privileged @resources"
    if unit_path == VERIFIER:
        assert int(unit.value("Service", "LimitNOFILE") or 0) >= 20_000
        (proc_subset,) = unit.assignments("Service", "ProcSubset")
        assert "Exception:" in proc_subset.comment
    else:  # the landmark has no process collector, so nothing of /proc beyond its own pid
        assert unit.value("Service", "ProcSubset") == "pid"


@pytest.mark.parametrize("side", sorted(UNITS))
def test_restart_prevent_exit_status_is_the_registry(side: str) -> None:
    """`RestartPreventExitStatus=` is exactly the program's `no_restart` exit codes, and the
    comment above it names the registry and each of those codes."""
    registry = EXIT_CODES[side]
    (setting,) = load_unit(UNITS[side]).assignments("Service", "RestartPreventExitStatus")
    listed = [int(code) for code in setting.value.split()]
    assert len(listed) == len(set(listed)), setting.value
    assert set(listed) == {int(code) for code in registry.restart_prevented()}, setting.value
    module = registry.__module__.replace(".", "/") + ".py"
    assert registry.__name__ in setting.comment and module in setting.comment
    for code in registry.restart_prevented():
        assert re.search(rf"\b{int(code)}\b", setting.comment), f"{code!r} not explained"


@pytest.mark.parametrize("side", sorted(UNITS))
def test_exec_start_is_accepted_by_the_real_cli(side: str, tmp_path: Path) -> None:
    # The unit's exact argv through this checkout's console script, with the config path
    # pointing at a file that is not TOML: the command must get as far as reading it (a
    # configuration error, not argparse's usage error), and so stops before serving anything.
    argv = (load_unit(UNITS[side]).value("Service", "ExecStart") or "").split()
    script = Path(sys.executable).parent / Path(argv[0]).name
    if not script.exists():
        pytest.skip(f"{script.name} is not installed in this environment")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[[\n")
    config = f"/etc/gpu-attest/{side}.toml"
    args = [str(broken) if arg == config else arg for arg in argv[1:]]
    assert str(broken) in args
    done = subprocess.run(
        [str(script), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert "usage:" not in done.stderr, done.stderr
    assert "not valid TOML" in done.stderr, done.stderr
    # A configuration error, which the unit does not restart on.
    config_error = EXIT_CODES[side]["CONFIG"]
    assert done.returncode == config_error and config_error.no_restart


def test_parser_keeps_resets_and_continuations() -> None:
    unit: Unit = parse_unit("[Service]\nA=1\nA=2\n# why\nA=\nB=x\\\n  y\n")
    assert unit.values("Service", "A") == []
    assert unit.assignments("Service", "A")[-1].comment == "why"
    assert unit.value("Service", "B") == "x y"
    with pytest.raises(ValueError, match="not a unit-file line"):
        parse_unit("[Service]\nnonsense\n")


needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


@needs_analyze
@pytest.mark.parametrize("side", sorted(UNITS))
def test_systemd_analyze_verify_is_clean(side: str, tmp_path: Path) -> None:
    # verify insists that ExecStart's program exists; the package is not installed here, so
    # point ExecStart at /bin/true and keep every other line as shipped.
    source = UNITS[side]
    text = re.sub(
        r"^ExecStart=/usr/bin/\S+ ", "ExecStart=/bin/true ",
        source.read_text(encoding="utf-8"), flags=re.MULTILINE,
    )  # fmt: skip
    assert "ExecStart=/bin/true " in text
    copy = tmp_path / source.name
    copy.write_text(text, encoding="utf-8")
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""


# Ceilings on `systemd-analyze security` exposure (0 best, 10 worst). Measured with systemd 252:
# agent 2.0, verifier 1.1, landmark 1.1. A change that raises them must lower these on purpose.
EXPOSURE_CEILING = {"agent": 2.0, "verifier": 1.1, "landmark": 1.1}


@needs_analyze
@pytest.mark.parametrize("side", sorted(UNITS))
def test_systemd_analyze_security_exposure(side: str) -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(UNITS[side])],
        capture_output=True,
        text=True,
        check=False,
    )
    if "--offline" in done.stderr and "unrecognized" in done.stderr:
        pytest.skip("systemd-analyze is older than 250 (no --offline)")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout)
    assert match, done.stdout + done.stderr
    exposure = float(match[1])
    print(f'{{"unit": "gpu-attest-{side}.service", "exposure": {exposure}}}')
    assert exposure <= EXPOSURE_CEILING[side]
