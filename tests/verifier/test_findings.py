"""The pure finding rules (verifier/findings.py), with hypothesis where a property says more
than an example."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from verifier import findings
from verifier.findings import AgentDeadline, GpuClaimState, GpuLastSeen
from verifier.model import FindingDraft, Severity

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FRESH = timedelta(minutes=5)

claims = st.builds(
    GpuClaimState,
    uuid=st.sampled_from(["GPU-1", "GPU-2", "GPU-3"]),
    agent_id=st.sampled_from(["a", "b", "c"]),
    agent_active=st.booleans(),
    last_seen=st.one_of(
        st.none(), st.timedeltas(timedelta(0), timedelta(minutes=20)).map(lambda d: NOW - d)
    ),
    log_index=st.one_of(st.none(), st.integers(0, 10_000)),
)


@given(st.lists(claims, max_size=20))
def test_duplicate_gpu_exactly_when_two_fresh_active_agents_claim(
    found: list[GpuClaimState],
) -> None:
    drafts = findings.duplicate_gpu(found, NOW, FRESH)
    flagged = {d.subject for d in drafts}
    for uuid in {c.uuid for c in found}:
        fresh_agents = {
            c.agent_id
            for c in found
            if c.uuid == uuid
            and c.agent_active
            and c.last_seen is not None
            and NOW - c.last_seen <= FRESH
        }
        assert (f"gpu:{uuid}" in flagged) == (len(fresh_agents) >= 2)
    for draft in drafts:
        assert draft.rule == "duplicate-gpu"
        assert draft.severity is Severity.CRITICAL
        assert list(draft.evidence) == sorted(set(draft.evidence))


@given(st.lists(claims, max_size=20, unique_by=lambda c: (c.uuid, c.agent_id)), st.randoms())
def test_duplicate_gpu_ignores_order(found: list[GpuClaimState], rnd: random.Random) -> None:
    shuffled = list(found)
    rnd.shuffle(shuffled)
    assert findings.duplicate_gpu(found, NOW, FRESH) == findings.duplicate_gpu(shuffled, NOW, FRESH)


@given(st.timedeltas(timedelta(hours=-2), timedelta(hours=2)), st.booleans())
def test_agent_stale_exactly_when_past_due(offset: timedelta, active: bool) -> None:
    agent = AgentDeadline("a", "host", active, NOW + offset, None, 4)
    drafts = findings.stale_agents([agent], NOW)
    assert bool(drafts) == (active and NOW + offset <= NOW)
    for draft in drafts:
        assert (draft.rule, draft.subject, draft.evidence) == ("agent-stale", "agent:a", (4,))


@given(st.timedeltas(timedelta(0), timedelta(hours=3)))
def test_gpu_missing_exactly_after_grace(age: timedelta) -> None:
    grace = timedelta(hours=1)
    drafts = findings.missing_gpus([GpuLastSeen("GPU-9", "a", NOW - age, None)], NOW, grace)
    assert bool(drafts) == (age > grace)
    assert all(d.evidence == () for d in drafts)


def test_chain_findings_name_the_evidence() -> None:
    fork = findings.evidence_fork("a", 5, 17)
    assert (fork.rule, fork.subject, fork.evidence) == ("evidence-fork", "agent:a", (17,))
    assert "5" in fork.message
    gap = findings.evidence_gap("a", 4, 9, 12)
    assert (gap.rule, gap.evidence) == ("evidence-gap", (12,))
    assert "jumped from 4 to 9" in gap.message
    link = findings.evidence_gap("a", 4, 5, None)
    assert "does not link" in link.message
    assert link.evidence == ()


def test_no_longer_raised_touches_only_swept_rules() -> None:
    open_keys = [
        ("agent-stale", "agent:a"),
        ("agent-stale", "agent:b"),
        ("evidence-fork", "agent:c"),
    ]
    raised = [FindingDraft("agent-stale", Severity.MEDIUM, "agent:a", "m")]
    assert findings.no_longer_raised(open_keys, raised) == [("agent-stale", "agent:b")]
