"""Transparency-log benchmark: appends through the accept transaction, and proofs from the
stored Merkle nodes of a large log (docs/design.md §9).

    python -m benchmarks.tlog [--entries 10000000] [--store sqlite|postgres] [--appends 51200]
                              [--batch 256] [--envelope-bytes 3400] [--rounds 200]
                              [--report-gpus 1000000]

Opens a fresh store (SQLite in a temporary directory, or a temporary PostgreSQL schema in
database `test` on 127.0.0.1:5432, dropped afterwards) and fills its log with `--entries`
entries.

Shortcut: the filled entries (attestation rows, which carry the log's leaves since migration
0017, of one synthetic agent; their log_nodes; the head's size) are
bulk-inserted with direct SQL (executemany in transactions of 65,536 leaves on SQLite, binary
COPY on PostgreSQL), because appending ten million envelopes through the accept transaction
would take the benchmark hours; their leaf hashes are of synthetic entries whose envelopes are
not stored. The nodes are computed with attest.merkle (`node_hash` within each aligned block of
65,536 leaves, a `Frontier` over the blocks' roots above it), in memory bounded by one block.
The benchmark checks that `Store.log_root` of the filled log equals the root computed while
filling, and verifies every proof it times. Everything measured then goes through the store's
public API.

- `append_per_s`: envelopes made durable per second by `Store.accept` on top of the filled
  log, in batches of `--batch` items (the verifier's `store.batch_max`, 256: what the group
  committer hands the store under load), each item the next heartbeat of another agent
  (`--envelope-bytes` of envelope, 8 GPUs, unchanged inventory) with its log entry and Merkle
  nodes. The agents' first batch (their inventories) is not timed.
- `inclusion_proof_ms` / `_p99_ms`: `Store.log_inclusion_proof(index, size)` at the full size
  for `--rounds` random indices, median and 99th percentile (one read transaction each).
- `consistency_proof_ms` / `_p99_ms`: `Store.log_consistency_proof(old, size)` for random
  older sizes.
- `root_ms`: `Store.log_root(size)` at the full size, median.
- `fill_s`: the direct-SQL fill (not a figure of the product).
- `peak_rss_mb`: the process's peak resident set (ru_maxrss), fill included, taken before
  the report figures below.
- `report_s`, `report_peak_rss_mb`: when module `benchmarks.report` provides
  `report_figures(gpus, store)` and `--report-gpus` is not 0, its figures for a fleet of that
  many GPUs on the same kind of store, merged into the line; without that module (or when it
  fails, said on stderr) the line simply has no such keys.
Prints one JSON line; figures are of this machine and this run.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import random
import resource
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from attest import merkle
from attest.model import Freshness
from verifier.config import StoreConfig
from verifier.model import (
    Accepted,
    EnrollmentRequest,
    GpuClaim,
    NewToken,
    VerifiedAttestation,
    token_hash,
)
from verifier.store import open_store
from verifier.store.api import Store
from verifier.store.ops_log import STORED_LEVEL

PG = "postgresql://postgres@127.0.0.1:5432/test"
#: Leaves per aligned block of the fill: the nodes below a block's root are computed in memory.
BLOCK_LEVEL = 16
BLOCK = 1 << BLOCK_LEVEL
H100 = 0x233010DE

Node = tuple[int, int, bytes]
Leaf = tuple[int, bytes, bytes]


def _entry(index: int) -> tuple[bytes, bytes]:
    """(leaf hash, envelope hash) of synthetic entry `index`."""
    data = b"tlog-bench-entry-%d" % index
    return merkle.leaf_hash(data), hashlib.sha256(data).digest()


def _block_nodes(base: int, leaves: list[bytes]) -> Iterator[Node]:
    """Every node of level >= 1 inside the aligned block of leaves starting at `base`."""
    level, layer = 0, leaves
    while len(layer) > 1:
        level += 1
        layer = [merkle.node_hash(layer[i], layer[i + 1]) for i in range(0, len(layer), 2)]
        offset = base >> level
        yield from ((level, offset + i, h) for i, h in enumerate(layer))


def fill_rows(entries: int, root: list[bytes]) -> Iterator[tuple[list[Leaf], list[Node]]]:
    """The log's rows, block by block: (leaf rows, node rows); the last item's nodes close
    the partial block, and the log's root is then appended to `root`. Memory is one block."""
    upper = merkle.Frontier()  # over block roots: its level l is level BLOCK_LEVEL + l
    full = entries // BLOCK
    for block in range(full):
        base = block * BLOCK
        pairs = [_entry(i) for i in range(base, base + BLOCK)]
        leaves = [leaf for leaf, _ in pairs]
        nodes = list(_block_nodes(base, leaves))
        upper, above = upper.append_with_nodes(nodes[-1][2])
        nodes += [(BLOCK_LEVEL + n.level, n.index, n.hash) for n in above[1:]]
        yield [(base + i, pair[0], pair[1]) for i, pair in enumerate(pairs)], nodes
    base = full * BLOCK
    tree = merkle.Frontier(base, upper.hashes)
    rows: list[Leaf] = []
    nodes = []
    for index in range(base, entries):
        leaf, envelope_hash = _entry(index)
        rows.append((index, leaf, envelope_hash))
        tree, completed = tree.append_with_nodes(leaf)
        nodes += [(n.level, n.index, n.hash) for n in completed[1:]]
    yield rows, nodes
    root.append(tree.root())


