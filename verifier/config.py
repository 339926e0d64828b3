"""The verifier's configuration: one frozen, validated value read from TOML at start-up.

Unknown keys are errors (a typo must not silently fall back to a default). Nothing here is read
from the environment, and no value can switch a verification step off; the one unsafe transport
mode is the `--insecure-plaintext` command-line flag, which `serve` refuses on non-loopback
addresses.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

from attest.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/gpu-attest/verifier.toml")
DEFAULT_STATE_DIR = Path("/var/lib/gpu-attest-verifier")


@dataclass(frozen=True)
class TlsConfig:
    """Names the server certificate carries, and the lifetime of issued client certificates."""

    names: tuple[str, ...] = ("localhost", "127.0.0.1")
    client_cert_days: int = 90


@dataclass(frozen=True)
class StreamConfig:
    """Limits of the Attest stream and of the verification pipeline."""

    challenge_ttl_s: int = 300
    clock_skew_s: int = 300
    offline_max_age_s: int = 30 * 24 * 3600
    max_message_bytes: int = 4 * 1024 * 1024
    keepalive_time_s: int = 60
    keepalive_timeout_s: int = 20
    rate_per_s: float = 2.0
    rate_burst: int = 60
    max_streams: int = 20000
    #: Agents with an open stream whose last checked GPU entries are kept (~1.7 KB each for 8
    #: GPUs): identical entries are then not checked again.
    gpu_check_cache_size: int = 2048
    #: Parsed agent public keys kept (~2.4 KB each); others are parsed again when used (~10 µs).
    key_cache_size: int = 2048

    @property
    def challenge_ttl(self) -> timedelta:
        return timedelta(seconds=self.challenge_ttl_s)

    @property
    def clock_skew(self) -> timedelta:
        return timedelta(seconds=self.clock_skew_s)

    @property
    def offline_max_age(self) -> timedelta:
        return timedelta(seconds=self.offline_max_age_s)


@dataclass(frozen=True)
class FleetConfig:
    """Thresholds of the fleet findings."""

    gpu_missing_grace_s: int = 3600
    agent_deadline_s: int = 900
    sweep_interval_s: int = 30


@dataclass(frozen=True)
class StoreConfig:
    """Group-commit tuning: at most `batch_max` envelopes share one transaction, and write
    transactions start at most every `commit_interval_ms` (0: as soon as the last one is done).
    The interval matters under light load, where envelopes would otherwise commit one by one:
    at 2,000 agents sending 166 envelopes/s, 25 ms put ~4 in each transaction and cut the
    verifier's CPU per envelope by ~20% and its disk writes by ~45%, for ~15 ms of latency
    (README, Performance)."""

    batch_max: int = 256
    commit_interval_ms: int = 25

    @property
    def commit_interval(self) -> timedelta:
        return timedelta(milliseconds=self.commit_interval_ms)


@dataclass(frozen=True)
class VerifierConfig:
    """Everything `gpu-attest-verifier` reads from verifier.toml."""

    listen: str = "0.0.0.0:7443"
    enroll_listen: str = "0.0.0.0:7444"
    state_dir: Path = DEFAULT_STATE_DIR
    database: str = ""
    metrics_listen: str = "127.0.0.1:9464"
    #: origin line of the log's signed checkpoints; "" derives one from the receipt key id
    log_origin: str = ""
    tls: TlsConfig = field(default_factory=TlsConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    store: StoreConfig = field(default_factory=StoreConfig)

    @property
    def database_url(self) -> str:
        """A postgresql:// DSN, or the SQLite file path (default: STATE_DIR/verifier.db)."""
        return self.database or str(self.state_dir / "verifier.db")


_SECTIONS: dict[str, type] = {
    "tls": TlsConfig,
    "stream": StreamConfig,
    "fleet": FleetConfig,
    "store": StoreConfig,
}


