"""`gpu-attest-verifier report ...`: signed regulator reports, the I/O shell (docs/design.md §15).

    report key [--out F]
        the PEM public key that signs reports (report.key in the state directory, Ed25519,
        created on first use): what a regulator passes to `gpu-attest-report verify --key`
    report create --entity E (--period 2026H1|2026Q3|2026-07 | --from DATE --to DATE)
                  --out R.json [--html R.html] [--previous OLD.json] [--policy ID|FILE]
        the entity's holdings as of the end of the period's last day (today if it has not
        ended), judged under the pack in force then, with the signed checkpoint of the log now,
        the consistency proof from OLD.json's checkpoint, and one sampled evidence entry per
        site picked by the checkpoint's root

Everything is read aggregated (sites x models rows, O(sites) counts); no per-GPU row is held.
The statement itself is built by the pure `verifier.report`.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from attest import merkle
from attest import tomlconf as tc
from attest.checkpoint import Checkpoint, NoteKey, sign_checkpoint, verify_checkpoint
from attest.errors import (
    InputFileError,
    PolicyNotFoundError,
    ProofError,
    SiteUnknownError,
    StoreError,
)
from attest.files import write_public_file
from attest.keys import SoftwareSigner, load_or_create_private_key
from attest.report_entries import parse_envelope, parse_evidence_gpus
from attest.report_verify import open_report, sample_index
from verifier import locate, location, report
from verifier.ca import load_or_create_receipt_signer
from verifier.compliance import pack_configured
from verifier.config import VerifierConfig
from verifier.exits import VerifierExit
from verifier.location import SiteLocation
from verifier.model import Finding
from verifier.policy import find_pack
from verifier.policy.model import PolicyPack
from verifier.reconcile import reconcile
from verifier.reconcile.model import PostureRow
from verifier.registry_model import Registry
from verifier.report_html import render_html
from verifier.store.api import Store
from verifier.transparency import checkpoint_origin


def load_or_create_report_signer(state_dir: Path) -> SoftwareSigner:
    """The Ed25519 key that signs reports (report.key, 0600), apart from the log's key so
    either can be rotated or kept offline on its own."""
    return load_or_create_private_key(state_dir / "report.key", "ed25519")


def _period_arg(text: str) -> report.Period:
    try:
        return report.parse_period(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _day(text: str) -> date:
    try:
        return tc.parse_day(text)
    except tc.Invalid as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_report_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    rep = sub.add_parser("report", help="signed regulator reports").add_subparsers(
        dest="action", required=True
    )
    key = rep.add_parser("key", parents=[common], help="the report public key (PEM)")
    key.add_argument("--out", type=Path, help="write to this file instead of stdout")
    create = rep.add_parser("create", parents=[common], help="write a signed report")
    create.add_argument("--entity", required=True, help="registry entity id")
    when = create.add_mutually_exclusive_group(required=True)
    when.add_argument("--period", type=_period_arg, help="2026H1, 2026Q3 or 2026-07")
    when.add_argument("--from", dest="start", type=_day, metavar="DATE", help="first day")
    create.add_argument("--to", dest="end", type=_day, metavar="DATE", help="last day (--from)")
    create.add_argument("--out", type=Path, required=True, help="the report (JSON, DSSE)")
    create.add_argument("--html", type=Path, help="also write a page a person reads")
    create.add_argument("--previous", type=Path, help="the previous report (consistency proof)")
    create.add_argument("--policy", metavar="ID|FILE", help="a policy pack (default: in force)")


def _period(args: argparse.Namespace) -> report.Period:
    if args.period is not None:
        period: report.Period = args.period
        return period
    if args.end is None:
        raise InputFileError("--from needs --to (the period's last day)")
    try:
        return report.period_between(args.start, args.end)
    except ValueError as exc:
        raise InputFileError(str(exc)) from None


def _pack(args: argparse.Namespace, configured: str, on: date) -> tuple[PolicyPack, str]:
    """The pack and the SHA-256 of its file."""
    pack = find_pack(args.policy) if args.policy else pack_configured(configured, on)
    if pack is None:
        raise PolicyNotFoundError(f"no policy pack is in force on {on}")
    if pack.origin == "built-in":
        data = (importlib.resources.files("verifier.policy.packs") / f"{pack.id}.toml").read_bytes()
    else:
        data = Path(pack.origin).read_bytes()
    return pack, hashlib.sha256(data).hexdigest()


def _log_state(
    args: argparse.Namespace, store: Store, config: VerifierConfig, signer: SoftwareSigner
) -> tuple[report.LogState, Checkpoint]:
    log_signer = load_or_create_receipt_signer(config.state_dir)
    size = store.log_size()
    if size == 0:
        raise ProofError("the transparency log is empty: there is nothing to report on")
    origin = checkpoint_origin(config, log_signer)
    tree = Checkpoint(origin, size, store.log_root(size))
    note = sign_checkpoint(tree, origin, log_signer)
    previous: bytes | None = None
    proof: tuple[bytes, ...] = ()
    if args.previous is not None:
        try:
            data = args.previous.read_bytes()
        except OSError as exc:
            raise InputFileError(f"cannot read {args.previous}: {exc.strerror}") from exc
        predicate = open_report(data, signer.public_key)["predicate"]
        previous = str(predicate["log"]["checkpoint"]).encode("utf-8")
        old = verify_checkpoint(previous, NoteKey(origin, log_signer.public_key), origin)
        if old.size > size:
            raise ProofError(f"the previous report's log (size {old.size}) is larger than now")
        proof = store.log_consistency_proof(old.size, size) if old.size < size else ()
        # Fail closed here rather than hand a regulator a report that cannot verify.
        merkle.verify_consistency(old.size, size, old.root, tree.root, proof)
    pem = log_signer.public_key.to_pem()
    return report.LogState(origin, pem, note, previous, tuple(proof)), tree


def _samples(
    store: Store, candidates: dict[str, list[int]], tree: Checkpoint
) -> tuple[report.SampledEntry, ...]:
    out = []
    for site, indices in sorted(candidates.items()):
        index = sample_index(tree.root, site, indices)
        entry = store.log_entries(index, index + 1)
        raw = store.get_envelope(index) if entry else None
        if raw is None or merkle.leaf_hash(raw) != entry[0].leaf_hash:
            raise StoreError(f"the envelope of log entry {index} is missing or does not match")
        envelope = parse_envelope(raw)
        agent_id = parse_evidence_gpus(envelope.payload).agent_id
        agent = store.get_agent(agent_id)
        signed_by = {s.keyid for s in envelope.signatures}
        keys = (
            () if agent is None else tuple(k.spki_der for k in agent.keys if k.keyid in signed_by)
        )
        proof = store.log_inclusion_proof(index, tree.size)
        out.append(report.SampledEntry(site, agent_id, index, raw, tuple(proof), keys))
    return tuple(out)


def _coverage(
    store: Store, period: report.Period, as_of: date, sites: set[str]
) -> dict[date, dict[str, tuple[int, int]]]:
    """Per coverage day (the last is `as_of`), per site of the entity: (held, attested)."""
    return {
        day: {k: v for k, v in store.attested_by_site(day).items() if k in sites}
        for day in report.coverage_days(period, as_of)
    }


def _stored_findings(
    store: Store, concerns: Callable[[str], bool], sites: set[str]
) -> tuple[Finding, ...]:
    """The stored findings that concern the entity. An agent the postures did not name (it
    held nothing then) and a GPU (`gpu:<uuid>`: duplicate, missing, lost) are looked up
    once each: the finding concerns the entity when they are at one of its sites."""
    here: dict[str, bool] = {}

    def at_sites(subject: str) -> bool:
        if subject not in here:
            kind, _, ident = subject.partition(":")
            if kind == "agent":
                record = store.get_agent(ident)
                here[subject] = record is not None and record.site_id in sites
            else:
                here[subject] = any(s.site_id in sites for s in store.gpu_sightings(ident))
        return here[subject]

    return tuple(
        f
        for f in store.iter_findings(include_resolved=True)
        if concerns(f.subject) or (f.subject.startswith(("agent:", "gpu:")) and at_sites(f.subject))
    )


def _locations(
    store: Store,
    registry: Registry,
    config: VerifierConfig,
    pack: PolicyPack,
    *,
    as_of: date,
    now: datetime,
) -> dict[str, SiteLocation]:
    """Each site's location at the end of `as_of` (or now, for a period not over), from the
    landmark statements checked by then; statements not checked yet are checked first."""
    locate.check_carried(store, registry, clock_skew=config.stream.clock_skew)
    end = min(now, datetime.combine(as_of + timedelta(days=1), time.min, UTC))
    clearance = location.tier3_clearance(pack, as_of)
    judged = locate.judge_at(store, registry, end, config.fleet.location_deadline, clearance)
    return {s.site_id: s for s in judged}


def create_report(
    args: argparse.Namespace, store: Store, config: VerifierConfig, now: datetime
) -> tuple[bytes, str | None]:
    """The signed report file and (with --html) its page. Raises SiteUnknownError for an
    entity not in the registry, PolicyNotFoundError, ProofError, StoreError."""
    period = _period(args)
    if period.start > now.date():
        raise InputFileError(f"the period {period.label} has not begun")
    as_of = min(period.end, now.date())
    registry = store.load_registry(as_of)
    entity = next((e for e in registry.entities if e.id == args.entity), None)
    if entity is None:
        raise SiteUnknownError(f"no entity {args.entity!r} in the registry as of {as_of}")
    pack, digest = _pack(args, config.policy, as_of)
    signer = load_or_create_report_signer(config.state_dir)
    log, tree = _log_state(args, store, config, signer)
    rows = list(store.holdings(as_of))  # sites x models rows
    sites = {s.id for s in report.entity_sites(registry, entity.id)}
    seen: set[str] = set()  # agents at the entity's sites, as the postures stream past

    def tap(postures: Iterator[PostureRow]) -> Iterator[PostureRow]:
        for row in postures:
            if row.site_id in sites:
                seen.add(row.agent_id)
            yield row

    judged = reconcile(rows, tap(store.postures(as_of)), registry, pack, as_of)
    mine = tuple(r for r in rows if r.site_id in sites)
    agents = frozenset(seen)
    concerns = report.finding_filter(registry, pack, entity.id, agents, as_of)
    coverage = _coverage(store, period, as_of, sites)
    inputs = report.ReportInputs(
        entity=entity,
        period=period,
        as_of=as_of,
        registry=registry,
        pack=pack,
        pack_sha256=digest,
        reconciliation=judged,
        holdings=mine,
        attested=coverage[as_of],
        coverage=tuple(
            report.Coverage(day, sum(h for h, _ in v.values()), sum(f for _, f in v.values()))
            for day, v in coverage.items()
        ),
        findings=_stored_findings(store, concerns, sites),
        agents=agents,
        log=log,
        samples=_samples(store, report.evidence_candidates(mine), tree),
        locations=_locations(store, registry, config, pack, as_of=as_of, now=now),
    )
    statement = report.build_statement(inputs, now)
    page = render_html(statement) if args.html is not None else None
    return report.sign_statement(statement, signer), page


def run_report_command(
    args: argparse.Namespace, store: Store, config: VerifierConfig, now: datetime | None = None
) -> int:
    """Run `report key|create`; raises as `create_report`."""
    if args.action == "key":
        pem = load_or_create_report_signer(config.state_dir).public_key.to_pem()
        if args.out is None:
            sys.stdout.buffer.write(pem)
            sys.stdout.flush()
        else:
            write_public_file(args.out, pem)
        return VerifierExit.OK
    data, page = create_report(args, store, config, now or datetime.now(UTC))
    write_public_file(args.out, data)
    if page is not None:
        write_public_file(args.html, page.encode("utf-8"))
    print(f"wrote {args.out}" + (f" and {args.html}" if page is not None else ""))
    return VerifierExit.OK
