"""Location across a real network path: `gpu-attest-verifier landmark serve` in one network
namespace, `gpu-attest-agent locate --json` in another, with delay on the path between them
(tests/netns.py: netem where the kernel has it, a delaying relay where it does not).

The decisions are the verifier's (docs/design.md §2: location is a bound, never a position),
taken here through attest.landmark on what the landmark measured:

- an agent ~1 ms from the landmark that claims a site 2,000 km away is contradicted;
- the same agent ~30 ms away is consistent with that claim;
- an agent whose traffic a nearer host relays to it only ever looks farther.

tests/attest/test_location_recorded.py takes the same decisions on measurements recorded from
these runs, and runs where namespaces cannot be made.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from attest.landmark import bound_km, contradicts, min_rtt_ns
from tests.agent.helpers import enrolled_state_dir
from tests.netns import Endpoint, Lab, Namespace

pytestmark = pytest.mark.slow

PORT = 7445
#: The claimed site is this far from the landmark (great-circle), a 13.3 ms round trip for light.
CLAIMED_KM = 2000.0


def _landmark(lab: Lab, tmp_path: Path) -> Namespace:
    """A namespace running `gpu-attest-verifier landmark serve` on PORT."""
    ns = lab.namespace("landmark")
    config = tmp_path / "landmark.toml"
    config.write_text(
        'id = "lm-fra"\nlat = 50.11\nlon = 8.68\n'
        f'state_dir = "{tmp_path / "lm"}"\nlisten = "0.0.0.0:{PORT}"\nmetrics_listen = ""\n'
    )
    argv = [sys.executable, "-m", "verifier.cli", "landmark", "serve", "--config", str(config)]
    lab.start(ns, argv, "serving", timeout=60)
    return ns


def _locate(ns: Namespace, tmp_path: Path, landmark: Endpoint) -> dict[str, Any]:
    """`gpu-attest-agent locate --json` in `ns` against `landmark`; its one row."""
    state = tmp_path / "agent"
    if not state.exists():
        state.mkdir(mode=0o700)
        enrolled_state_dir(state)
    config = tmp_path / f"agent-{ns.name}.toml"
    config.write_text(f'state_dir = "{state}"\nlandmarks = ["{landmark}"]\n')
    out = ns.run(sys.executable, "-m", "agent.cli", "locate", "--config", str(config), "--json")
    result = json.loads(out)
    assert result["agent_id"] == "agent-test-1"
    row: dict[str, Any] = result["landmarks"][0]
    assert len(result["landmarks"]) == 1
    assert row["ok"] is True and row["result"] == "ok", row
    assert (row["landmark_id"], row["probes"]) == ("lm-fra", 16)
    assert row["bound_km"] == pytest.approx(bound_km(_rtt_ns(row)), rel=1e-6)
    return row


def _rtt_ns(row: dict[str, Any]) -> int:
    return round(float(row["rtt_min_ms"]) * 1e6)


def test_an_agent_1_ms_away_cannot_be_at_a_site_2000_km_away(
    netns_lab: Lab, tmp_path: Path
) -> None:
    landmark = _landmark(netns_lab, tmp_path)
    agent = netns_lab.namespace("agent")
    rtt = _rtt_ns(_locate(agent, tmp_path, netns_lab.path(agent, landmark, PORT, 0.0005)))
    assert rtt >= 1_000_000  # the path's own delay: the landmark's clock saw it
    assert rtt < min_rtt_ns(CLAIMED_KM)
    assert contradicts(rtt, CLAIMED_KM)


def test_the_same_agent_30_ms_away_is_consistent_with_that_site(
    netns_lab: Lab, tmp_path: Path
) -> None:
    landmark = _landmark(netns_lab, tmp_path)
    agent = netns_lab.namespace("agent")
    rtt = _rtt_ns(_locate(agent, tmp_path, netns_lab.path(agent, landmark, PORT, 0.015)))
    assert rtt >= 30_000_000
    assert not contradicts(rtt, CLAIMED_KM)
    assert bound_km(rtt) > CLAIMED_KM


def test_an_agent_relayed_through_a_nearer_host_only_looks_farther(
    netns_lab: Lab, tmp_path: Path
) -> None:
    """A host 1 ms from the landmark passes the probe on to the agent, 30 ms farther: the
    measurement is of the far agent (it holds the key), and it is never nearer than the relay."""
    landmark = _landmark(netns_lab, tmp_path)
    near, far = netns_lab.namespace("near"), netns_lab.namespace("far")
    to_landmark = netns_lab.path(near, landmark, PORT, 0.0005)
    netns_lab.relay(near, Endpoint("0.0.0.0", PORT + 1), to_landmark, 0)
    relayed = _rtt_ns(_locate(far, tmp_path, netns_lab.path(far, near, PORT + 1, 0.015)))
    direct = _rtt_ns(_locate(near, tmp_path, to_landmark))
    assert relayed >= direct + 30_000_000, (direct, relayed)
    # Relayed, the agent can no longer be shown away from the site the near host could not be at.
    assert contradicts(direct, CLAIMED_KM)
    assert not contradicts(relayed, CLAIMED_KM)
