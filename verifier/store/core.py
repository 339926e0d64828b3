"""`SqlStore`: the `Store` protocol over the shared transaction bodies. A backend supplies only
`_transact` (open a transaction, run a body, commit, map driver errors), `_snapshot` (one
read-only transaction that several bodies share) and `close`."""

from __future__ import annotations

import abc
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from typing import TypeVar

from attest import merkle
from attest.errors import ReplayError, StoreError, StoreUnavailableError
from verifier import findings
from verifier.location import CarriedStatement, Measurement, Verdict
from verifier.model import (
    Accepted,
    AcceptOutcome,
    AgentRecord,
    AttestationRecord,
    AuditRecord,
    Enrollment,
    EnrollmentRequest,
    Finding,
    FindingDraft,
    GpuSighting,
    HostFleet,
    LogEntry,
    MissingOnHost,
    NewToken,
    NonceRecord,
    TokenRecord,
    VerifiedAttestation,
)
from verifier.reconcile.model import (
    ComplianceChanges,
    CurrentCompliance,
    HoldingRow,
    PostureRow,
)
from verifier.registry_model import Registry, RegistryVersion
from verifier.store import (
    ops_accept,
    ops_agents,
    ops_archive,
    ops_chain,
    ops_compliance,
    ops_findings,
    ops_fleet,
    ops_holdings,
    ops_location,
    ops_log,
    ops_registry,
    ops_reports,
    ops_sweep,
)
from verifier.store.api import LIST_CHUNK, SWEEP_CHUNK, StoreOptions
from verifier.store.migrations import apply_migrations
from verifier.store.segments import Placement, read_archived
from verifier.store.sqlbase import Db, from_micros, read_agents, to_micros

T = TypeVar("T")
K = TypeVar("K")
log = logging.getLogger(__name__)


