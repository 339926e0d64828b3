"""Shared settings. Each area keeps its own fixtures in its tests/<area>/conftest.py.

Hypothesis: developers get fresh random examples on every run (that is how the sshd_config
parser bug was found); CI runs a fixed, derandomized set so that a submission's verdict does not
depend on the draw. Bugs found locally are pinned with @example.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")
