"""The accept transaction's check of each agent's own site claim against the site its
enrollment token was issued for (`site-claim-mismatch`, verifier/findings.py)."""

from __future__ import annotations

from collections.abc import Mapping

from verifier import findings
from verifier.store.ops_findings import resolve_findings, upsert_findings
from verifier.store.sqlbase import Db


def settle_site_claims(db: Db, claims: Mapping[str, tuple[str, str, int]], now_us: int) -> None:
    """`claims`: per agent accepted in this batch, (enrolled site, its latest claimed site, the
    log index of that evidence). Raise or refresh the finding where they differ and resolve an
    open one where they agree again: one statement each per batch, an index probe per agent."""
    drafts = []
    agreeing: dict[tuple[str, str], int | None] = {}  # -> the evidence that cleared it
    for agent_id in sorted(claims):
        enrolled, claimed, log_index = claims[agent_id]
        draft = findings.site_claim_mismatch(agent_id, enrolled, claimed, log_index)
        if draft is None:
            key = (findings.SITE_CLAIM_MISMATCH, findings.agent_subject(agent_id))
            agreeing[key] = log_index
        else:
            drafts.append(draft)
    if drafts:
        upsert_findings(db, drafts, now_us)
    if agreeing:
        resolve_findings(db, list(agreeing), now_us, cleared_by=agreeing)
