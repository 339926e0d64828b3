"""`gpu-attest-verifier`'s exit codes, for every command, in one registry.

The numbers are stable: systemd/gpu-attest-verifier.service lists the `no_restart` ones in
`RestartPreventExitStatus=` (tests/packaging/test_units.py checks it against this enum), and
operators' scripts test for them.
"""

from __future__ import annotations

from enum import unique
from typing import Final

from attest.errors import AttestError, ConfigError, StoreError
from attest.exits import ExitCode, exit_code


@unique
class VerifierExit(ExitCode):
    """Exit codes of `gpu-attest-verifier` (verifier/cli.py, verifier/log_cli.py, serve)."""

    OK = exit_code(0, "success; `serve` also exits 0 after SIGTERM/SIGINT once shut down")
    REFUSED = exit_code(
        1,
        "a request was refused (e.g. an ingested envelope rejected, unknown agent, site or "
        "policy pack, a log index outside the log, a registry import that needs --force, "
        "`findings ack` of an unknown or resolved finding id)",
    )
    USAGE = exit_code(2, "usage error (bad arguments)", no_restart=True)
    CONFIG = exit_code(
        3,
        "configuration invalid (verifier.toml, a registry file, --insecure-plaintext off "
        "loopback), no verifier state where it points, or a state directory open to others",
        no_restart=True,
    )
    STORE = exit_code(4, "the store is unavailable or failed (a restart retries it)")
    FINDINGS = exit_code(
        5,
        "findings --fail-on SEVERITY: an open finding of that severity or higher exists; "
        "reconcile: it raised a finding",
    )
    WORKER = exit_code(
        6,
        "serve --workers N: a worker process kept dying (more than 5 times within 60 s) or "
        "died by a signal before it served; the log says which and why",
    )


#: Typed error -> exit code, most specific class first.
_ERRORS: Final[tuple[tuple[type[BaseException], VerifierExit], ...]] = (
    (ConfigError, VerifierExit.CONFIG),
    (StoreError, VerifierExit.STORE),
    (AttestError, VerifierExit.REFUSED),
    (OSError, VerifierExit.REFUSED),
)


def exit_code_for(exc: AttestError | OSError) -> VerifierExit:
    """The documented exit code of an error a command raised."""
    for cls, code in _ERRORS:
        if isinstance(exc, cls):
            return code
    return VerifierExit.REFUSED
