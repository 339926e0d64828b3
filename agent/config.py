"""The agent's configuration: `/etc/gpu-attest/agent.toml` into one frozen, validated value.

Unknown keys are errors, so a typo never silently falls back to a default. No environment
variable is consulted. `insecure_plaintext` is the only option that weakens transport security;
it is refused for anything but a loopback verifier address and is logged at every start.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from attest import tomlconf as tc
from attest.errors import ConfigError
from attest.hostport import HostPort, require_loopback
from attest.logfmt import LogFormat

DEFAULT_CONFIG_PATH = Path("/etc/gpu-attest/agent.toml")
DEFAULT_STATE_DIR = Path("/var/lib/gpu-attest")

_MAX_INTERVAL_S = 24 * 3600.0
_MIN_SPOOL_BYTES = 64 * 1024
#: attest.wire.MAX_LANDMARKS (a test holds them equal), not imported: `gpu-attest-agent inventory`
#: goes through this module and runs where protobuf is not installed.
MAX_LANDMARKS = 64
_MIN_LANDMARK_INTERVAL_S = 60.0
_MAX_LANDMARK_INTERVAL_S = 7 * 86400.0
#: The verifier refuses a heartbeat made 25 h after its full evidence (docs/protocol.md §4.1).
_MAX_FULL_EVIDENCE_INTERVAL_S = 24 * 3600.0


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
    #: Landmarks to probe (docs/design.md §2: location is a bound); none by default.
    landmarks: tuple[HostPort, ...] = ()
    landmark_interval_s: float = 3600.0
    #: A full evidence at least this often; between, unchanged evidence goes as a heartbeat
    #: (docs/protocol.md §4.1). 0: every attestation is full evidence.
    full_evidence_interval_s: float = 3600.0

    def with_overrides(self, **changes: object) -> AgentConfig:
        """A copy with command-line overrides applied and validated again."""
        return validate(replace(self, **changes))  # type: ignore[arg-type]


def _path(base_dir: Path) -> tc.Check[Path]:
    """A non-empty path; a relative one resolves against `base_dir` (the file's directory)."""
    as_text = tc.text(max_len=4096)
    return lambda value: base_dir / as_text(value)


def _from_table(t: tc.Table, base_dir: Path) -> AgentConfig:
    d = AgentConfig()
    cfg = AgentConfig(
        verifier=t.opt("verifier", tc.host_port()),
        state_dir=t.get("state_dir", _path(base_dir), d.state_dir),
        interval_s=t.get("interval_seconds", tc.number(1.0, _MAX_INTERVAL_S), d.interval_s),
        inventory_poll_s=t.get(
            "inventory_poll_seconds", tc.number(1.0, _MAX_INTERVAL_S), d.inventory_poll_s
        ),
        backoff_initial_s=t.get(
            "backoff_initial_seconds", tc.number(0.01, 3600.0), d.backoff_initial_s
        ),
        backoff_cap_s=t.get("backoff_cap_seconds", tc.number(0.01, 86400.0), d.backoff_cap_s),
        metrics_listen=t.opt("metrics_listen", tc.host_port()),
        log_format=t.get("log_format", _log_format, d.log_format),
        simulate=t.opt("simulate", _path(base_dir)),
        insecure_plaintext=t.get("insecure_plaintext", tc.boolean, d.insecure_plaintext),
        spool_max_bytes=t.get("spool_max_bytes", tc.integer(_MIN_SPOOL_BYTES), d.spool_max_bytes),
        landmarks=t.get("landmarks", _landmarks, d.landmarks),
        landmark_interval_s=t.get(
            "landmark_interval",
            _seconds(_MIN_LANDMARK_INTERVAL_S, _MAX_LANDMARK_INTERVAL_S),
            d.landmark_interval_s,
        ),
        full_evidence_interval_s=t.get(
            "full_evidence_interval",
            _seconds(0, _MAX_FULL_EVIDENCE_INTERVAL_S),
            d.full_evidence_interval_s,
        ),
    )
    t.done()
    try:
        return validate(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{t.source}: {exc}") from None


def _log_format(value: object) -> LogFormat:
    return "json" if tc.one_of(("text", "json"))(value) == "json" else "text"


def _landmarks(value: object) -> tuple[HostPort, ...]:
    addresses = tc.list_of(tc.host_port(), unique=True)(value)
    if len(addresses) > MAX_LANDMARKS:
        raise tc.Invalid(f"lists {len(addresses)} landmarks; at most {MAX_LANDMARKS}")
    return addresses


def _seconds(low_s: float, high_s: float) -> tc.Check[float]:
    """A duration such as "1h" (attest.tomlconf.duration) from `low_s` to `high_s`, in seconds."""
    check = tc.duration(timedelta(seconds=low_s), timedelta(seconds=high_s))
    return lambda value: check(value).total_seconds()


def validate(cfg: AgentConfig) -> AgentConfig:
    """Check the rules that span fields; return `cfg` unchanged or raise ConfigError."""
    if cfg.backoff_initial_s > cfg.backoff_cap_s:
        raise ConfigError("backoff_initial_seconds must not exceed backoff_cap_seconds")
    if len(cfg.landmarks) > MAX_LANDMARKS:
        raise ConfigError(f"at most {MAX_LANDMARKS} landmarks")
    if not _MIN_LANDMARK_INTERVAL_S <= cfg.landmark_interval_s <= _MAX_LANDMARK_INTERVAL_S:
        raise ConfigError("landmark_interval must be from 1m to 7d")
    if cfg.metrics_listen is not None:
        require_loopback(cfg.metrics_listen, "metrics_listen")
    if cfg.insecure_plaintext and cfg.verifier is not None:
        require_loopback(cfg.verifier, "insecure_plaintext")
    return cfg


def parse_config(text: str, base_dir: Path = Path("/"), source: str = "agent.toml") -> AgentConfig:
    """Parse the TOML text of agent.toml. Relative paths resolve against `base_dir`.

    Raises ConfigError for invalid TOML, unknown keys, or values out of range.
    """
    return _from_table(tc.parse(text, source), base_dir)


def load_config(path: Path | None) -> AgentConfig:
    """Read and parse the configuration file; a missing default file means all defaults.

    An explicitly named file that does not exist is an error (raises ConfigError).
    """
    if path is None and not DEFAULT_CONFIG_PATH.exists():
        return AgentConfig()
    target = DEFAULT_CONFIG_PATH if path is None else path
    return _from_table(tc.load(target), target.parent)
