"""The agent's configuration: `/etc/gpu-attest/agent.toml` into one frozen, validated value.

Unknown keys are errors, so a typo never silently falls back to a default. No environment
variable is consulted. `insecure_plaintext` is the only option that weakens transport security;
it is refused for anything but a loopback verifier address and is logged at every start.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from attest.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/gpu-attest/agent.toml")
DEFAULT_STATE_DIR = Path("/var/lib/gpu-attest")
LogFormat = Literal["text", "json"]

_MAX_INTERVAL_S = 24 * 3600.0
_MIN_SPOOL_BYTES = 64 * 1024


@dataclass(frozen=True)
class HostPort:
    """A `host:port` address; IPv6 literals are written `[::1]:port`."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True)
class AgentConfig:
    """Everything the daemon is told by its operator. Times are seconds."""

    verifier: HostPort | None = None  # None: use the address recorded at enrollment
    state_dir: Path = DEFAULT_STATE_DIR
    interval_s: float = 60.0
    inventory_poll_s: float = 15.0
    backoff_initial_s: float = 1.0
    backoff_cap_s: float = 300.0
    metrics_listen: HostPort | None = None
    log_format: LogFormat = "text"
    simulate: Path | None = None
    insecure_plaintext: bool = False
    spool_max_bytes: int = 256 * 1024 * 1024
    host_root: Path = Path("/")

    def with_overrides(self, **changes: object) -> AgentConfig:
        """A copy with command-line overrides applied and validated again."""
        return validate(replace(self, **changes))  # type: ignore[arg-type]


def parse_host_port(text: str, what: str) -> HostPort:
    """Parse `host:port` or `[v6]:port`; raise ConfigError."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]:")
    else:
        host, sep, rest = text.rpartition(":")
    if not sep or not host or not rest.isdigit() or not 0 < int(rest) < 65536:
        raise ConfigError(f"{what}: {text!r} is not HOST:PORT")
    if any(c.isspace() or c in "/?#@" for c in host):
        raise ConfigError(f"{what}: {host!r} is not a host name or address")
    return HostPort(host, int(rest))


def _number(raw: object, key: str, low: float, high: float) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ConfigError(f"{key} must be a number of seconds")
    value = float(raw)
    if not low <= value <= high:
        raise ConfigError(f"{key} must be between {low:g} and {high:g}")
    return value


def _string(raw: object, key: str) -> str:
    if not isinstance(raw, str) or not raw or "\x00" in raw:
        raise ConfigError(f"{key} must be a non-empty string")
    return raw


def _from_mapping(data: Mapping[str, object], base_dir: Path) -> AgentConfig:
    known = {
        "verifier", "state_dir", "interval_seconds", "inventory_poll_seconds",
        "backoff_initial_seconds", "backoff_cap_seconds", "metrics_listen", "log_format",
        "simulate", "insecure_plaintext", "spool_max_bytes",
    }  # fmt: skip
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown configuration keys: {', '.join(unknown)}")
    cfg = AgentConfig()
    changes: dict[str, object] = {}
    if "verifier" in data:
        changes["verifier"] = parse_host_port(_string(data["verifier"], "verifier"), "verifier")
    if "state_dir" in data:
        changes["state_dir"] = base_dir / _string(data["state_dir"], "state_dir")
    if "simulate" in data:
        changes["simulate"] = base_dir / _string(data["simulate"], "simulate")
    if "metrics_listen" in data:
        raw = _string(data["metrics_listen"], "metrics_listen")
        changes["metrics_listen"] = parse_host_port(raw, "metrics_listen")
    for key, attr, low, high in (
        ("interval_seconds", "interval_s", 1.0, _MAX_INTERVAL_S),
        ("inventory_poll_seconds", "inventory_poll_s", 1.0, _MAX_INTERVAL_S),
        ("backoff_initial_seconds", "backoff_initial_s", 0.01, 3600.0),
        ("backoff_cap_seconds", "backoff_cap_s", 0.01, 86400.0),
    ):
        if key in data:
            changes[attr] = _number(data[key], key, low, high)
    if "log_format" in data:
        fmt = data["log_format"]
        if fmt not in ("text", "json"):
            raise ConfigError("log_format must be 'text' or 'json'")
        changes["log_format"] = fmt
    if "insecure_plaintext" in data:
        if not isinstance(data["insecure_plaintext"], bool):
            raise ConfigError("insecure_plaintext must be true or false")
        changes["insecure_plaintext"] = data["insecure_plaintext"]
    if "spool_max_bytes" in data:
        size = data["spool_max_bytes"]
        if isinstance(size, bool) or not isinstance(size, int) or size < _MIN_SPOOL_BYTES:
            raise ConfigError(f"spool_max_bytes must be an integer >= {_MIN_SPOOL_BYTES}")
        changes["spool_max_bytes"] = size
    return validate(replace(cfg, **changes))  # type: ignore[arg-type]


def validate(cfg: AgentConfig) -> AgentConfig:
    """Check the rules that span fields; return `cfg` unchanged or raise ConfigError."""
    if cfg.backoff_initial_s > cfg.backoff_cap_s:
        raise ConfigError("backoff_initial_seconds must not exceed backoff_cap_seconds")
    if cfg.metrics_listen is not None and not cfg.metrics_listen.is_loopback:
        raise ConfigError("metrics_listen must be a loopback address (127.0.0.1, ::1, localhost)")
    if cfg.insecure_plaintext and cfg.verifier is not None and not cfg.verifier.is_loopback:
        raise ConfigError("insecure_plaintext is allowed only for a loopback verifier address")
    return cfg


def parse_config(text: str, base_dir: Path = Path("/")) -> AgentConfig:
    """Parse the TOML text of agent.toml. Relative paths resolve against `base_dir`.

    Raises ConfigError for invalid TOML, unknown keys, or values out of range.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"agent configuration is not valid TOML: {exc}") from exc
    return _from_mapping(data, base_dir)


def load_config(path: Path | None) -> AgentConfig:
    """Read and parse the configuration file; a missing default file means all defaults.

    An explicitly named file that does not exist is an error (raises ConfigError).
    """
    target = DEFAULT_CONFIG_PATH if path is None else path
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        if path is None:
            return AgentConfig()
        raise ConfigError(f"configuration file {target} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file {target}: {exc}") from exc
    return parse_config(text, target.parent)
