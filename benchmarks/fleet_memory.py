"""Fleet-listing memory benchmark: does `fleet --json` stay flat as the fleet grows?

    python -m benchmarks.fleet_memory [--gpus 200000] [--chunk 1000] [--store sqlite|postgres]
                                      [--sweep]

Fills a fresh store (SQLite in a temporary directory, or a temporary PostgreSQL schema in
database `test` on 127.0.0.1:5432, dropped afterwards) with `--gpus` GPUs, `--per-host` per
host, then lists the fleet as `gpu-attest-verifier fleet --json` does (the store's paged
iterator into the CLI's streaming JSON writer) to /dev/null, in a fresh process each time:
once untraced for `seconds` and `rss_delta_mb` (peak RSS during the listing above the RSS
after imports), once under tracemalloc for `peak_traced_mb` (peak Python allocations).
`--chunk N` larger than the host count reads everything in one page: the memory of the old
whole-table listing. `--sweep` also measures the periodic sweep (a tenth of the hosts overdue,
their GPUs missing) and the `findings --json` listing it leaves behind.

The rows are written with direct SQL (executemany on SQLite, COPY on PostgreSQL), the columns
that enroll and accept write, because the store's write API commits per enrollment and would
take minutes for a 25k-host fleet; the listing reads them through the store like any other.
Prints one JSON line; figures are of this machine and this run.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

PG = "postgresql://postgres@127.0.0.1:5432/test"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Runs in a fresh interpreter: imports first, so the figures are of the phase alone.
_PHASE = r"""
import contextlib, json, os, resource, sys, time, tracemalloc
from datetime import datetime, timedelta
from verifier import views
from verifier.store import open_store
url, phase, chunk, traced, now = sys.argv[1:6]
chunk, traced = int(chunk), traced == "1"
store = open_store(url)
def run():
    if phase == "fleet":
        views.write_json_array(views.host_view(h) for h in store.iter_fleet(chunk=chunk))
    elif phase == "findings":
        views.write_json_array(views.finding_view(f) for f in store.iter_findings(chunk=chunk))
    else:
        store.sweep(datetime.fromisoformat(now), timedelta(minutes=30), chunk=chunk)
def hwm_kb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
before = hwm_kb()
if traced:
    tracemalloc.start()
start = time.perf_counter()
with open(os.devnull, "w") as out, contextlib.redirect_stdout(out):
    run()
