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

The payload of every chained envelope opens with two facts its attestation row already links
to: the agent's id (field 1, first) and, after the seq (field 2), the previous envelope's hash
(field 3), 34 bytes. When the caller gives that `Link` and the payload opens with exactly those
bytes, the form is 0x02 instead of 0x01: the same layout with both fields cut from the payload
(~60 bytes: a real heartbeat with its nonce, ~350 bytes sent, is ~205 stored; four fit a
1 KiB page where three did). Its reader must give the same link back (the agent's id by the row's
agent number, the previous row's envelope hash by its `prev_index`) and check the rebuilt
bytes against the row's envelope hash, as `verifier/store/ops_archive.py` does: a wrong link
is then a `store-error`, never other bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

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
_LINKED = 0x02  # _COMPACT with the payload's agent id and previous hash cut (`Link`)
#: Codes of the payload types the log accepts, stored compact. Append only: a code, once
#: written, is forever.
_TYPES = (EVIDENCE_PAYLOAD_TYPE, HEARTBEAT_PAYLOAD_TYPE)
_CODES = {t: code for code, t in enumerate(_TYPES, start=1)}
_KEYID_LEN = 32
_PAYLOAD_LEN = 4  # bytes of the payload's length
_MAX_SIG = 255  # a signature's length is one byte
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class Link:
    """What an envelope's attestation row links to: its agent, and the hash of the agent's
    previous envelope (b"" at seq 1)."""

    agent_id: str
    prev_hash: bytes


_PREV_FIELD = b"\x1a\x20"  # field 3 (prev_hash), length 32
_HASH_LEN = 32


def _agent_field(agent_id: str) -> bytes | None:
    """Field 1 (agent_id) as the payload opens with it; None when its length is no one-byte
    varint (an id no agent is enrolled with)."""
    encoded = agent_id.encode("utf-8")
    return None if len(encoded) > 0x7F else b"\x0a" + bytes((len(encoded),)) + encoded


def _seq_end(payload: bytes, at: int) -> int | None:
    """Where field 2 (seq: tag 0x10, then a varint of at most 10 bytes) that starts at `at`
    ends, or None when none starts there."""
    if payload[at : at + 1] != b"\x10":
        return None
    for end in range(at + 1, min(at + 11, len(payload))):
        if payload[end] < 0x80:
            return end + 1
    return None


def _unlink(payload: bytes, link: Link) -> bytes | None:
    """The payload without its opening agent-id field and the previous-hash field after its
    seq, when it opens with exactly `link`'s; else None."""
    opening = _agent_field(link.agent_id)
    if opening is None or len(link.prev_hash) != _HASH_LEN or not payload.startswith(opening):
        return None
    seq_end = _seq_end(payload, len(opening))
    if (
        seq_end is None
        or payload[seq_end : seq_end + 2 + _HASH_LEN] != _PREV_FIELD + link.prev_hash
    ):
        return None
    return payload[len(opening) : seq_end] + payload[seq_end + 2 + _HASH_LEN :]


def _relink(stored: bytes, link: Link) -> bytes:
    opening = _agent_field(link.agent_id)
    seq_end = _seq_end(stored, 0)
    if opening is None or seq_end is None or len(link.prev_hash) != _HASH_LEN:
        raise StoreError("a linked stored envelope does not fit its link")
    return opening + stored[:seq_end] + _PREV_FIELD + link.prev_hash + stored[seq_end:]


def compact(raw: bytes, link: Link | None = None) -> bytes:
    """The form to store `raw` (a serialized Envelope) in: compact when that rebuilds `raw`
    exactly (linked when `link` is given and its payload opens with it), else `raw` itself,
    escaped when it could be taken for a stored form."""
    if not raw or raw[0] < 0x08:
        return _ESCAPED + raw
    try:
        envelope = decode_envelope(raw, max_bytes=len(raw))
    except DecodeError:
        return raw
    code = _CODES.get(envelope.payload_type)
    if code is None or not envelope.signatures:
        return raw
    form, payload = _COMPACT, envelope.payload
    unlinked = None if link is None else _unlink(payload, link)
    if unlinked is not None and link is not None and _relink(unlinked, link) == payload:
        form, payload = _LINKED, unlinked
    parts = [bytes((form, code)), len(payload).to_bytes(_PAYLOAD_LEN, "big"), payload]
    for signature in envelope.signatures:
        keyid, sig = signature.keyid, signature.sig
        if len(sig) > _MAX_SIG or len(keyid) != 2 * _KEYID_LEN or not _HEX.issuperset(keyid):
            return raw
        parts += [bytes((len(sig),)), sig, bytes.fromhex(keyid)]
    if encode_envelope(envelope) != raw:
        return raw
    return b"".join(parts)


def expand(body: bytes, link: Link | None = None) -> bytes:
    """The envelope bytes a stored body holds (`compact`'s inverse; a linked body needs the
    `link` it was stored with). Raises StoreError when a compact body is malformed: a damaged
    row is reported, never guessed at."""
    if not body:
        raise StoreError("a stored envelope is empty")
    if body[0] >= 0x08:
        return body
    if body[0] == _ESCAPED[0]:
        return body[1:]
    if body[0] not in (_COMPACT, _LINKED) or len(body) < 2 or not 1 <= body[1] <= len(_TYPES):
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
    if body[0] == _LINKED:
        if link is None:
            raise StoreError("a linked stored envelope was read without its link")
        payload = _relink(payload, link)
    return encode_envelope(
        Envelope(payload_type=_TYPES[body[1] - 1], payload=payload, signatures=tuple(signatures))
    )
