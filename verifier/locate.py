"""The location pass over the store (docs/design.md §16): check the landmark statements that
accepted evidence carried, judge every site with active agents, and keep the location findings
in step. `serve` runs it after each findings sweep; `fleet`, `reconcile` and `report create`
run it for what they print.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from verifier import location
from verifier.findings import agent_subject
from verifier.location import ClearanceFn, SiteLocation, Verdict
from verifier.model import FindingDraft, FindingStatus
from verifier.registry_model import Registry
from verifier.store.api import Store

#: Statements checked per store read; each costs ~1 ms of signature checks (16 answers).
CHECK_PAGE = 256


@dataclass(frozen=True)
class LocationPass:
    judged: tuple[SiteLocation, ...]
    checked: int  # statements checked in this pass
    raised: tuple[FindingDraft, ...]
    resolved: tuple[tuple[str, str], ...]


def check_carried(store: Store, registry: Registry, *, clock_skew: timedelta) -> int:
    """Check every statement not checked yet and record the verdicts; returns how many."""
    landmarks = {lm.id: lm for lm in registry.landmarks}
    keys: dict[str, frozenset[bytes]] = {}
    done = 0
    while True:
        page = store.location_unchecked(CHECK_PAGE)
        if not page:
            return done
        verdicts: list[Verdict] = []
        for carried in page:
            held = keys.get(carried.agent_id)
            if held is None:
                record = store.get_agent(carried.agent_id)
                held = frozenset(() if record is None else (k.spki_der for k in record.keys))
                keys[carried.agent_id] = held
            verdicts.append(
                location.check_statement(carried, landmarks, held, clock_skew=clock_skew)
            )
        store.record_location_verdicts(verdicts)
        done += len(verdicts)


def judge_at(
    store: Store,
    registry: Registry,
    at: datetime,
    deadline: timedelta,
    clearance: ClearanceFn | None = None,
    *,
    agents_by_site: Mapping[str, Sequence[str]] | None = None,
) -> list[SiteLocation]:
    """Every site with agents active at `at` (read from the store unless given), judged from
    the measurements of the `deadline` before it (the statements must have been checked
    already)."""
    return location.judge(
        {site.id: site for site in registry.sites},
        store.active_agents_by_site(at) if agents_by_site is None else agents_by_site,
        store.location_measurements(at - deadline, at),
        {lm.id: lm for lm in registry.landmarks},
        now=at,
        deadline=deadline,
        clearance=clearance,
    )


def run_pass(
    store: Store,
    now: datetime,
    *,
    deadline: timedelta,
    clock_skew: timedelta,
    clearance: ClearanceFn | None = None,
) -> LocationPass:
    """Check, judge and store: open or refresh the location findings raised now, resolve the
    open ones no longer raised. A registry without landmarks raises no location finding (no
    location check is set up; every site still reads `unverified`).

    A `location-contradicted` finding is not cleared by silence: a host caught elsewhere that
    stops answering landmarks would otherwise see its critical finding resolve once the
    measurement ages past the deadline. It resolves only when the agent has a measurement that
    counts and none that contradicts, or is no longer active (revoked); until then it stays
    open (an operator may acknowledge it)."""
    registry = store.load_registry()
    checked = check_carried(store, registry, clock_skew=clock_skew)
    by_site = store.active_agents_by_site(now)
    judged = judge_at(store, registry, now, deadline, clearance, agents_by_site=by_site)
    raised = location.findings(judged) if registry.landmarks else []
    store.upsert_findings(raised, now)
    keys = {(d.rule, d.subject) for d in raised}
    measured = {b.agent_id for site in judged for b in site.bounds}
    caught = {b.agent_id for site in judged for b in site.bounds if b.contradicted}
    active = {a for agents in by_site.values() for a in agents}

    def cleared(rule: str, subject: str) -> bool:
        if rule != location.LOCATION_CONTRADICTED:
            return True
        agent_id = subject.removeprefix(agent_subject(""))
        return agent_id not in active or (agent_id in measured and agent_id not in caught)

    stale = [
        (f.rule, f.subject)
        for f in store.iter_findings()
        if f.rule in location.LOCATION_RULES
        and f.status is not FindingStatus.RESOLVED
        and (f.rule, f.subject) not in keys
        and cleared(f.rule, f.subject)
    ]
    if stale:
        store.resolve_findings(stale, now)
    return LocationPass(tuple(judged), checked, tuple(raised), tuple(stale))
