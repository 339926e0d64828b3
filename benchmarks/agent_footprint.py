"""Agent footprint: CPU per attestation and steady-state memory, on a simulated 8x H100 host.

    python -m benchmarks.agent_footprint [--cycles 200]

One JSON line: `cpu_ms_per_cycle` is the process CPU time (user + system) to collect host facts
and posture, build, sign (P-256) and durably spool one attestation, excluding the time spent
inside the driver: with the simulator, its own collect time is measured and subtracted.
`rss_mb` is the resident memory of this process after the cycles, with every module the
daemon loads (grpc, cryptography, protobuf, psutil) imported; `daemon_rss_mb` is that of a
real `gpu-attest-agent run` process (event loop, grpc channel and threads) after 8 s.
Targets: cpu_ms_per_cycle <= 5, rss_mb <= 60.
"""

from __future__ import annotations

import argparse
import gc
import json
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

import agent.daemon  # noqa: F401 - load what `run` loads, so RSS is the daemon's
from agent.attestor import Attestor, AttestorSettings, HostOverride
from agent.client import AGENT_KEY_ALGORITHM
from agent.simulate import SimulatedInventory, parse_machine
from agent.spool import Spool
from attest.files import write_secret_file
from attest.keys import SoftwareSigner, load_or_create_private_key

MACHINE = """
[host]
hostname = "gpu-node-017"
machine_id = "4c4c4544004b4d108051b4c04f4a3133"
site = "acme-fra1"

[[gpu]]
model = "H100-SXM"
count = 8
uuid_seed = "node-017"
"""


def measure(cycles: int, state_dir: Path) -> dict[str, object]:
    signer = load_or_create_private_key(state_dir / "agent.key", AGENT_KEY_ALGORITHM)
    spool = Spool.open(state_dir, 1 << 30)
    machine = parse_machine(MACHINE)
    inventory_source = SimulatedInventory(machine)
    settings = AttestorSettings(
        agent_id="agt-benchmark",
        site_id="acme-fra1",
        host_root=Path("/"),
        state_dir=state_dir,
        key_file=state_dir / "agent.key",
        host_override=HostOverride(machine.host.hostname, machine.host.machine_id),
    )
    attestor = Attestor(settings, signer, spool, inventory_source)
    nonce = bytes(range(32))
    attestor.produce(nonce, datetime.now(UTC))  # warm-up: imports, caches, firewall read
    sizes = []
    driver_cpu = 0.0
    wall = time.perf_counter()
    start = time.process_time()
    for _ in range(cycles):
        t0 = time.process_time()
        inventory = inventory_source.collect(nonce)
        driver_cpu += time.process_time() - t0
        entry = attestor.produce(nonce, datetime.now(UTC), inventory)
        sizes.append(len(entry.envelope))
        spool.acknowledge(entry.seq, b"receipt", datetime.now(UTC))  # steady state: it drains
    total_cpu = time.process_time() - start
    wall = time.perf_counter() - wall
    spool.close()
    gc.collect()
    rss = psutil.Process().memory_info().rss
    return {
        "benchmark": "agent_footprint",
        "gpus": len(machine.gpus),
        "cycles": cycles,
        "cpu_ms_per_cycle": round((total_cpu - driver_cpu) * 1000 / cycles, 3),
        "simulator_cpu_ms_per_cycle": round(driver_cpu * 1000 / cycles, 3),
        "wall_ms_per_cycle": round(wall * 1000 / cycles, 3),
        "rss_mb": round(rss / (1024 * 1024), 1),
        "envelope_bytes": sizes[-1],
        "targets": {"cpu_ms_per_cycle": 5, "rss_mb": 60},
    }


def daemon_rss_mb(tmp: Path, seconds: float = 8.0) -> float:
    """RSS of a real `gpu-attest-agent run` (grpc channel, threads, loop) after `seconds`.

    No verifier listens (plaintext to a closed loopback port): the daemon attests every second
    into its spool and keeps reconnecting, which exercises everything but a live stream.
    """
    state = tmp / "daemon"
    load_or_create_private_key(state / "agent.key", AGENT_KEY_ALGORITHM)
    write_secret_file(state / "verifier.pub", SoftwareSigner.generate().public_key.to_pem())
    write_secret_file(
        state / "identity.toml",
        b'agent_id = "agt-bench"\nsite_id = "acme-fra1"\nverifier = "127.0.0.1:9"\n',
    )
    (tmp / "machine.toml").write_text(MACHINE)
    config = tmp / "agent.toml"
    config.write_text(
        f'verifier = "127.0.0.1:9"\nstate_dir = "{state}"\nsimulate = "{tmp / "machine.toml"}"\n'
        "insecure_plaintext = true\ninterval_seconds = 1\nbackoff_cap_seconds = 1\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(seconds)
        rss = psutil.Process(child.pid).memory_info().rss
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)
    return round(rss / (1024 * 1024), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gpu-attest-bench-") as tmp:
        result = measure(args.cycles, Path(tmp))
        result["daemon_rss_mb"] = daemon_rss_mb(Path(tmp))
        print(json.dumps(result))


if __name__ == "__main__":
    main()
