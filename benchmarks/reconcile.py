"""Reconciliation benchmark: a full `reconcile` over a large fleet, and the holdings upkeep of one
attestation that changes one host.

    python -m benchmarks.reconcile [--gpus 1000000] [--per-host 8] [--sites 200]
                                   [--countries 40] [--entities 50] [--store sqlite|postgres]
                                   [--rounds 21]

Fills a fresh store (SQLite in a temporary directory, or a temporary PostgreSQL schema in
database `test` on 127.0.0.1:5432, dropped afterwards) with `--gpus` GPUs, `--per-host` per
host, over `--sites` sites in `--countries` countries held by `--entities` entities of every
kind (UVEU, NVEU, none), and a registry with an authorization per entity.

Shortcut: agents, sightings, presence intervals and postures are bulk-inserted with direct SQL
(executemany on SQLite, COPY on PostgreSQL) in the columns the accept transaction writes,
because accepting a million GPUs' evidence one envelope at a time would take the benchmark
hours; everything measured then goes through the store's public API.

- `full_reconcile_s`: `Store.holdings()` + `Store.postures()` + the engine, as `reconcile` runs
  (today); `full_reconcile_at_s`: the same as of the end of yesterday (presence history).
- `live_start_s`: what `serve` does at start (docs/design.md §14): one snapshot read, the full
  judgment kept holder by holder, the findings stored.
- `accept_ms`: one `Store.accept` of an attestation whose inventory lost one GPU: the whole
  accept transaction (log entry, sightings, presence interval, holdings journal, commit).
- `incremental_update_ms` (median of `--rounds` hosts, and the max): the `LiveCompliance.step`
  that follows it, as `serve` runs it after the commit: read the journal from its position,
  judge again the one holder (and the caps of its countries) it touched, store the findings
  that changed (one transaction).
- `incremental_judge_ms`: the judging part of that step alone (`LiveReconciliation.apply`).
- `unchanged_step_ms`: a step after an attestation that changed nothing (one empty read).
- `peak_rss_mb`: the process's peak resident set (ru_maxrss), fill included.
Prints one JSON line; figures are of this machine and this run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import secrets
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from attest.model import Freshness
from verifier.compliance import LiveCompliance
from verifier.model import GpuClaim, VerifiedAttestation
from verifier.policy import builtin_packs, pack_in_force
from verifier.reconcile import reconcile
from verifier.reconcile.live import LiveReconciliation
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
#: (device id, subsystem id, enforced watts): H100 SXM, H200, A100, L40S, L4.
MODELS = (
    (0x233010DE, 0x16C110DE, 700),
    (0x233510DE, 0x18BE10DE, 700),
    (0x20B010DE, 0x134F10DE, 400),
    (0x26B910DE, 0x185110DE, 350),
    (0x27B810DE, 0x16CA10DE, 72),
)
COUNTRIES = (
    "US", "DE", "FR", "GB", "JP", "NL", "IE", "SE", "FI", "DK", "NO", "IT", "ES", "BE", "AT",
    "CA", "AU", "NZ", "KR", "TW", "AE", "SA", "IN", "BR", "MX", "SG", "MY", "TH", "ID", "VN",
    "PL", "CZ", "PT", "GR", "TR", "IL", "CL", "AR", "ZA", "CN",
)  # fmt: skip
CHANGED_HOST = 39
SAME_POSTURE = (("disk-encryption", "pass"), ("secure-boot", "pass"))
POSTURE = json.dumps(dict(SAME_POSTURE), separators=(",", ":"))


def _us(when: datetime) -> int:
    return (when - _EPOCH) // timedelta(microseconds=1)


def registry(sites: int, countries: int, entities: int) -> Registry:
    kinds = (VeuStatus.UVEU, VeuStatus.NVEU, VeuStatus.NONE)
    ents = tuple(
        Entity(f"ent-{e:03d}", f"Entity {e}", "US" if e % 2 else "GB", "US", kinds[e % 3])
        for e in range(entities)
    )
    site_list = tuple(
        Site(f"site-{s:03d}", f"ent-{s % entities:03d}", COUNTRIES[s % countries], 0.0, 0.0)
        for s in range(sites)
    )
    auth_kind = {
        VeuStatus.UVEU: AuthorizationKind.UVEU,
        VeuStatus.NVEU: AuthorizationKind.NVEU,
        VeuStatus.NONE: AuthorizationKind.LICENCE,
    }
    auths = tuple(
        Authorization(f"auth-{e.id}", e.id, auth_kind[e.veu], tuple(COUNTRIES[:countries]), (),
                      50_000, None, date(2025, 1, 1), date(2030, 1, 1))
        for e in ents
    )  # fmt: skip
    return Registry(entities=ents, sites=site_list, authorizations=auths)


def _agent(host: int) -> str:
    return f"agt-{host:08x}"


def _rows(table: str, hosts: int, per_host: int, sites: int, t0: int) -> Iterator[tuple[Any, ...]]:
    for host in range(hosts):
        agent, site = _agent(host), f"site-{host % sites:03d}"
        if table == "agents":
            yield (agent, site, f"node-{host}", f"{host:032x}", "active", bytes(32), t0, 0, b"",
                   t0, t0, t0, t0 + 10**12, None, bytes(32), host, host + 1)  # fmt: skip
            continue
        if table in ("agent_posture", "posture_history"):
            yield agent, t0, POSTURE, host
            continue
        device, subsystem, watts = MODELS[host % len(MODELS)]
        for index in range(per_host):
            uuid = f"GPU-{host:08x}-{index:04x}-4000-8000-{host * 16 + index:012x}"
            if table == "gpu_sightings":
                yield (uuid, agent, site, "GPU", device, t0, t0, 1, host, subsystem, watts, t0)
            else:
                yield (uuid, agent, t0, None, site, device, subsystem, watts, t0, host)


_TABLES = {
    "agents": "agent_id, site_id, hostname, machine_id, status, token_hash, enrolled_at, "
    "last_seq, last_hash, first_attested_at, last_seen_at, last_fresh_at, next_due, "
    "revoked_at, inventory_fp, last_log_index, agent_no",
    "gpu_sightings": "uuid, agent_id, site_id, name, pci_device_id, first_seen, last_seen, "
    "present, last_log_index, pci_subsystem_id, power_limit_w, first_received",
    "gpu_presence": "uuid, agent_id, from_us, to_us, site_id, pci_device_id, pci_subsystem_id, "
    "power_limit_w, first_received, log_index",
    "agent_posture": "agent_id, since_us, checks, log_index",
    "posture_history": "agent_id, from_us, checks, log_index",
}


def fill(url: str, hosts: int, per_host: int, sites: int, t0: int) -> None:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            for table, columns in _TABLES.items():
                marks = ", ".join("?" * len(columns.split(",")))
                conn.executemany(
                    f"INSERT INTO {table} ({columns}) VALUES ({marks})",
                    _rows(table, hosts, per_host, sites, t0),
                )
        return
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url) as pg, pg.cursor() as cur:
        for table, columns in _TABLES.items():
            with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in _rows(table, hosts, per_host, sites, t0):
                    copy.write_row(row)
        cur.execute("ANALYZE")


def _losing_one(host: int, per_host: int, now: datetime) -> VerifiedAttestation:
    """The host's next attestation (its first since the fill): its first GPU is gone."""
    device, subsystem, watts = MODELS[host % len(MODELS)]
    kept = tuple(
        GpuClaim(f"GPU-{host:08x}-{i:04x}-4000-8000-{host * 16 + i:012x}", "GPU", device,
                 pci_subsystem_id=subsystem, power_limit_w=watts)
        for i in range(1, per_host)
    )  # fmt: skip
    envelope = secrets.token_bytes(64)
    return VerifiedAttestation(
        _agent(host), 1, b"", envelope, hashlib.sha256(envelope).digest(),
        hashlib.sha256(envelope[:32]).digest(), b"", Freshness.OFFLINE, now, now, kept,
        posture=SAME_POSTURE,
    )  # fmt: skip


