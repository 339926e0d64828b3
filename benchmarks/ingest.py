"""Ingest benchmark: a real `gpu-attest-verifier serve` process, N agents over loopback mTLS.

    python -m benchmarks.ingest --agents 200 --seconds 10 [--store sqlite|postgres]

The load generator is one process holding one mTLS channel and one Attest stream per agent
(grpc.aio). Evidence is pre-signed offline (empty nonce: OFFLINE freshness, still chain-checked
and stored like any other), so the generator spends no CPU on signatures during the run.
Each agent sends its next envelope when the previous receipt arrives (`--interval 0`) or every
`--interval` seconds. Prints one JSON line; figures are of this machine and this run.

After the run it measures the bare transport (benchmarks.transport_floor) with as many streams
and reports `efficiency_ceiling`: the efficiency of a verifier whose only costs were that
transport and one P-256 verification (a receipt carries a checkpoint signed once per batch and
an inclusion proof, no signature of its own: docs/protocol.md §5); and the bare transport's
resident memory with as many streams open (`transport_floor_rss_mb`). With `--store postgres`
it also reports `postgres_cpu_us_per_attestation`: the CPU of the PostgreSQL server's processes
on this machine over the same window, per accepted envelope (the database's share, which
`verifier_cpu_us_per_attestation` leaves out). `receipt_us` and `receipt_signed_us` are the
receipt step per envelope measured in this process: now (inclusion proof + encoding) and as it
was (a DSSE envelope signed per receipt); their difference is what the verifier no longer spends.

The cost targets (docs/performance.md §14) are read against `floor_us`: the transport floor per
round plus one P-256 verification of an agent's envelope signature, both measured in this run;
`overhead_ratio` = `verifier_cpu_us_per_attestation / floor_us`. `--pace-agents P` compresses a
fleet's pace as §4 does: P agents each attesting every `--interval` seconds are played by
`--agents` streams each sending every `interval * agents / P` seconds (the same envelopes per
second); the floor is then also measured at that pace (`transport_floor_paced_us`,
`overhead_ratio_paced`). `stored_bytes_per_attestation` is the growth of what the store keeps
per accepted envelope: the SQLite database's pages (PRAGMA page_count, which counts pages still
in the WAL) or the PostgreSQL schema's relations (pg_total_relation_size), plus any file the
verifier adds under its state directory; `stored_nonce_bytes_per_attestation` is the part of it
that is the challenge nonces' table, a working set purged 2 x `challenge_ttl_s` after issue
(it grows within a run shorter than that, not over a fleet's life). `--heartbeats` sends every
envelope after an agent's first as a heartbeat naming it (docs/protocol.md §4.1): unchanged
inventories, at which the bytes stored and written per attestation are judged
(docs/performance.md §15). `--workers N` is passed to `serve` as `--workers N`; CPU, memory
and writes are summed over `serve` and its child processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.identity import make_csr
from attest import merkle, model, wire
from attest.envelope import (
    EVIDENCE_PAYLOAD_TYPE,
    HEARTBEAT_PAYLOAD_TYPE,
    RECEIPT_PAYLOAD_TYPE,
    envelope_hash,
    sign,
)
from attest.keys import SoftwareSigner
from attest.v1 import attest_pb2 as pb
from attest.v1 import attest_pb2_grpc as pb_grpc
from benchmarks import free_port
from verifier.config import StoreConfig

PG = "postgresql://postgres@127.0.0.1:5432/test"
#: Streams of the transport-floor run at most: beyond ~1500 its closed-loop load makes grpc drop
#: connections on 2 cores. Its CPU per round and memory per stream are then read at this size.
FLOOR_MAX_AGENTS = 1000

#: `--tracemalloc FILE` runs the verifier under this launcher (benchmark only, never the unit):
#: on SIGUSR1 it writes its top Python allocations and glibc's heap figures (mallinfo2) to FILE,
#: so the share of the RSS held by Python objects, by native code and by free heap can be told.
_TRACED_VERIFIER = r"""
import ctypes, signal, sys, tracemalloc
OUT = sys.argv.pop(1)
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
def dump(*_):
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    current, peak = tracemalloc.get_traced_memory()
    stats = tracemalloc.take_snapshot().statistics("lineno")
    with open(OUT + ".tmp", "w") as f:
        f.write(f"python_traced_mb {current / 2**20:.1f} peak {peak / 2**20:.1f}\n")
        for name, _ in MallInfo2._fields_:
            f.write(f"malloc {name} {getattr(info, name) / 2**20:.1f} MiB\n")
        for stat in stats[:40]:
            f.write(f"{stat}\n")
    import os; os.replace(OUT + ".tmp", OUT)
