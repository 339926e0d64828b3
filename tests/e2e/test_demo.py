"""The README's first command keeps working: `make demo` runs scripts/demo.py, end to end.

Real processes over loopback: a verifier, five simulated hosts enrolling with one-time tokens,
the fleet read back, the cloned UUID found, the planted licence and UVEU-share violations found
by reconciliation with their arithmetic, the log checked offline as a regulator would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--state", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    out = done.stdout
    assert "5 hosts, 30 GPU records" in out
    assert "duplicate-gpu: gpu:GPU-9303fa81-971e-427a-073f-68bae45210bd" in out
    assert "licence-exceeded authorization:D1234567" in out
    assert "8 GPUs > max_units 4" in out
    assert "uveu-us-share entity:acme@US" in out and "31,664 / 444,976 TPP = 7.12%" in out
    assert "country cap (tier 2 countries" in out  # the policy pack, in short
    assert out.count("VALID") >= 2 and "INVALID" not in out
    assert "verifier exited 0" in out and "demo succeeded" in out