seconds = time.perf_counter() - start
peak = tracemalloc.get_traced_memory()[1] if traced else 0
store.close()
print(json.dumps({"seconds": seconds, "peak_traced": peak, "rss_delta_kb": hwm_kb() - before}))
"""


def _us(when: datetime) -> int:
    return (when - _EPOCH) // timedelta(microseconds=1)


def _hosts(n_hosts: int) -> Iterator[tuple[int, bool]]:
    """(host index, overdue): every tenth host is overdue and its GPUs missing."""
    for host in range(n_hosts):
        yield host, host % 10 == 0


def _agent_rows(n_hosts: int) -> Iterator[tuple[Any, ...]]:
    for host, overdue in _hosts(n_hosts):
        seen = NOW - (timedelta(hours=1) if overdue else timedelta(minutes=1))
        yield (
            f"agt-{host:08x}", f"site-{host % 16:02d}", f"gpu-node-{host:06d}", f"{host:032x}",
            "active", bytes(32), _us(NOW - timedelta(days=1)), 100, secrets.token_bytes(32),
            _us(NOW - timedelta(days=1)), _us(seen), _us(seen), _us(seen + timedelta(minutes=5)),
            None, bytes(32), host * 100, host + 1,
        )  # fmt: skip


def _key_rows(n_hosts: int) -> Iterator[tuple[Any, ...]]:
    for host, _ in _hosts(n_hosts):
        yield (f"agt-{host:08x}", f"{host:064x}", bytes(44), _us(NOW - timedelta(days=1)), None)


def _gpu_rows(n_hosts: int, per_host: int) -> Iterator[tuple[Any, ...]]:
    for host, overdue in _hosts(n_hosts):
        seen = _us(NOW - (timedelta(hours=1) if overdue else timedelta(minutes=1)))
        for index in range(per_host):
            yield (
                f"GPU-{host:08x}-{index:04x}-4000-8000-{host * 16 + index:012x}",
                f"agt-{host:08x}", f"site-{host % 16:02d}", "NVIDIA H100 80GB HBM3", 0x233010DE,
                _us(NOW - timedelta(days=1)), seen, 1, host * 100,
            )  # fmt: skip


_TABLES = {
    "agents": "agent_id, site_id, hostname, machine_id, status, token_hash, enrolled_at, "
    "last_seq, last_hash, first_attested_at, last_seen_at, last_fresh_at, next_due, "
    "revoked_at, inventory_fp, last_log_index, agent_no",
    "agent_keys": "agent_id, keyid, spki_der, added_at, retired_at",
    "gpu_sightings": "uuid, agent_id, site_id, name, pci_device_id, first_seen, last_seen, "
    "present, last_log_index",
}


def _rows(table: str, n_hosts: int, per_host: int) -> Iterator[tuple[Any, ...]]:
    if table == "agents":
        return _agent_rows(n_hosts)
    if table == "agent_keys":
        return _key_rows(n_hosts)
    return _gpu_rows(n_hosts, per_host)


def fill(url: str, n_hosts: int, per_host: int) -> None:
    """Create the schema through the store (migrations), then bulk-insert the fleet."""
    from verifier.store import open_store  # noqa: PLC0415

    open_store(url).close()
    if url.startswith("sqlite:///"):
        _fill_sqlite(Path(url.removeprefix("sqlite:///")), n_hosts, per_host)
    else:
        _fill_postgres(url, n_hosts, per_host)


def _fill_sqlite(path: Path, n_hosts: int, per_host: int) -> None:
    with sqlite3.connect(path) as conn:
        for table, columns in _TABLES.items():
            marks = ", ".join("?" * len(columns.split(",")))
            conn.executemany(
                f"INSERT INTO {table} ({columns}) VALUES ({marks})",
                _rows(table, n_hosts, per_host),
            )


def _fill_postgres(url: str, n_hosts: int, per_host: int) -> None:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url) as conn, conn.cursor() as cur:
        for table, columns in _TABLES.items():
            with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in _rows(table, n_hosts, per_host):
                    copy.write_row(row)
        cur.execute("ANALYZE")


def measure(url: str, phase: str, chunk: int) -> dict[str, float]:
    """The phase in a fresh process, untraced (time, RSS) and then traced (Python peak)."""
    figures: dict[str, float] = {}
    for traced in (False, True):
        out = subprocess.run(
            [sys.executable, "-c", _PHASE, url, phase, str(chunk), str(int(traced)),
             NOW.isoformat()],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        result = json.loads(out.strip().splitlines()[-1])
        if traced:
            figures["peak_traced_mb"] = round(result["peak_traced"] / 2**20, 2)
        else:
            figures["seconds"] = round(result["seconds"], 2)
            figures["rss_delta_mb"] = round(result["rss_delta_kb"] / 1024, 1)
    return figures


def run(args: argparse.Namespace, url: str) -> dict[str, object]:
    n_hosts = -(-args.gpus // args.per_host)
    start = time.perf_counter()
    fill(url, n_hosts, args.per_host)
    result: dict[str, object] = {
        "n_gpus": n_hosts * args.per_host,
        "n_hosts": n_hosts,
        "store": args.store,
        "chunk": args.chunk,
        "fill_seconds": round(time.perf_counter() - start, 1),
        **measure(url, "fleet", args.chunk),
    }
    if args.sweep:
        result["sweep"] = measure(url, "sweep", args.sweep_chunk)
        result["findings"] = measure(url, "findings", args.chunk)
    result["cpu_count"] = os.cpu_count()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpus", type=int, default=200_000)
    parser.add_argument("--per-host", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=1000, help="hosts/findings per page")
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--sweep", action="store_true", help="measure the sweep and findings")
    parser.add_argument("--sweep-chunk", type=int, default=500)
    args = parser.parse_args()
    if args.store == "sqlite":
        with tempfile.TemporaryDirectory(prefix="fleet-memory-") as tmp:
            result = run(args, f"sqlite:///{Path(tmp) / 'verifier.db'}")
    else:
        import psycopg  # noqa: PLC0415

        schema = "bench_" + secrets.token_hex(4)
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        try:
            result = run(args, f"{PG}?options=-csearch_path%3D{schema}")
        finally:
            with psycopg.connect(PG, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