def _keyed(nodes: list[Node]) -> list[tuple[int, int, bytes]]:
    """Node rows as the store keys and keeps them (migrations 0014, 0016): (tree size, level,
    hash) of the levels it stores, in order."""
    return sorted(
        ((index + 1) << level, level, hashed)
        for level, index, hashed in nodes
        if level >= STORED_LEVEL
    )


_FILL_COLUMNS = (
    "log_index, agent_no, seq, prev_index, leaf_hash, envelope_hash, payload_digest, fresh, "
    "created_at, received_at"
)
#: The number of the synthetic agent whose chain the filled entries are: no enrolled agent's.
_FILL_AGENT = 0


def _attestation(index: int, leaf: bytes, envelope_hash: bytes) -> tuple[object, ...]:
    """The attestation row of filled entry `index`: one synthetic agent's chain, whose seq is
    the index + 1 (the accept path's own agents come after it)."""
    prev = index - 1 if index else None
    return (index, _FILL_AGENT, index + 1, prev, leaf, envelope_hash, bytes(32), 0, 0, 0)


def fill(url: str, entries: int) -> bytes:
    """Fill the log by direct SQL; returns its root as computed while filling."""
    root: list[bytes] = []
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute("PRAGMA synchronous=OFF")  # the fill only; the store keeps FULL
            for leaves, nodes in fill_rows(entries, root):
                conn.executemany(
                    f"INSERT INTO attestations ({_FILL_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [_attestation(*leaf_row) for leaf_row in leaves],
                )
                conn.executemany(
                    "INSERT INTO log_nodes (tree_size, level, hash) VALUES (?, ?, ?)",
                    _keyed(nodes),
                )
                conn.commit()
            conn.execute("UPDATE log_head SET size = ? WHERE id = 1", (entries,))
        return root[0]
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url) as pg, pg.cursor() as cur:
        for leaves, nodes in fill_rows(entries, root):
            with cur.copy(
                f"COPY attestations ({_FILL_COLUMNS}) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(
                    ["int8", "int8", "int8", "int8", "bytea", "bytea", "bytea", "int2", "int8",
                     "int8"]
                )  # fmt: skip
                for leaf_row in leaves:
                    copy.write_row(_attestation(*leaf_row))
            with cur.copy(
                "COPY log_nodes (tree_size, level, hash) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int8", "int4", "bytea"])
                for node_row in _keyed(nodes):
                    copy.write_row(node_row)
            pg.commit()
        cur.execute("UPDATE log_head SET size = %s WHERE id = 1", (entries,))
        pg.commit()
        cur.execute("ANALYZE attestations")
        cur.execute("ANALYZE log_nodes")
    return root[0]


def _enroll(store: Store, agents: int, now: datetime) -> list[str]:
    ids = []
    for number in range(agents):
        token = secrets.token_urlsafe(16)
        store.create_token(NewToken(token_hash(token), "site-a", now, now + timedelta(hours=1)))
        spki = secrets.token_bytes(44)
        agent_id = f"agt-{number:05d}"
        request = EnrollmentRequest(
            token_hash(token), agent_id, spki, hashlib.sha256(spki).hexdigest(), agent_id, "m"
        )
        store.enroll(request, now)
        ids.append(agent_id)
    return ids


class _Agents:
    """Each agent's next heartbeat: the next seq of its chain, same inventory."""

    def __init__(self, ids: list[str], envelope_bytes: int) -> None:
        self.heads = dict.fromkeys(ids, (0, b""))
        self.size = envelope_bytes
        self.inventory = {
            agent_id: tuple(
                GpuClaim(f"GPU-{agent_id}-{g}", "NVIDIA H100 80GB HBM3", H100) for g in range(8)
            )
            for agent_id in ids
        }

    def batch(self, at: datetime) -> list[VerifiedAttestation]:
        items = []
        for agent_id, (seq, last) in self.heads.items():
            envelope = secrets.token_bytes(self.size)
            digest = hashlib.sha256(envelope).digest()
            items.append(
                VerifiedAttestation(
                    agent_id, seq + 1, last, envelope, digest, hashlib.sha256(digest).digest(),
                    b"", Freshness.OFFLINE, at, at, self.inventory[agent_id],
                )
            )  # fmt: skip
            self.heads[agent_id] = (seq + 1, digest)
        return items