def _check_type(where: str, value: object, default: object) -> object:
    if isinstance(default, bool) or isinstance(value, bool):
        if type(value) is not type(default):
            raise ConfigError(f"{where} must be a {type(default).__name__}")
        return value
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings")
        return tuple(value)
    if isinstance(default, Path):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where} must be a non-empty path")
        return Path(value)
    if not isinstance(value, type(default)):
        raise ConfigError(f"{where} must be a {type(default).__name__}")
    return value


def _build(cls: type, table: dict[str, Any], where: str) -> Any:
    defaults = cls()
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) in {where or 'top level'}: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{where}.{name}" if where else name
        if name in _SECTIONS and not where:
            if not isinstance(value, dict):
                raise ConfigError(f"[{name}] must be a table")
            values[name] = _build(_SECTIONS[name], value, name)
        else:
            values[name] = _check_type(key, value, getattr(defaults, name))
    return cls(**values)


def parse_listen(address: str) -> tuple[str, int]:
    """Split HOST:PORT (IPv6 in brackets); raise ConfigError when malformed."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"listen address {address!r} is not HOST:PORT")
    return host.strip("[]"), int(port_text)


def is_loopback(address: str) -> bool:
    """True when HOST of HOST:PORT is a loopback IP address or the name localhost."""
    host, _ = parse_listen(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _validate(config: VerifierConfig) -> VerifierConfig:
    for address in (config.listen, config.enroll_listen):
        parse_listen(address)
    if config.metrics_listen:
        parse_listen(config.metrics_listen)
    db = config.database
    if db and "://" in db and not db.startswith(("postgresql://", "postgres://")):
        raise ConfigError("database must be a SQLite file path or a postgresql:// DSN")
    s = config.stream
    positive = {
        "stream.challenge_ttl_s": s.challenge_ttl_s,
        "stream.clock_skew_s": s.clock_skew_s,
        "stream.offline_max_age_s": s.offline_max_age_s,
        "stream.max_message_bytes": s.max_message_bytes,
        "stream.keepalive_time_s": s.keepalive_time_s,
        "stream.keepalive_timeout_s": s.keepalive_timeout_s,
        "stream.rate_burst": s.rate_burst,
        "stream.max_streams": s.max_streams,
        "tls.client_cert_days": config.tls.client_cert_days,
        "fleet.gpu_missing_grace_s": config.fleet.gpu_missing_grace_s,
        "fleet.agent_deadline_s": config.fleet.agent_deadline_s,
        "fleet.sweep_interval_s": config.fleet.sweep_interval_s,
        "store.batch_max": config.store.batch_max,
    }
    for name, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{name} must be positive")
    if s.rate_per_s <= 0:
        raise ConfigError("stream.rate_per_s must be positive")
    if s.gpu_check_cache_size < 0 or s.key_cache_size < 0:
        raise ConfigError("stream.gpu_check_cache_size and key_cache_size must not be negative")
    if s.challenge_ttl_s < 10:
        raise ConfigError("stream.challenge_ttl_s must be at least 10 seconds")
    if s.max_message_bytes > 64 * 1024 * 1024:
        raise ConfigError("stream.max_message_bytes must be at most 64 MiB")
    if not 0 <= config.store.commit_interval_ms <= 1000:
        raise ConfigError("store.commit_interval_ms must be between 0 and 1000")
    if not config.tls.names or any(not n for n in config.tls.names):
        raise ConfigError("tls.names must name at least one host")
    if config.tls.client_cert_days > 825:
        raise ConfigError("tls.client_cert_days must be at most 825")
    return config


def parse_config(text: str) -> VerifierConfig:
    """Parse verifier.toml text into a validated value; raise ConfigError."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"verifier configuration is not valid TOML: {exc}") from exc
    config: VerifierConfig = _build(VerifierConfig, table, "")
    return _validate(config)


def load_config(path: Path | None) -> VerifierConfig:
    """Read the config file; a missing file at the default path means all defaults.

    An explicitly named file that does not exist is an error, never silently defaulted.
    """
    if path is None:
        if not DEFAULT_CONFIG_PATH.exists():
            return _validate(VerifierConfig())
        path = DEFAULT_CONFIG_PATH
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    return parse_config(text)
