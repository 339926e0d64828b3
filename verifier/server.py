"""`gpu-attest-verifier serve`: the imperative shell around the servicer.

Transport: Python's grpc cannot ask for a client certificate without also requiring it, so the
verifier listens on two TLS ports. `listen` requires a client certificate issued by the
verifier's CA (Attest, RotateKey); `enroll_listen` is server-authenticated TLS only, for Enroll
by agents that have no certificate yet, and is a gRPC server of its own with its own call budget
(`_servers`). Attest reached through the enroll port finds no client certificate and is
refused (UNAUTHENTICATED), so the split cannot be used to skip mTLS.
`--insecure-plaintext` serves everything on `listen`, only on a loopback address, and warns.

While the store fails, health is NOT_SERVING and the systemd watchdog is not fed
(verifier/storehealth.py); a probe write every few seconds notices when it works again.

Shutdown on SIGTERM/SIGINT: health NOT_SERVING, STOPPING=1 to systemd, stop accepting RPCs and
give open streams a short grace, then drain the group-commit batcher (everything queued is
committed) and close the store; exit status 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from attest.errors import ConfigError
from attest.hostport import require_loopback
from attest.sdnotify import Notifier
from attest.v1 import attest_pb2 as pb
from attest.v1 import attest_pb2_grpc as pb_grpc
from verifier import background
from verifier.admission import PeerCounter, PeerLimitInterceptor
from verifier.ca import (
    load_or_create_ca,
    load_or_create_receipt_signer,
    load_or_create_server_identity,
)
from verifier.config import VerifierConfig, listen_address
from verifier.exits import VerifierExit
from verifier.landmark_config import load_landmark_config
from verifier.landmark_service import LandmarkServer
from verifier.metrics import Metrics
from verifier.model import Accepted
from verifier.nonces import NonceIssuer
from verifier.ratelimit import RateLimiter
from verifier.servicer import (
    AttestationServicer,
    Core,
    identity_from_certificate,
    identity_from_metadata,
)
from verifier.store.api import Store, StoreOptions
from verifier.store.batch import GroupCommitter
from verifier.transparency import Checkpointer, checkpoint_origin
from verifier.workerproc import SocketNotifier, WorkerRole

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Attestation"].full_name
SHUTDOWN_GRACE_S = 5.0
ATTEST_METHOD = f"/{SERVICE_NAME}/Attest"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def store_url(config: VerifierConfig) -> str:
    """The URL `open_store` takes: the DSN, or sqlite:/// + the file path."""
    db = config.database_url
    if db.startswith(("postgresql://", "postgres://", "sqlite://")):
        return db
    return "sqlite:///" + db


def open_configured_store(config: VerifierConfig, replica_id: str = "") -> Store:
    """Open (and migrate) the configured store; raise StoreError/StoreUnavailableError."""
    from verifier.store import open_store  # noqa: PLC0415 - keeps CLI start-up light

    options = StoreOptions(
        attestation_deadline=timedelta(seconds=config.fleet.agent_deadline_s),
        replica_id=replica_id or f"{socket.gethostname()}-{os.getpid()}",
        # `log archive` segments (docs/design.md §9): PostgreSQL replicas that read archived
        # envelopes need this directory shared, or to run where the archive was made.
        archive_dir=config.state_dir / "archive",
    )
    return open_store(store_url(config), options)


def check_transport(config: VerifierConfig, insecure_plaintext: bool) -> None:
    """Refuse plaintext on a non-loopback address (raise ConfigError); warn when it is used."""
    if not insecure_plaintext:
        return
    require_loopback(listen_address(config.listen), "--insecure-plaintext")
    log.warning(
        "INSECURE: serving without TLS on %s (--insecure-plaintext); agent identities are "
        "not authenticated by the transport",
        config.listen,
    )


