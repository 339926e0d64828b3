"""The finding rules over fleet state, as pure functions: values and `now` in, findings out.

The store's accept transaction and its periodic `sweep` are the shells that read the state,
call these, and write what they return. Rule ids are the stable ones of docs/design.md §5.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from attest.tomlconf import format_duration
from verifier.model import FindingDraft, Severity

DUPLICATE_GPU = "duplicate-gpu"
GPU_MISSING = "gpu-missing"
AGENT_STALE = "agent-stale"
EVIDENCE_GAP = "evidence-gap"
EVIDENCE_FORK = "evidence-fork"
SITE_CLAIM_MISMATCH = "site-claim-mismatch"
GPU_LOST = "gpu-lost"

#: The rules `sweep` owns: it raises them and resolves them when they no longer hold.
SWEPT_RULES = (DUPLICATE_GPU, GPU_MISSING, AGENT_STALE, GPU_LOST)
#: The rules a revoked agent's findings may come from (its own subject or its GPUs'): they
#: resolve with the reason "agent revoked" when it is revoked.
FLEET_RULES = (*SWEPT_RULES, EVIDENCE_GAP, EVIDENCE_FORK, SITE_CLAIM_MISMATCH)
#: The reason recorded on the findings a revocation resolves.
AGENT_REVOKED = "agent revoked"


def gpu_subject(uuid: str) -> str:
    return f"gpu:{uuid}"


def agent_subject(agent_id: str) -> str:
    return f"agent:{agent_id}"


@dataclass(frozen=True)
class GpuClaimState:
    """One agent's current claim on a GPU, with what decides whether it is still fresh."""

    uuid: str
    agent_id: str
    agent_active: bool
    last_seen: datetime | None  # when the agent last reported it
    log_index: int | None  # the evidence that last reported it


@dataclass(frozen=True)
class AgentDeadline:
    """When an agent is due. At a site the registry gives an `offline_deadline`, the agent
    reports through `ingest` and `next_due` is its last evidence of any freshness (or its
    enrollment) plus that deadline; elsewhere, its last nonce-fresh evidence plus the fleet's
    attestation deadline."""

    agent_id: str
    hostname: str
    active: bool
    next_due: datetime
    last_fresh_at: datetime | None
    last_log_index: int | None
    offline_deadline: timedelta | None = None
    last_seen_at: datetime | None = None  # its latest evidence, offline included


@dataclass(frozen=True)
class GpuLastSeen:
    """The latest report of a GPU by any agent."""

    uuid: str
    agent_id: str
    last_seen: datetime
    log_index: int | None


@dataclass(frozen=True)
class LostGpu:
    """A GPU an active agent reported fallen off the bus (lost), and the evidence that did."""

    uuid: str
    agent_id: str
    log_index: int | None


def lost_gpus(lost: Iterable[LostGpu]) -> list[FindingDraft]:
    """`gpu-lost` for every GPU an active agent reports lost (one finding per UUID; evidence:
    the log indices of the reports). It holds until the GPU is reported again or the agent is
    revoked: a lost GPU is still held, so it stays counted."""
    by_uuid: dict[str, list[LostGpu]] = {}
    for gpu in lost:
        by_uuid.setdefault(gpu.uuid, []).append(gpu)
    drafts = []
    for uuid in sorted(by_uuid):
        reports = by_uuid[uuid]
        agents = ", ".join(sorted({g.agent_id for g in reports}))
        drafts.append(
            FindingDraft(
                rule=GPU_LOST,
                severity=Severity.HIGH,
                subject=gpu_subject(uuid),
                message=f"GPU {uuid} fell off the bus (reported lost by agent {agents})",
                evidence=tuple(sorted({g.log_index for g in reports if g.log_index is not None})),
            )
        )
    return drafts


def _is_fresh(claim: GpuClaimState, now: datetime, freshness: timedelta) -> bool:
    return claim.agent_active and claim.last_seen is not None and now - claim.last_seen <= freshness


def duplicate_gpu(
    claims: Iterable[GpuClaimState], now: datetime, freshness: timedelta
) -> list[FindingDraft]:
    """`duplicate-gpu` for every UUID that two or more active agents claim, each claim fresher
    than `freshness`. Evidence: the log indices of the claims, ascending."""
    by_uuid: dict[str, dict[str, GpuClaimState]] = {}
    for claim in claims:
        if _is_fresh(claim, now, freshness):
            by_uuid.setdefault(claim.uuid, {})[claim.agent_id] = claim
    drafts = []
    for uuid in sorted(by_uuid):
        holders = by_uuid[uuid]
        if len(holders) < 2:
            continue
        agents = ", ".join(sorted(holders))
        evidence = sorted({c.log_index for c in holders.values() if c.log_index is not None})
        drafts.append(
            FindingDraft(
                rule=DUPLICATE_GPU,
                severity=Severity.CRITICAL,
                subject=gpu_subject(uuid),
                message=f"GPU {uuid} is reported by {len(holders)} agents: {agents}",
                evidence=tuple(evidence),
            )
        )
    return drafts


