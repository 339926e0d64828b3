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