def grpc_options(config: VerifierConfig, *, reuseport: bool = False) -> list[tuple[str, Any]]:
    """The gRPC server options `serve` uses (benchmarks.transport_floor measures them bare).

    SO_REUSEPORT only for `serve --workers N`, whose workers share the ports (the kernel spreads
    connections over them); a single process keeps it off, so a second verifier on the same
    port fails to start instead of silently taking half the connections."""
    s = config.stream
    return [
        ("grpc.max_receive_message_length", s.max_message_bytes + 64 * 1024),
        ("grpc.max_send_message_length", 1024 * 1024),
        ("grpc.keepalive_time_ms", s.keepalive_time_s * 1000),
        ("grpc.keepalive_timeout_ms", s.keepalive_timeout_s * 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.so_reuseport", int(reuseport)),
        # Per-connection memory: 10,000 agent streams must fit in about 1 GiB.
        ("grpc.enable_channelz", 0),
        ("grpc.max_channel_trace_event_memory_per_node", 0),
        ("grpc.http2.hpack_table_size.decoder", 1024),
        ("grpc.http2.hpack_table_size.encoder", 1024),
        # Each TLS connection keeps a protect buffer of this size, so the smallest grpc allows
        # (1 KiB) saves ~7 KB per stream against 8 KiB (70 MB at 10,000 streams). A ~3.4 KB
        # envelope then goes out in four TLS records: +2.7 µs of CPU per round measured, within
        # the noise of the transport floor's ~150 µs.
        ("grpc.tsi.max_frame_size", 1024),
    ]


#: glibc's mallopt parameter for the number of heap arenas (malloc.h: M_ARENA_MAX).
_M_ARENA_MAX = -8


def bound_heap_arenas(arenas: int = 1) -> bool:
    """Keep glibc malloc to `arenas` heap arenas; call before grpc starts its threads.

    grpc's event-engine threads encrypt and decrypt TLS records; by default each allocates from
    an arena of its own, and the buffers of 10,000 streams, freed in one arena and wanted in
    another, left ~15 KB of free heap per stream resident after a few rounds (measured with
    benchmarks/transport_floor.py's server: 110 KB per mTLS stream after 20 rounds, 91 KB with one
    arena, the same CPU per round). Memory only: no check depends on it. Returns False where
    the C library is not glibc (nothing changed)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))


@dataclass
class Running:
    """A started verifier: the gRPC server, the ports it bound, its background tasks."""

    servers: list[grpc.aio.Server]
    core: Core
    health: HealthServicer
    ports: dict[str, int]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    metrics_server: Any = None
    #: the landmark `landmark = ...` in verifier.toml runs beside the verifier, if any
    landmark: LandmarkServer | None = None

    async def stop(self, grace: float = SHUTDOWN_GRACE_S) -> None:
        """Graceful stop: refuse new work, drain the batcher, close the store."""
        await self.health.enter_graceful_shutdown()
        await asyncio.gather(*(server.stop(grace) for server in self.servers))
        if self.landmark is not None:
            await self.landmark.stop()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.core.committer.close()
        await self.core.nonces.close()
        await asyncio.to_thread(self.core.store.close)
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()


def _servers(
    config: VerifierConfig,
    core: Core,
    services: Callable[[grpc.aio.Server], None],
    pems: tuple[bytes, bytes, bytes] | None,
    reuseport: bool = False,
) -> tuple[list[grpc.aio.Server], dict[str, int]]:
    """The mTLS port and the enroll port, each a gRPC server with `services` on it.

    Two server objects, not one with an interceptor counting per port: grpc.aio's
    `maximum_concurrent_rpcs` is per server and refuses calls over it before any Python runs,
    which is what a flood needs; so the enroll port, open to anyone, gets a budget of its own
    (`stream.anonymous_max_calls`) and cannot take the slots of enrolled agents' streams.
    On either, calls other than Attest are capped per client address (admission.py)."""
    s = config.stream
    peers = PeerCounter(s.max_calls_per_peer)

    def limited(exempt: frozenset[str]) -> PeerLimitInterceptor:
        refused = core.metrics.calls_refused.labels(reason="peer-limit").inc
        return PeerLimitInterceptor(peers, exempt, on_refused=refused)

    agents = grpc.aio.server(
        options=grpc_options(config, reuseport=reuseport),
        maximum_concurrent_rpcs=s.max_streams + 64,
        interceptors=[limited(frozenset({ATTEST_METHOD}))],
    )  # fmt: skip
    services(agents)
    if pems is None:  # --insecure-plaintext: everything on `listen`, loopback only
        return [agents], {"listen": _bind("listen", config.listen, agents.add_insecure_port)}
    key_pem, cert_pem, ca_pem = pems
    mtls = grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=True
    )
    # Enroll requests are a few KB: an anonymous client gets no 4 MiB receive buffers.
    options = [
        *grpc_options(config, reuseport=reuseport),
        ("grpc.max_receive_message_length", 64 * 1024),
    ]
    anonymous = grpc.aio.server(
        options=options, maximum_concurrent_rpcs=s.anonymous_max_calls,
        interceptors=[limited(frozenset())],
    )  # fmt: skip
    services(anonymous)
    tls = grpc.ssl_server_credentials([(key_pem, cert_pem)])
    ports = {
        "listen": _bind("listen", config.listen, lambda a: agents.add_secure_port(a, mtls)),
        "enroll": _bind(
            "enroll_listen", config.enroll_listen, lambda a: anonymous.add_secure_port(a, tls)
        ),
    }
    return [agents, anonymous], ports


def _bind(key: str, address: str, add: Callable[[str], int]) -> int:
    """Bind one port; a refusal (in use, or not an address of this host) is a ConfigError
    naming the key, not grpc's RuntimeError and its traceback."""
    try:
        return add(address)
    except RuntimeError:
        raise ConfigError(
            f"{key} = {address!r}: cannot listen there (the port is in use, or the address is "
            "not one of this host's)"
        ) from None


async def start(
    config: VerifierConfig,
    *,
    insecure_plaintext: bool = False,
    store: Store | None = None,
    clock: Callable[[], datetime] = _utcnow,
    notifier: Notifier | None = None,
    role: WorkerRole | None = None,
) -> Running:
    """Create keys and certificates on first use, open the store, bind the ports, start.

    As one worker of several (`role`), the ports are shared (SO_REUSEPORT), metrics are served
    on a loopback port of its own for the supervisor to read, and only the duty worker runs the
    landmark, the findings sweep and live compliance (docs/design.md §10)."""
    check_transport(config, insecure_plaintext)
    background.check_policy(config)
    duties = role is None or role.runs_duties
    # Read before anything binds: a broken landmark.toml stops `serve` with exit 3.
    landmark = (
        LandmarkServer(load_landmark_config(Path(config.landmark)))
        if config.landmark and duties
        else None
    )
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = clock()
    ca = load_or_create_ca(config.state_dir, now)
    identity = load_or_create_server_identity(ca, config.state_dir, config.tls.names, now)
    replica_id = f"{socket.gethostname()}-{os.getpid()}"
    if store is None:
        store = await asyncio.to_thread(open_configured_store, config, replica_id)
    receipt_signer = load_or_create_receipt_signer(config.state_dir)
    checkpointer = Checkpointer(store, receipt_signer, checkpoint_origin(config, receipt_signer))
    metrics = Metrics()
    accepted = asyncio.Event()  # evidence was committed: the compliance loop steps

    def on_commit(results: Sequence[Accepted]) -> None:
        metrics.transactions.inc()
        checkpointer.observe(results)
        if results:
            accepted.set()

    interval = commit_interval_s(config, role)
    committer = GroupCommitter(
        store, max_batch=config.store.batch_max, min_interval=interval, clock=clock,
        on_commit=on_commit,
    )  # fmt: skip
    await committer.start()
    nonces = NonceIssuer(store, min_interval=interval)
    await nonces.start()
    core = Core(
        config=config, store=store, committer=committer, nonces=nonces, ca=ca,
        receipt_signer=receipt_signer, metrics=metrics,
        checkpointer=checkpointer,
        limiter=RateLimiter(config.stream.rate_per_s, config.stream.rate_burst),
        identify=identity_from_metadata if insecure_plaintext else identity_from_certificate,
        replica_id=replica_id, clock=clock,
    )  # fmt: skip
    servicer = AttestationServicer(core)
    health_servicer = HealthServicer()

    def services(server: grpc.aio.Server) -> None:
        pb_grpc.add_AttestationServicer_to_server(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )

    pems = None if insecure_plaintext else (identity.key_pem, identity.cert_pem, ca.pem)
    servers, ports = _servers(config, core, services, pems, reuseport=role is not None)
    for server in servers:
        await server.start()
    await _publish_health(health_servicer, up=True)
    core.store_health.bind(_publisher(health_servicer, notifier or Notifier({})))
    running = Running(servers=servers, core=core, health=health_servicer, ports=ports)
    if landmark is not None:
        ports["landmark"] = await _start_landmark(running, landmark)
    running.metrics_server = _start_metrics(config, metrics, role)
    if running.metrics_server is not None:
        ports["metrics"] = running.metrics_server.server_port
    running.tasks.extend(_background_tasks(core, accepted, duties=duties))
    log.info("verifier serving: %s", ", ".join(f"{k}={v}" for k, v in sorted(ports.items())))
    return running


async def _start_landmark(running: Running, landmark: LandmarkServer) -> int:
    """Start the landmark beside the verifier (docs/protocol.md §12); when its port cannot be
    bound (ConfigError, exit 3), stop what already runs first, so the refusal is one line and
    no half-started server is left to the garbage collector."""
    try:
        port = await landmark.start()
    except BaseException:
        await running.stop(0)
        raise
    running.landmark = landmark
    return port


def commit_interval_s(config: VerifierConfig, role: WorkerRole | None) -> float:
    """How long this process's group commit (and its nonce issuer, which batches the same
    way) waits for company. The interval is the whole
    verifier's: each of N workers waits N times as long, so together they commit as often as
    one process would and a commit carries as many envelopes (the pages a commit writes hardly
    depend on how many envelopes share them; docs/design.md §9)."""
    return config.store.commit_interval.total_seconds() * (role.count if role else 1)


def _background_tasks(
    core: Core, accepted: asyncio.Event, *, duties: bool
) -> list[asyncio.Task[None]]:
    """Every worker probes its store (each one's health must come back by itself,
    verifier/storehealth.py); the sweep and live compliance run in the duty worker only, so
    two workers never race each other's findings."""
    tasks = [asyncio.create_task(background.probe_loop(core), name="store-probe")]
    if duties:
        tasks.append(asyncio.create_task(background.sweep_loop(core), name="findings-sweep"))
    if duties and core.config.fleet.reconcile_interval_s:
        loop = background.compliance_loop(core, accepted)
        tasks.append(asyncio.create_task(loop, name="reconcile"))
    return tasks


def _start_metrics(config: VerifierConfig, metrics: Metrics, role: WorkerRole | None) -> Any:
    if not config.metrics_listen:
        return None
    from prometheus_client import start_http_server  # noqa: PLC0415

    # A worker's metrics are read by its supervisor, which serves them all on metrics_listen.
    if role is not None:
        host, port = "127.0.0.1", 0
    else:
        address = listen_address(config.metrics_listen)
        host, port = address.host, address.port
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server


async def _publish_health(health_servicer: HealthServicer, *, up: bool) -> None:
    serving = health_pb2.HealthCheckResponse
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, serving.SERVING if up else serving.NOT_SERVING)


