"""`gpu-attest-verifier log ...`: the transparency log's signed checkpoint, proofs and key.

    log key [--out F]            the PEM public key that signs checkpoints and receipts
    log checkpoint [--out F]     a signed checkpoint (C2SP signed note) of the whole log now
    log proof --index N [--out F]
                                 a .tlog-proof for entry N: the logged envelope bytes, the
                                 inclusion path and the signed checkpoint it verifies against

    log consistency --from OLD_SIZE --checkpoint NEW.checkpoint [--out F]
                                 proof that the log of OLD_SIZE entries (a checkpoint the
                                 regulator already holds) is a prefix of the log now, plus the
                                 signed checkpoint of now that the proof leads to

    log archive --before DATE [--json]
                                 move the envelope bytes of entries received before DATE
                                 (YYYY-MM-DD, UTC) out of the database into compressed,
                                 content-addressed segment files under STATE_DIR/archive;
                                 every reader (proofs, reports) still reads them. Re-runnable,
                                 and safe to interrupt: each segment is durable before its
                                 envelopes leave the database, in one transaction

Roots and proofs are read from the Merkle nodes the store keeps beside the leaves (O(log n)
rows, docs/design.md §9), never from every leaf, so each command costs the same at any log size.

A regulator checks the output offline with `gpu-attest-report checkpoint verify` and
`gpu-attest-report proof verify`, holding only the key from `log key`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Protocol

from attest import merkle
from attest import tomlconf as tc
from attest.checkpoint import Checkpoint, ConsistencyProof, TlogProof, sign_checkpoint
from attest.errors import ProofError, StoreError
from verifier.ca import load_or_create_receipt_signer
from verifier.config import VerifierConfig
from verifier.exits import VerifierExit
from verifier.store.api import Store
from verifier.store.segments import SEGMENT_BLOBS, Placement, build_segment, write_segment
from verifier.transparency import checkpoint_origin


def add_log_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    log = sub.add_parser("log", help="the transparency log").add_subparsers(
        dest="action", required=True
    )
    key = log.add_parser("key", parents=[common], help="the checkpoint/receipt public key (PEM)")
    key.add_argument("--out", type=Path, help="write to this file instead of stdout")
    checkpoint = log.add_parser("checkpoint", parents=[common], help="sign a checkpoint now")
    checkpoint.add_argument("--out", type=Path, help="write to this file instead of stdout")
    proof = log.add_parser("proof", parents=[common], help="inclusion proof of one entry")
    proof.add_argument("--index", type=int, required=True, help="log index (from 0)")
    proof.add_argument("--out", type=Path, help="write to this file instead of stdout")
    grown = log.add_parser("consistency", parents=[common], help="prove the log only grew")
    grown.add_argument("--from", dest="old_size", type=int, required=True, help="older size")
    grown.add_argument("--checkpoint", type=Path, required=True, help="write the new checkpoint")
    grown.add_argument("--out", type=Path, help="write the proof here instead of stdout")
    archive = log.add_parser(
        "archive", parents=[common], help="move old envelope bytes into segment files"
    )
    archive.add_argument(
        "--before", type=_day_start, required=True, help="YYYY-MM-DD (UTC): received before"
    )
    archive.add_argument("--json", action="store_true", help="one JSON object on stdout")


def _day_start(text: str) -> datetime:
    """--before: the start (00:00 UTC) of a YYYY-MM-DD day."""
    try:
        return datetime.combine(tc.parse_day(text), time(), tzinfo=UTC)
    except tc.Invalid as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


#: Log entries per window of an archive run: each window's envelopes are archived by agent and
#: seq, so a window should hold several envelopes of each host (64 Ki: ~6 minutes of a
#: 10,000-host fleet at one a minute).
ARCHIVE_WINDOW = 1 << 16


@dataclass(frozen=True)
class ArchiveRun:
    """What one `log archive` run moved."""

    envelopes: int
    envelope_bytes: int
    segments: tuple[Path, ...]
    segment_bytes: int


class ArchivingStore(Protocol):
    """The part of the Store port an archive run uses."""

    def log_size(self) -> int: ...

    def archive_candidates(
        self, before: datetime, start: int, stop: int, limit: int
    ) -> list[tuple[bytes, bytes, int]]: ...

    def mark_archived(self, placements: list[Placement], log_indices: list[int]) -> int: ...


def archive_before(
    store: ArchivingStore, directory: Path, before: datetime, *, segment_blobs: int = SEGMENT_BLOBS
) -> ArchiveRun:
    """Move every envelope received before `before` from the database into segment files
    under `directory` (docs/design.md §9), one segment at a time: build it, write it durably
    (fsync, rename, fsync of the directory), then index it and delete the blobs it holds in
    one transaction. A crash between the two leaves the blobs where they were and a segment
    nobody names; the rerun builds the same segment (same name) and completes. Raises
    StoreError."""
    envelopes = envelope_bytes = segment_bytes = 0
    written: list[Path] = []
    # Windows of the log in order, each archived by agent and seq (the attestations are keyed
    # by log index: a window is a range read, and its sort is bounded by the segment size).
    for start in range(0, store.log_size(), ARCHIVE_WINDOW):
        while True:
            candidates = store.archive_candidates(
                before, start, start + ARCHIVE_WINDOW, segment_blobs
            )
            if not candidates:
                break
            data, placements = build_segment([(h, body) for h, body, _ in candidates])
            written.append(write_segment(directory, data))
            store.mark_archived(placements, [index for _, _, index in candidates])
            envelopes += len(candidates)
            envelope_bytes += sum(len(body) for _, body, _ in candidates)
            segment_bytes += len(data)
    return ArchiveRun(envelopes, envelope_bytes, tuple(written), segment_bytes)


def _emit(data: bytes, out: Path | None) -> None:
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        out.write_bytes(data)


def run_log_command(args: argparse.Namespace, store: Store, config: VerifierConfig) -> int:
    """Run `log key|checkpoint|proof|consistency|archive`.

    Raises ProofError for an empty log or an index or size outside it, StoreError when the
    store fails, lacks a Merkle node, or an entry's envelope is missing or does not hash to
    its leaf.
    """
    if args.action == "archive":
        directory = config.state_dir / "archive"
        run = archive_before(store, directory, args.before)
        view = {
            "before": args.before.isoformat(),
            "envelopes": run.envelopes,
            "envelope_bytes": run.envelope_bytes,
            "segments": [p.name for p in run.segments],
            "segment_bytes": run.segment_bytes,
            "directory": str(directory),
        }
        if args.json:
            print(json.dumps(view))
        else:
            print(
                f"archived {run.envelopes} envelope(s), {run.envelope_bytes} bytes, into "
                f"{len(run.segments)} segment(s) of {run.segment_bytes} bytes under {directory}"
            )
        return VerifierExit.OK
    signer = load_or_create_receipt_signer(config.state_dir)
    if args.action == "key":
        _emit(signer.public_key.to_pem(), args.out)
        return VerifierExit.OK
    # One size for everything printed, so the proof and its checkpoint describe the same tree
    # even while a serving verifier keeps appending.
    size = store.log_size()
    if size == 0:
        raise ProofError("the transparency log is empty: nothing to sign or prove")
    origin = checkpoint_origin(config, signer)
    note = sign_checkpoint(Checkpoint(origin, size, store.log_root(size)), origin, signer)
    if args.action == "checkpoint":
        _emit(note, args.out)
        return VerifierExit.OK
    if args.action == "consistency":
        if not 0 < args.old_size <= size:
            raise ProofError(f"older size {args.old_size} is not within the log (size {size})")
        hashes = store.log_consistency_proof(args.old_size, size)
        args.checkpoint.write_bytes(note)
        _emit(ConsistencyProof(args.old_size, size, hashes).to_bytes(), args.out)
        return VerifierExit.OK
    index = args.index
    if not 0 <= index < size:
        raise ProofError(f"log index {index} is outside the log (size {size})")
    entry = store.log_entries(index, index + 1)[0]
    envelope = store.get_envelope(index)
    if envelope is None or merkle.leaf_hash(envelope) != entry.leaf_hash:
        raise StoreError(f"the envelope of log entry {index} is missing or does not match")
    hashes = store.log_inclusion_proof(index, size)
    _emit(TlogProof(index, hashes, note, extra=envelope).to_bytes(), args.out)
    return VerifierExit.OK
