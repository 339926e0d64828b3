"""Location through the real verifier across real network paths (issue 15, part 4).

`gpu-attest-verifier serve` (SQLite) runs in one network namespace and acts as the landmark
itself (`landmark = ...` in verifier.toml), as `make demo` sets it up: the round trips are timed
by the process whose registry and store judge them, and one process fewer has to start. Simulated
agents (`gpu-attest-agent run --simulate`) run in namespaces of their own, each with a direct
link to the verifier's attest and enroll ports and a delayed path (tests/netns.py: netem where
the kernel has it, a delaying relay where it does not) to the landmark port. Each agent is
enrolled at a registry site 2,000 km from the landmark's registry coordinates (light needs
13.3 ms for the round trip):

- the agent ~1 ms from the landmark: `findings --json` holds `location-contradicted` for it and
  `fleet --json` says its site is `contradicted`;
- the agent ~30 ms from the landmark: its site is `verified`, never contradicted;
- the agent whose probes a host ~1 ms from the landmark relays to it over ~30 ms more: its site
  is `verified`, never contradicted (a relay only adds delay, docs/design.md §16).

The decisions are serve's location pass after each findings sweep (verifier/locate.py,
docs/design.md §16); tests/e2e/test_location_netns.py takes them through attest.landmark alone.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from attest.landmark import EARTH_RADIUS_KM, great_circle_km, min_rtt_ns
from tests.netns import ROOT, Endpoint, Lab, Link, Namespace

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ATTEST_PORT, ENROLL_PORT, LANDMARK_PORT, RELAY_PORT = 7443, 7444, 7445, 7446
LANDMARK_ID, LANDMARK_LAT, LANDMARK_LON = "lm-fra", 50.11, 8.68
CLAIMED_KM = 2000.0
#: How long the verifier has to reach every verdict once the agents run.
DEADLINE_S = 90.0


def point_at(lat: float, lon: float, bearing_deg: float, km: float) -> tuple[float, float]:
    """The point `km` along the great circle from (lat, lon) at `bearing_deg` (a sphere of
    EARTH_RADIUS_KM, as attest.landmark measures)."""
    phi, lam, theta = math.radians(lat), math.radians(lon), math.radians(bearing_deg)
    d = km / EARTH_RADIUS_KM
    phi2 = math.asin(math.sin(phi) * math.cos(d) + math.cos(phi) * math.sin(d) * math.cos(theta))
    lam2 = lam + math.atan2(
        math.sin(theta) * math.sin(d) * math.cos(phi), math.cos(d) - math.sin(phi) * math.sin(phi2)
    )
    return math.degrees(phi2), (math.degrees(lam2) + 540) % 360 - 180


@dataclass(frozen=True)
class Host:
    """A simulated agent: its machine file, the site it is enrolled at (2,000 km from the
    landmark at `bearing`, in `country`) and its namespace's role name."""

    role: str
    machine: str
    site: str
    bearing: float
    country: str


NEAR = Host("near", "h100-node.toml", "t-osl1", 0, "NO")  # 68.1 N 8.7 E
FAR = Host("far", "h200-node.toml", "t-dza1", 200, "DZ")  # 32.9 N 1.5 E
RELAYED = Host("relayed", "gb200-node.toml", "t-ath1", 135, "GR")  # 36.1 N 24.4 E
HOSTS = (NEAR, FAR, RELAYED)


@dataclass
class Verifier:
    config: Path
    tmp: Path
    attest: dict[str, Endpoint]  # per agent role, the attest port over its direct link

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "verifier.cli", "--config", str(self.config), *args],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise AssertionError(f"verifier {' '.join(args)} exited {done.returncode}: "
                                 f"{done.stderr.strip()[-2000:]}")  # fmt: skip
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json"))


