"""Offline evidence (`gpu-attest-verifier ingest ENVELOPE...`): the same pipeline, no stream.

There is no transport identity for a file, so the agent is found from the envelope's signer: the
signature's key id names a pinned key, and that key's agent is the claimed identity. The
signature is then verified against that agent's keys and the evidence must name the same agent,
exactly as on the stream. Files are authenticated first and then applied in (agent, seq) order,
so a directory of spooled envelopes can be ingested in any order.
"""

from __future__ import annotations

import hmac
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from attest import wire
from attest.envelope import envelope_hash
from attest.errors import AttestError, InputFileError, SizeLimitError, UnknownKeyError
from verifier import pipeline
from verifier.model import Accepted, AttestationRecord, AuditKind, AuditRecord
from verifier.store.api import Store


@dataclass(frozen=True)
class IngestOutcome:
    """What became of one file: `accepted`, `already` (this very envelope was stored before:
    a re-run after a crash, not a refusal) or the typed `error`; exactly one of them."""

    name: str
    accepted: Accepted | None = None
    error: AttestError | None = None
    already: AttestationRecord | None = None


def read_envelope_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file `path`, reading at most `max_bytes` + 1 of them.

    Raises InputFileError for anything but a readable regular file (a FIFO, a device such as
    /dev/zero, a directory), SizeLimitError when it holds more than `max_bytes`: memory stays
    bounded by the limit whatever the operator names.
    """
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer before fstat can refuse it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputFileError(f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputFileError(f"{path} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise SizeLimitError(f"{path} is larger than the envelope limit of {max_bytes} bytes")
    return data


def _signer_agent(store: Store, keyid: str) -> str | None:
    holders = store.agents_with_current_key(keyid)
    return holders[0] if len(holders) == 1 else None


def _authenticate(
    store: Store, raw: bytes, limits: pipeline.Limits
) -> pipeline.AuthenticatedEvidence:
    envelope = wire.decode_envelope(raw, limits.max_envelope_bytes)
    agent_ids = {_signer_agent(store, s.keyid) for s in envelope.signatures}
    agent_id = next(iter(agent_ids)) if len(agent_ids) == 1 else None
    if agent_id is None:
        raise UnknownKeyError("the envelope is not signed by exactly one enrolled agent's key")
    record = store.get_agent(agent_id)
    pinned = None if record is None else pipeline.pinned_from_record(record)
    return pipeline.authenticate(raw, agent_id, pinned, limits)


def _apply(
    store: Store, auth: pipeline.AuthenticatedEvidence, now: datetime, limits: pipeline.Limits
) -> Accepted | AttestationRecord:
    """Accept the evidence, or return the stored record when this very envelope (same bytes,
    signature already verified) is what the store holds at its seq."""
    evidence = auth.evidence
    record = store.get_agent(evidence.agent_id)
    head = pipeline.ChainHead() if record is None else pipeline.head_of(record)
    digest = None
    if evidence.seq <= head.last_seq:
        prior = store.get_attestation(evidence.agent_id, evidence.seq)
        digest = None if prior is None else prior.payload_digest
        if prior is not None and hmac.compare_digest(prior.envelope_hash, envelope_hash(auth.raw)):
            return prior
    nonce = store.get_nonce(evidence.nonce) if evidence.nonce else None
    verified = pipeline.check_state(auth, nonce, head, digest, now=now, limits=limits)
    outcome = store.accept([pipeline.to_attestation(verified, now)], now)[0]
    if isinstance(outcome, AttestError):
        raise outcome
    return outcome


def ingest(
    store: Store,
    files: Sequence[tuple[str, bytes | AttestError]],
    now: datetime,
    limits: pipeline.Limits,
) -> list[IngestOutcome]:
    """Verify and store each (name, envelope bytes); rejections are audited, never stored.

    A file given as an error (it could not be read) is reported as such and not audited: no
    envelope was submitted.
    """
    outcomes: dict[int, IngestOutcome] = {}
    ready: list[tuple[int, pipeline.AuthenticatedEvidence]] = []
    for index, (name, raw) in enumerate(files):
        if isinstance(raw, AttestError):
            outcomes[index] = IngestOutcome(name, error=raw)
            continue
        try:
            ready.append((index, _authenticate(store, raw, limits)))
        except AttestError as exc:
            _audit(store, "", exc, raw, 0, now=now)
            outcomes[index] = IngestOutcome(name, error=exc)
    ready.sort(key=lambda item: (item[1].evidence.agent_id, item[1].evidence.seq))
    for index, auth in ready:
        name = files[index][0]
        try:
            result = _apply(store, auth, now, limits)
        except AttestError as exc:
            _audit(store, auth.evidence.agent_id, exc, auth.raw, auth.evidence.seq, now=now)
            outcomes[index] = IngestOutcome(name, error=exc)
            continue
        if isinstance(result, AttestationRecord):
            outcomes[index] = IngestOutcome(name, already=result)
        else:
            outcomes[index] = IngestOutcome(name, accepted=result)
    return [outcomes[index] for index in range(len(files))]


def _audit(
    store: Store, agent_id: str, error: AttestError, raw: bytes, seq: int, *, now: datetime
) -> None:
    record = AuditRecord(
        kind=AuditKind.REJECTION, at=now, agent_id=agent_id, code=error.code,
        message=str(error)[:512], envelope_hash=envelope_hash(raw), seq=seq,
    )  # fmt: skip
    store.record_rejection(record)
