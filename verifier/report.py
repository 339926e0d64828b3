"""Signed regulator reports, the pure part (docs/design.md §15): values in, statement out.

`build_statement` turns one entity's reconciliation at the end of a period, its holdings rows,
the attestation coverage, the period's findings, the log's signed checkpoint and the sampled
evidence entries into an in-toto Statement v1 (a dict); `sign_statement` serializes it once and
wraps it in a DSSE envelope (JSON) signed by the report key. No I/O, no clock: the shell
(`verifier/report_cli.py`) reads the store and passes `now`. The regulator's side is
`attest/report_verify.py`.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from attest.keys import Signer
from attest.report_verify import PREDICATE_TYPE, STATEMENT_TYPE, encode_report
from verifier import location
from verifier.location import SiteLocation
from verifier.model import Finding, FindingDraft
from verifier.policy.catalogue import CatalogueEntry, classify
from verifier.policy.model import PolicyPack
from verifier.reconcile.model import HoldingRow, Reconciliation, Totals
from verifier.registry_model import Entity, Registry, Site

#: Coverage points drawn over a period (each is one aggregate query): enough for a chart.
COVERAGE_POINTS = 7
#: A site with no active agent at the end of the period has nothing to locate.
NOT_JUDGED = {"status": "unverified", "reason": "no active host at the site to locate"}
TRUST_MODEL = (
    (
        "Each sampled entry is signed by an agent key the verifier pinned at enrollment: it "
        "proves which enrolled agent said it, when (a verifier nonce) and in what order (sequence "
        "and hash chain). It does not prove the GPU readings true: NVML data is not signed by "
        "the hardware and whoever holds root on a host can make it report anything."
    ),
    (
        "You trust this verifier for the binding of each agent key to its agent and site (the keys "
        "embedded beside each entry) and for the registry and the policy pack it judged against."
    ),
    (
        "Location is a bound, not a position: a site reads verified only when a landmark the "
        "registry lists timed every active host there answering its signed challenges, and "
        "none answered faster than light allows over the distance from that landmark to the "
        "site (within c x RTT / 2 of the landmark). Delay and relays only make a host look "
        "farther. You trust the landmarks' keys and coordinates as the registry gives them: a "
        "landmark that lies, or an agent key copied to a host near a landmark, defeats the "
        "check. The statements ride inside the logged envelopes; this report does not sample "
        "them with proofs."
    ),
    (
        "Every accepted envelope is in an append-only Merkle log (RFC 6962 hashing). The signed "
        "checkpoint commits to all of them; the consistency proof shows the log only grew since "
        "the previous report; the inclusion proofs show the sampled entries are in it. The "
        "sample is picked by the checkpoint's root, so the verifier could not choose favourable "
        "entries without changing the log it signed; the candidates per site are the "
        "verifier's own list."
    ),
    (
        "Totals are aggregated by the verifier from every accepted entry; the sample lets you "
        "check a few entries against them, not all."
    ),
)


@dataclass(frozen=True)
class Period:
    label: str
    start: date
    end: date  # inclusive


def parse_period(text: str) -> Period:
    """`2026H1`, `2026Q3` or `2026-07`. Raises ValueError with a message."""
    if m := re.fullmatch(r"(\d{4})H([12])", text):
        year, half = int(m[1]), int(m[2])
        return Period(text, date(year, 6 * half - 5, 1), date(year, 6 * half, 30 + (half == 2)))
    if m := re.fullmatch(r"(\d{4})Q([1-4])", text):
        year, q = int(m[1]), int(m[2])
        last = 3 * q
        return Period(text, date(year, last - 2, 1), _month_end(year, last))
    if m := re.fullmatch(r"(\d{4})-(\d{2})", text):
        year, month = int(m[1]), int(m[2])
        if 1 <= month <= 12:
            return Period(text, date(year, month, 1), _month_end(year, month))
    raise ValueError(f"{text!r} is not a period (2026H1, 2026Q3 or 2026-07)")


def _month_end(year: int, month: int) -> date:
    return date(year, month, calendar.monthrange(year, month)[1])


def period_between(start: date, end: date) -> Period:
    if end < start:
        raise ValueError(f"the period ends ({end}) before it starts ({start})")
    return Period(f"{start}..{end}", start, end)


def coverage_days(period: Period, as_of: date) -> list[date]:
    """Up to COVERAGE_POINTS days spread over the period up to `as_of`, ending on it."""
    days = (as_of - period.start).days
    if days < 0:
        return []
    steps = min(COVERAGE_POINTS - 1, days)
    points = (
        {as_of - timedelta(days=days * i // steps) for i in range(steps + 1)} if steps else set()
    )
    return sorted(points | {as_of})


@dataclass(frozen=True)
class Coverage:
    day: date
    held: int
    attested: int  # of those, at an agent with evidence received that day


@dataclass(frozen=True)
class SampledEntry:
    site_id: str
    agent_id: str
    log_index: int
    envelope: bytes  # as logged
    inclusion: tuple[bytes, ...]
    agent_keys: tuple[bytes, ...]  # SPKI DER of the keys that signed it


@dataclass(frozen=True)
class LogState:
    origin: str
    public_key_pem: bytes
    checkpoint: bytes  # the signed note
    previous: bytes | None = None  # the previous report's checkpoint
    consistency: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class ReportInputs:
    entity: Entity
    period: Period
    as_of: date  # the period's last day, or today when it has not ended
    registry: Registry
    pack: PolicyPack
    pack_sha256: str
    reconciliation: Reconciliation  # the whole fleet on `as_of` (caps merge holders)
    holdings: tuple[HoldingRow, ...]  # the entity's sites, on `as_of`
    attested: Mapping[str, tuple[int, int]]  # site -> (held, attested on `as_of`)
    coverage: tuple[Coverage, ...]
    findings: tuple[Finding, ...]  # stored findings that concern the entity (finding_filter)
    agents: frozenset[str]  # agents at the entity's sites (for agent:<id> subjects)
    log: LogState
    samples: tuple[SampledEntry, ...]
    #: site -> its location at the end of the period (docs/design.md §16)
    locations: Mapping[str, SiteLocation] = field(default_factory=dict)


def entity_sites(registry: Registry, entity_id: str) -> list[Site]:
    return sorted((s for s in registry.sites if s.entity == entity_id), key=lambda s: s.id)


def evidence_candidates(holdings: Iterable[HoldingRow]) -> dict[str, list[int]]:
    """Per site, the log indices the holdings rows name: what a sample is drawn from."""
    out: dict[str, set[int]] = {}
    for row in holdings:
        if row.count:
            out.setdefault(row.site_id, set()).update(row.evidence)
    return {site: sorted(indices) for site, indices in out.items()}


def finding_filter(
    registry: Registry, pack: PolicyPack, entity_id: str, agents: frozenset[str], on: date
) -> Callable[[str], bool]:
    """Whether a finding subject concerns the entity: its sites, authorizations, agents, the
    countries it holds in, itself. GPU-level subjects (`gpu:`) need the store: the shell
    looks up where each GPU is (`verifier/report_cli.py`)."""
    sites = {s.id for s in entity_sites(registry, entity_id)}
    subjects = (
        {f"site:{s}" for s in sites}
        | {f"authorization:{a.id}" for a in registry.authorizations if a.holder == entity_id}
        | {f"agent:{a}" for a in agents}
        | {
            f"country:{pack.resolve_country(s.country, on)}"
            for s in entity_sites(registry, entity_id)
        }
        | {f"entity:{entity_id}"}
    )

    def concerns(subject: str) -> bool:
        if subject in subjects or subject.startswith(f"entity:{entity_id}@"):
            return True
        return subject.startswith("model:") and subject.rsplit("@", 1)[-1] in sites

    return concerns


def _totals(t: Totals) -> dict[str, int]:
    return {
        "units": t.units,
        "tpp": t.tpp,
        "controlled_units": t.controlled_units,
        "controlled_tpp": t.controlled_tpp,
    }


def _model_rows(rows: list[HoldingRow], pack: PolicyPack) -> list[dict[str, object]]:
    out = []
    for row in sorted(rows, key=lambda r: (r.pci_device_id or -1, r.pci_subsystem_id or -1)):
        entry = classify(row.pci_device_id, row.pci_subsystem_id, pack.catalogue)
        known = isinstance(entry, CatalogueEntry)
        each = entry.dense_tpp if isinstance(entry, CatalogueEntry) else entry.assumed_tpp
        out.append({
            "model": entry.model if isinstance(entry, CatalogueEntry) else "unknown",
            "known": known,
            "pci_device_id": row.pci_device_id,
            "pci_subsystem_id": row.pci_subsystem_id,
            "units": row.count,
            "tpp_each": each,
            "tpp": each * row.count,
            "first_received": row.first_received.isoformat(),
        })  # fmt: skip
    return out


def _sites(inputs: ReportInputs) -> list[dict[str, object]]:
    rows: dict[str, list[HoldingRow]] = {}
    for row in inputs.holdings:
        rows.setdefault(row.site_id, []).append(row)
    candidates = evidence_candidates(inputs.holdings)
    out: list[dict[str, object]] = []
    for site in entity_sites(inputs.registry, inputs.entity.id):
        mine = rows.get(site.id, [])
        first = min((r.first_received for r in mine), default=None)
        held, fresh = inputs.attested.get(site.id, (0, 0))
        totals = inputs.reconciliation.by_site.get(site.id, Totals())
        out.append({
            "id": site.id,
            "country": site.country,
            "tier": inputs.pack.tier_of(site.country, inputs.as_of),
            **_totals(totals),
            "models": _model_rows(mine, inputs.pack),
            "first_received": None if first is None else first.isoformat(),
            "attested_last_day": {"gpus": fresh, "of": held},
            "location": _location(inputs.locations.get(site.id)),
            "evidence_candidates": candidates.get(site.id, []),
        })  # fmt: skip
    return out


def _location(judged: SiteLocation | None) -> dict[str, object]:
    if judged is None:
        return dict(NOT_JUDGED)
    view = location.as_json(judged)
    del view["site"]
    return view


def _countries(inputs: ReportInputs, sites: list[dict[str, object]]) -> list[dict[str, object]]:
    on = inputs.as_of
    tpp: dict[str, int] = {}
    for site in sites:
        country = str(site["country"])
        tpp[country] = tpp.get(country, 0) + int(str(site["controlled_tpp"]))
    out = []
    for country in sorted(tpp):
        arranged = any(a.country == country and a.since <= on for a in inputs.registry.arrangements)
        authorized = [
            a.max_tpp
            for a in inputs.registry.authorizations
            if a.holder == inputs.entity.id and country in a.countries
        ]
        out.append({
            "country": country,
            "tier": inputs.pack.tier_of(country, on),
            "controlled_tpp": tpp[country],
            "cap_tpp": inputs.pack.country_cap_tpp(country, on, arrangement=arranged),
            "authorized_tpp": int(sum(t for t in authorized if t is not None)) or None,
        })  # fmt: skip
    return out


def _finding(f: Finding | FindingDraft) -> dict[str, object]:
    view: dict[str, object] = {
        "rule": f.rule,
        "severity": f.severity.value,
        "subject": f.subject,
        "message": f.message,
        "evidence": list(f.evidence),
    }
    if isinstance(f, Finding):
        view.update(
            state=f.status.value,
            opened_at=f.opened_at.isoformat(),
            resolved_at=None if f.resolved_at is None else f.resolved_at.isoformat(),
        )
    return view


def _summary(raised: list[FindingDraft], inputs: ReportInputs) -> dict[str, object]:
    binding = [f for f in raised if f.severity.value in ("critical", "high")]
    held = sum(r.count for r in inputs.holdings)
    fresh = sum(f for _, f in inputs.attested.values())
    return {
        "within_limits": not binding,
        "reasons": [f.message for f in binding] or ["no legal limit was exceeded at period end"],
        "review": [f.message for f in raised if f not in binding],
        "units": held,
        "tpp": sum(inputs.reconciliation.by_site.get(s, Totals()).tpp for s in _site_ids(inputs)),
        "attested_last_day": {"gpus": fresh, "of": sum(h for h, _ in inputs.attested.values())},
    }


def _site_ids(inputs: ReportInputs) -> list[str]:
    return [s.id for s in entity_sites(inputs.registry, inputs.entity.id)]


def _header(inputs: ReportInputs, now: datetime) -> dict[str, object]:
    entity, period, pack = inputs.entity, inputs.period, inputs.pack
    return {
        "generated_at": now.isoformat(),
        "period": {
            "label": period.label,
            "from": period.start.isoformat(),
            "to": period.end.isoformat(),
            "as_of": inputs.as_of.isoformat(),
        },
        "entity": {
            "id": entity.id,
            "name": entity.name,
            "hq_country": entity.hq_country,
            "veu": entity.veu.value,
        },
        "policy_pack": {
            "id": pack.id,
            "title": pack.title,
            "effective_from": pack.effective_from.isoformat(),
            "origin": pack.origin,
            "sha256": inputs.pack_sha256,
        },
    }


def _log_view(log: LogState) -> dict[str, object]:
    previous = None
    if log.previous is not None:
        previous = {
            "checkpoint": log.previous.decode("utf-8"),
            "consistency": [h.hex() for h in log.consistency],
        }
    return {
        "origin": log.origin,
        "public_key": log.public_key_pem.decode("ascii"),
        "checkpoint": log.checkpoint.decode("utf-8"),
        "previous": previous,
    }


def _sample_view(s: SampledEntry) -> dict[str, object]:
    return {
        "site": s.site_id,
        "agent_id": s.agent_id,
        "log_index": s.log_index,
        "envelope": base64.b64encode(s.envelope).decode("ascii"),
        "inclusion": [h.hex() for h in s.inclusion],
        "agent_keys": [base64.b64encode(k).decode("ascii") for k in s.agent_keys],
    }


def build_statement(inputs: ReportInputs, now: datetime) -> dict[str, object]:
    """The in-toto Statement v1 of one entity's report (docs/design.md §15)."""
    entity, period = inputs.entity, inputs.period
    sites = _sites(inputs)
    concerns = finding_filter(inputs.registry, inputs.pack, entity.id, inputs.agents, inputs.as_of)
    raised = [f for f in inputs.reconciliation.findings if concerns(f.subject)]
    stored = [
        f
        for f in inputs.findings
        if f.opened_at.date() <= period.end
        and (f.resolved_at is None or f.resolved_at.date() >= period.start)
    ]
    auths = [a for a in inputs.reconciliation.authorizations if a.holder == entity.id]
    predicate: dict[str, object] = {
        **_header(inputs, now),
        "summary": _summary(raised, inputs),
        "sites": sites,
        "countries": _countries(inputs, sites),
        "authorizations": [
            {
                "id": a.id,
                "kind": a.kind,
                "state": a.state,
                "used_units": a.used_units,
                "max_units": a.max_units,
                "used_tpp": a.used_tpp,
                "max_tpp": a.max_tpp,
            }
            for a in auths
        ],
        "findings_at_period_end": [_finding(f) for f in raised],
        "findings": [_finding(f) for f in stored],
        "coverage": [
            {"day": c.day.isoformat(), "held": c.held, "attested": c.attested}
            for c in inputs.coverage
        ],
        "log": _log_view(inputs.log),
        "samples": [_sample_view(s) for s in inputs.samples],
        "trust_model": list(TRUST_MODEL),
    }
    digest = hashlib.sha256(inputs.log.checkpoint).hexdigest()
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f"checkpoint:{inputs.log.origin}", "digest": {"sha256": digest}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }


def sign_statement(statement: Mapping[str, object], signer: Signer) -> bytes:
    """The report file: the statement serialized once, in a DSSE envelope (JSON) signed by
    the report key."""
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return encode_report(payload, signer.sign, signer.public_key.keyid)
