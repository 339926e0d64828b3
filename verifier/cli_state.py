"""Where the verifier CLI's state comes from, and the checks made before any command touches it.

A command must never quietly act on the wrong world: a mistyped `--config`, or none at all on
a host without /etc/gpu-attest/verifier.toml, used to make `fleet` create an empty database and
print nothing. Commands that only read (or act on what exists) now refuse a state without a
database; those that create state create it private (0700 directory, 0600 files) whatever the
umask, and every command refuses a state directory open to group or others.
"""

from __future__ import annotations

import logging
from pathlib import Path

from attest.errors import StateMissingError
from attest.files import require_private_dir
from verifier.config import DEFAULT_CONFIG_PATH, VerifierConfig

log = logging.getLogger("verifier.cli")

#: (command, action) pairs that may create the verifier's state on first use: `serve` (keys,
#: certificates, database), `token create` and `registry import` (the first steps of a
#: deployment), `ca export` (what the operators are given before the first `serve`).
CREATING = frozenset(
    {("serve", None), ("token", "create"), ("registry", "import"), ("ca", "export")}
)


def config_source(named: Path | None) -> Path | None:
    """The config file `load_config(named)` reads; None when it runs on built-in defaults."""
    if named is not None:
        return named
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None


def describe_source(config: VerifierConfig, source: Path | None) -> str:
    """One log line saying which configuration a long-running command runs on."""
    if source is None:
        return (
            f"no config file ({DEFAULT_CONFIG_PATH} does not exist): running on built-in "
            f"defaults, state in {config.state_dir}, listening on {config.listen} and "
            f"{config.enroll_listen}"
        )
    return f"configuration loaded from {source}, state in {config.state_dir}"


def sqlite_path(config: VerifierConfig) -> Path | None:
    """The SQLite database file of the configuration; None for PostgreSQL."""
    url = config.database_url
    if url.startswith(("postgresql://", "postgres://")):
        return None
    return Path(url)


def prepare_state(
    config: VerifierConfig, command: str, action: str | None, source: Path | None
) -> None:
    """Check (and for creating commands, create) the state before a command opens it.

    Raises StatePermissionError for a state directory open to group or others, and
    StateMissingError when a command that needs existing state finds no database.
    """
    require_private_dir(config.state_dir)
    if (command, action) in CREATING:
        # Created here, 0700, before anything writes into it: the key writers create missing
        # parents under the umask (umask 000 made it drwxrwxrwx).
        config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return
    database = sqlite_path(config)
    if database is not None and not database.exists():
        where = f"--config {source}" if source is not None else "built-in defaults (no config)"
        raise StateMissingError(
            f"no verifier state at {database}: no database there ({where}); "
            "check --config, or run `serve` first"
        )