signal.signal(signal.SIGUSR1, dump)
from verifier.cli import main
sys.exit(main(sys.argv[1:]))
"""
NA = model.Unavailable("NotSupported")


def _gpu(index: int, host: int) -> model.Gpu:
    return model.Gpu(
        index=index, state=model.GpuState.OK,
        uuid=f"GPU-{host:08x}-{index:04x}-4000-8000-{host * 16 + index:012x}",
        serial=f"1654{host:06d}{index:02d}", name="NVIDIA H100 80GB HBM3",
        board_part_number="692-2G520-0200-000", board_id=NA, module_id=index + 1,
        pci=model.PciInfo(f"00000000:{0x18 + index:02x}:00.0", 0x233010DE, 0x16C110DE),
        vbios_version="96.00.89.00.01", inforom_image_version="G520.0200.00.05",
        memory_total_bytes=85520809984, architecture="hopper", compute_capability=(9, 0),
        power_limit_mw=700000, power_default_limit_mw=700000, power_max_limit_mw=700000,
        mig=NA, fabric=NA, ecc=NA, remapped_rows=NA, persistence_mode=True, cc=NA,
    )  # fmt: skip


def _evidence(agent_id: str, host: int, seq: int, prev: bytes, when: datetime) -> model.Evidence:
    gpus = tuple(_gpu(i, host) for i in range(8))
    return model.Evidence(
        agent_id=agent_id, seq=seq, prev_hash=prev, nonce=b"", created_at=when,
        agent_version="bench", site_id="bench-site",
        host=model.HostFacts(
            machine_id=f"{host:032x}", hostname=f"gpu-node-{host:05d}", dmi_sys_vendor=NA,
            dmi_product_name=NA, dmi_product_serial=NA, boot_id=NA, kernel="6.8.0",
            os_release="Ubuntu 24.04 LTS", cpu_model=NA, cpu_count=224, memory_bytes=NA,
            uptime_s=NA,
        ),
        driver=model.DriverInfo("570.86.15", "12.570.86.15", 12080),
        inventory=model.InventoryStatus(model.InventoryState.OK, "", len(gpus)),
        gpus=gpus,
    )  # fmt: skip


@dataclass
class Agent:
    index: int
    signer: SoftwareSigner
    agent_id: str = ""
    cert_pem: bytes = b""
    envelopes: list[bytes] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    accepted: int = 0


def presign(agent: Agent, count: int, host: int, heartbeats: bool = False) -> None:
    """The agent's next `count` envelopes, signed now (offline evidence).

    The evidence is encoded once through attest.wire; later sequence numbers only change seq
    and prev_hash, set on the parsed message (this is a gRPC-side module) to keep it cheap.
    With `heartbeats`, every envelope after the first is a heartbeat naming it: an agent whose
    inventory does not change (docs/protocol.md §4.1).
    """
    prev, base, when = b"", b"", datetime.now(UTC) - timedelta(minutes=1)
    template = pb.Evidence.FromString(
        wire.encode_evidence(_evidence(agent.agent_id, host, 1, b"", when))
    )
    for seq in range(1, count + 1):
        if heartbeats and seq > 1:
            beat = model.Heartbeat(
                agent_id=agent.agent_id, seq=seq, prev_hash=prev, nonce=b"", created_at=when,
                agent_version="bench", site_id="bench-site", base=base,
            )  # fmt: skip
            payload, kind = wire.encode_heartbeat(beat), HEARTBEAT_PAYLOAD_TYPE
        else:
            template.seq, template.prev_hash = seq, prev
            payload = template.SerializeToString(deterministic=True)
            kind = EVIDENCE_PAYLOAD_TYPE
        raw = wire.encode_envelope(sign(kind, payload, [agent.signer]))
        agent.envelopes.append(raw)
        prev = envelope_hash(raw)
        if seq == 1:
            base = prev


def _median_cpu_us(operation: Callable[[], object], repeat: int = 300) -> float:
    """Median process CPU time of one `operation`, in µs, over 7 samples of `repeat` calls.

    Process CPU time, like the verifier's figure it is divided by: the machine is shared.
    """
    samples = []
    for _ in range(7):
        start = time.process_time()
        for _ in range(repeat):
            operation()
        samples.append((time.process_time() - start) / repeat * 1e6)
    return statistics.median(samples)


def verify_us(algorithm: str) -> float:
    """One signature verification over a typical PAE message (~2.4 KB), in µs."""
    signer = SoftwareSigner.generate(algorithm)  # type: ignore[arg-type]
    message = os.urandom(2400)
    sig = signer.sign(message)
    return _median_cpu_us(lambda: signer.public_key.verify(sig, message))


def receipt_us(log_size: int = 1_000_000, batch: int = 256) -> tuple[float, float]:
    """What answering one envelope with its receipt costs the verifier, in µs, in a log of
    `log_size` entries: (now, before). Now: the entry's inclusion proof from the checkpointer's
    in-memory nodes plus the ReceiptBody's encoding (the checkpoint is signed once per batch).
    Before: the ReceiptBody signed per envelope, in a DSSE envelope (docs/protocol.md §5)."""
    frontier = merkle.Frontier(log_size, tuple(os.urandom(32) for _ in range(log_size.bit_count())))
    nodes = {(n.level, n.index): n.hash for n in merkle.frontier_nodes(frontier)}
    for _ in range(batch):
        frontier, completed = frontier.append_with_nodes(os.urandom(32))
        nodes.update({(n.level, n.index): n.hash for n in completed})
    edges = merkle.edge_roots(frontier)
    signer = SoftwareSigner.generate("ed25519")
    body = model.Receipt(
        "agt-" + "0" * 20, 7, os.urandom(32), log_size, b"n" * 190, datetime.now(UTC),
        model.Freshness.NONCE,
    )  # fmt: skip
    indices = iter(range(10**9))

    def now() -> bytes:
        index = log_size + next(indices) % batch
        proof = merkle.inclusion_proof_from_nodes(
            index, frontier.size, lambda level, number: nodes.get((level, number)), edges
        )
        return wire.encode_receipt(dataclasses.replace(body, inclusion_proof=proof))

    def before() -> bytes:
        return wire.encode_envelope(sign(RECEIPT_PAYLOAD_TYPE, wire.encode_receipt(body), [signer]))

    return _median_cpu_us(now), _median_cpu_us(before)


async def _transport_floor(agents: int, seconds: float, interval: float = 0.0) -> dict[str, float]:
    """benchmarks.transport_floor's figures, measured by a process of its own."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.transport_floor", "--agents", str(agents),
        "--seconds", str(seconds), "--interval", str(interval), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"benchmarks.transport_floor exited with {proc.returncode}")
    result: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    return result


