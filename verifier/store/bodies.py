"""How the hot `envelopes` table holds an envelope's bytes (docs/design.md §9): verbatim, or in a
compact form that gives back exactly those bytes.

An envelope is logged, hashed and proven as the bytes the agent sent, so whatever is stored must
decode to them byte for byte. Most of a heartbeat's 324 bytes is not its payload: the payload
type (49 bytes of text), each signature's key id (64 hex characters naming 32 bytes) and the
protobuf framing. When the sent bytes are exactly the canonical serialization of their fields
(`attest.wire.encode_envelope`, as every gpu-attest agent sends them), they are stored as

    0x01 | payload-type code (1 byte) | len(payload) (4 bytes, big-endian) | payload
         | per signature: len(sig) (1 byte) | sig | key id (32 bytes)

and rebuilt by serializing those fields again; ~240 bytes for a heartbeat. Anything else (an
unknown payload type, a key id that is not 64 lowercase hex digits, a signature over 255 bytes,
fields out of order, unknown fields, a non-minimal varint) is stored verbatim. The forms cannot
be confused: a serialized Envelope begins with a field tag, never a byte below 0x08 (field
number 0 does not exist); bytes that do (none the pipeline passes, but the store takes any)
are stored as 0x00 then the bytes. `compact` proves the round trip before it answers.
"""

from __future__ import annotations

from attest.envelope import (
    EVIDENCE_PAYLOAD_TYPE,
    HEARTBEAT_PAYLOAD_TYPE,
    Envelope,
    EnvelopeSignature,
)
from attest.errors import DecodeError, StoreError
from attest.wire import decode_envelope, encode_envelope

_ESCAPED = b"\x00"
_COMPACT = 0x01
#: Codes of the payload types the log accepts, stored compact. Append only: a code, once
#: written, is forever.
_TYPES = (EVIDENCE_PAYLOAD_TYPE, HEARTBEAT_PAYLOAD_TYPE)
_CODES = {t: code for code, t in enumerate(_TYPES, start=1)}
_KEYID_LEN = 32
_PAYLOAD_LEN = 4  # bytes of the payload's length
_MAX_SIG = 255  # a signature's length is one byte
_HEX = frozenset("0123456789abcdef")


def compact(raw: bytes) -> bytes:
    """The form to store `raw` (a serialized Envelope) in: compact when that rebuilds `raw`
    exactly, else `raw` itself, escaped when it could be taken for a stored form."""
    if not raw or raw[0] < 0x08:
        return _ESCAPED + raw
    try:
        envelope = decode_envelope(raw, max_bytes=len(raw))
    except DecodeError:
        return raw
    code = _CODES.get(envelope.payload_type)
    if code is None or not envelope.signatures:
        return raw
    parts = [
        bytes((_COMPACT, code)),
        len(envelope.payload).to_bytes(_PAYLOAD_LEN, "big"),
        envelope.payload,
    ]
    for signature in envelope.signatures:
        keyid, sig = signature.keyid, signature.sig
        if len(sig) > _MAX_SIG or len(keyid) != 2 * _KEYID_LEN or not _HEX.issuperset(keyid):
            return raw
        parts += [bytes((len(sig),)), sig, bytes.fromhex(keyid)]
    if encode_envelope(envelope) != raw:
        return raw
    return b"".join(parts)


def expand(body: bytes) -> bytes:
    """The envelope bytes a stored body holds (`compact`'s inverse). Raises StoreError when a
    compact body is malformed: a damaged row is reported, never guessed at."""
    if not body:
        raise StoreError("a stored envelope is empty")
    if body[0] >= 0x08:
        return body
    if body[0] == _ESCAPED[0]:
        return body[1:]
    if body[0] != _COMPACT or len(body) < 2 or not 1 <= body[1] <= len(_TYPES):
        raise StoreError("a stored envelope has an unknown form")
    at = 2 + _PAYLOAD_LEN
    length = int.from_bytes(body[2:at], "big")
    payload, at = body[at : at + length], at + length
    if len(payload) != length or at > len(body):
        raise StoreError("a stored envelope is truncated")
    signatures: list[EnvelopeSignature] = []
    while at < len(body):
        length = body[at]
        sig = body[at + 1 : at + 1 + length]
        keyid = body[at + 1 + length : at + 1 + length + _KEYID_LEN]
        at += 1 + length + _KEYID_LEN
        if len(keyid) != _KEYID_LEN:
            raise StoreError("a stored envelope is truncated")
        signatures.append(EnvelopeSignature(keyid=keyid.hex(), sig=sig))
    if not signatures:
        raise StoreError("a stored envelope has no signature")
    return encode_envelope(
        Envelope(payload_type=_TYPES[body[1] - 1], payload=payload, signatures=tuple(signatures))
    )
