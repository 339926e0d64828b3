"""`gpu-attest-agent`'s exit codes, for every command (`inventory` included), in one registry.

The numbers are stable: systemd/gpu-attest-agent.service lists the `no_restart` ones in
`RestartPreventExitStatus=` (tests/packaging/test_units.py checks it against this enum), and
operators' scripts test for them. `inventory` uses 0, 2, 3, 4 and 5 only (`INVENTORY`).

Standard library and attest's stdlib-only modules only: `inventory` runs where neither gRPC,
protobuf nor cryptography is installed.
"""

from __future__ import annotations

from enum import unique
from typing import Final

from attest import errors
from attest.exits import ExitCode, exit_code
from attest.model import InventoryState


@unique
class AgentExit(ExitCode):
    """Exit codes of `gpu-attest-agent` (agent/cli.py, agent/inventory_cli.py)."""

    OK = exit_code(0, "success (`run`: also after SIGTERM/SIGINT, once the stream is drained)")
    INTERNAL = exit_code(1, "unexpected internal error (a bug: please report it)")
    CONFIG = exit_code(
        2, "usage or configuration error (flags, agent.toml, machine file)", no_restart=True
    )
    NO_LIBRARY = exit_code(
        3, "inventory: the NVML library (libnvidia-ml.so.1) or pynvml was not found"
    )
    NO_DRIVER = exit_code(
        4, "inventory: the NVML library is present but the NVIDIA driver is not loaded"
    )
    NVML_ERROR = exit_code(
        5, "inventory: NVML failed otherwise (version mismatch, no permission, ...)"
    )
    NOT_ENROLLED = exit_code(
        10, "not enrolled: run `gpu-attest-agent enroll` first", no_restart=True
    )
    ENROLL = exit_code(
        11, "enroll: enrollment refused (bad, expired or used token) or verifier unreachable"
    )
    KEY = exit_code(
        12,
        "key or certificate material invalid (e.g. agent.key readable by others)",
        no_restart=True,
    )
    SPOOL_FULL = exit_code(
        13, "spool full: no new evidence until the verifier acknowledges or space is freed"
    )
    STORE = exit_code(14, "spool or storage error")
    ROTATE = exit_code(
        15,
        "rotate-key: key rotation refused by the verifier (e.g. agent revoked) or not completed "
        "(verifier unreachable, spool not empty); a pending key is kept and the next try "
        "completes it",
    )
    LANDMARK = exit_code(
        16,
        "locate: a configured landmark did not measure this agent (unreachable, refused, "
        "timed out or malformed); the others are still listed",
    )


#: The codes `gpu-attest-agent inventory` exits with (its --help lists these).
INVENTORY: Final = (
    AgentExit.OK,
    AgentExit.CONFIG,
    AgentExit.NO_LIBRARY,
    AgentExit.NO_DRIVER,
    AgentExit.NVML_ERROR,
)

#: Typed error -> exit code, most specific class first (NotEnrolledError is a ConfigError).
_ERRORS: Final[tuple[tuple[type[errors.AttestError], AgentExit], ...]] = (
    (errors.NotEnrolledError, AgentExit.NOT_ENROLLED),
    (errors.ConfigError, AgentExit.CONFIG),
    (errors.MachineFileError, AgentExit.CONFIG),
    (errors.EnrollmentError, AgentExit.ENROLL),
    (errors.KeyRotationError, AgentExit.ROTATE),
    (errors.KeyMaterialError, AgentExit.KEY),
    (errors.SpoolFullError, AgentExit.SPOOL_FULL),
    (errors.StoreError, AgentExit.STORE),
    (errors.LandmarkProbeError, AgentExit.LANDMARK),
)

_INVENTORY_STATES: Final = {
    InventoryState.OK: AgentExit.OK,
    InventoryState.LIBRARY_NOT_FOUND: AgentExit.NO_LIBRARY,
    InventoryState.DRIVER_NOT_LOADED: AgentExit.NO_DRIVER,
    InventoryState.ERROR: AgentExit.NVML_ERROR,
}


def exit_code_for(exc: errors.AttestError) -> AgentExit:
    """The documented exit code of a typed error; INTERNAL for one no command should raise."""
    for cls, code in _ERRORS:
        if isinstance(exc, cls):
            return code
    return AgentExit.INTERNAL


def exit_code_for_inventory(state: InventoryState) -> AgentExit:
    """`inventory`'s exit code for what NVML reported."""
    return _INVENTORY_STATES[state]
