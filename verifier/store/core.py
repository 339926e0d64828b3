"""`SqlStore`: the `Store` protocol over the shared transaction bodies. A backend supplies only
`_transact` (open a transaction, run a body, commit, map driver errors) and `close`."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

from attest.errors import ReplayError
from verifier.registry_model import Registry
from verifier.store import ops_accept, ops_agents, ops_fleet, ops_registry
from verifier.store.api import (
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
    NewToken,
    NonceRecord,
    StoreOptions,
    TokenRecord,
    VerifiedAttestation,
)
from verifier.store.migrations import apply_migrations
from verifier.store.sqlbase import Db, from_micros, read_agents, to_micros

T = TypeVar("T")


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

    def list_agents(self) -> list[AgentRecord]:
        return self._transact(read_agents, write=False)

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

    def get_attestation(self, agent_id: str, seq: int) -> AttestationRecord | None:
        return self._transact(lambda db: ops_fleet.get_attestation(db, agent_id, seq), write=False)

    def get_blob(self, envelope_hash: bytes) -> bytes | None:
        return self._transact(lambda db: ops_fleet.get_blob(db, envelope_hash), write=False)

    def log_size(self) -> int:
        return self._transact(ops_fleet.log_size, write=False)

    def log_entries(self, start: int, stop: int) -> list[LogEntry]:
        return self._transact(lambda db: ops_fleet.log_entries(db, start, stop), write=False)

    # fleet state and findings

    def list_fleet(self, site_id: str | None = None) -> list[HostFleet]:
        return self._transact(lambda db: ops_fleet.list_fleet(db, site_id), write=False)

    def gpu_sightings(self, uuid: str) -> list[GpuSighting]:
        return self._transact(lambda db: ops_fleet.gpu_sightings(db, uuid), write=False)

    def upsert_findings(self, drafts: Sequence[FindingDraft], now: datetime) -> None:
        now_us = to_micros(now)
        self._transact(lambda db: ops_fleet.upsert_findings(db, drafts, now_us), write=True)

    def resolve_findings(self, keys: Sequence[tuple[str, str]], now: datetime) -> None:
        now_us = to_micros(now)
        self._transact(lambda db: ops_fleet.resolve_findings(db, keys, now_us), write=True)

    def list_findings(self, include_resolved: bool = False) -> list[Finding]:
        return self._transact(lambda db: ops_fleet.list_findings(db, include_resolved), write=False)

    def sweep(self, now: datetime, gpu_missing_grace: timedelta) -> list[Finding]:
        now_us = to_micros(now)

        def body(db: Db) -> list[Finding]:
            ops_fleet.sweep(db, now_us, gpu_missing_grace, self.options)
            return ops_fleet.list_findings(db, include_resolved=False)

        return self._transact(body, write=True)

    # audit and registry

    def record_rejection(self, record: AuditRecord) -> None:
        self._transact(lambda db: ops_fleet.record_rejection(db, record), write=True)

    def list_audit(self, limit: int = 100) -> list[AuditRecord]:
        return self._transact(lambda db: ops_agents.list_audit(db, limit), write=False)

    def import_registry(self, registry: Registry) -> None:
        self._transact(lambda db: ops_registry.import_registry(db, registry), write=True)

    def load_registry(self) -> Registry:
        return self._transact(ops_registry.load_registry, write=False)


def _recovered(
    db: Db, item: VerifiedAttestation, outcome: AcceptOutcome, now_us: int
) -> AcceptOutcome:
    if not isinstance(outcome, ReplayError):
        return outcome
    stored = ops_fleet.get_attestation(db, item.agent_id, item.seq)
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