def _publisher(
    health_servicer: HealthServicer, notifier: Notifier
) -> Callable[[bool], Awaitable[None]]:
    async def publish(up: bool) -> None:
        await _publish_health(health_servicer, up=up)
        notifier.notify("STATUS=serving" if up else "STATUS=store failing; health NOT_SERVING")

    return publish


async def run_until_signalled(
    config: VerifierConfig, *, insecure_plaintext: bool, role: WorkerRole | None = None
) -> int:
    """Serve until SIGTERM or SIGINT, then shut down gracefully; return the exit status.

    As a worker (`role`), notifications go to the supervisor, and a worker whose supervisor
    is gone shuts down as if signalled."""
    if not bound_heap_arenas():
        log.info("heap arenas left to the C library's default (it is not glibc)")
    notifier = Notifier() if role is None else role.notifier()
    running = await start(
        config, insecure_plaintext=insecure_plaintext, notifier=notifier, role=role
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    interval = notifier.watchdog_interval_s
    if interval is not None:
        running.tasks.append(
            asyncio.create_task(background.watchdog(notifier, running.core, interval))
        )
    if isinstance(notifier, SocketNotifier):
        running.tasks.append(asyncio.create_task(notifier.until_orphaned(stop.set)))
        notifier.notify(f"METRICS_PORT={running.ports.get('metrics', 0)}")
    notifier.ready(f"serving on {config.listen}")
    await stop.wait()
    log.info("shutting down: draining streams and the commit batcher")
    notifier.stopping()
    await running.stop()
    log.info("stopped")
    return VerifierExit.OK