def _registry(verifier: Verifier, landmark_toml: Path) -> Path:
    lines = ['[[entity]]\nid = "tenant"\nname = "Tenant"\nhq_country = "DE"\nveu = "none"\n']
    for host in HOSTS:
        lat, lon = point_at(LANDMARK_LAT, LANDMARK_LON, host.bearing, CLAIMED_KM)
        assert great_circle_km(LANDMARK_LAT, LANDMARK_LON, lat, lon) == pytest.approx(CLAIMED_KM)
        lines.append(
            f'[[site]]\nid = "{host.site}"\nentity = "tenant"\ncountry = "{host.country}"\n'
            f"lat = {lat:.6f}\nlon = {lon:.6f}\nfacility_power_kw = 1000\n"
        )
    lines.append(verifier.cli("landmark", "enroll", "--config", str(landmark_toml)))
    path = verifier.tmp / "registry.toml"
    path.write_text("\n".join(lines))
    return path


def _verifier(lab: Lab, tmp: Path, ns: Namespace, direct: dict[str, Link]) -> Verifier:
    """Configure, register and start `serve` in `ns`, with its landmark on LANDMARK_PORT; each
    agent reaches its attest and enroll ports over its `direct` link (no delay)."""
    names = [link.b_addr for link in direct.values()]
    landmark = tmp / "landmark.toml"
    landmark.write_text(
        f'id = "{LANDMARK_ID}"\nlat = {LANDMARK_LAT}\nlon = {LANDMARK_LON}\n'
        f'listen = "0.0.0.0:{LANDMARK_PORT}"\nstate_dir = "{tmp / "verifier" / "landmark"}"\n'
        'metrics_listen = ""\n'
    )
    config = tmp / "verifier.toml"
    config.write_text(
        f'listen = "0.0.0.0:{ATTEST_PORT}"\nenroll_listen = "0.0.0.0:{ENROLL_PORT}"\n'
        f'state_dir = "{tmp / "verifier"}"\nmetrics_listen = ""\nlandmark = "{landmark}"\n'
        f"[tls]\nnames = {json.dumps(names)}\n[fleet]\nsweep_interval_s = 1\n"
    )
    attest = {role: Endpoint(link.b_addr, ATTEST_PORT) for role, link in direct.items()}
    verifier = Verifier(config, tmp, attest)
    verifier.cli("registry", "import", str(_registry(verifier, landmark)))
    serve = [sys.executable, "-m", "verifier.cli", "--config", str(config), "serve"]
    lab.start(ns, serve, "verifier serving", timeout=60)
    (tmp / "ca.pem").write_text(verifier.cli("ca", "export"))
    return verifier


def _agent(lab: Lab, verifier: Verifier, host: Host, ns: Namespace, landmark: Endpoint) -> str:
    """Enroll `host` at its site from `ns` and run its agent there, probing `landmark`; its
    agent id."""
    state = verifier.tmp / host.role
    state.mkdir(mode=0o700)
    machine = str(ROOT / "examples" / "machines" / host.machine)
    token = verifier.cli("token", "create", "--site", host.site, "--ttl", "1h").strip()
    enrolled = ns.run(
        sys.executable, "-m", "agent.cli", "enroll", "--verifier",
        f"{verifier.attest[host.role].host}:{ENROLL_PORT}", "--token", token,
        "--ca", str(verifier.tmp / "ca.pem"), "--state-dir", str(state), "--simulate", machine,
    )  # fmt: skip
    agent_id = enrolled.split()[3]  # "enrolled as agent ID at site SITE"
    assert enrolled.startswith("enrolled as agent") and host.site in enrolled, enrolled
    config = verifier.tmp / f"{host.role}.toml"
    config.write_text(
        f'verifier = "{verifier.attest[host.role]}"\nstate_dir = "{state}"\n'
        f'interval_seconds = 2\ninventory_poll_seconds = 2\nlandmarks = ["{landmark}"]\n'
    )
    run = [sys.executable, "-m", "agent.cli", "run", "--config", str(config), "--simulate", machine]
    lab.start(ns, run, "started: verifier", timeout=60)
    return agent_id


