"""Benchmark: a signed report of one entity holding N GPUs (docs/design.md §15).

    python -m benchmarks.report [--gpus 1000000] [--store sqlite|postgres]

Fills a store like benchmarks/reconcile.py does (bulk SQL: agents, GPU sightings and presence
intervals, postures, one attestation per host), except that each site's first host is accepted
through `Store.accept` with a real signed evidence envelope, so the report's sampled entries,
inclusion proofs and agent signatures are real; the bulk rows name those entries. Then runs
`gpu-attest-verifier report create --html` as a child process and verifies the result with
`gpu-attest-report verify`. Prints one JSON line:

- `report_s`: wall time of `report create` (process start included);
- `report_peak_rss_mb`: that process's peak resident set (ru_maxrss of the child);
- `verify_s`: wall time of `gpu-attest-report verify`; `report_bytes`, `gpus`, `sites`.

`report_figures(gpus, store)` returns `report_s` and `report_peak_rss_mb` (benchmarks/tlog.py
calls it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from attest import envelope as dsse
from attest.keys import SoftwareSigner
from attest.model import Freshness
from verifier.model import GpuClaim, VerifiedAttestation
from verifier.registry_model import (
    Authorization,
    AuthorizationKind,
    Entity,
    Registry,
    Site,
    VeuStatus,
)
from verifier.store import open_store
from verifier.store.api import Store

PG = "postgresql://postgres@127.0.0.1:5432/test"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ENTITY = "ent-bench"
#: (device id, subsystem id, enforced watts): H100 SXM, H200, A100.
MODELS = ((0x233010DE, 0x16C110DE, 700), (0x233510DE, 0x18BE10DE, 700), (0x20B010DE, 0, 400))
COUNTRIES = ("US", "DE", "FR", "GB", "JP", "NL", "IE", "SE")
POSTURE = json.dumps({"disk-encryption": "pass", "secure-boot": "pass"}, separators=(",", ":"))


def _us(when: datetime) -> int:
    return (when - _EPOCH) // timedelta(microseconds=1)


def _agent(host: int) -> str:
    return f"agt-{host:08x}"


def _uuid(host: int, index: int) -> str:
    return f"GPU-{host:08x}-{index:04x}-4000-8000-{host * 16 + index:012x}"


def registry(sites: int) -> Registry:
    entity = Entity(ENTITY, "Bench Compute", "US", "US", VeuStatus.UVEU)
    site_list = tuple(
        Site(f"site-{s:03d}", ENTITY, COUNTRIES[s % len(COUNTRIES)], 0.0, 0.0) for s in range(sites)
    )
    auth = Authorization("auth-bench", ENTITY, AuthorizationKind.UVEU, COUNTRIES, (),
                         None, None, date(2025, 1, 1), date(2030, 1, 1))  # fmt: skip
    return Registry(entities=(entity,), sites=site_list, authorizations=(auth,))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: bytes | int) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def evidence_envelope(host: int, per_host: int, signer: SoftwareSigner) -> bytes:
    """A signed evidence envelope (protobuf, docs/protocol.md §2 and §4) listing the host's
    GPUs: only the fields a report check reads, encoded by hand."""
    device, subsystem, _ = MODELS[host % len(MODELS)]
    pci = _field(2, device) + _field(3, subsystem)
    gpus = b"".join(
        _field(10, _field(3, _uuid(host, i).encode()) + _field(9, pci)) for i in range(per_host)
    )
    payload = _field(1, _agent(host).encode()) + _field(2, 1) + gpus
    signed = dsse.sign(dsse.EVIDENCE_PAYLOAD_TYPE, payload, [signer])
    sig = signed.signatures[0]
    signature = _field(1, sig.sig) + _field(2, sig.keyid.encode())
    return (
        _field(1, payload) + _field(2, dsse.EVIDENCE_PAYLOAD_TYPE.encode()) + _field(3, signature)
    )


_TABLES = {
    "agents": "agent_id, site_id, hostname, machine_id, status, token_hash, enrolled_at, "
    "last_seq, last_hash, first_attested_at, last_seen_at, last_fresh_at, next_due, "
    "revoked_at, inventory_fp, last_log_index, agent_no",
    "agent_keys": "agent_id, keyid, spki_der, added_at, retired_at",
    "gpu_sightings": "uuid, agent_id, site_id, name, pci_device_id, first_seen, last_seen, "
    "present, last_log_index, pci_subsystem_id, power_limit_w, first_received",
    "gpu_presence": "uuid, agent_id, from_us, to_us, site_id, pci_device_id, pci_subsystem_id, "
    "power_limit_w, first_received, log_index",
    "agent_posture": "agent_id, since_us, checks, log_index",
    "posture_history": "agent_id, from_us, checks, log_index",
    "attestations": "agent_no, seq, leaf_hash, envelope_hash, payload_digest, fresh, "
    "created_at, received_at, log_index",
}


class _Fill:
    def __init__(self, hosts: int, per_host: int, sites: int, signer: SoftwareSigner) -> None:
        self.hosts, self.per_host, self.sites, self.signer = hosts, per_host, sites, signer
        self.t0 = _us(datetime.now(UTC) - timedelta(days=3))
        self.entries: dict[int, int] = {}  # site -> log index of its real entry

    def agents(self, table: str) -> Iterator[tuple[Any, ...]]:
        t0, key = self.t0, self.signer.public_key
        for host in range(self.hosts):
            agent = _agent(host)
            if table == "agents":
                yield (agent, f"site-{host % self.sites:03d}", f"node-{host}", f"{host:032x}",
                       "active", bytes(32), t0, 0, b"", t0, t0, t0, t0 + 10**12, None,
                       bytes(32), None, host + 1)  # fmt: skip
            else:
                yield agent, key.keyid, key.spki_der, t0, None

    def rows(self, table: str) -> Iterator[tuple[Any, ...]]:
        t0, now = self.t0, _us(datetime.now(UTC))
        for host in range(self.sites, self.hosts):  # each site's first host was accepted
            agent, site = _agent(host), host % self.sites
            index = self.entries[site]
            if table in ("agent_posture", "posture_history"):
                yield agent, t0, POSTURE, index
                continue
            if table == "attestations":
                digest = hashlib.sha256(agent.encode()).digest()
                # Attestations are keyed by log index (store migration 0014) and only the
                # site's first host has a real entry: the others get indices past the log's
                # end (their leaf hash, which the row carries since migration 0017, is never
                # read: the report counts agents attested per day).
                yield host + 1, 1, digest, digest, digest, 1, now, now, _UNLOGGED + host
                continue
            device, subsystem, watts = MODELS[host % len(MODELS)]
            for i in range(self.per_host):
                uuid = _uuid(host, i)
                if table == "gpu_sightings":
                    yield (uuid, agent, f"site-{site:03d}", "GPU", device, t0, t0, 1, index,
                           subsystem, watts, t0)  # fmt: skip
                else:
                    yield (uuid, agent, t0, None, f"site-{site:03d}", device, subsystem, watts,
                           t0, index)  # fmt: skip


#: Log indices of the filled attestation rows beyond the real log (see `rows`).
_UNLOGGED = 1 << 40


def _bulk(url: str, tables: list[str], rows: Any) -> None:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            for table in tables:
                columns = _TABLES[table]
                marks = ", ".join("?" * len(columns.split(",")))
                conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows(table))
        return
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url) as pg, pg.cursor() as cur:
        for table in tables:
            with cur.copy(f"COPY {table} ({_TABLES[table]}) FROM STDIN") as copy:
                for row in rows(table):
                    copy.write_row(row)
        cur.execute("ANALYZE")


def fill(store: Store, url: str, gpus: int, sites: int, per_host: int = 8) -> int:
    """The entity's fleet of `gpus` GPUs over `sites` sites; returns the GPUs filled."""
    hosts = max(sites, gpus // per_host)
    now = datetime.now(UTC)
    store.import_registry(registry(sites), now)
    plan = _Fill(hosts, per_host, sites, SoftwareSigner.generate("ed25519"))
    _bulk(url, ["agents", "agent_keys"], plan.agents)
    for host in range(sites):
        raw = evidence_envelope(host, per_host, plan.signer)
        device, subsystem, watts = MODELS[host % len(MODELS)]
        claims = tuple(
            GpuClaim(_uuid(host, i), "GPU", device, pci_subsystem_id=subsystem,
                     power_limit_w=watts)
            for i in range(per_host)
        )  # fmt: skip
        item = VerifiedAttestation(
            _agent(host), 1, b"", raw, hashlib.sha256(raw).digest(), hashlib.sha256(raw).digest(),
            b"", Freshness.OFFLINE, now, now, claims,
            posture=(("disk-encryption", "pass"), ("secure-boot", "pass")),
        )  # fmt: skip
        (outcome,) = store.accept([item], now)
        if isinstance(outcome, Exception):
            raise outcome
        plan.entries[host] = outcome.log_index
    tables = ["gpu_sightings", "gpu_presence", "agent_posture", "posture_history", "attestations"]
    _bulk(url, tables, plan.rows)
    return hosts * per_host


def _run(argv: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, done


def measure(url: str, gpus: int, sites: int, work: Path) -> dict[str, Any]:
    store = open_store(url)
    try:
        filled = fill(store, url, gpus, sites)
    finally:
        store.close()
    state = work / "state"
    state.mkdir(mode=0o700)
    config = work / "verifier.toml"
    database = url.removeprefix("sqlite:///")
    config.write_text(f'state_dir = "{state}"\ndatabase = "{database}"\n')
    verifier = [sys.executable, "-m", "verifier.cli", "--config", str(config)]
    # A half-year ending today: every coverage point is read, as for a semi-annual report.
    today = datetime.now(UTC).date()
    period = ["--from", str(today - timedelta(days=181)), "--to", str(today)]
    out, page, key = work / "r.json", work / "r.html", work / "report.pub"
    create = ["report", "create", "--entity", ENTITY, *period, "--out", str(out)]
    report_s, done = _run([*verifier, *create, "--html", str(page)])
    if done.returncode != 0:
        raise SystemExit(f"report create failed: {done.stderr[-2000:]}")
    rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    _run([*verifier, "report", "key", "--out", str(key)])
    report_tool = [sys.executable, "-m", "attest.report_cli", "verify", str(out), "--key", str(key)]
    verify_s, checked = _run(report_tool)
    if checked.returncode != 0:
        raise SystemExit(f"the report did not verify: {checked.stderr[-2000:]}")
    return {
        "gpus": filled,
        "sites": sites,
        "report_s": round(report_s, 2),
        "report_peak_rss_mb": round(rss_kb / 1024, 1),
        "verify_s": round(verify_s, 2),
        "report_bytes": out.stat().st_size,
    }


def report_figures(gpus: int, store: str) -> dict[str, float]:
    """`report_s` and `report_peak_rss_mb` for an entity holding `gpus` GPUs on `store`
    ("sqlite" or "postgres")."""
    found = run(gpus, store, sites=50)
    return {"report_s": found["report_s"], "report_peak_rss_mb": found["report_peak_rss_mb"]}


def run(gpus: int, store: str, sites: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if store == "sqlite":
            return {"store": store, **measure(f"sqlite:///{work / 'bench.db'}", gpus, sites, work)}
        import psycopg  # noqa: PLC0415

        schema = "bench_" + secrets.token_hex(6)
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        try:
            url = f"{PG}?options=-csearch_path%3D{schema}"
            return {"store": store, **measure(url, gpus, sites, work)}
        finally:
            with psycopg.connect(PG, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, default=1_000_000)
    parser.add_argument("--sites", type=int, default=50)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    print(json.dumps(run(args.gpus, args.store, args.sites)))


if __name__ == "__main__":
    main()