def measure(store: Store, url: str, args: argparse.Namespace) -> dict[str, Any]:
    hosts = max(1, args.gpus // args.per_host)
    now = datetime.now(UTC)
    store.import_registry(registry(args.sites, args.countries, args.entities), now)
    fill(url, hosts, args.per_host, args.sites, _us(now - timedelta(days=3)))
    pack = pack_in_force(builtin_packs(), now.date())

    def full(at: date | None) -> tuple[float, int]:
        start = time.perf_counter()
        on = at or now.date()
        result = reconcile(store.holdings(at), store.postures(at), store.load_registry(on),
                           pack, on)  # fmt: skip
        return time.perf_counter() - start, result.total.units

    full_s, units = full(None)
    full_at_s, _ = full(now.date() - timedelta(days=1))
    live = LiveCompliance(store, "")
    start = time.perf_counter()
    live.step(now)
    live_start_s = time.perf_counter() - start
    # Attestations that each change one host: its first GPU left the inventory. The hosts are
    # at site-039 (CN, Tier 3 with the default 40 countries), whose finding shows the count,
    # so every step has a finding to refresh and store. Medians over --rounds hosts.
    accept, step, judge = [], [], []
    with store.current_compliance() as state:
        judged = LiveReconciliation(
            state.holdings, state.postures, state.registry, pack, now.date()
        )
    changed = 0
    item = None
    for host in range(CHANGED_HOST, hosts, args.sites)[: args.rounds]:
        item = _losing_one(host, args.per_host, now)
        start = time.perf_counter()
        (outcome,) = store.accept([item], now)
        accept.append((time.perf_counter() - start) * 1000)
        if isinstance(outcome, Exception):
            raise outcome
        start = time.perf_counter()
        found = live.step(now)
        step.append((time.perf_counter() - start) * 1000)
        if found is None:
            raise SystemExit("the live step started again in full: nothing incremental measured")
        changed += len(found.raised) + len(found.cleared)
        # The judging alone, on a second judgment of the same fleet.
        delta = store.compliance_changes(outcome.log_index).deltas
        start = time.perf_counter()
        judged.apply(delta)
        judge.append((time.perf_counter() - start) * 1000)
    if item is None:
        raise SystemExit(f"no host at site-{CHANGED_HOST:03d}: give more --gpus or --sites")
    second = secrets.token_bytes(64)
    heartbeat = replace(item, seq=2, prev_hash=item.envelope_hash, envelope=second,
                        envelope_hash=hashlib.sha256(second).digest(),
                        payload_digest=hashlib.sha256(second[:32]).digest())  # fmt: skip
    (again,) = store.accept([heartbeat], now)
    if isinstance(again, Exception):
        raise again
    start = time.perf_counter()
    live.step(now)
    unchanged_ms = (time.perf_counter() - start) * 1000
    return {
        "gpus": units,
        "hosts": hosts,
        "store": args.store,
        "full_reconcile_s": round(full_s, 3),
        "full_reconcile_at_s": round(full_at_s, 3),
        "live_start_s": round(live_start_s, 3),
        "rounds": len(step),
        "accept_ms": round(statistics.median(accept), 3),
        "incremental_update_ms": round(statistics.median(step), 3),
        "incremental_update_max_ms": round(max(step), 3),
        "incremental_judge_ms": round(statistics.median(judge), 3),
        "unchanged_step_ms": round(unchanged_ms, 3),
        "findings_changed": changed,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, default=1_000_000)
    parser.add_argument("--per-host", type=int, default=8)
    parser.add_argument("--sites", type=int, default=200)
    parser.add_argument("--countries", type=int, default=40, choices=range(1, len(COUNTRIES) + 1))
    parser.add_argument("--entities", type=int, default=50)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--rounds", type=int, default=21, help="changed hosts measured")
    args = parser.parse_args()
    if args.store == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            store = open_store(url)
            try:
                print(json.dumps(measure(store, url, args)))
            finally:
                store.close()
        return
    import psycopg  # noqa: PLC0415

    schema = "bench_" + secrets.token_hex(6)
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{PG}?options=-csearch_path%3D{schema}"
    try:
        store = open_store(url)
        try:
            print(json.dumps(measure(store, url, args)))
        finally:
            store.close()
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


if __name__ == "__main__":
    main()
