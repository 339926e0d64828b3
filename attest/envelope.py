"""DSSE envelopes: pre-authentication encoding, signing and verification.

Signatures cover PAE(payload_type, payload) over the exact payload bytes. Verification takes the
bytes as received, checks the signature, and only then hands the payload to a parser; nothing is
ever re-serialized to be verified.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from attest.errors import (
    DuplicateSignatureError,
    NoSignatureError,
    PayloadTypeError,
    TooManySignaturesError,
    UnknownKeyError,
)
from attest.keys import PublicKey, Signer

EVIDENCE_PAYLOAD_TYPE = "application/vnd.gpu-attest.evidence.v1+protobuf"
HEARTBEAT_PAYLOAD_TYPE = "application/vnd.gpu-attest.heartbeat.v1+protobuf"
RECEIPT_PAYLOAD_TYPE = "application/vnd.gpu-attest.receipt.v1+protobuf"
ROTATE_PAYLOAD_TYPE = "application/vnd.gpu-attest.rotate.v1"
LANDMARK_PAYLOAD_TYPE = "application/vnd.gpu-attest.landmark.v1+protobuf"

#: Upper bound on signatures per envelope; more is an attack on verifier CPU, not a use case.
MAX_SIGNATURES = 4


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def rotation_statement(agent_id: str, new_spki_der: bytes) -> bytes:
    """What an agent's current key signs to hand its identity over to a new key (RotateKey):
    PAE(ROTATE_PAYLOAD_TYPE, agent_id || 0x00 || new key's SPKI DER)."""
    return pae(ROTATE_PAYLOAD_TYPE, agent_id.encode("utf-8") + b"\x00" + new_spki_der)


@dataclass(frozen=True)
class EnvelopeSignature:
    """One DSSE signature; `keyid` is an unauthenticated hint naming the signing key."""

    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    """A DSSE envelope in domain form. Keep the bytes it was decoded from to hash or store it."""

    payload_type: str
    payload: bytes
    signatures: tuple[EnvelopeSignature, ...]


@dataclass(frozen=True)
class VerifiedPayload:
    """The payload bytes of an envelope whose signature verified, and who signed it."""

    payload_type: str
    payload: bytes
    keyids: tuple[str, ...]


def sign(payload_type: str, payload: bytes, signers: Iterable[Signer]) -> Envelope:
    """Sign `payload` once per signer."""
    message = pae(payload_type, payload)
    sigs = tuple(EnvelopeSignature(keyid=s.public_key.keyid, sig=s.sign(message)) for s in signers)
    if not sigs:
        raise NoSignatureError("refusing to build an envelope without signatures")
    return Envelope(payload_type=payload_type, payload=payload, signatures=sigs)


def verify(
    envelope: Envelope, expected_payload_type: str, trusted: Mapping[str, PublicKey]
) -> VerifiedPayload:
    """Verify `envelope` against `trusted` keys (keyid -> key) and return its payload.

    Policy, failing closed: the payload type must match; there must be at least one and at most
    MAX_SIGNATURES signatures; every signature must name a trusted key and verify. A signature by
    an unknown key is not ignored, because extra signatures would let anyone make a second,
    different envelope for the same evidence.

    Raises PayloadTypeError, NoSignatureError, TooManySignaturesError, DuplicateSignatureError
    (checked before any signature, so a duplicate costs no crypto), UnknownKeyError,
    BadSignatureError.
    """
    if envelope.payload_type != expected_payload_type:
        raise PayloadTypeError(
            f"payload type {envelope.payload_type!r} is not {expected_payload_type!r}"
        )
    if not envelope.signatures:
        raise NoSignatureError("envelope carries no signature")
    if len(envelope.signatures) > MAX_SIGNATURES:
        raise TooManySignaturesError(f"envelope carries more than {MAX_SIGNATURES} signatures")
    keyids = tuple(signature.keyid for signature in envelope.signatures)
    if len(set(keyids)) != len(keyids):
        raise DuplicateSignatureError("the same key signed the envelope twice")
    message = pae(envelope.payload_type, envelope.payload)
    for signature in envelope.signatures:
        key = trusted.get(signature.keyid)
        if key is None:
            raise UnknownKeyError(f"signature by key {signature.keyid[:16]!r} is not trusted here")
        key.verify(signature.sig, message)
    return VerifiedPayload(
        payload_type=envelope.payload_type, payload=envelope.payload, keyids=keyids
    )


def envelope_hash(raw: bytes) -> bytes:
    """SHA-256 of an envelope's bytes as sent: the link of the evidence hash chain."""
    return hashlib.sha256(raw).digest()
