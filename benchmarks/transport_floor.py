"""The transport's own cost: a grpc.aio server that does nothing but answer, over loopback TLS.

    python -m benchmarks.transport_floor --agents 200 --seconds 10 [--interval S]

Its server process, with the verifier's gRPC options and mTLS credentials made by verifier.ca
(the Attest port's transport), reads each ~3.4 KB message of a bidirectional stream and writes
one ~0.6 KB reply: the message pattern of one attestation (envelope in; receipt with the next
challenge out), with no verification, storage or signing. Its CPU time per round is the floor under
`verifier_cpu_us_per_attestation` for any verifier built on grpcio's asyncio server on this
machine; `benchmarks.ingest` measures it in the same run and reports the ceiling it puts on
`efficiency`; its resident memory with every stream open is the floor under `verifier_rss_mb`.
With `--interval S` each stream sends one message every S seconds (spread over the interval)
instead of as soon as the reply arrived: the transport's cost per round at a paced load, where
the event loop wakes for each message instead of sharing a turn among many. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import psutil

from agent.client import AGENT_KEY_ALGORITHM
from agent.identity import make_csr
from attest.keys import SoftwareSigner
from benchmarks import free_port
from verifier.ca import issue_client_certificate, load_or_create_ca, load_or_create_server_identity
from verifier.config import VerifierConfig
from verifier.server import grpc_options

REQUEST_BYTES = 3400
REPLY_BYTES = 600
_METHOD = "/floor.Floor/Echo"

_SERVER = r"""
import asyncio, sys, grpc
import json
from verifier.server import bound_heap_arenas
bound_heap_arenas()  # as `serve` does
port, workdir, reply_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
options = [tuple(option) for option in json.loads(sys.argv[4])]
reply = b"r" * reply_bytes
async def echo(request_iterator, context):
    context.auth_context()  # the verifier reads the client certificate of every stream
    while True:
        message = await context.read()
        if message is grpc.aio.EOF:
            return
        await context.write(reply)
async def main():
    server = grpc.aio.server(options=options, maximum_concurrent_rpcs=60000)
    methods = {"Echo": grpc.stream_stream_rpc_method_handler(echo)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("floor.Floor", methods),))
    read = lambda name: open(f"{workdir}/{name}", "rb").read()
    creds = grpc.ssl_server_credentials(
        [(read("floor-server.key"), read("floor-server.pem"))],
        root_certificates=read("floor-ca.pem"), require_client_auth=True,
    )
    server.add_secure_port(f"127.0.0.1:{port}", creds)
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()
asyncio.run(main())
"""


@dataclass(frozen=True)
class _Credentials:
    """The verifier's own CA and server identity, and one agent's client certificate."""

    workdir: Path
    ca_pem: bytes
    client_key_pem: bytes
    client_cert_pem: bytes


def _credentials(workdir: Path) -> _Credentials:
    """Made by verifier.ca exactly as `serve` and `Enroll` make them (mTLS, as on Attest)."""
    now = datetime.now(UTC)
    ca = load_or_create_ca(workdir, now)
    server = load_or_create_server_identity(ca, workdir, ("localhost", "127.0.0.1"), now)
    (workdir / "floor-server.key").write_bytes(server.key_pem)
    (workdir / "floor-server.pem").write_bytes(server.cert_pem)
    (workdir / "floor-ca.pem").write_bytes(ca.pem)
    agent = SoftwareSigner.generate(AGENT_KEY_ALGORITHM)
    cert = issue_client_certificate(
        ca, make_csr(agent, "floor"), expected_key=agent.public_key, agent_id="agt-floor",
        now=now, days=1,
    )  # fmt: skip
    return _Credentials(workdir, ca.pem, agent.private_pem(), cert)


@dataclass(frozen=True)
class Floor:
    cpu_us_per_round: float  # server CPU per round (one request in, one reply out)
    rss_mb: float  # server resident memory with every stream open and past its first round
    kb_per_stream: float  # what each stream added to it


async def _drive(
    port: int,
    creds: _Credentials,
    agents: int,
    seconds: float,
    server: psutil.Process,
    interval: float = 0.0,
) -> Floor:
    rounds = 0
    stop, go = asyncio.Event(), asyncio.Event()
    connecting = asyncio.Semaphore(64)

    async def stream() -> None:
        nonlocal rounds
        channel_creds = grpc.ssl_channel_credentials(
            root_certificates=creds.ca_pem,
            private_key=creds.client_key_pem,
            certificate_chain=creds.client_cert_pem,
        )
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", channel_creds) as channel:
            call = channel.stream_stream(_METHOD)()  # type: ignore[call-arg]  # raw bytes
            request = os.urandom(REQUEST_BYTES)
            async with connecting:
                await call.write(request)
                await call.read()
            index = len(opened)
            opened.append(True)
            await go.wait()  # no load while others still handshake (they would time out)
            if interval:  # spread over the interval, as benchmarks.ingest's agents are
                await asyncio.sleep(interval * index / agents)
            while not stop.is_set():
                sent = time.monotonic()
                await call.write(request)
                await call.read()
                rounds += 1
                if interval:
                    await asyncio.sleep(max(0.0, interval - (time.monotonic() - sent)))
            await call.done_writing()

    opened: list[bool] = []
    idle_rss = server.memory_info().rss
    tasks = [asyncio.create_task(stream()) for _ in range(agents)]
    while len(opened) < agents:
        if any(t.done() for t in tasks):
            await asyncio.gather(*tasks)  # a stream failed: raise its error
        await asyncio.sleep(0.2)
    rss = server.memory_info().rss
    go.set()
    await asyncio.sleep(max(1.0, interval))  # warm up (every paced stream has started)
    cpu0, rounds0 = sum(server.cpu_times()[:2]), rounds
    await asyncio.sleep(seconds)
    cpu1, rounds1 = sum(server.cpu_times()[:2]), rounds
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    cpu_us = (cpu1 - cpu0) * 1e6 / max(rounds1 - rounds0, 1)
    return Floor(cpu_us, rss / 2**20, (rss - idle_rss) / 1024 / agents)


async def measure(agents: int, seconds: float, interval: float = 0.0) -> Floor:
    """The bare transport's server CPU per round and resident memory with `agents` streams,
    each sending as soon as answered (`interval` 0) or once every `interval` seconds."""
    with tempfile.TemporaryDirectory(prefix="gpu-attest-floor-") as tmp:
        creds = _credentials(Path(tmp))
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _SERVER, str(port), tmp, str(REPLY_BYTES),
            json.dumps(grpc_options(VerifierConfig())),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            if (await proc.stdout.readline()).strip() != b"ready":
                raise RuntimeError("the floor server did not start")
            server = psutil.Process(proc.pid)
            return await _drive(port, creds, agents, seconds, server, interval)
        finally:
            proc.terminate()
            await proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.0, help="0: closed loop")
    args = parser.parse_args()
    started = time.monotonic()
    floor = asyncio.run(measure(args.agents, args.seconds, args.interval))
    print(
        json.dumps(
            {
                "agents": args.agents,
                "interval_s": args.interval,
                "transport_floor_us_per_round": round(floor.cpu_us_per_round, 1),
                "transport_floor_rss_mb": round(floor.rss_mb, 1),
                "transport_floor_kb_per_stream": round(floor.kb_per_stream, 1),
                "cpu_count": os.cpu_count(),
                "wall_s": round(time.monotonic() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
