"""What the services do at run time, in one process, for the sandbox checks of test_sandbox.py.

It runs the agent's own host-fact and posture collectors against the live system (adjtimex,
/proc, /sys, the firewall commands), the real pynvml module, a gRPC round trip over loopback
TLS with certificates from `cryptography`, Ed25519 and P-256 signatures, ctypes callbacks, a
SQLite WAL database with fsync, and a psutil process reading. Run as
`python -m tests.packaging.sandbox_workload STATE_DIR agent|verifier`; the verifier side skips
the host collectors and NVML. Prints one JSON line and exits 0.
"""

from __future__ import annotations

import asyncio
import ctypes
import datetime
import json
import sqlite3
import sys
from pathlib import Path

import grpc
import psutil
import pynvml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from agent.hostfacts import collect_host_facts
from agent.posture_collect import collect_clock, collect_posture_facts

_METHOD = "/gpu_attest.sandbox.Echo/Echo"


def _self_signed() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request[::-1]


async def _grpc_round_trip() -> bytes:
    key_pem, cert_pem = _self_signed()
    handler = grpc.method_handlers_generic_handler(
        "gpu_attest.sandbox.Echo",
        {"Echo": grpc.unary_unary_rpc_method_handler(_echo)},
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key_pem, cert_pem)]))
    await server.start()
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert_pem)
        options = (("grpc.ssl_target_name_override", "localhost"),)
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options) as channel:
            call = channel.unary_unary(_METHOD, None, None)
            reply: bytes = await call(b"evidence", timeout=30)
            return reply
    finally:
        await server.stop(None)


def _signatures() -> bool:
    message = b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    ed = ed25519.Ed25519PrivateKey.generate()
    ed.public_key().verify(ed.sign(message), message)
    p256 = ec.generate_private_key(ec.SECP256R1())
    p256.public_key().verify(
        p256.sign(message, ec.ECDSA(hashes.SHA256())), message, ec.ECDSA(hashes.SHA256())
    )
    return True


def _sqlite(state_dir: Path) -> int:
    db = sqlite3.connect(state_dir / "spool.db")
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY, body BLOB)")
        with db:
            db.executemany("INSERT INTO spool (body) VALUES (?)", [(b"x" * 512,)] * 50)
        (count,) = db.execute("SELECT count(*) FROM spool").fetchone()
        return int(count)
    finally:
        db.close()


def _nvml() -> str:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return f"unavailable: {exc}"
    try:
        return f"{pynvml.nvmlDeviceGetCount()} GPUs"
    finally:
        pynvml.nvmlShutdown()


def main(argv: list[str]) -> int:
    """Run every step; any exception fails the process with a traceback."""
    state_dir, side = Path(argv[1]), argv[2]
    callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda value: value + 1)
    report: dict[str, object] = {"side": side, "ctypes_callback": callback(41)}
    if side == "agent":
        facts = collect_host_facts()
        posture = collect_posture_facts(Path("/"), state_dir, state_dir / "agent.key")
        report |= {
            "clock": repr(collect_clock()),
            "hostname": repr(facts.hostname),
            "process_names": repr(posture.process_names)[:40],
            "nvml": _nvml(),
        }
    report |= {
        "grpc_tls_echo": asyncio.run(_grpc_round_trip()).decode(),
        "signatures": _signatures(),
        "sqlite_rows": _sqlite(state_dir),
        "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
