"""The benchmarks still run and print what docs/performance.md quotes (tiny sizes, no figures)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(module: str, *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(result, dict)
    return result


def test_ingest_prints_its_figures() -> None:
    result = _run(
        "benchmarks.ingest", "--agents", "4", "--seconds", "1", "--warmup-s", "0.5",
        "--floor-seconds", "1",
    )  # fmt: skip
    assert isinstance(result["accepted_per_s"], float) and result["accepted_per_s"] > 0
    for key in (
        "p50_ms", "p99_ms", "verifier_cpu_us_per_attestation", "verify_us", "efficiency",
        "verifier_rss_mb", "transport_floor_us", "efficiency_ceiling", "transport_floor_rss_mb",
    ):  # fmt: skip
        value = result[key]
        assert isinstance(value, float) and value > 0, key
    # Four streams may fit in pages already resident: only its presence is certain.
    assert isinstance(result["transport_floor_kb_per_stream"], (int, float))
    _check_cost_figures(result)


def _check_cost_figures(result: dict[str, object]) -> None:
    """The cost figures of docs/performance.md §14, and how they are derived."""
    floor, transport, p256 = (
        result["floor_us"],
        result["transport_floor_us"],
        result["verify_us_p256"],
    )
    assert isinstance(floor, float) and isinstance(transport, float) and isinstance(p256, float)
    # the floor is the bare transport plus one P-256 verification of the agent's envelope
    assert abs(floor - (transport + p256)) <= 0.11
    cpu, ratio = result["verifier_cpu_us_per_attestation"], result["overhead_ratio"]
    assert isinstance(cpu, float) and isinstance(ratio, float)
    assert ratio == pytest.approx(cpu / floor, rel=2e-3, abs=0.006)  # of rounded figures
    # Every accepted envelope adds its blob and rows. SQLite keeps the blob as it is; PostgreSQL
    # compresses it (TOAST) and grows by 8 KiB pages, which a short window may not fill.
    stored = result["stored_bytes_per_attestation"]
    assert isinstance(stored, int), stored
    assert stored > 1000 if result["store"] == "sqlite" else stored >= 0, stored
    # each accepted envelope's answer issues a challenge nonce: a row of the nonces' table
    nonces = result["stored_nonce_bytes_per_attestation"]
    assert isinstance(nonces, int), nonces
    assert 0 < nonces < stored if result["store"] == "sqlite" else 0 <= nonces <= stored, nonces
    written = result["verifier_write_kb_per_attestation"]
    # on PostgreSQL the database server writes, not the verifier
    assert isinstance(written, float) and (written > 0 or result["store"] == "postgres")


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_ingest_at_fleet_pace_prints_its_figures(store: str) -> None:
    # 40 agents at 1 s played by 8 streams: each stream sends every 0.2 s, 40 envelopes/s.
    result = _run(
        "benchmarks.ingest", "--agents", "8", "--pace-agents", "40", "--interval", "1",
        "--seconds", "1.5", "--warmup-s", "0.5", "--floor-seconds", "2", "--store", store,
    )  # fmt: skip
    assert (result["pace_agents"], result["pace_interval_s"]) == (40, 1.0)
    assert (result["interval_s"], result["offered_per_s"]) == (0.2, 40.0)
    assert result["workers"] is None
    accepted = result["accepted_per_s"]
    assert isinstance(accepted, float) and 10 < accepted <= 60, accepted
    _check_cost_figures(result)
    paced, p256, floor = (
        result["transport_floor_paced_us"], result["verify_us_p256"], result["floor_paced_us"]
    )  # fmt: skip
    assert isinstance(paced, float) and isinstance(p256, float) and isinstance(floor, float)
    assert paced > 0 and floor == pytest.approx(paced + p256, abs=0.11)
    cpu = result["verifier_cpu_us_per_attestation"]
    assert isinstance(cpu, float)
    assert result["overhead_ratio_paced"] == pytest.approx(cpu / floor, rel=2e-3, abs=0.006)
    if store == "postgres":
        assert isinstance(result["postgres_cpu_us_per_attestation"], float)
        assert isinstance(result["postgres_wal_kb_per_attestation"], float)


def test_fleet_memory_prints_its_figures() -> None:
    result = _run("benchmarks.fleet_memory", "--gpus", "400", "--chunk", "7", "--sweep")
    assert result["n_gpus"] == 400


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_reconcile_prints_its_figures(store: str) -> None:
    result = _run(
        "benchmarks.reconcile", "--gpus", "400", "--sites", "10", "--countries", "5",
        "--entities", "6", "--store", store,
    )  # fmt: skip
    assert (result["gpus"], result["hosts"]) == (400, 50)
    for key in ("full_reconcile_s", "full_reconcile_at_s", "incremental_update_ms", "peak_rss_mb"):
        value = result[key]
        assert isinstance(value, float) and value >= 0, key
