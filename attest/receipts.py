"""Verify a verifier's receipt for an envelope: a signed checkpoint plus an inclusion proof.

A receipt (docs/protocol.md §6) carries no signature of its own. It proves that the envelope is
in the verifier's transparency log by the C2SP checkpoint that covers it, signed once per tree
size with the verifier's log key, and by the RFC 9162 inclusion proof of the envelope's leaf
hash SHA-256(0x00 || envelope bytes) at the receipt's log index in that checkpoint's tree.

Only the `attest` package and `cryptography` are used, so an agent and an auditor holding a
receipt file and the envelope check it the same way (`gpu-attest-report proof verify`).
Everything fails closed: a receipt is good only when every check below passes.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from attest import checkpoint as cp
from attest import merkle
from attest.errors import ProofError, ReceiptMismatchError
from attest.keys import PublicKey
from attest.model import Receipt
from attest.wire import decode_receipt


@dataclass(frozen=True)
class VerifiedReceipt:
    receipt: Receipt
    checkpoint: cp.Checkpoint


def claimed_origin(receipt: Receipt) -> str:
    """The origin line of the receipt's checkpoint, unverified (the note key's name); raise
    DecodeError when the checkpoint is malformed."""
    return cp.parse_checkpoint_text(cp.parse_note(receipt.checkpoint).text).origin


def note_key(receipt: Receipt, key: PublicKey) -> cp.NoteKey:
    """The note key of `key` named by the checkpoint's own origin. Taking the name from the
    untrusted note is safe: only a signature by the trusted key over that origin verifies."""
    return cp.NoteKey(claimed_origin(receipt), key)


def verify_receipt(
    raw: bytes, envelope: bytes, key: PublicKey | cp.NoteKey, origin: str | None = None
) -> VerifiedReceipt:
    """Check receipt bytes `raw` for the exact envelope bytes `envelope`.

    `key` is the verifier's log (checkpoint) key; a bare public key is named by the
    checkpoint's origin. `origin`, when given, is the origin the checkpoint must name.
    Raises DecodeError/InvariantError/SizeLimitError (malformed receipt or checkpoint),
    ProofError (checkpoint not signed by the key, wrong origin, or an inclusion proof that does
    not lead to the checkpoint's root) or ReceiptMismatchError (a receipt for another envelope).
    """
    receipt = decode_receipt(raw)
    if not receipt.checkpoint:
        raise ProofError(f"receipt for seq {receipt.seq} carries no checkpoint")
    named = note_key(receipt, key) if isinstance(key, PublicKey) else key
    checkpoint = cp.verify_checkpoint(receipt.checkpoint, named, origin)
    if not hmac.compare_digest(receipt.envelope_hash, hashlib.sha256(envelope).digest()):
        raise ReceiptMismatchError(f"receipt for seq {receipt.seq} names another envelope")
    merkle.verify_inclusion(
        merkle.leaf_hash(envelope),
        receipt.log_index,
        checkpoint.size,
        receipt.inclusion_proof,
        checkpoint.root,
    )
    return VerifiedReceipt(receipt, checkpoint)
