"""benchmarks/report.py still runs and prints what docs/performance.md quotes (tiny sizes, no
figures): its report is created from a bulk-filled store and verifies offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_report_benchmark_prints_its_figures(store: str) -> None:
    argv = [sys.executable, "-m", "benchmarks.report", "--gpus", "400", "--sites", "3"]
    done = subprocess.run(
        [*argv, "--store", store], cwd=ROOT, capture_output=True, text=True, timeout=180,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["store"], result["gpus"], result["sites"]) == (store, 400, 3)
    for key in ("report_s", "report_peak_rss_mb", "verify_s"):
        assert isinstance(result[key], float) and result[key] > 0, key