def _accepted(outcomes: list[Any]) -> int:
    for outcome in outcomes:
        if not isinstance(outcome, Accepted):
            raise SystemExit(f"an append was refused: {outcome!r}")
    return len(outcomes)


def measure_appends(store: Store, args: argparse.Namespace) -> tuple[float, int]:
    """(appends per second, appends timed)."""
    now = datetime.now(UTC)
    agents = _Agents(_enroll(store, args.batch, now), args.envelope_bytes)
    _accepted(store.accept(agents.batch(now), now))  # inventories: not the steady state
    done, spent = 0, 0.0
    step = 0
    while done < args.appends:
        step += 1
        at = now + timedelta(seconds=step)
        items = agents.batch(at)
        start = time.perf_counter()
        outcomes = store.accept(items, at)
        spent += time.perf_counter() - start
        done += _accepted(outcomes)
    return done / spent, done


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = call()
    return (time.perf_counter() - start) * 1000, result


def _p99(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * 0.99))]


def measure_proofs(store: Store, size: int, rounds: int) -> dict[str, float]:
    rng = random.Random(size)
    root_ms, root = _timed(partial(store.log_root, size))
    roots = [root_ms, *(_timed(partial(store.log_root, size))[0] for _ in range(4))]
    inclusion, consistency = [], []
    for _ in range(rounds):
        index = rng.randrange(size)
        spent, proof = _timed(partial(store.log_inclusion_proof, index, size))
        inclusion.append(spent)
        merkle.verify_inclusion(_entry(index)[0], index, size, proof, root)
        old = rng.randint(1, size)
        spent, proof = _timed(partial(store.log_consistency_proof, old, size))
        consistency.append(spent)
        merkle.verify_consistency(old, size, store.log_root(old), root, proof)
    return {
        "inclusion_proof_ms": round(statistics.median(inclusion), 3),
        "inclusion_proof_p99_ms": round(_p99(inclusion), 3),
        "consistency_proof_ms": round(statistics.median(consistency), 3),
        "consistency_proof_p99_ms": round(_p99(consistency), 3),
        "root_ms": round(statistics.median(roots), 3),
    }


def measure(store: Store, url: str, args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    root = fill(url, args.entries)
    fill_s = time.perf_counter() - start
    if store.log_root(args.entries) != root:
        raise SystemExit("the stored tree's root differs from the one computed while filling")
    figures: dict[str, Any] = {"entries": args.entries, "store": args.store}
    figures.update(measure_proofs(store, args.entries, args.rounds))
    rate, figures["appended"] = measure_appends(store, args)
    figures["append_per_s"] = round(rate, 1)
    figures["batch"] = args.batch
    figures["fill_s"] = round(fill_s, 1)
    return figures


def report(args: argparse.Namespace) -> dict[str, float]:
    """`benchmarks.report.report_figures` when that module exists (another benchmark's)."""
    if args.report_gpus <= 0 or importlib.util.find_spec("benchmarks.report") is None:
        return {}
    module = importlib.import_module("benchmarks.report")
    figures = getattr(module, "report_figures", None)
    if figures is None:
        return {}
    try:
        found: dict[str, float] = figures(gpus=args.report_gpus, store=args.store)
    except Exception as exc:  # noqa: BLE001 - another benchmark's failure must not lose ours
        print(f"benchmarks.report failed, its figures are left out: {exc!r}", file=sys.stderr)
        return {}
    return found


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.store == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            store = open_store(url)
            try:
                return measure(store, url, args)
            finally:
                store.close()
    import psycopg  # noqa: PLC0415

    schema = "bench_" + secrets.token_hex(6)
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{PG}?options=-csearch_path%3D{schema}"
    try:
        store = open_store(url)
        try:
            return measure(store, url, args)
        finally:
            store.close()
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=10_000_000)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--appends", type=int, default=51_200)
    parser.add_argument("--batch", type=int, default=StoreConfig().batch_max)
    parser.add_argument("--envelope-bytes", type=int, default=3400)
    parser.add_argument("--rounds", type=int, default=200, help="proofs timed of each kind")
    parser.add_argument("--report-gpus", type=int, default=1_000_000, help="0: skip")
    args = parser.parse_args()
    if args.entries < 1:
        parser.error("--entries must be at least 1")
    figures = run(args)
    # Before the report benchmark runs in this process: its peak is its own figure.
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    figures.update(report(args))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
