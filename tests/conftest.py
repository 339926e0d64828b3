"""Shared settings, and the fixture more than one area uses (netns_lab). Each area keeps its own
fixtures in its tests/<area>/conftest.py.

Hypothesis: developers get fresh random examples on every run (that is how the sshd_config
parser bug was found); CI runs a fixed, derandomized set so that a submission's verdict does not
depend on the draw. Bugs found locally are pinned with @example.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests import netns

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")


@pytest.fixture
def netns_lab() -> Iterator[netns.Lab]:
    """A lab of network namespaces (tests/netns.py), torn down after the test even when it fails;
    skips with the reason where namespaces cannot be made (fails in CI)."""
    netns.require_namespaces()
    with netns.Lab() as lab:
        yield lab
