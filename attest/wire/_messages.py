"""The small messages: DSSE envelope, receipt, challenge, rejection."""

from __future__ import annotations

from attest import model
from attest.envelope import Envelope, EnvelopeSignature
from attest.errors import DecodeError, InvariantError, SizeLimitError
from attest.merkle import MAX_PROOF_HASHES
from attest.v1 import attest_pb2 as pb
from attest.wire._common import HASH_LEN, MAX_ENVELOPE_BYTES, NONCE_LEN, _from_ts, _parse, _ts

# --- envelope ----------------------------------------------------------------------------------


def encode_envelope(envelope: Envelope) -> bytes:
    msg = pb.Envelope(
        payload=envelope.payload,
        payload_type=envelope.payload_type,
        signatures=[pb.Signature(sig=s.sig, keyid=s.keyid) for s in envelope.signatures],
    )
    return msg.SerializeToString(deterministic=True)


def decode_envelope(raw: bytes, max_bytes: int = MAX_ENVELOPE_BYTES) -> Envelope:
    """Parse serialized Envelope bytes (untrusted). Raise SizeLimitError or DecodeError."""
    if len(raw) > max_bytes:
        raise SizeLimitError(f"envelope of {len(raw)} bytes exceeds the limit of {max_bytes}")
    msg = _parse(pb.Envelope(), raw, "envelope")
    if not msg.payload_type or len(msg.payload_type) > 256:
        raise DecodeError("envelope payload type is missing or too long")
    return Envelope(
        payload_type=msg.payload_type,
        payload=msg.payload,
        signatures=tuple(EnvelopeSignature(keyid=s.keyid, sig=s.sig) for s in msg.signatures),
    )


# --- receipts, challenges, rejections ----------------------------------------------------------

#: A receipt is ~0.3 KB plus its checkpoint note (<= 64 KiB) and at most 128 proof hashes.
MAX_RECEIPT_BYTES = 80 * 1024

_FRESHNESS = {
    model.Freshness.NONCE: pb.ReceiptBody.FRESHNESS_NONCE,
    model.Freshness.OFFLINE: pb.ReceiptBody.FRESHNESS_OFFLINE,
}
_FRESHNESS_BACK = {v: k for k, v in _FRESHNESS.items()}


def encode_receipt(receipt: model.Receipt) -> bytes:
    return pb.ReceiptBody(
        agent_id=receipt.agent_id,
        seq=receipt.seq,
        envelope_hash=receipt.envelope_hash,
        log_index=receipt.log_index,
        checkpoint=receipt.checkpoint,
        accepted_at=_ts(receipt.accepted_at),
        freshness=_FRESHNESS[receipt.freshness],
        inclusion_proof=receipt.inclusion_proof,
    ).SerializeToString(deterministic=True)


def decode_receipt(payload: bytes) -> model.Receipt:
    """Parse serialized ReceiptBody bytes (untrusted; structure only, nothing verified: see
    attest.receipts). Raise SizeLimitError, DecodeError or InvariantError."""
    if len(payload) > MAX_RECEIPT_BYTES:
        raise SizeLimitError(f"receipt of {len(payload)} bytes exceeds {MAX_RECEIPT_BYTES}")
    msg = _parse(pb.ReceiptBody(), payload, "receipt")
    if msg.freshness not in _FRESHNESS_BACK or len(msg.envelope_hash) != HASH_LEN:
        raise InvariantError("receipt has an unknown freshness or a malformed hash")
    if len(msg.inclusion_proof) > MAX_PROOF_HASHES or any(
        len(h) != HASH_LEN for h in msg.inclusion_proof
    ):
        raise InvariantError("receipt inclusion proof is too long or holds a malformed hash")
    return model.Receipt(
        agent_id=msg.agent_id,
        seq=msg.seq,
        envelope_hash=msg.envelope_hash,
        log_index=msg.log_index,
        checkpoint=msg.checkpoint,
        accepted_at=_from_ts(msg.accepted_at, "receipt accepted_at"),
        freshness=_FRESHNESS_BACK[msg.freshness],
        inclusion_proof=tuple(msg.inclusion_proof),
    )


def challenge_to_pb(challenge: model.Challenge) -> pb.Challenge:
    return pb.Challenge(
        nonce=challenge.nonce,
        expires_at=_ts(challenge.expires_at),
        last_seq=challenge.last_seq,
        last_hash=challenge.last_hash,
    )


def challenge_from_pb(msg: pb.Challenge) -> model.Challenge:
    if len(msg.nonce) != NONCE_LEN:
        raise InvariantError(f"challenge nonce must be {NONCE_LEN} bytes")
    if msg.last_hash and len(msg.last_hash) != HASH_LEN:
        raise InvariantError("challenge last_hash is malformed")
    return model.Challenge(
        nonce=msg.nonce,
        expires_at=_from_ts(msg.expires_at, "challenge expires_at"),
        last_seq=msg.last_seq,
        last_hash=msg.last_hash,
    )


def rejection_to_pb(rejection: model.Rejection) -> pb.Rejection:
    return pb.Rejection(
        seq=rejection.seq,
        envelope_hash=rejection.envelope_hash,
        code=rejection.code,
        message=rejection.message,
        retryable=rejection.retryable,
    )


def rejection_from_pb(msg: pb.Rejection) -> model.Rejection:
    return model.Rejection(msg.seq, msg.envelope_hash, msg.code, msg.message, msg.retryable)
