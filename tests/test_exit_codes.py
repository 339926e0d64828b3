"""One exit-code registry per program: the stable numbers, `--help` listing them, and no CLI
returning a bare number instead of a member (agent/exits.py, verifier/exits.py,
attest/exits.py). The units' `RestartPreventExitStatus=` is checked in
tests/packaging/test_units.py."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from agent import cli as agent_cli
from agent import inventory_cli
from agent.exits import INVENTORY, AgentExit, exit_code_for, exit_code_for_inventory
from attest import errors, report_cli
from attest.exits import ExitCode, ReportExit
from attest.model import InventoryState
from verifier import cli as verifier_cli
from verifier.exits import VerifierExit
from verifier.exits import exit_code_for as verifier_exit_code_for

ROOT = Path(__file__).resolve().parent.parent

#: The documented numbers (each program's --help, the units, operators' scripts): never renumbered.
STABLE: dict[type[ExitCode], dict[str, int]] = {
    AgentExit: {
        "OK": 0,
        "INTERNAL": 1,
        "CONFIG": 2,
        "NO_LIBRARY": 3,
        "NO_DRIVER": 4,
        "NVML_ERROR": 5,
        "NOT_ENROLLED": 10,
        "ENROLL": 11,
        "KEY": 12,
        "SPOOL_FULL": 13,
        "STORE": 14,
        "ROTATE": 15,
        "LANDMARK": 16,
    },
    VerifierExit: {
        "OK": 0,
        "REFUSED": 1,
        "USAGE": 2,
        "CONFIG": 3,
        "STORE": 4,
        "FINDINGS": 5,
        "WORKER": 6,
    },
    ReportExit: {"VALID": 0, "INVALID": 1, "USAGE": 2},
}

Main = Callable[[Sequence[str] | None], int]
#: Each command line's --help, and the registry (or part of it) that help must list.
HELP: dict[str, tuple[Main, list[str], Sequence[ExitCode]]] = {
    "gpu-attest-agent": (agent_cli.main, ["--help"], list(AgentExit)),
    "gpu-attest-agent inventory": (agent_cli.main, ["inventory", "--help"], INVENTORY),
    "gpu-attest-verifier": (verifier_cli.main, ["--help"], list(VerifierExit)),
    "gpu-attest-report": (report_cli.main, ["--help"], list(ReportExit)),
}

#: The modules whose functions return a process's exit code.
CLI_MODULES = (
    "agent/cli.py",
    "agent/inventory_cli.py",
    "verifier/cli.py",
    "verifier/log_cli.py",
    "verifier/policy_cli.py",
    "attest/report_cli.py",
)


@pytest.mark.parametrize("registry", list(STABLE), ids=lambda r: r.__name__)
def test_numbers_are_the_documented_ones(registry: type[ExitCode]) -> None:
    assert {m.name: int(m) for m in registry} == STABLE[registry]
    assert len(registry.__members__) == len(registry)  # no alias hides a second name
    for member in registry:
        assert member.help and member.help == member.help.strip(), member


def test_no_restart_codes_are_the_fatal_ones() -> None:
    assert AgentExit.restart_prevented() == {
        AgentExit.CONFIG,
        AgentExit.NOT_ENROLLED,
        AgentExit.KEY,
    }
    assert VerifierExit.restart_prevented() == {VerifierExit.USAGE, VerifierExit.CONFIG}
    assert ReportExit.restart_prevented() == frozenset()  # no service runs it


@pytest.mark.parametrize("program", sorted(HELP))
def test_help_lists_every_exit_code(program: str, capsys: pytest.CaptureFixture[str]) -> None:
    main, argv, members = HELP[program]
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())  # help text wraps at the terminal width
    listed = out[out.index("exit codes:") :]
    for member in members:
        assert f" {int(member)} {' '.join(member.help.split())}" in listed, member
    numbers = [int(n) for n in re.findall(r"(?:^|\s)(\d+) ", listed.replace("exit codes:", ""))]
    assert set(numbers) >= {int(m) for m in members}


def test_inventory_uses_only_its_codes() -> None:
    assert {exit_code_for_inventory(state) for state in InventoryState} | {AgentExit.CONFIG} == (
        set(INVENTORY)
    )


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.NotEnrolledError("x"), AgentExit.NOT_ENROLLED),
        (errors.ConfigError("x"), AgentExit.CONFIG),
        (errors.MachineFileError("x"), AgentExit.CONFIG),
        (errors.TokenUsedError("x"), AgentExit.ENROLL),
        (errors.KeyRotationRefusedError("x"), AgentExit.ROTATE),
        (errors.KeyFilePermissionError("x"), AgentExit.KEY),
        (errors.SpoolFullError("x"), AgentExit.SPOOL_FULL),
        (errors.StoreUnavailableError("x"), AgentExit.STORE),
        (errors.BadSignatureError("x"), AgentExit.INTERNAL),
    ],
)
def test_agent_errors_map_to_codes(exc: errors.AttestError, code: AgentExit) -> None:
    assert exit_code_for(exc) is code


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.RegistryError("x"), VerifierExit.CONFIG),
        (errors.StoreUnavailableError("x"), VerifierExit.STORE),
        (errors.ProofError("x"), VerifierExit.REFUSED),
        # `registry import` of a change that needs --force, `token create --site` of a site the
        # registry lacks: refusals of a request, not configuration errors.
        (errors.RegistryChangeRefusedError("x"), VerifierExit.REFUSED),
        (errors.SiteUnknownError("x"), VerifierExit.REFUSED),
        (FileNotFoundError("x"), VerifierExit.REFUSED),
    ],
)
def test_verifier_errors_map_to_codes(
    exc: errors.AttestError | OSError, code: VerifierExit
) -> None:
    assert verifier_exit_code_for(exc) is code


def test_verifier_usage_error_returns_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert verifier_cli.main(["frobnicate"]) == VerifierExit.USAGE
    assert "usage:" in capsys.readouterr().err


def test_inventory_help_is_the_agent_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert inventory_cli.main(["--help"]) == AgentExit.OK
    assert AgentExit.NO_DRIVER.help in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("path", CLI_MODULES)
def test_no_cli_returns_a_bare_number(path: str) -> None:
    """`return 2` or `sys.exit(2)` would bypass the registry: every exit code is a member."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    bare = []
    for node in ast.walk(tree):
        value: ast.expr | None = None
        if isinstance(node, ast.Return):
            value = node.value
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("sys.exit", "exit"):
            value = node.args[0] if node.args else None
        if isinstance(value, ast.Constant) and isinstance(value.value, int):
            bare.append(f"{path}:{value.lineno}: {ast.unparse(node)}")
    assert bare == []
