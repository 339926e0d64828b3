"""Location checks, as pure functions: landmark statements and the registry in, each site's
location status and the findings out (docs/design.md §16).

A statement counts only when the registry's key for its landmark signed it, it is about the
agent that carried it and a key that agent held, every answer verifies, and the landmark's time
is not after the evidence reached us. Distances use the registry's coordinates for the
landmark and the site, never the statement's. For each agent and landmark the least round trip
within the deadline is kept (queuing only ever adds delay):

- contradicted: some landmark answered faster than light allows over the distance from it to
  the site the agent is enrolled at, `rtt_min < 2 d / c`; the host is not there;
- verified: every active agent of the site has a counting measurement within the deadline, and
  none contradicts the site;
- unverified: otherwise (no landmark measured some host of the site within the deadline).

A verified site is within `c * rtt_min / 2` of each landmark that measured it: a bound on
distance, not a position.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

from attest import landmark as lm
from attest.errors import AttestError, KeyMaterialError
from attest.keys import PublicKey
from attest.tomlconf import format_duration
from verifier import geo
from verifier.findings import agent_subject
from verifier.geo import Clearance
from verifier.model import FindingDraft, Severity
from verifier.policy.model import PolicyPack
from verifier.registry_model import Landmark, Site

LOCATION_CONTRADICTED = "location-contradicted"
LOCATION_UNVERIFIED = "location-unverified"
LOCATION_RULES = (LOCATION_CONTRADICTED, LOCATION_UNVERIFIED)
VALID = "valid"

Status = Literal["verified", "contradicted", "unverified"]


def site_subject(site_id: str) -> str:
    return f"site:{site_id}"


@dataclass(frozen=True)
class CarriedStatement:
    """A landmark statement as an accepted evidence carried it (not checked yet)."""

    log_index: int
    position: int
    agent_id: str
    landmark_id: str
    received_at: datetime
    statement: bytes


@dataclass(frozen=True)
class Verdict:
    """What checking a carried statement found: VALID with its figures, or why it does not
    count."""

    log_index: int
    position: int
    verdict: str
    rtt_min_ns: int | None = None
    probes: int | None = None
    measured_at: datetime | None = None


@dataclass(frozen=True)
class Measurement:
    """A statement that counts, as the store keeps it."""

    log_index: int
    agent_id: str
    site_id: str
    landmark_id: str
    rtt_min_ns: int
    probes: int
    measured_at: datetime


@dataclass(frozen=True)
class Bound:
    """One landmark's least round trip to one agent, against the agent's site."""

    landmark_id: str
    agent_id: str
    rtt_min_ns: int
    bound_km: float  # the agent is within this distance of the landmark
    site_km: float  # the registry's distance from the landmark to the site
    contradicted: bool
    log_index: int
    measured_at: datetime


@dataclass(frozen=True)
class SiteLocation:
    site_id: str
    status: Status
    reason: str
    bounds: tuple[Bound, ...]  # per agent and landmark, least round trip first
    unmeasured: tuple[str, ...]  # active agents with no counting measurement in the deadline
    tier3: Clearance | None = None

    @property
    def tightest(self) -> Bound | None:
        return min(self.bounds, key=lambda b: b.bound_km, default=None)

    @property
    def evidence(self) -> tuple[int, ...]:
        return tuple(sorted({b.log_index for b in self.bounds}))


def check_statement(
    carried: CarriedStatement,
    landmarks: Mapping[str, Landmark],
    agent_keys: Collection[bytes],
    *,
    clock_skew: timedelta,
) -> Verdict:
    """Check one carried statement; never raises for what the statement holds."""

    def refused(reason: str) -> Verdict:
        return Verdict(carried.log_index, carried.position, reason)

    landmark = landmarks.get(carried.landmark_id)
    if landmark is None:
        return refused(f"landmark {carried.landmark_id!r} is not in the registry")
    try:
        key = PublicKey.from_spki_der(landmark.public_key)
    except KeyMaterialError as exc:
        return refused(f"the registry's key for landmark {landmark.id!r} is unusable: {exc}")
    try:
        statement = lm.verify_statement(
            carried.statement, key, agent_id=carried.agent_id, agent_keys=agent_keys
        )
    except AttestError as exc:
        return refused(f"{type(exc).__name__}: {exc}"[:300])
    if statement.landmark_id != landmark.id:
        return refused(f"statement names landmark {statement.landmark_id!r}")
    if statement.measured_at > carried.received_at + clock_skew:
        return refused("the landmark's time is after the evidence reached the verifier")
    return Verdict(
        carried.log_index,
        carried.position,
        VALID,
        rtt_min_ns=statement.rtt_min_ns,
        probes=statement.probes,
        measured_at=statement.measured_at,
    )


ClearanceFn = Callable[[Sequence[tuple[float, float, float]]], Clearance]


def tier3_countries(pack: PolicyPack, on: date) -> frozenset[str]:
    """The countries the pack puts in Tier 3 on `on` (a country listed in several tiers takes
    the one `tier_of` gives it)."""
    listed = {c for listing in pack.tiers.listings if listing.covers(on) for c in listing.countries}
    return frozenset(c for c in listed if pack.tier_of(c, on) == 3)


def tier3_clearance(pack: PolicyPack, on: date) -> ClearanceFn:
    """Whether a site's landmark disks keep it clear of the pack's Tier 3 countries on `on`
    (verifier/geo.py: sound, conservative, margins for the data's simplification)."""
    countries = tier3_countries(pack, on)
    return lambda disks: geo.clear_of(disks, countries)


def judge(
    sites: Mapping[str, Site],
    agents_by_site: Mapping[str, Sequence[str]],
    measurements: Iterable[Measurement],
    landmarks: Mapping[str, Landmark],
    *,
    now: datetime,
    deadline: timedelta,
    clearance: ClearanceFn | None = None,
) -> list[SiteLocation]:
    """Each site with active agents, judged from the measurements taken within `deadline`
    before `now` (later ones, and ones of landmarks no longer in the registry, do not count).
    `clearance`, given the disks (lat, lon, radius km) of a site's landmarks, says whether
    they keep it clear of the pack's Tier 3 countries."""
    since = now - deadline
    best: dict[tuple[str, str], Measurement] = {}
    for m in measurements:
        if not since <= m.measured_at <= now or m.landmark_id not in landmarks:
            continue
        key = (m.agent_id, m.landmark_id)
        kept = best.get(key)
        if kept is None or (m.rtt_min_ns, -m.log_index) < (kept.rtt_min_ns, -kept.log_index):
            best[key] = m
    by_agent: dict[str, list[Measurement]] = {}
    for (agent_id, _), m in best.items():
        by_agent.setdefault(agent_id, []).append(m)
    judged: list[SiteLocation] = []
    for site_id in sorted(agents_by_site):
        site = sites.get(site_id)
        agents = sorted(agents_by_site[site_id])
        if site is None or not agents:
            continue
        bounds = [
            _bound(m, landmarks[m.landmark_id], site)
            for agent_id in agents
            for m in by_agent.get(agent_id, ())
        ]
        bounds.sort(key=lambda b: (b.bound_km, b.agent_id, b.landmark_id))
        unmeasured = tuple(a for a in agents if a not in by_agent)
        tier3 = None
        if clearance is not None and bounds:
            disks = {
                (landmarks[b.landmark_id].lat, landmarks[b.landmark_id].lon, b.bound_km)
                for b in bounds
            }
            tier3 = clearance(sorted(disks))
        judged.append(
            _status(
                site_id, tuple(bounds), unmeasured=unmeasured, agents=len(agents),
                tier3=tier3, deadline=deadline,
            )
        )  # fmt: skip
    return judged


def _bound(m: Measurement, landmark: Landmark, site: Site) -> Bound:
    site_km = lm.great_circle_km(landmark.lat, landmark.lon, site.lat, site.lon)
    return Bound(
        landmark_id=m.landmark_id,
        agent_id=m.agent_id,
        rtt_min_ns=m.rtt_min_ns,
        bound_km=lm.bound_km(m.rtt_min_ns),
        site_km=site_km,
        contradicted=lm.contradicts(m.rtt_min_ns, site_km),
        log_index=m.log_index,
        measured_at=m.measured_at,
    )


def _status(
    site_id: str,
    bounds: tuple[Bound, ...],
    *,
    unmeasured: tuple[str, ...],
    agents: int,
    tier3: Clearance | None,
    deadline: timedelta,
) -> SiteLocation:
    against = [b for b in bounds if b.contradicted]
    if against:
        b = min(against, key=lambda x: x.rtt_min_ns)
        reason = (
            f"landmark {b.landmark_id} timed agent {b.agent_id} at {b.rtt_min_ns / 1e6:.3f} ms: "
            f"within {b.bound_km:,.0f} km of the landmark, but the site is {b.site_km:,.0f} km "
            f"away (light needs {lm.min_rtt_ns(b.site_km) / 1e6:.3f} ms)"
        )
        return SiteLocation(site_id, "contradicted", reason, bounds, unmeasured, tier3)
    if unmeasured:
        reason = (
            f"no landmark measurement that counts within {format_duration(deadline)} for "
            f"{len(unmeasured)} of {agents} active host(s)"
        )
        return SiteLocation(site_id, "unverified", reason, bounds, unmeasured, tier3)
    tight = min(bounds, key=lambda b: b.bound_km)
    reason = (
        f"every host measured; the tightest: within {tight.bound_km:,.0f} km of landmark "
        f"{tight.landmark_id} ({tight.rtt_min_ns / 1e6:.3f} ms), the site is "
        f"{tight.site_km:,.0f} km from it"
    )
    return SiteLocation(site_id, "verified", reason, bounds, unmeasured, tier3)


def findings(judged: Iterable[SiteLocation]) -> list[FindingDraft]:
    """location-contradicted per agent a landmark contradicts (critical: the host is not at
    its site), location-unverified per site without a verdict (medium)."""
    drafts: list[FindingDraft] = []
    for site in judged:
        if site.status == "contradicted":
            agents = sorted({b.agent_id for b in site.bounds if b.contradicted})
            for agent_id in agents:
                mine = [b for b in site.bounds if b.contradicted and b.agent_id == agent_id]
                b = min(mine, key=lambda x: x.rtt_min_ns)
                drafts.append(
                    FindingDraft(
                        rule=LOCATION_CONTRADICTED,
                        severity=Severity.CRITICAL,
                        subject=agent_subject(agent_id),
                        message=(
                            f"agent {agent_id} is not at site {site.site_id}: landmark "
                            f"{b.landmark_id} timed it at {b.rtt_min_ns / 1e6:.3f} ms, so it is "
                            f"within {b.bound_km:,.0f} km of the landmark, and the site is "
                            f"{b.site_km:,.0f} km away"
                        ),
                        evidence=tuple(sorted({x.log_index for x in mine})),
                    )
                )
        elif site.status == "unverified":
            drafts.append(
                FindingDraft(
                    rule=LOCATION_UNVERIFIED,
                    severity=Severity.MEDIUM,
                    subject=site_subject(site.site_id),
                    message=f"site {site.site_id} location unverified: {site.reason}",
                    evidence=site.evidence,
                )
            )
    return drafts


def as_json(judged: SiteLocation) -> dict[str, object]:
    """A site's location as `fleet --json`, `reconcile --json` and reports print it."""
    tight = judged.tightest
    tier3: dict[str, object] | None = None
    if judged.tier3 is not None:
        t = judged.tier3
        tier3 = {
            "clear": t.clear,
            "nearest_country": t.nearest,
            "nearest_km": None if t.distance_km is None else round(t.distance_km, 1),
            "radius_km": None if t.radius_km is None else round(t.radius_km, 1),
            "reason": t.reason,
        }
    return {
        "site": judged.site_id,
        "status": judged.status,
        "reason": judged.reason,
        "tightest": None
        if tight is None
        else {
            "landmark": tight.landmark_id,
            "agent": tight.agent_id,
            "rtt_min_ms": round(tight.rtt_min_ns / 1e6, 3),
            "within_km": round(tight.bound_km, 1),
            "site_km": round(tight.site_km, 1),
        },
        "contradicted_by": [
            {
                "landmark": b.landmark_id,
                "agent": b.agent_id,
                "rtt_min_ms": round(b.rtt_min_ns / 1e6, 3),
                "within_km": round(b.bound_km, 1),
                "site_km": round(b.site_km, 1),
                "log_index": b.log_index,
            }
            for b in judged.bounds
            if b.contradicted
        ],
        "unmeasured_agents": list(judged.unmeasured),
        "tier3": tier3,
        "evidence": list(judged.evidence),
    }