@dataclass
class Seen:
    """What the verifier said, poll by poll: each site's statuses in order, the last fleet
    locations and the last open location findings."""

    statuses: dict[str, list[str]] = field(default_factory=dict)
    locations: dict[str, Any] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)

    def poll(self, verifier: Verifier) -> None:
        for row in verifier.json("fleet"):
            if row["location"] is not None:
                site = row["site_id"]
                self.locations[site] = row["location"]
                history = self.statuses.setdefault(site, [])
                if not history or history[-1] != row["location"]["status"]:
                    history.append(row["location"]["status"])
        self.findings = [f for f in verifier.json("findings") if f["rule"].startswith("location-")]

    def status(self, site: str) -> str | None:
        history = self.statuses.get(site)
        return history[-1] if history else None

    def contradicted_agents(self) -> set[str]:
        return {
            f["subject"].removeprefix("agent:")
            for f in self.findings
            if f["rule"] == "location-contradicted"
        }


def test_the_verifier_contradicts_a_near_agent_and_verifies_far_and_relayed_ones(
    netns_lab: Lab, tmp_path: Path
) -> None:
    lab = netns_lab
    home = lab.namespace("verifier")
    agents = {host.role: lab.namespace(host.role) for host in HOSTS}
    direct = {role: lab.link(ns, home) for role, ns in agents.items()}
    # The near host of RELAYED: ~1 ms from the landmark, relaying its probes ~30 ms on.
    relay_host = lab.namespace("relay")
    to_landmark = {
        NEAR.role: lab.path(agents[NEAR.role], home, LANDMARK_PORT, 0.0005),
        FAR.role: lab.path(agents[FAR.role], home, LANDMARK_PORT, 0.015),
    }
    lab.relay(
        relay_host, Endpoint("0.0.0.0", RELAY_PORT),
        lab.path(relay_host, home, LANDMARK_PORT, 0.0005), 0,
    )  # fmt: skip
    to_landmark[RELAYED.role] = lab.path(agents[RELAYED.role], relay_host, RELAY_PORT, 0.015)

    verifier = _verifier(lab, tmp_path, home, direct)
    started = time.monotonic()
    ids = {h.role: _agent(lab, verifier, h, agents[h.role], to_landmark[h.role]) for h in HOSTS}

    seen = Seen()
    want = {NEAR.site: "contradicted", FAR.site: "verified", RELAYED.site: "verified"}
    deadline = time.monotonic() + DEADLINE_S
    while True:
        seen.poll(verifier)
        got = {site: seen.status(site) for site in want}
        done = got == want and seen.contradicted_agents() == {ids[NEAR.role]}
        if done or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    took = time.monotonic() - started
    tails = [p.output.seen[-6:] for p in lab.processes]
    report = (
        f"after {took:.1f} s: statuses {seen.statuses}, agents {ids}, locations "
        f"{json.dumps(seen.locations, indent=1)}, location findings {seen.findings}, "
        f"process output {tails}"
    )
    assert got == want, report
    assert seen.contradicted_agents() == {ids[NEAR.role]}, report
    # A farther or relayed host never looked nearer than light allows, not even for one pass.
    assert "contradicted" not in seen.statuses[FAR.site] + seen.statuses[RELAYED.site], report

    near = seen.locations[NEAR.site]
    light_ms = min_rtt_ns(CLAIMED_KM) / 1e6
    assert near["contradicted_by"] and near["tightest"]["landmark"] == LANDMARK_ID, report
    assert 1.0 <= near["tightest"]["rtt_min_ms"] < light_ms, report  # the path's own delay
    assert near["tightest"]["site_km"] == pytest.approx(CLAIMED_KM, abs=0.1), report
    (finding,) = seen.findings
    assert finding["severity"] == "critical" and NEAR.site in finding["message"], report
    for host in (FAR, RELAYED):
        where = seen.locations[host.site]
        assert where["contradicted_by"] == [] and where["unmeasured_agents"] == [], report
        assert where["tightest"]["rtt_min_ms"] >= 30.0, report
        assert where["tightest"]["within_km"] > CLAIMED_KM, report
    # Relayed, the far host is at least as far as the near host that relays to it: >= 31 ms.
    assert seen.locations[RELAYED.site]["tightest"]["rtt_min_ms"] >= 31.0, report
