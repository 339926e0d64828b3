"""`python -m benchmarks.tlog` still runs on both stores and prints what docs/performance.md
quotes (tiny sizes, no figures asserted): a log filled past one 65,536-leaf block, so the fill's
block nodes, the frontier above them and the partial block all meet the stored-root check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_tlog_prints_its_figures(store: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.tlog", "--entries", "65539", "--appends", "40",
         "--batch", "8", "--rounds", "5", "--report-gpus", "0", "--store", store],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["entries"], result["store"], result["batch"]) == (65539, store, 8)
    assert result["appended"] == 40
    for key in (
        "append_per_s", "inclusion_proof_ms", "consistency_proof_ms", "root_ms", "peak_rss_mb",
    ):  # fmt: skip
        value = result[key]
        assert isinstance(value, float) and value > 0, key
    assert "report_s" not in result