def stale_agents(agents: Iterable[AgentDeadline], now: datetime) -> list[FindingDraft]:
    """`agent-stale` for every active agent whose attestation deadline has passed."""
    drafts = []
    for agent in sorted(agents, key=lambda a: a.agent_id):
        if not agent.active or agent.next_due > now:
            continue
        if agent.offline_deadline is None:
            since = agent.last_fresh_at.isoformat() if agent.last_fresh_at else "enrollment"
            what = f"sent no fresh evidence since {since}"
        else:
            since = agent.last_seen_at.isoformat() if agent.last_seen_at else "enrollment"
            what = (
                f"sent no evidence since {since}, longer ago than its site's offline deadline "
                f"{format_duration(agent.offline_deadline)}"
            )
        drafts.append(
            FindingDraft(
                rule=AGENT_STALE,
                severity=Severity.MEDIUM,
                subject=agent_subject(agent.agent_id),
                message=(
                    f"agent {agent.agent_id} ({agent.hostname}) {what}; it was due at "
                    f"{agent.next_due.isoformat()}"
                ),
                evidence=() if agent.last_log_index is None else (agent.last_log_index,),
            )
        )
    return drafts


def missing_gpus(
    seen: Iterable[GpuLastSeen], now: datetime, grace: timedelta
) -> list[FindingDraft]:
    """`gpu-missing` for every GPU whose latest report is older than `grace`."""
    drafts = []
    for gpu in sorted(seen, key=lambda g: g.uuid):
        if now - gpu.last_seen <= grace:
            continue
        drafts.append(
            FindingDraft(
                rule=GPU_MISSING,
                severity=Severity.HIGH,
                subject=gpu_subject(gpu.uuid),
                message=(
                    f"GPU {gpu.uuid} was last reported by agent {gpu.agent_id} at "
                    f"{gpu.last_seen.isoformat()}, longer ago than the {grace} grace period"
                ),
                evidence=() if gpu.log_index is None else (gpu.log_index,),
            )
        )
    return drafts


def evidence_fork(agent_id: str, seq: int, accepted_log_index: int | None) -> FindingDraft:
    """`evidence-fork`: a second, different envelope claimed an accepted (agent, seq)."""
    return FindingDraft(
        rule=EVIDENCE_FORK,
        severity=Severity.CRITICAL,
        subject=agent_subject(agent_id),
        message=f"agent {agent_id} sent two different envelopes with sequence number {seq}",
        evidence=() if accepted_log_index is None else (accepted_log_index,),
    )


def evidence_gap(
    agent_id: str, last_seq: int, got_seq: int, last_log_index: int | None
) -> FindingDraft:
    """`evidence-gap`: the sequence skipped numbers or the previous-hash link broke."""
    if got_seq == last_seq + 1:
        what = f"sequence {got_seq} does not link to the hash of {last_seq}"
    else:
        what = f"sequence jumped from {last_seq} to {got_seq}"
    return FindingDraft(
        rule=EVIDENCE_GAP,
        severity=Severity.HIGH,
        subject=agent_subject(agent_id),
        message=f"agent {agent_id}: {what}",
        evidence=() if last_log_index is None else (last_log_index,),
    )


def site_claim_mismatch(
    agent_id: str, enrolled_site: str, claimed_site: str, log_index: int
) -> FindingDraft | None:
    """`site-claim-mismatch` when the evidence claims another site than the one the agent's
    enrollment token was issued for; None when they agree. The agent stays counted at its
    enrolled site: the token, issued by the compliance team, is the stronger word."""
    if claimed_site == enrolled_site:
        return None
    return FindingDraft(
        rule=SITE_CLAIM_MISMATCH,
        severity=Severity.HIGH,
        subject=agent_subject(agent_id),
        message=(
            f"agent {agent_id} claims site {claimed_site!r} but enrolled at site "
            f"{enrolled_site!r} (its token's site), where it is counted"
        ),
        evidence=(log_index,),
    )


def no_longer_raised(
    open_keys: Iterable[tuple[str, str]], raised: Iterable[FindingDraft]
) -> list[tuple[str, str]]:
    """The open (rule, subject) keys of swept rules that this sweep did not raise again."""
    again = {(d.rule, d.subject) for d in raised}
    return sorted(k for k in open_keys if k[0] in SWEPT_RULES and k not in again)
