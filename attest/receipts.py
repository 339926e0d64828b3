"""Verify a verifier's receipt for an envelope: a signed checkpoint plus an inclusion proof.

A receipt (docs/protocol.md §5) carries no signature of its own. It proves that the envelope is
in the verifier's transparency log by the C2SP checkpoint that covers it, signed once per tree
size with the verifier's log key, and by the RFC 9162 inclusion proof of the envelope's leaf
hash SHA-256(0x00 || envelope bytes) at the receipt's log index in that checkpoint's tree.

Only the `attest` package and `cryptography` are used (no protobuf: the ReceiptBody is read
straight from the wire format by `parse_receipt`), so an agent and an auditor holding a receipt
file and the envelope check it the same way (`gpu-attest-report proof verify`). Everything
fails closed: a receipt is good only when every check below passes.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from attest import checkpoint as cp
from attest import merkle
from attest.errors import (
    DecodeError,
    InvariantError,
    ProofError,
    ReceiptMismatchError,
    SizeLimitError,
)
from attest.keys import PublicKey
from attest.model import Freshness, Receipt

#: A receipt is ~0.3 KB plus its checkpoint note (<= 64 KiB) and at most 128 proof hashes
#: (the same bound as attest.wire.MAX_RECEIPT_BYTES).
MAX_RECEIPT_BYTES = 80 * 1024
_VARINT, _LEN = 0, 2
_FRESHNESS = {1: Freshness.NONCE, 2: Freshness.OFFLINE}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: ReceiptBody (proto/attest/v1/attest.proto): field number -> wire type.
_RECEIPT_FIELDS = {1: _LEN, 2: _VARINT, 3: _LEN, 4: _VARINT, 5: _LEN, 6: _LEN, 7: _VARINT, 8: _LEN}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise DecodeError("receipt: truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value >= 1 << 64:
                raise DecodeError("receipt: varint beyond 64 bits")
            return value, pos
        shift += 7
        if shift >= 70:
            raise DecodeError("receipt: varint longer than 10 bytes")


def _fields(data: bytes, known: dict[int, int], what: str) -> list[tuple[int, int | bytes]]:
    """(field number, value) of one message in order: varints as int, length-delimited as
    bytes. Raises DecodeError for truncation, unknown fields or a field of the wrong wire type
    (this version's decoders refuse fields they do not know: attest.wire)."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if known.get(number) != wire:
            raise DecodeError(f"{what}: field {number} (wire type {wire}) is not known here")
        value: int | bytes
        if wire == _VARINT:
            value, pos = _varint(data, pos)
        else:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise DecodeError(f"{what}: a field runs past the end")
            value, pos = data[pos : pos + length], pos + length
        out.append((number, value))
    return out


def _timestamp(data: bytes) -> datetime:
    """google.protobuf.Timestamp {int64 seconds = 1; int32 nanos = 2}, last value wins."""
    seconds, nanos = 0, 0
    for number, value in _fields(data, {1: _VARINT, 2: _VARINT}, "receipt accepted_at"):
        assert isinstance(value, int)
        signed = value - (1 << 64) if value >= 1 << 63 else value
        if number == 1:
            seconds = signed
        else:
            nanos = signed
    if not 0 <= nanos < 1_000_000_000:
        raise DecodeError("receipt accepted_at is not a valid timestamp")
    try:
        return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)
    except OverflowError as exc:
        raise DecodeError("receipt accepted_at is not a valid timestamp") from exc


def parse_receipt(raw: bytes) -> Receipt:
    """Parse serialized ReceiptBody bytes (untrusted) without protobuf; structure only, nothing
    verified. Same rules as attest.wire.decode_receipt: unknown fields, an unknown freshness, a
    malformed hash or proof are refused. Raises SizeLimitError, DecodeError or InvariantError."""
    if len(raw) > MAX_RECEIPT_BYTES:
        raise SizeLimitError(f"receipt of {len(raw)} bytes exceeds {MAX_RECEIPT_BYTES}")
    ints: dict[int, int] = {}
    blobs: dict[int, bytes] = {}
    stamp, proof = b"", []
    for number, value in _fields(raw, _RECEIPT_FIELDS, "receipt"):
        if isinstance(value, int):
            ints[number] = value  # the last value wins, as protobuf's
        elif number == 6:
            stamp += value  # repeats of a message field merge, as protobuf's
        elif number == 8:
            proof.append(value)
        else:
            blobs[number] = value
    try:
        agent_id = blobs.get(1, b"").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("receipt agent_id is not UTF-8") from exc
    digest = blobs.get(3, b"")
    freshness = _FRESHNESS.get(ints.get(7, 0))
    if freshness is None or len(digest) != merkle.HASH_LEN:
        raise InvariantError("receipt has an unknown freshness or a malformed hash")
    if len(proof) > merkle.MAX_PROOF_HASHES or any(len(h) != merkle.HASH_LEN for h in proof):
        raise InvariantError("receipt inclusion proof is too long or holds a malformed hash")
    return Receipt(
        agent_id=agent_id,
        seq=ints.get(2, 0),
        envelope_hash=digest,
        log_index=ints.get(4, 0),
        checkpoint=blobs.get(5, b""),
        accepted_at=_timestamp(stamp),
        freshness=freshness,
        inclusion_proof=tuple(proof),
    )


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
    receipt = parse_receipt(raw)
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
