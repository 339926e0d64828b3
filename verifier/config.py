"""The verifier's configuration: one frozen, validated value read from TOML at start-up.

Unknown keys are errors (a typo must not silently fall back to a default). Nothing here is read
from the environment, and no value can switch a verification step off; the one unsafe transport
mode is the `--insecure-plaintext` command-line flag, which `serve` refuses on non-loopback
addresses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from attest import tomlconf as tc
from attest.hostport import HostPort, parse_host_port

DEFAULT_CONFIG_PATH = Path("/etc/gpu-attest/verifier.toml")
DEFAULT_STATE_DIR = Path("/var/lib/gpu-attest-verifier")
#: Bound of `workers`: each worker is a process of ~100 MB (worker index labels stay bounded).
MAX_WORKERS = 256


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
    #: Concurrent calls on the enroll port (Enroll, health, reflection: open to anyone), a
    #: budget apart from `max_streams`, so anonymous clients cannot starve enrolled agents.
    anonymous_max_calls: int = 256
    #: Concurrent calls of the services open to anyone, per client address (IPv6: per /64).
    max_calls_per_peer: int = 16
    #: Open Attest streams per agent; one more replaces (ends) the agent's oldest.
    max_streams_per_agent: int = 2
    #: Agents with an open stream whose last checked GPU entries are kept (~1.7 KB each for 8
    #: GPUs): identical entries are then not checked again.
    gpu_check_cache_size: int = 2048
    #: Parsed agent public keys kept (~2.4 KB each); others are parsed again when used (~10 µs).
    key_cache_size: int = 2048
    #: Envelopes one worker holds decoded at once, from their check to their commit; more wait
    #: as received bytes (a parsed 8-GPU envelope with its claims is several times its size),
    #: so a burst from every stream at once costs bytes, not objects (docs/design.md §10).
    max_inflight: int = 1024
    #: Bytes of evidence one agent may send per hour (verifier/budget.py). An 8-GPU host with CC
    #: reports every 60 s sends ~10 MB/h; 64 MiB leaves room to replay a spool after an outage.
    agent_bytes_per_hour: int = 64 * 1024 * 1024

    @property
    def challenge_ttl(self) -> timedelta:
        return timedelta(seconds=self.challenge_ttl_s)

    @property
    def clock_skew(self) -> timedelta:
        return timedelta(seconds=self.clock_skew_s)

    @property
    def offline_max_age(self) -> timedelta:
        return timedelta(seconds=self.offline_max_age_s)

    @property
    def nonce_retention(self) -> timedelta:
        """How long a nonce's row is kept at least after it was issued: the sweep purges nonces
        that expired (issued + challenge_ttl) more than challenge_ttl ago."""
        return 2 * self.challenge_ttl


@dataclass(frozen=True)
class FleetConfig:
    """Thresholds of the fleet findings."""

    gpu_missing_grace_s: int = 3600
    agent_deadline_s: int = 900
    sweep_interval_s: int = 30
    #: `serve` judges each commit of accepted evidence as it happens (docs/design.md §14), and
    #: also at least this often, which picks up what other replicas accepted, registry imports,
    #: revocations and a new day; 0 leaves compliance findings to `reconcile`.
    reconcile_interval_s: int = 60
    #: A site's location counts as verified only from landmark measurements this recent
    #: (docs/design.md §16); agents probe every hour by default, so 6 h rides out outages.
    location_deadline_s: int = 21600

    @property
    def location_deadline(self) -> timedelta:
        return timedelta(seconds=self.location_deadline_s)


@dataclass(frozen=True)
class StoreConfig:
    """Group-commit tuning: at most `batch_max` envelopes share one transaction, and write
    transactions start at most every `commit_interval_ms` (0: as soon as the last one is done)
    unless `batch_max // 4` envelopes are queued already. The interval matters under light
    load, where envelopes would otherwise commit one by one: at 10,000 agents sending 166
    envelopes/s, 100 ms puts ~16 in each transaction; against 25 ms it cut the verifier's CPU
    per heartbeat by 17% and its disk writes by 37%, for receipts ~40 ms later (p50 58 ms;
    docs/performance.md §15). Under load the queue fills first and nothing waits. The interval
    is the whole verifier's: with `serve --workers N` each worker waits N times as long."""

    batch_max: int = 256
    commit_interval_ms: int = 100

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
    #: the policy pack `reconcile` stores findings under: a built-in id or a pack file; ""
    #: takes the built-in pack in force at the date. `reconcile --policy` with another pack
    #: only reports (docs/design.md §14).
    policy: str = ""
    #: a landmark.toml: `serve` also runs that landmark on its own plain port
    #: (docs/protocol.md §12); "" runs none
    landmark: str = ""
    #: `serve` worker processes sharing the ports and the store (docs/design.md §10); 0: one
    #: per CPU core the process may run on, 1: a single process and no supervisor
    workers: int = 0
    tls: TlsConfig = field(default_factory=TlsConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    store: StoreConfig = field(default_factory=StoreConfig)

    @property
    def database_url(self) -> str:
        """A postgresql:// DSN, or the SQLite file path (default: STATE_DIR/verifier.db)."""
        return self.database or str(self.state_dir / "verifier.db")


_POSITIVE = tc.integer(1)


def address_check(*, empty: bool = False) -> tc.Check[str]:
    """A HOST:PORT string (port 0: any free port), kept as written; "" too with `empty`."""
    as_text = tc.text(max_len=300, empty=True)
    parse = tc.host_port(any_port=True)

    def check(value: object) -> str:
        address = as_text(value)
        if not (empty and address == ""):
            parse(address)
        return address

    return check


def _database(value: object) -> str:
    db = tc.text(max_len=4096, empty=True)(value)
    if "://" in db and not db.startswith(("postgresql://", "postgres://")):
        raise tc.Invalid("must be a SQLite file path or a postgresql:// DSN")
    return db


def _tls(t: tc.Table) -> TlsConfig:
    d = TlsConfig()
    names = t.get("names", tc.list_of(tc.text(max_len=253)), d.names)
    if not names:
        raise t.fail("names", "must name at least one host")
    config = TlsConfig(names, t.get("client_cert_days", tc.integer(1, 825), d.client_cert_days))
    t.done()
    return config


def _stream(t: tc.Table) -> StreamConfig:
    d = StreamConfig()
    config = StreamConfig(
        challenge_ttl_s=t.get("challenge_ttl_s", tc.integer(10), d.challenge_ttl_s),
        clock_skew_s=t.get("clock_skew_s", _POSITIVE, d.clock_skew_s),
        offline_max_age_s=t.get("offline_max_age_s", _POSITIVE, d.offline_max_age_s),
        max_message_bytes=t.get(
            "max_message_bytes", tc.integer(1, 64 * 1024 * 1024), d.max_message_bytes
        ),
        keepalive_time_s=t.get("keepalive_time_s", _POSITIVE, d.keepalive_time_s),
        keepalive_timeout_s=t.get("keepalive_timeout_s", _POSITIVE, d.keepalive_timeout_s),
        rate_per_s=t.get("rate_per_s", tc.number(0, 1e9, above=True), d.rate_per_s),
        rate_burst=t.get("rate_burst", _POSITIVE, d.rate_burst),
        max_streams=t.get("max_streams", _POSITIVE, d.max_streams),
        anonymous_max_calls=t.get("anonymous_max_calls", _POSITIVE, d.anonymous_max_calls),
        max_calls_per_peer=t.get("max_calls_per_peer", _POSITIVE, d.max_calls_per_peer),
        max_streams_per_agent=t.get(
            "max_streams_per_agent", tc.integer(1, 64), d.max_streams_per_agent
        ),
        gpu_check_cache_size=t.get("gpu_check_cache_size", tc.integer(0), d.gpu_check_cache_size),
        key_cache_size=t.get("key_cache_size", tc.integer(0), d.key_cache_size),
        max_inflight=t.get("max_inflight", tc.integer(1, 1 << 20), d.max_inflight),
        agent_bytes_per_hour=t.get(
            "agent_bytes_per_hour", tc.integer(1, 2**40), d.agent_bytes_per_hour
        ),
    )
    t.done()
    if config.agent_bytes_per_hour < config.max_message_bytes:
        # Else an envelope the size limit admits could never fit in the budget.
        raise t.fail("agent_bytes_per_hour", "must be at least max_message_bytes")
    return config


def _fleet(t: tc.Table) -> FleetConfig:
    d = FleetConfig()
    config = FleetConfig(
        gpu_missing_grace_s=t.get("gpu_missing_grace_s", _POSITIVE, d.gpu_missing_grace_s),
        agent_deadline_s=t.get("agent_deadline_s", _POSITIVE, d.agent_deadline_s),
        sweep_interval_s=t.get("sweep_interval_s", _POSITIVE, d.sweep_interval_s),
        reconcile_interval_s=t.get(
            "reconcile_interval_s", tc.integer(0, 86400), d.reconcile_interval_s
        ),
        location_deadline_s=t.get(
            "location_deadline_s", tc.integer(60, 366 * 86400), d.location_deadline_s
        ),
    )
    t.done()
    return config


def _store(t: tc.Table) -> StoreConfig:
    d = StoreConfig()
    config = StoreConfig(
        batch_max=t.get("batch_max", _POSITIVE, d.batch_max),
        commit_interval_ms=t.get("commit_interval_ms", tc.integer(0, 1000), d.commit_interval_ms),
    )
    t.done()
    return config


def _from_table(t: tc.Table) -> VerifierConfig:
    d = VerifierConfig()
    config = VerifierConfig(
        listen=t.get("listen", address_check(), d.listen),
        enroll_listen=t.get("enroll_listen", address_check(), d.enroll_listen),
        state_dir=t.get("state_dir", lambda v: Path(tc.text(max_len=4096)(v)), d.state_dir),
        database=t.get("database", _database, d.database),
        metrics_listen=t.get("metrics_listen", address_check(empty=True), d.metrics_listen),
        log_origin=t.get("log_origin", tc.text(empty=True), d.log_origin),
        policy=t.get("policy", tc.text(max_len=4096, empty=True), d.policy),
        landmark=t.get("landmark", tc.text(max_len=4096, empty=True), d.landmark),
        workers=t.get("workers", tc.integer(0, MAX_WORKERS), d.workers),
        tls=_tls(t.table("tls")),
        stream=_stream(t.table("stream")),
        fleet=_fleet(t.table("fleet")),
        store=_store(t.table("store")),
    )
    t.done()
    return config


def listen_address(address: str) -> HostPort:
    """A listen address of the configuration as a HostPort; raise ConfigError."""
    return parse_host_port(address, "listen address", any_port=True)


def parse_config(text: str, source: str = "verifier.toml") -> VerifierConfig:
    """Parse verifier.toml text into a validated value; raise ConfigError."""
    return _from_table(tc.parse(text, source))


def load_config(path: Path | None) -> VerifierConfig:
    """Read the config file; a missing file at the default path means all defaults.

    An explicitly named file that does not exist is an error, never silently defaulted.
    """
    if path is None:
        if not DEFAULT_CONFIG_PATH.exists():
            return VerifierConfig()
        path = DEFAULT_CONFIG_PATH
    return _from_table(tc.load(path))
