"""Exit codes: the kit every program's registry is built from, and `gpu-attest-report`'s own.

Each program has one `ExitCode` enum (agent/exits.py `AgentExit`, verifier/exits.py
`VerifierExit`, `ReportExit` below). A member carries its number, the help text that `--help`
prints beside it (`ExitCode.epilog`), and whether its systemd unit must not restart on it
(`ExitCode.restart_prevented`, which tests/packaging/test_units.py compares with the unit's
`RestartPreventExitStatus=`). The numbers are a stable interface: never renumber one.

Standard library only: `gpu-attest-agent inventory` and `gpu-attest-report` import this where
neither gRPC nor protobuf is installed.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from enum import IntEnum, unique
from typing import Self

#: Column where the help text starts in a rendered epilog, and the width it wraps at.
_INDENT, _WIDTH = 8, 96


def exit_code(value: int, text: str, *, no_restart: bool = False) -> tuple[int, str, bool]:
    """One member of an `ExitCode` enum: `CONFIG = exit_code(2, "help", no_restart=True)`.

    `no_restart` marks an exit code that a restart cannot fix (configuration, not enrolled, key
    material): the program's systemd unit lists it in `RestartPreventExitStatus=`.
    """
    return value, text, no_restart


class ExitCode(IntEnum):
    """Base of each program's registry; each member is made by `exit_code`."""

    _value_: int
    help: str
    no_restart: bool

    def __new__(cls, value: int, text: str = "", no_restart: bool = False) -> Self:
        member = int.__new__(cls, value)
        member._value_ = value
        member.help = text
        member.no_restart = no_restart
        return member

    @classmethod
    def epilog(cls, members: Iterable[Self] | None = None, title: str = "exit codes") -> str:
        """The "exit codes:" block of `--help` (argparse, RawDescriptionHelpFormatter)."""
        lines = [f"{title}:"]
        for member in cls if members is None else members:
            lines += textwrap.wrap(
                member.help,
                _WIDTH,
                initial_indent=f"    {member.value:<{_INDENT - 4}}",
                subsequent_indent=" " * _INDENT,
            )
        return "\n".join(lines)

    @classmethod
    def restart_prevented(cls) -> frozenset[Self]:
        """The members a systemd unit must not restart on, in `RestartPreventExitStatus=`."""
        return frozenset(member for member in cls if member.no_restart)


@unique
class ReportExit(ExitCode):
    """`gpu-attest-report` (attest/report_cli.py): what a regulator's script tests for."""

    VALID = exit_code(0, "the input verified (also after --help)")
    INVALID = exit_code(1, "it did not verify: bad signature, bad proof, or malformed input")
    USAGE = exit_code(
        2, "usage error: bad arguments, an unreadable file or key, or a command this version lacks"
    )
