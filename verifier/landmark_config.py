"""A landmark's configuration (landmark.toml): one frozen, validated value read at start-up.

A landmark times signed round trips to agents and signs what it measured (docs/protocol.md §12).
Its coordinates are configured here for the statement a reader sees; the verifier judges
distance by the registry's coordinates of the landmark, never by these. Unknown keys are errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from attest import identifiers as ids
from attest import tomlconf as tc
from attest.landmark import MAX_PROBES
from verifier.config import address_check

DEFAULT_LANDMARK_CONFIG = Path("/etc/gpu-attest/landmark.toml")
DEFAULT_LANDMARK_STATE_DIR = Path("/var/lib/gpu-attest-landmark")
#: One round trip longer than attest.landmark.MAX_RTT_NS (1 s) is no measurement: an answer
#: later than that ends the session.
MAX_ANSWER_TIMEOUT_MS = 1000


@dataclass(frozen=True)
class LandmarkConfig:
    """Everything `gpu-attest-verifier landmark ...` reads from landmark.toml."""

    id: str
    lat: float
    lon: float
    listen: str = "0.0.0.0:7445"
    state_dir: Path = DEFAULT_LANDMARK_STATE_DIR
    probes: int = 16
    max_sessions: int = 64
    metrics_listen: str = "127.0.0.1:9466"
    #: From the call's start to the agent's ProbeHello.
    hello_timeout_s: int = 10
    #: From a challenge sent to its answer received.
    answer_timeout_ms: int = MAX_ANSWER_TIMEOUT_MS

    @property
    def key_path(self) -> Path:
        return self.state_dir / "landmark.key"


def _token(value: object) -> str:
    text = tc.text(max_len=128)(value)
    if not ids.TOKEN.match(text):
        raise tc.Invalid(f"must be an id (letters, digits, . _ : -), got {tc.got(value)}")
    return text


def _loopback_or_off(value: object) -> str:
    """The metrics endpoint: loopback only (they are read by a local scraper), or "" (off)."""
    address = address_check(empty=True)(value)
    if address and not tc.host_port(any_port=True)(address).is_loopback:
        raise tc.Invalid(f'must be a loopback address or "", got {tc.got(value)}')
    return address


#: Keys only a verifier.toml has: their presence means the wrong file was given.
_VERIFIER_KEYS = ("enroll_listen", "database", "tls", "fleet", "stream", "store", "policy")


def _from_table(t: tc.Table) -> LandmarkConfig:
    if any(key in t for key in _VERIFIER_KEYS):
        raise t.fail(
            None,
            "this is a verifier.toml; landmark commands take the landmark's own file "
            "(--config /etc/gpu-attest/landmark.toml; example: examples/landmark.toml)",
        )
    d = LandmarkConfig(id="-", lat=0.0, lon=0.0)
    config = LandmarkConfig(
        id=t.get("id", _token),
        lat=t.get("lat", tc.number(-90, 90)),
        lon=t.get("lon", tc.number(-180, 180)),
        listen=t.get("listen", address_check(empty=False), d.listen),
        state_dir=t.get("state_dir", lambda v: Path(tc.text(max_len=4096)(v)), d.state_dir),
        probes=t.get("probes", tc.integer(1, MAX_PROBES), d.probes),
        max_sessions=t.get("max_sessions", tc.integer(1, 100_000), d.max_sessions),
        metrics_listen=t.get("metrics_listen", _loopback_or_off, d.metrics_listen),
        hello_timeout_s=t.get("hello_timeout_s", tc.integer(1, 300), d.hello_timeout_s),
        answer_timeout_ms=t.get(
            "answer_timeout_ms", tc.integer(1, MAX_ANSWER_TIMEOUT_MS), d.answer_timeout_ms
        ),
    )
    t.done()
    return config


def parse_landmark_config(text: str, source: str = "landmark.toml") -> LandmarkConfig:
    """Parse landmark.toml text; raise ConfigError naming file, table and key."""
    return _from_table(tc.parse(text, source))


def load_landmark_config(path: Path | None) -> LandmarkConfig:
    """Read landmark.toml (default DEFAULT_LANDMARK_CONFIG). There are no defaults for a
    landmark's id and coordinates, so a missing file is an error; raise ConfigError."""
    return _from_table(tc.load(path or DEFAULT_LANDMARK_CONFIG))
