"""Captures from real GPU hosts (scripts/device_capture.sh, then scrubbed) parse and agree.

Each `fixtures/real-<model>.json` is `gpu-attest-agent inventory --json` output from a real
machine with identities scrubbed by scripts/scrub_capture.py. Every one must parse into the
model and satisfy the consistency rules; if the fixtures directory holds anything, at least one
real capture must be among it.
"""

from __future__ import annotations

import json
from pathlib import Path

from .capture_checks import check_capture

FIXTURES = Path(__file__).with_name("fixtures")


def test_real_captures_parse_and_agree() -> None:
    captures = sorted(FIXTURES.glob("real-*.json"))
    if FIXTURES.is_dir() and any(FIXTURES.iterdir()):
        assert captures, f"{FIXTURES} has files but no real-*.json capture"
    for path in captures:
        inventory = check_capture(json.loads(path.read_text()))
        assert inventory.gpus, path