class SqlStore(abc.ABC):
    """Implements every `Store` method; see verifier.store.api.Store for the contracts."""

    def __init__(self, options: StoreOptions) -> None:
        self.options = options

    @abc.abstractmethod
    def _transact(self, body: Callable[[Db], T], *, write: bool) -> T:
        """Run `body` in one transaction and commit; retry it if the connection failed.

        Raises StoreUnavailableError when the database stays unreachable, StoreError on other
        driver failures; AttestErrors from `body` pass through after rollback.
        """

    @abc.abstractmethod
    def _snapshot(self) -> contextlib.AbstractContextManager[Callable[[Callable[[Db], T]], T]]:
        """A read-only transaction held open for the block: the function it yields runs a body
        inside it, and every body sees the database as of the transaction's first read (the
        listings' pages: one consistent listing without one unbounded read). Driver failures
        are mapped as by `_transact`; there is no retry, since a new connection would be a new
        snapshot."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def _migrate(self, now: datetime) -> list[int]:
        return self._transact(lambda db: apply_migrations(db, to_micros(now)), write=True)

    # agents and enrollment

    def create_token(self, token: NewToken) -> None:
        self._transact(lambda db: ops_agents.create_token(db, token), write=True)

    def get_token(self, token_hash: bytes) -> TokenRecord | None:
        return self._transact(lambda db: ops_agents.get_token(db, token_hash), write=False)

    def enroll(self, request: EnrollmentRequest, now: datetime) -> Enrollment:
        now_us = to_micros(now)
        return self._transact(
            lambda db: ops_agents.enroll(db, request, now_us, self.options), write=True
        )

    def get_agent(self, agent_id: str) -> AgentRecord | None:
        return self._transact(lambda db: ops_agents.get_agent(db, agent_id), write=False)

    def agents_with_current_key(self, keyid: str) -> list[str]:
        return self._transact(lambda db: ops_agents.agents_with_current_key(db, keyid), write=False)

    def iter_agents(self, *, chunk: int = LIST_CHUNK) -> Iterator[AgentRecord]:
        return self._pages(read_agents, _agent_id, chunk)

    def revoke_agent(self, agent_id: str, now: datetime, reason: str) -> AgentRecord:
        now_us = to_micros(now)
        return self._transact(
            lambda db: ops_agents.revoke_agent(db, agent_id, now_us, reason), write=True
        )

    def rotate_key(
        self, agent_id: str, new_spki_der: bytes, new_keyid: str, now: datetime, reason: str
    ) -> AgentRecord:
        now_us = to_micros(now)
        return self._transact(
            lambda db: ops_agents.rotate_key(
                db,
                agent_id,
                spki_der=new_spki_der,
                keyid=new_keyid,
                now_us=now_us,
                reason=reason,
            ),
            write=True,
        )

    # nonces

    def issue_nonces(self, nonces: Sequence[NonceRecord]) -> None:
        if nonces:
            self._transact(lambda db: ops_agents.issue_nonces(db, nonces), write=True)

    def get_nonce(self, nonce: bytes) -> NonceRecord | None:
        return self._transact(lambda db: ops_agents.get_nonce(db, nonce), write=False)

    def purge_nonces(self, expired_before: datetime) -> int:
        before_us = to_micros(expired_before)
        return self._transact(lambda db: ops_agents.purge_nonces(db, before_us), write=True)

    # evidence

    def accept(
        self,
        items: Sequence[VerifiedAttestation],
        now: datetime,
        nonces: Sequence[NonceRecord] = (),
    ) -> list[AcceptOutcome]:
        if not items:
            self.issue_nonces(nonces)
            return []
        now_us = to_micros(now)
        try:
            return self._accept_once(items, now_us, nonces)
        except StoreUnavailableError:
            raise  # the database, not an item: the whole batch fails and nothing is durable
        except StoreError as exc:
            # A statement failed on some item's values (e.g. PostgreSQL refuses NUL in text):
            # the transaction rolled back. One agent's envelope must not fail its neighbours',
            # so the challenges are issued on their own and the items retried without it.
            self.issue_nonces(nonces)
            return self._isolate(items, now_us, exc)

    def _accept_once(
        self, items: Sequence[VerifiedAttestation], now_us: int, nonces: Sequence[NonceRecord]
    ) -> list[AcceptOutcome]:
        attempts = 0

        def body(db: Db) -> list[AcceptOutcome]:
            nonlocal attempts
            attempts += 1
            outcomes = ops_accept.accept_batch(db, items, now_us, self.options)
            if nonces:  # after the log head lock, like every accept; a retry inserts nothing new
                ops_agents.issue_nonces(db, nonces)
            if attempts > 1:
                # The previous attempt may have committed before its connection broke: an item
                # now "replayed" with its own bytes is that commit, not an agent's replay.
                outcomes = [
                    _recovered(db, i, o, now_us) for i, o in zip(items, outcomes, strict=True)
                ]
            return outcomes

        return self._transact(body, write=True)

    def _isolate(
        self, items: Sequence[VerifiedAttestation], now_us: int, error: StoreError
    ) -> list[AcceptOutcome]:
        """Outcomes of `items`, whose one transaction failed with `error`, found by bisection:
        halves are retried in order (so one agent's consecutive seqs stay in order), and an item
        that fails alone gets the StoreError as its own outcome. One failing item among n costs
        about 2·log2(n) transactions. Once anything committed, a later unreachable database is
        reported per item, since the committed items' outcomes must not be lost."""
        if len(items) == 1:
            item = items[0]
            log.error(
                "store refused the envelope of agent %s seq %d: %s", item.agent_id, item.seq, error
            )
            return [StoreError(f"the store could not record seq {item.seq} (logged)")]
        outcomes: list[AcceptOutcome] = []
        middle = len(items) // 2
        for part in (items[:middle], items[middle:]):
            try:
                outcomes += self._accept_once(part, now_us, ())
            except StoreUnavailableError as exc:
                log.warning("store unavailable for %s: %s", describe_items(part), exc)
                outcomes += [exc] * len(part)
            except StoreError as exc:
                outcomes += self._isolate(part, now_us, exc)
        return outcomes

    def get_attestation(self, agent_id: str, seq: int) -> AttestationRecord | None:
        return self._transact(lambda db: ops_chain.find_attestation(db, agent_id, seq), write=False)

    def get_envelope(self, log_index: int) -> bytes | None:
        found = self._transact(
            lambda db: ops_archive.envelope_or_placement(db, log_index), write=False
        )
        if isinstance(found, Placement):
            # Moved to a segment file by `log archive` (docs/design.md §9).
            return read_archived(self.options.archive_dir, found)
        return found

    def archive_candidates(
        self, before: datetime, start: int, stop: int, limit: int
    ) -> list[tuple[bytes, bytes, int]]:
        before_us = to_micros(before)
        return self._transact(
            lambda db: ops_archive.envelopes_before(db, before_us, start, stop, limit),
            write=False,
        )

    def mark_archived(self, placements: list[Placement], log_indices: list[int]) -> int:
        return self._transact(
            lambda db: ops_archive.mark_archived(db, placements, log_indices), write=True
        )

    def log_size(self) -> int:
        return self._transact(ops_fleet.log_size, write=False)

    def log_entries(self, start: int, stop: int) -> list[LogEntry]:
        return self._transact(lambda db: ops_fleet.log_entries(db, start, stop), write=False)

    def log_root(self, size: int) -> bytes:
        return self._transact(lambda db: ops_log.root(db, size), write=False)

    def log_inclusion_proof(self, index: int, size: int) -> tuple[bytes, ...]:
        return self._transact(lambda db: ops_log.inclusion_proof(db, index, size), write=False)

    def log_consistency_proof(self, old_size: int, new_size: int) -> tuple[bytes, ...]:
        return self._transact(
            lambda db: ops_log.consistency_proof(db, old_size, new_size), write=False
        )

    def log_frontier(self, size: int) -> merkle.Frontier:
        return self._transact(lambda db: ops_log.frontier(db, size), write=False)

    # fleet state and findings

    def iter_fleet(
        self, site_id: str | None = None, *, chunk: int = LIST_CHUNK
    ) -> Iterator[HostFleet]:
        page = partial(ops_fleet.fleet_page, site_id=site_id)
        return self._pages(page, lambda host: host.agent.agent_id, chunk)

    def gpu_sightings(self, uuid: str) -> list[GpuSighting]:
        return self._transact(lambda db: ops_fleet.gpu_sightings(db, uuid), write=False)

    def holdings(self, at: date | None = None) -> Iterator[HoldingRow]:
        return iter(self._transact(lambda db: ops_holdings.holdings(db, at), write=False))

    def postures(self, at: date | None = None, *, chunk: int = LIST_CHUNK) -> Iterator[PostureRow]:
        page = partial(ops_holdings.postures_page, at=at)
        return self._pages(page, _posture_agent, chunk)

    @contextlib.contextmanager
    def current_compliance(self, *, chunk: int = LIST_CHUNK) -> Iterator[CurrentCompliance]:
        _check_chunk(chunk)
        with self._snapshot() as read:
            epoch, _, _ = read(ops_compliance.state)
            size = read(ops_fleet.log_size)
            registry = read(ops_registry.load_registry)
            rows = read(lambda db: ops_holdings.holdings(db, None))

            def postures() -> Iterator[PostureRow]:
                after: str | None = None
                while True:
                    page = read(
                        partial(ops_holdings.postures_page, at=None, after=after, limit=chunk)
                    )
                    yield from page
                    if len(page) < chunk:
                        return
                    after = page[-1].agent_id

            yield CurrentCompliance(epoch, size, registry, rows, postures())

    def compliance_changes(self, after: int) -> ComplianceChanges:
        def read(db: Db) -> ComplianceChanges:
            return ops_compliance.changes(db, after, ops_fleet.log_size(db))

        return self._transact(read, write=False)

    def store_compliance_findings(
        self,
        raised: Sequence[FindingDraft],
        cleared: Sequence[tuple[str, str]],
        *,
        epoch: int,
        position: int,
        now: datetime,
        cleared_by: int | None = None,
    ) -> bool:
        now_us = to_micros(now)
        return self._transact(
            lambda db: ops_compliance.store_findings(
                db, raised, cleared, epoch=epoch, position=position, now_us=now_us,
                cleared_by=cleared_by,
            ),
            write=True,
        )  # fmt: skip

    def upsert_findings(self, drafts: Sequence[FindingDraft], now: datetime) -> None:
        now_us = to_micros(now)
        self._transact(lambda db: ops_findings.upsert_findings(db, drafts, now_us), write=True)

    def resolve_findings(
        self,
        keys: Sequence[tuple[str, str]],
        now: datetime,
        *,
        reason: str = ops_findings.CLEARED,
        cleared_by: int | None = None,
    ) -> None:
        now_us = to_micros(now)
        self._transact(
            lambda db: ops_findings.resolve_findings(
                db, keys, now_us, reason=reason, cleared_by=cleared_by
            ),
            write=True,
        )

    def acknowledge_finding(self, finding_id: int, by: str, reason: str, now: datetime) -> Finding:
        now_us = to_micros(now)
        return self._transact(
            lambda db: ops_findings.acknowledge(db, finding_id, by, reason, now_us), write=True
        )

    def get_finding(self, finding_id: int) -> Finding | None:
        return self._transact(lambda db: ops_findings.get_finding(db, finding_id), write=False)

    def missing_by_host(self, first: int = 3) -> list[MissingOnHost]:
        return self._transact(lambda db: ops_findings.missing_by_host(db, first), write=False)

    def iter_findings(
        self, include_resolved: bool = False, *, chunk: int = LIST_CHUNK
    ) -> Iterator[Finding]:
        page = partial(ops_findings.findings_page, include_resolved=include_resolved)
        return self._pages(page, ops_fleet.finding_key, chunk)

    def sweep(
        self, now: datetime, gpu_missing_grace: timedelta, *, chunk: int = SWEEP_CHUNK
    ) -> dict[str, int]:
        _check_chunk(chunk)
        rules = ops_sweep.SweepRules(
            to_micros(now), gpu_missing_grace, self.options.attestation_deadline
        )
        for rule in findings.SWEPT_RULES:
            self._write_pages(partial(ops_sweep.resolve_page, rules=rules, rule=rule), chunk)
        self._write_pages(partial(ops_sweep.raise_stale_agents, rules=rules), chunk)
        self._write_pages(partial(ops_sweep.raise_gpu_rules, rules=rules), chunk)
        before_us = to_micros(now) - ops_compliance.JOURNAL_RETENTION_US
        self._transact(lambda db: ops_compliance.prune(db, before_us), write=True)
        return self._transact(ops_sweep.open_counts, write=False)

    # paging

    def _pages(
        self, page: Callable[..., list[T]], key: Callable[[T], K], chunk: int
    ) -> Iterator[T]:
        """Yield what `page(db, after=..., limit=chunk)` returns, page after page, all read in
        one snapshot: memory stays at one page, and the listing is of one moment (a GPU that
        moves between hosts meanwhile is listed once, where it was)."""
        _check_chunk(chunk)
        return self._page_iterator(page, key, chunk)

    def _page_iterator(
        self, page: Callable[..., list[T]], key: Callable[[T], K], chunk: int
    ) -> Iterator[T]:
        after: K | None = None
        with self._snapshot() as read:
            while True:
                items: list[T] = read(partial(page, after=after, limit=chunk))
                yield from items
                if len(items) < chunk:
                    return
                after = key(items[-1])

    def _write_pages(self, page: Callable[..., str | None], chunk: int) -> None:
        """Run `page(db, after=..., limit=chunk)` in one write transaction after another, each
        continuing from the position the previous one returned, until one returns None."""
        after: str | None = None
        while True:
            after = self._transact(partial(page, after=after, limit=chunk), write=True)
            if after is None:
                return

    # audit and registry

    def record_rejection(self, record: AuditRecord) -> None:
        self._transact(lambda db: ops_fleet.record_rejection(db, record), write=True)

    def list_audit(self, limit: int = 100) -> list[AuditRecord]:
        return self._transact(lambda db: ops_agents.list_audit(db, limit), write=False)

    def import_registry(
        self, registry: Registry, now: datetime | None = None, *, by: str = "", source: bytes = b""
    ) -> int:
        now_us = to_micros(now or datetime.now(UTC))
        return self._transact(
            lambda db: ops_registry.import_registry(db, registry, now_us, by, source), write=True
        )

    def load_registry(self, at: date | None = None) -> Registry:
        if at is None:
            return self._transact(ops_registry.load_registry, write=False)
        # The end of that UTC day: an import at 23:59:59.999999 on `at` counts, one at
        # midnight after it does not.
        end_us = to_micros(datetime.combine(at + timedelta(days=1), time(), UTC))
        return self._transact(lambda db: ops_registry.load_registry_at(db, end_us), write=False)

    def registry_history(self) -> list[RegistryVersion]:
        return self._transact(ops_registry.registry_history, write=False)

    def present_gpus_by_site(self) -> dict[str, int]:
        return self._transact(ops_registry.present_gpus_by_site, write=False)

    def attested_by_site(self, at: date) -> dict[str, tuple[int, int]]:
        return self._transact(lambda db: ops_reports.attested_by_site(db, at), write=False)

    def location_unchecked(self, limit: int = 256) -> list[CarriedStatement]:
        return self._transact(lambda db: ops_location.unchecked(db, limit), write=False)

    def record_location_verdicts(self, verdicts: Sequence[Verdict]) -> None:
        if verdicts:
            self._transact(lambda db: ops_location.record_verdicts(db, verdicts), write=True)

    def location_measurements(self, since: datetime, until: datetime) -> list[Measurement]:
        return self._transact(
            lambda db: ops_location.measurements(db, to_micros(since), to_micros(until)),
            write=False,
        )

    def active_agents_by_site(self, at: datetime) -> dict[str, list[str]]:
        return self._transact(
            lambda db: ops_location.active_agents_by_site(db, to_micros(at)), write=False
        )


#: Envelopes named one by one in a log line about a batch; the rest are counted.
_NAMED_IN_LOG = 20


def describe_items(items: Sequence[VerifiedAttestation]) -> str:
    """`agent seq` of the items for a log line, at most _NAMED_IN_LOG of them named."""
    named = ", ".join(f"{i.agent_id} seq {i.seq}" for i in items[:_NAMED_IN_LOG])
    more = len(items) - _NAMED_IN_LOG
    return f"{len(items)} envelope(s): {named}" + (f" and {more} more" if more > 0 else "")


def _check_chunk(chunk: int) -> None:
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, not {chunk}")


def _agent_id(agent: AgentRecord) -> str:
    return agent.agent_id


def _posture_agent(row: PostureRow) -> str:
    return row.agent_id


def _recovered(
    db: Db, item: VerifiedAttestation, outcome: AcceptOutcome, now_us: int
) -> AcceptOutcome:
    if not isinstance(outcome, ReplayError):
        return outcome
    stored = ops_chain.find_attestation(db, item.agent_id, item.seq)
    if stored is None or stored.envelope_hash != item.envelope_hash:
        return outcome
    return Accepted(
        agent_id=item.agent_id,
        seq=item.seq,
        envelope_hash=item.envelope_hash,
        log_index=stored.log_index,
        leaf_hash=ops_accept.leaf_hash(item.envelope),
        accepted_at=from_micros(now_us),
        freshness=stored.freshness,
    )