@dataclass
class Verifier:
    workdir: Path
    database: str
    listen: int = field(default_factory=free_port)
    enroll: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(
        self,
        batch_max: int,
        commit_interval_ms: int,
        profile: str = "",
        traced: str = "",
        workers: int = 0,
    ) -> None:
        config = self.workdir / "verifier.toml"
        config.write_text(
            f'listen = "127.0.0.1:{self.listen}"\nenroll_listen = "127.0.0.1:{self.enroll}"\n'
            f'state_dir = "{self.workdir / "state"}"\ndatabase = "{self.database}"\n'
            'metrics_listen = ""\n'
            "[stream]\nrate_per_s = 100000.0\nrate_burst = 100000\nmax_streams = 60000\n"
            # Every simulated host enrolls from 127.0.0.1, 64 at a time: one address, many hosts.
            "max_calls_per_peer = 1024\n"
            f"[store]\nbatch_max = {batch_max}\ncommit_interval_ms = {commit_interval_ms}\n"
        )
        log = (self.workdir / "verifier.log").open("wb")
        if traced:
            launcher = ["-X", "tracemalloc=1", "-c", _TRACED_VERIFIER, traced]
        elif profile:
            launcher = ["-m", "cProfile", "-o", profile, "-m", "verifier.cli"]
        else:
            launcher = ["-m", "verifier.cli"]
        # --workers only when asked: a serve without the option keeps running as before.
        serve = ["serve", "--workers", str(workers)] if workers else ["serve"]
        self.proc = subprocess.Popen(
            [sys.executable, *launcher, "--config", str(config), *serve],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    async def dump_allocations(self, path: str) -> None:
        """Ask a `--tracemalloc` verifier for its allocation report and wait until written."""
        assert self.proc is not None
        await asyncio.to_thread(Path(path).unlink, missing_ok=True)
        self.proc.send_signal(signal.SIGUSR1)
        for _ in range(1200):
            if await asyncio.to_thread(Path(path).exists):
                return
            await asyncio.sleep(0.1)

    @property
    def ca_pem(self) -> bytes:
        return (self.workdir / "state" / "ca.pem").read_bytes()

    async def wait_ready(self) -> None:
        for _ in range(300):
            assert self.proc is not None and self.proc.poll() is None, "verifier exited"
            if (self.workdir / "state" / "ca.pem").exists():
                creds = grpc.ssl_channel_credentials(root_certificates=self.ca_pem)
                async with grpc.aio.secure_channel(f"127.0.0.1:{self.enroll}", creds) as ch:
                    try:
                        await health_pb2_grpc.HealthStub(ch).Check(
                            health_pb2.HealthCheckRequest(), timeout=1
                        )
                    except grpc.aio.AioRpcError:
                        pass
                    else:
                        return
            await asyncio.sleep(0.1)
        raise TimeoutError("verifier did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)


async def enroll_all(verifier: Verifier, agents: list[Agent], tokens: list[str]) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=verifier.ca_pem)
    async with grpc.aio.secure_channel(f"127.0.0.1:{verifier.enroll}", creds) as channel:
        stub = pb_grpc.AttestationStub(channel)
        sem = asyncio.Semaphore(64)

        async def one(agent: Agent, token: str) -> None:
            host = f"h{agent.index}"
            async with sem:
                reply = await stub.Enroll(
                    pb.EnrollRequest(
                        token=token, public_key=agent.signer.public_key.spki_der,
                        csr=make_csr(agent.signer, host), hostname=host, machine_id="m",
                    ),
                    timeout=120,
                )  # fmt: skip
                agent.agent_id, agent.cert_pem = reply.agent_id, reply.client_certificate

        await asyncio.gather(*(one(a, t) for a, t in zip(agents, tokens, strict=True)))


@dataclass
class Phase:
    """Coordination of the agents: connect a few at a time, then run in one window."""

    connecting: asyncio.Semaphore
    connected: int = 0
    all_connected: asyncio.Event = field(default_factory=asyncio.Event)
    go: asyncio.Event = field(default_factory=asyncio.Event)
    window: tuple[float, float] = (0.0, 0.0)
    total: int = 0


def _left(end: float) -> float:
    return max(0.0, end - time.monotonic())


async def drive(agent: Agent, verifier: Verifier, phase: Phase, interval: float) -> None:
    """One agent's stream: send, wait for the receipt, repeat until the window closes."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=verifier.ca_pem,
        private_key=agent.signer.private_pem(),
        certificate_chain=agent.cert_pem,
    )
    async with grpc.aio.secure_channel(f"127.0.0.1:{verifier.listen}", creds) as channel:
        async with phase.connecting:
            call = pb_grpc.AttestationStub(channel).Attest()  # type: ignore[call-arg]
            await call.read()  # the opening challenge
        phase.connected += 1
        if phase.connected == phase.total:
            phase.all_connected.set()
        await phase.go.wait()
        end = phase.window[1]
        if interval:  # spread the agents over the interval instead of a thundering herd
            # (never past the window's end: the run would only wait for agents that stop then)
            await asyncio.sleep(min(interval * agent.index / phase.total, _left(end)))
        for raw in agent.envelopes:
            sent = time.monotonic()
            if sent >= end:
                break
            await call.write(pb.AgentMessage(evidence=raw))
            reply = await call.read()
            assert isinstance(reply, pb.VerifierMessage) and reply.WhichOneof("kind") == "receipt"
            done = time.monotonic()  # the reply carries the next challenge as well
            agent.accepted += 1
            agent.latencies.append(done - sent)
            if interval:
                await asyncio.sleep(min(interval - (time.monotonic() - sent), _left(end)))
        await call.done_writing()


def _postgres_cpu_s() -> dict[int, float]:
    """CPU seconds of every PostgreSQL server process on this machine, by pid (the database's
    share of an attestation, which `verifier_cpu_us_per_attestation` does not include)."""
    seconds: dict[int, float] = {}
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] != "postgres":
            continue
        with contextlib.suppress(psutil.Error):
            seconds[proc.pid] = sum(proc.cpu_times()[:2])
    return seconds


def _processes(root: psutil.Process) -> list[psutil.Process]:
    """`serve` and its worker processes (a `serve --workers N` forks them)."""
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return [root]


@dataclass(frozen=True)
class Usage:
    """CPU seconds and bytes written by `serve` and its children, and their summed RSS.

    Per pid, so a worker that started or ended within the window counts only its own share."""

    cpu_s: dict[int, float]
    written: dict[int, int]
    rss: int

    @classmethod
    def of(cls, root: psutil.Process) -> Usage:
        cpu_s: dict[int, float] = {}
        written: dict[int, int] = {}
        rss = 0
        for proc in _processes(root):
            with contextlib.suppress(psutil.Error):
                cpu_s[proc.pid] = sum(proc.cpu_times()[:2])
                written[proc.pid] = proc.io_counters().write_bytes
                rss += proc.memory_info().rss
        return cls(cpu_s, written, rss)

    def since(self, before: Usage) -> tuple[float, int]:
        """CPU seconds and bytes written since `before`."""
        cpu = sum(t - before.cpu_s.get(pid, 0.0) for pid, t in self.cpu_s.items())
        written = sum(b - before.written.get(pid, 0) for pid, b in self.written.items())
        return cpu, written


def _thread_cpu_s(root: psutil.Process) -> dict[str, float]:
    """CPU seconds of the threads of `serve` and its workers, by thread name (digits dropped, so
    grpc's pollers sum up; each process's main thread is "event-loop")."""
    ticks = os.sysconf("SC_CLK_TCK")
    seconds: dict[str, float] = {}
    for proc in _processes(root):
        for task in Path(f"/proc/{proc.pid}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                name = (task / "comm").read_text().strip().rstrip("0123456789_-")
                if task.name == str(proc.pid):
                    name = "event-loop"  # the main thread; Python's own threads keep its name
                elif name == "python":
                    name = "python-threads"  # the group commit's, asyncio.to_thread's
                # the fields after the parenthesised name: utime and stime are the 12th and 13th
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                used = (int(fields[11]) + int(fields[12])) / ticks
                seconds[name or "?"] = seconds.get(name or "?", 0.0) + used
    return seconds


def _stored_bytes(database: str, state_dir: Path) -> tuple[int, int]:
    """What the store keeps: the database's size, plus the files under the state directory;
    and, of it, the challenge nonces' table (a working set the sweep purges 2 x
    challenge_ttl_s after issue: it grows within a run shorter than that, not over a fleet's
    life).

    SQLite: page_count x page_size as a reader sees it (pages still in the WAL count; the WAL
    file itself is a ring the checkpoints reuse, not growth), the nonces' pages by dbstat.
    PostgreSQL: the benchmark schema's tables with their indexes and TOAST
    (pg_total_relation_size)."""
    files = sum(p.stat().st_size for p in state_dir.rglob("*") if p.is_file())
    if database.startswith("postgresql"):
        import psycopg  # noqa: PLC0415

        with psycopg.connect(database, autocommit=True) as conn:
            row = conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0), "
                "coalesce(sum(pg_total_relation_size(c.oid)) "
                "FILTER (WHERE c.relname = 'nonces'), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')"
            ).fetchone()
        return files + int(row[0] if row else 0), int(row[1] if row else 0)
    import sqlite3  # noqa: PLC0415

    reader = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        (pages,) = reader.execute("PRAGMA page_count").fetchone()
        (size,) = reader.execute("PRAGMA page_size").fetchone()
        (nonces,) = reader.execute(
            "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = 'nonces'"
        ).fetchone()
    finally:
        reader.close()
    return files + int(pages) * int(size), int(nonces)


def _postgres_wal_lsn() -> str:
    """The cluster's current WAL position (every database's writes, not only this run's)."""
    import psycopg  # noqa: PLC0415

    with psycopg.connect(PG, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    return str(row[0]) if row else "0/0"


def _postgres_wal_bytes(since: str) -> int:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(PG, autocommit=True) as conn:
        row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (since,))
        value = row.fetchone()
    return int(value[0]) if value else 0


