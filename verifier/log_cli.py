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

Roots and proofs are read from the Merkle nodes the store keeps beside the leaves (O(log n)
rows, docs/design.md §9), never from every leaf, so each command costs the same at any log size.

A regulator checks the output offline with `gpu-attest-report checkpoint verify` and
`gpu-attest-report proof verify`, holding only the key from `log key`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attest import merkle
from attest.checkpoint import Checkpoint, ConsistencyProof, TlogProof, sign_checkpoint
from attest.errors import ProofError, StoreError
from verifier.ca import load_or_create_receipt_signer
from verifier.config import VerifierConfig
from verifier.exits import VerifierExit
from verifier.store.api import Store
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


def _emit(data: bytes, out: Path | None) -> None:
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        out.write_bytes(data)


def run_log_command(args: argparse.Namespace, store: Store, config: VerifierConfig) -> int:
    """Run `log key|checkpoint|proof|consistency`.

    Raises ProofError for an empty log or an index or size outside it, StoreError when the
    store fails, lacks a Merkle node, or an entry's envelope is missing or does not hash to
    its leaf.
    """
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
    envelope = store.get_blob(entry.envelope_hash)
    if envelope is None or merkle.leaf_hash(envelope) != entry.leaf_hash:
        raise StoreError(f"the envelope of log entry {index} is missing or does not match")
    hashes = store.log_inclusion_proof(index, size)
    _emit(TlogProof(index, hashes, note, extra=envelope).to_bytes(), args.out)
    return VerifierExit.OK
