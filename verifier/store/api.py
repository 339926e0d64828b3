"""The verifier's storage port: one `Store` protocol, two implementations (SQLite, PostgreSQL).

The records it takes and returns are the domain values of `verifier.model`; this module holds
only the port and its options.

Conventions every implementation keeps:
- Every datetime going in and out is timezone-aware UTC (stored as integer microseconds).
- Every method blocks and is thread-safe. From asyncio, call them with `asyncio.to_thread`, and
  hand accepts to `verifier.store.batch.GroupCommitter`, which batches many envelopes into one
  transaction (group commit) and resolves each caller only after COMMIT.
- Failures to reach the database raise `StoreUnavailableError` (retryable; the store reconnects
  by itself); other database failures raise `StoreError`. Domain refusals raise the typed errors
  named in each docstring, all from `attest.errors`.
- Open a store with `verifier.store.open_store(url, options)`: `sqlite:///path/to/db` or
  `postgresql://user@host:port/db`. Schema migrations are applied at open.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Protocol

from attest import merkle
from verifier.location import CarriedStatement, Measurement, Verdict
from verifier.model import (
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
from verifier.store.segments import Placement

# --- options and the port ----------------------------------------------------------------------

#: Rows per page of the `iter_*` listings (all pages of one listing read one snapshot), so a
#: listing holds O(chunk) rows whatever the size of the fleet (docs/design.md §10).
LIST_CHUNK = 1000
#: Subjects per page of the sweep, each page one short write transaction.
SWEEP_CHUNK = 500


@dataclass(frozen=True)
class StoreOptions:
    """Store behaviour that comes from configuration."""

    #: next_due = last nonce-fresh evidence (or enrollment) + attestation_deadline.
    attestation_deadline: timedelta = timedelta(minutes=5)
    #: id of this verifier replica, recorded on nonces it issues.
    replica_id: str = "verifier-0"
    #: PostgreSQL pool size; SQLite ignores it.
    pool_size: int = 8
    #: how long a call waits for an unreachable database before StoreUnavailableError.
    unavailable_timeout: timedelta = field(default=timedelta(seconds=5))
    #: where `log archive` keeps segment files (STATE_DIR/archive); None: beside a SQLite
    #: database, and no archive for PostgreSQL (reading an archived envelope is a StoreError)
    archive_dir: Path | None = None


class Store(Protocol):
    """The verifier's persistent state. See the module docstring for the shared conventions."""

    # agents and enrollment

    def create_token(self, token: NewToken) -> None:
        """Store a one-time enrollment token (by hash). Raises StoreError on a duplicate hash."""

    def get_token(self, token_hash: bytes) -> TokenRecord | None:
        """The token stored under this hash, or None."""

    def enroll(self, request: EnrollmentRequest, now: datetime) -> Enrollment:
        """Redeem a token and bind the key to an agent, atomically, in one transaction.

        Idempotent: the same token with the same keyid returns the agent made earlier
        (created=False) for as long as that agent has no accepted attestation, even if the
        token has expired since. Records an ENROLLMENT audit record when an agent is created.
        The new agent's next_due is now + attestation_deadline.
        Raises TokenInvalidError (no such token), TokenExpiredError, TokenUsedError (redeemed
        by another key, or the agent has attested already).
        """

    def get_agent(self, agent_id: str) -> AgentRecord | None:
        """The agent, with keys and chain head, or None."""

    def agents_with_current_key(self, keyid: str) -> list[str]:
        """The ids of the agents whose current (not retired) keys include `keyid`, sorted."""

    def iter_agents(self, *, chunk: int = LIST_CHUNK) -> Iterator[AgentRecord]:
        """Every agent, ordered by agent_id, read `chunk` agents at a time, all pages from one
        read-only snapshot taken at the first read (changes made meanwhile are not seen; the
        snapshot is released when the iterator is exhausted or closed). Raises ValueError when
        chunk < 1."""

    def revoke_agent(self, agent_id: str, now: datetime, reason: str) -> AgentRecord:
        """Mark the agent revoked (accept refuses it from then on) and audit it.

        Idempotent on an already revoked agent. Raises AgentUnknownError.
        """

    def rotate_key(
        self, agent_id: str, new_spki_der: bytes, new_keyid: str, now: datetime, reason: str
    ) -> AgentRecord:
        """Retire every current key of the agent, bind the new one, and audit it.

        The caller has checked that the old key signed the rotation. Raises AgentUnknownError,
        AgentRevokedError.
        """

    # nonces

    def issue_nonces(self, nonces: Sequence[NonceRecord]) -> None:
        """Record challenge nonces in ONE transaction, so that every replica sharing the
        database accepts them; one commit serves many streams' challenges."""

    def get_nonce(self, nonce: bytes) -> NonceRecord | None:
        """The nonce as issued (with consumed_at), or None if this fleet never issued it; one
        issued to an id no agent has reads back unbound (agent_id "")."""

    def purge_nonces(self, expired_before: datetime) -> int:
        """Delete nonces that expired before the given time; returns how many."""

    # evidence

    def accept(
        self,
        items: Sequence[VerifiedAttestation],
        now: datetime,
        nonces: Sequence[NonceRecord] = (),
    ) -> list[AcceptOutcome]:
        """Make a batch of verified attestations durable in ONE transaction (group commit).

        `nonces` are issued in that same transaction, whatever the items' outcomes (as
        `issue_nonces` would): the challenges sent after the receipts then cost no commit of
        their own.

        Returns one outcome per item, in order, only after COMMIT. Items are applied in order,
        so one batch may carry consecutive seqs of one agent. Per item, atomically: chain-head
        compare-and-set (seq == last_seq + 1 and prev_hash == last_hash, agent active), nonce
        consumption, verbatim envelope bytes (by log index), attestation row, transparency
        log append, fleet-state update (compacted when the inventory is unchanged), and
        `duplicate-gpu` findings for GPUs another agent still freshly claims. An item that
        fails leaves no trace and does not affect the others; its outcome is the typed error:
        ReplayError (same agent+seq, same payload digest), ForkError (same agent+seq, other
        payload), GapError (seq skips or prev_hash does not link), NonceReplayedError,
        NonceUnknownError, AgentUnknownError, AgentRevokedError. The caller audits each
        failed item with `record_rejection`, which raises the evidence-fork / evidence-gap
        findings (one place for pipeline-detected and store-detected chain errors).
        Raises StoreUnavailableError / StoreError for the whole batch when the transaction
        cannot commit; then nothing of the batch is durable, or (commit outcome unknown) a
        retry reports the items as ReplayError.
        """

    def get_attestation(self, agent_id: str, seq: int) -> AttestationRecord | None:
        """The accepted attestation at (agent, seq), or None."""

    def get_envelope(self, log_index: int) -> bytes | None:
        """The bytes of log entry `log_index`'s envelope, verbatim, or None when there is no
        such entry; read from an archive segment when `log archive` moved them there (checked
        against the entry's hash). Raises StoreError when an archived envelope cannot be read
        back."""

    def archive_candidates(
        self, before: datetime, start: int, stop: int, limit: int
    ) -> list[tuple[bytes, bytes, int]]:
        """Up to `limit` (hash, bytes, log index) of the envelopes of log entries start <= i <
        stop received before `before` still in the hot tables, in a stable order
        (verifier/store/ops_archive.py)."""

    def mark_archived(self, placements: list[Placement], log_indices: list[int]) -> int:
        """In one transaction, index envelopes a durable segment holds and delete their hot
        copies (`log_indices`: the same envelopes' log indices); return how many were
        deleted."""

    def log_size(self) -> int:
        """Number of entries in the transparency log."""

    def log_entries(self, start: int, stop: int) -> list[LogEntry]:
        """Log entries with start <= log_index < stop, in order."""

    def log_root(self, size: int) -> bytes:
        """MTH (RFC 9162) of the log's first `size` entries, from the stored Merkle nodes in
        one query of popcount(size) rows. Raises ProofError when size is negative or beyond
        the log, StoreError when a stored node is missing."""

    def log_inclusion_proof(self, index: int, size: int) -> tuple[bytes, ...]:
        """PATH(index, D[size]) of RFC 9162 §2.1.3.1, leaf sibling first, read from the stored
        Merkle nodes in one query of O(log n) rows. Raises ProofError unless
        0 <= index < size <= log_size(), StoreError when a stored node is missing."""

    def log_consistency_proof(self, old_size: int, new_size: int) -> tuple[bytes, ...]:
        """PROOF(old_size, D[new_size]) of RFC 9162 §2.1.4.1 (empty when old_size is 0 or
        new_size), read as `log_inclusion_proof`. Raises ProofError unless
        0 <= old_size <= new_size <= log_size(), StoreError when a stored node is missing."""

    def log_frontier(self, size: int) -> merkle.Frontier:
        """The compact range of the log's first `size` entries (one hash per set bit of size),
        from which appends continue and roots are signed: what a checkpointer catches up from.
        Raises ProofError when size is negative or beyond the log, StoreError when a stored
        node is missing."""

    # fleet state

    def iter_fleet(
        self, site_id: str | None = None, *, chunk: int = LIST_CHUNK
    ) -> Iterator[HostFleet]:
        """Every agent (optionally of one site) with the GPUs it claims, grouped by host:
        hosts by agent_id, GPUs by uuid; `chunk` hosts at a time from one snapshot, as for
        `iter_agents`. Raises ValueError when chunk < 1."""

    def gpu_sightings(self, uuid: str) -> list[GpuSighting]:
        """Every agent's claim on this GPU UUID."""

    def holdings(self, at: date | None = None) -> Iterator[HoldingRow]:
        """Present GPUs of active agents (or, with `at`, those whose latest evidence received
        before the end of that UTC day placed them at an agent not revoked by then), counted
        per (site, PCI device id, subsystem id) in SQL: sites x models rows, whatever the
        fleet. A GPU two agents claim counts at each (duplicate-gpu flags it)."""

    def postures(self, at: date | None = None, *, chunk: int = LIST_CHUNK) -> Iterator[PostureRow]:
        """The latest attested posture of every active agent (or, with `at`, the latest received
        before the end of that UTC day, of agents not revoked by then), by agent_id, `chunk`
        agents at a time from one snapshot. Raises ValueError when chunk < 1."""

    # findings

    def current_compliance(
        self, *, chunk: int = LIST_CHUNK
    ) -> contextlib.AbstractContextManager[CurrentCompliance]:
        """Today's holdings (as `holdings()`) and postures (as `postures()`, read page by page
        while the block runs) in one snapshot, with the log size and compliance epoch they
        stand at: where a live reconciliation starts (docs/design.md §14)."""

    def compliance_changes(self, after: int) -> ComplianceChanges:
        """The holdings journal and posture changes of log indices `after` up to the log size
        now, in log order, with the compliance epoch and journal floor (a reader whose epoch
        differs, or whose position is below the floor, starts again from
        `current_compliance`)."""

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
        """Open or refresh `raised` and resolve `cleared` (with the log index that cleared
        them), derived at (`epoch`, log `position`), in one transaction; nothing is written,
        and False returned, when the epoch moved on or findings derived at a later position
        are stored already (a lagging replica never overwrites a newer judgment)."""

    def upsert_findings(self, drafts: Sequence[FindingDraft], now: datetime) -> None:
        """Open or refresh findings by (rule, subject); never a second row for a key. An open
        or acknowledged finding is refreshed in place (an acknowledgment stands while its
        condition holds); a resolved one opens again as a new episode with a new id. Each
        opening is audited (kind `finding`)."""

    def resolve_findings(
        self,
        keys: Sequence[tuple[str, str]],
        now: datetime,
        *,
        reason: str = "condition cleared",
        cleared_by: int | None = None,
    ) -> None:
        """Mark the open (or acknowledged) findings with these (rule, subject) keys resolved,
        recording `reason` and `cleared_by`, the log index of the accepted evidence that cleared
        them when there is one; each resolution is audited (kind `finding`)."""

    def acknowledge_finding(self, finding_id: int, by: str, reason: str, now: datetime) -> Finding:
        """Acknowledge the open finding with this id (audited); returns it. Acknowledging an
        acknowledged finding changes nothing and returns the first acknowledgment. Raises
        FindingUnknownError (no current finding has this id), FindingResolvedError."""

    def get_finding(self, finding_id: int) -> Finding | None:
        """The finding whose current episode has this id, or None."""

    def missing_by_host(self, first: int = 3) -> list[MissingOnHost]:
        """Open `gpu-missing` findings grouped by host (active agents claiming the GPU; a GPU
        two hosts claim counts at each), by agent_id, each with its count and the finding ids
        and uuids of its first `first` GPUs; aggregated in SQL (O(hosts) rows)."""

    def iter_findings(
        self, include_resolved: bool = False, *, chunk: int = LIST_CHUNK
    ) -> Iterator[Finding]:
        """Open findings (or all), ordered by opened_at, then rule and subject; `chunk`
        findings at a time from one snapshot, as for `iter_agents`. Raises ValueError when
        chunk < 1."""

    def sweep(
        self, now: datetime, gpu_missing_grace: timedelta, *, chunk: int = SWEEP_CHUNK
    ) -> dict[str, int]:
        """Run the periodic rules (agent-stale, gpu-missing, duplicate-gpu) over the stored
        state, upsert what they raise, resolve what no longer holds; returns the number of
        open findings per rule id afterwards.

        Works in pages of `chunk` subjects, each its own short write transaction, so memory
        is O(chunk) and accepts interleave with a long sweep. Raises ValueError when
        chunk < 1."""

    # audit

    def record_rejection(self, record: AuditRecord) -> None:
        """Audit a rejected envelope (never stored itself). A rejection with code
        `evidence-gap` or `evidence-fork` also raises the matching finding."""

    def list_audit(self, limit: int = 100) -> list[AuditRecord]:
        """The newest audit records first."""

    # registry

    def import_registry(
        self, registry: Registry, now: datetime | None = None, *, by: str = "", source: bytes = b""
    ) -> int:
        """Replace the current registry with this one and keep it as a new version (imported
        `now`, default the clock, by `by`, with the SHA-256 of the file bytes `source`),
        audited, atomically; returns the version number (1, 2, ...)."""

    def load_registry(self, at: date | None = None) -> Registry:
        """The current registry, or with `at` the registry as it stood at the end of that UTC
        day (the latest import on or before it). Empty if none was imported (by then)."""

    def registry_history(self) -> list[RegistryVersion]:
        """Every imported registry version, oldest first."""

    def present_gpus_by_site(self) -> dict[str, int]:
        """Present GPUs of active agents per the site the agents enrolled at (sites holding
        none are absent): what an import removing a site would orphan."""

    def attested_by_site(self, at: date) -> dict[str, tuple[int, int]]:
        """Per site: the GPUs held at the end of UTC day `at` (as `holdings(at)` counts them)
        and how many of those sit at an agent with accepted evidence received during that day;
        aggregated in SQL, O(sites) rows (reports, docs/design.md §15)."""

    # location (docs/design.md §16)

    def location_unchecked(self, limit: int = 256) -> list[CarriedStatement]:
        """The oldest landmark statements carried by accepted evidence and not checked yet."""

    def record_location_verdicts(self, verdicts: Sequence[Verdict]) -> None:
        """Record what checking those statements found; a verdict is never overwritten."""

    def location_measurements(self, since: datetime, until: datetime) -> list[Measurement]:
        """The statements that count, measured (by the landmark's clock) within the window."""

    def active_agents_by_site(self, at: datetime) -> dict[str, list[str]]:
        """The agents enrolled by `at` and not revoked by then, by enrolled site."""

    # lifecycle

    def close(self) -> None:
        """Release connections. The store must not be used afterwards."""