def agent_interval(args: argparse.Namespace) -> float:
    """Seconds between one simulated agent's envelopes (0: closed loop). With `--pace-agents`,
    `--agents` streams carry the envelopes of that many agents at `--interval` (§4's method)."""
    if args.pace_agents and args.interval:
        return float(args.interval * args.agents / args.pace_agents)
    return float(args.interval)


def _new_tokens(database: str, count: int) -> list[str]:
    from verifier.enroll import create_token  # noqa: PLC0415
    from verifier.store import open_store  # noqa: PLC0415

    url = database if database.startswith("postgresql") else f"sqlite:///{database}"
    store = open_store(url)
    try:
        now = datetime.now(UTC)
        return [create_token(store, "bench-site", timedelta(hours=1), now) for _ in range(count)]
    finally:
        store.close()


async def run(args: argparse.Namespace, workdir: Path, database: str) -> dict[str, object]:
    verifier = Verifier(workdir, database)
    interval = agent_interval(args)
    verifier.start(
        args.batch_max, args.commit_interval_ms, args.profile, args.tracemalloc, args.workers
    )
    try:
        await verifier.wait_ready()
        tokens = _new_tokens(database, args.agents)
        agents = [
            Agent(i, SoftwareSigner.generate("ecdsa-p256-sha256")) for i in range(args.agents)
        ]
        await enroll_all(verifier, agents, tokens)
        per_agent = args.max_per_agent
        for agent in agents:
            presign(agent, per_agent, agent.index, args.heartbeats)
        process = psutil.Process(verifier.proc.pid)  # type: ignore[union-attr]
        phase = Phase(asyncio.Semaphore(64), total=len(agents))
        tasks = [asyncio.create_task(drive(a, verifier, phase, interval)) for a in agents]
        waiter = asyncio.create_task(phase.all_connected.wait())
        await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            await asyncio.gather(*tasks)  # an agent failed before all connected: raise it
        start = time.monotonic() + args.warmup_s
        phase.window = (time.monotonic(), start + args.seconds)
        phase.go.set()
        await asyncio.sleep(args.warmup_s)
        state_dir = workdir / "state"
        usage0 = Usage.of(process)
        threads0 = _thread_cpu_s(process)
        db0 = _postgres_cpu_s() if args.store == "postgres" else {}
        wal0 = _postgres_wal_lsn() if args.store == "postgres" else ""
        stored0, nonces0 = await asyncio.to_thread(_stored_bytes, database, state_dir)
        accepted0 = sum(a.accepted for a in agents)
        await asyncio.sleep(args.seconds)
        usage1 = Usage.of(process)
        threads1 = _thread_cpu_s(process)
        db1 = _postgres_cpu_s() if args.store == "postgres" else {}
        accepted = sum(a.accepted for a in agents) - accepted0
        stored, nonces = await asyncio.to_thread(_stored_bytes, database, state_dir)
        stored, nonces = stored - stored0, nonces - nonces0
        stored_accepted = sum(a.accepted for a in agents) - accepted0
        wal_bytes = _postgres_wal_bytes(wal0) if args.store == "postgres" else 0
        cpu_s, written = usage1.since(usage0)
        rss_mb = usage1.rss / 2**20
        if args.tracemalloc:
            await verifier.dump_allocations(args.tracemalloc)
        await asyncio.gather(*tasks)
    finally:
        verifier.stop()
    latencies = sorted(x for a in agents for x in a.latencies)
    cpu_us = cpu_s * 1e6 / max(accepted, 1)
    # where the CPU goes, per accepted envelope: the event loop (the process's main thread,
    # named after the program), the group commit's thread, grpc's threads (a thread that ended
    # within the window is missing; 10 ms clock ticks)
    by_thread = {
        name: round((t - threads0.get(name, 0.0)) * 1e6 / max(accepted, 1), 1)
        for name, t in sorted(threads1.items(), key=lambda kv: -kv[1])
        if t - threads0.get(name, 0.0) > 0
    }
    db_figures: dict[str, object] = {}
    if args.store == "postgres":
        db_s = sum(t - db0.get(pid, 0.0) for pid, t in db1.items())
        db_figures = {
            "postgres_cpu_us_per_attestation": round(db_s * 1e6 / max(accepted, 1), 1),
            # cluster-wide WAL: other databases' writes in the window count too
            "postgres_wal_kb_per_attestation": round(wal_bytes / 1024 / max(accepted, 1), 1),
        }
    ed25519_us = verify_us("ed25519")
    p256_us = verify_us("ecdsa-p256-sha256")
    receipt_now_us, receipt_before_us = receipt_us()
    floor: dict[str, object] = {}
    if args.floor_seconds:
        # What no verifier on grpc.aio can go below on this machine: the bare transport (one
        # message in, one out, over TLS) plus the envelope's verification, each measured in
        # this run (the receipt's checkpoint signature is shared by its batch).
        # (Its own process: this one may still be closing the agents' connections.)
        streams = min(args.agents, FLOOR_MAX_AGENTS)
        transport = await _transport_floor(streams, args.floor_seconds)
        least = transport["transport_floor_us_per_round"] + p256_us
        floor = {
            "transport_floor_us": transport["transport_floor_us_per_round"],
            # the cost targets' yardstick (docs/performance.md §14)
            "floor_us": round(least, 1),
            "overhead_ratio": round(cpu_us / least, 2) if accepted else None,
            "efficiency_ceiling": round(ed25519_us / least, 3),
            "transport_floor_streams": streams,
            "transport_floor_rss_mb": transport["transport_floor_rss_mb"],
            "transport_floor_kb_per_stream": transport["transport_floor_kb_per_stream"],
        }
        if interval:
            # The same envelopes per second over the floor's streams: a paced event loop wakes
            # for each message, which a closed loop shares among many.
            paced = await _transport_floor(
                streams, max(args.floor_seconds, 2 * interval * streams / args.agents),
                interval * streams / args.agents,
            )  # fmt: skip
            paced_least = paced["transport_floor_us_per_round"] + p256_us
            floor |= {
                "transport_floor_paced_us": paced["transport_floor_us_per_round"],
                "floor_paced_us": round(paced_least, 1),
                "overhead_ratio_paced": round(cpu_us / paced_least, 2) if accepted else None,
            }
    return {
        "agents": args.agents,
        "store": args.store,
        "seconds": args.seconds,
        "interval_s": round(interval, 4),
        **(
            {"pace_agents": args.pace_agents, "pace_interval_s": args.interval}
            if args.pace_agents
            else {}
        ),
        "offered_per_s": round(args.agents / interval, 1) if interval else None,
        "workers": args.workers or None,
        "accepted_per_s": round(accepted / args.seconds, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1e3, 2) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1e3, 2) if latencies else None,
        "verifier_cpu_us_per_attestation": round(cpu_us, 1),
        "verify_us": round(ed25519_us, 1),
        # the receipt step per envelope: now (inclusion proof + encoding) and as it was (a
        # DSSE envelope signed per receipt); their difference is what the verifier saves
        "receipt_us": round(receipt_now_us, 1),
        "receipt_signed_us": round(receipt_before_us, 1),
        "efficiency": round(ed25519_us / cpu_us, 3) if accepted else None,
        "verifier_cpu_us_by_thread": by_thread,
        "verifier_rss_mb": round(rss_mb, 1),
        # bytes the verifier sent towards the disk (WAL, checkpoints, its log), per envelope
        "verifier_write_kb_per_attestation": round(written / 1024 / max(accepted, 1), 1),
        # what the store keeps per envelope (database rows with their indexes, state files)
        "stored_bytes_per_attestation": round(stored / max(stored_accepted, 1)),
        # of which the challenge nonces' working set (purged 2 x challenge_ttl_s after issue)
        "stored_nonce_bytes_per_attestation": round(nonces / max(stored_accepted, 1)),
        "commit_interval_ms": args.commit_interval_ms,
        **db_figures,
        "agent_key": "ecdsa-p256",
        "verify_us_p256": round(p256_us, 1),
        **floor,
        "cpu_count": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--interval", type=float, default=0.0, help="0: closed loop")
    parser.add_argument(
        "--pace-agents", type=int, default=0,
        help="play this many agents at --interval with --agents streams (fleet pace)",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=int, default=0, help="pass --workers N to serve (0: serve's default)"
    )
    parser.add_argument(
        "--heartbeats", action="store_true",
        help="after each agent's first envelope, send heartbeats naming it (unchanged inventory)",
    )  # fmt: skip
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--max-per-agent", type=int, default=0, help="pre-signed per agent")
    parser.add_argument("--batch-max", type=int, default=StoreConfig().batch_max)
    parser.add_argument("--commit-interval-ms", type=int, default=StoreConfig().commit_interval_ms)
    parser.add_argument("--profile", default="", help="write the verifier's cProfile stats here")
    parser.add_argument("--tracemalloc", default="", help="write the verifier's allocations here")
    parser.add_argument("--workdir", default="", help="keep state and verifier.log here")
    parser.add_argument(
        "--floor-seconds", type=float, default=8.0,
        help="measure the bare grpc.aio TLS transport this long after the run (0: skip)",
    )  # fmt: skip
    args = parser.parse_args()
    if not args.max_per_agent:
        # Enough for a closed loop at ~2000/s in total, or one per interval.
        interval = agent_interval(args)
        per_s = 1.0 / interval if interval else 2000.0 / args.agents
        args.max_per_agent = max(3, int(per_s * (args.seconds + args.warmup_s + 2)) + 2)
    with tempfile.TemporaryDirectory(prefix="gpu-attest-bench-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if args.store == "postgres":
            import psycopg  # noqa: PLC0415

            schema = "bench_" + secrets.token_hex(4)
            with psycopg.connect(PG, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {schema}")
            database = f"{PG}?options=-csearch_path%3D{schema}"
        else:
            database = str(workdir / "verifier.db")
        try:
            result = asyncio.run(run(args, workdir, database))
        finally:
            if args.store == "postgres":
                with psycopg.connect(PG, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
