"""Landmark round trips: the challenge an agent signs, the statement a landmark signs, and the
checks that make a statement usable as evidence of distance (docs/protocol.md §12).

A landmark with known coordinates sends an agent `probes` challenges, one at a time, and times
each round trip with its own monotonic clock. The agent answers each at once with a signature by
its attestation key over PAE(CHALLENGE_PAYLOAD_TYPE, challenge): a payload type of its own, so
an answer can never be taken for evidence, a rotation or anything else the key signs. The
landmark then signs a statement of the challenges, the answers and the times; only the landmark's
clock is trusted, never the agent's. Nothing here does I/O or reads a clock.

Physics: a signal does not outrun light in vacuum, so a responder that answered within `rtt`
is at most `C_KM_PER_S * rtt / 2` from the landmark; queuing, processing and relays only add
delay, so the bound holds whatever the path (docs/design.md §16).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Collection

from attest import envelope as dsse
from attest import model, wire
from attest.errors import (
    BadSignatureError,
    IdentityMismatchError,
    KeyMaterialError,
    UnknownKeyError,
)
from attest.keys import PublicKey, Signer
from attest.wire import NONCE_LEN, decode_envelope, encode_envelope
from attest.wire._landmark import MAX_PROBES, MAX_RTT_NS, SESSION_LEN

__all__ = [
    "CHALLENGE_PAYLOAD_TYPE",
    "C_KM_PER_S",
    "EARTH_RADIUS_KM",
    "MAX_PROBES",
    "MAX_RTT_NS",
    "MAX_STATEMENT_BYTES",
    "SESSION_LEN",
    "STATEMENT_PAYLOAD_TYPE",
    "Statement",
    "answer",
    "answer_message",
    "bound_km",
    "challenge_bytes",
    "contradicts",
    "decode_statement",
    "encode_statement",
    "great_circle_km",
    "min_rtt_ns",
    "sign_statement",
    "verify_statement",
]

CHALLENGE_PAYLOAD_TYPE = "application/vnd.gpu-attest.landmark-challenge.v1"
STATEMENT_PAYLOAD_TYPE = dsse.LANDMARK_PAYLOAD_TYPE

#: Speed of light in vacuum, km/s (exact by the SI definition of the metre).
C_KM_PER_S = 299_792.458
#: Mean Earth radius, km, for great-circle distances (haversine).
EARTH_RADIUS_KM = 6371.0
#: A statement's serialized envelope: 64 probes of a 32-byte nonce, a 72-byte signature and a
#: time come to ~12 KB; this leaves room without letting a statement grow unbounded.
MAX_STATEMENT_BYTES = 32 * 1024
#: The statement as signed (attest/model.py), and its codec (attest/wire/_landmark.py).
Statement = model.LandmarkStatement
encode_statement = wire.encode_landmark_statement
decode_statement = wire.decode_landmark_statement


def challenge_bytes(landmark_id: str, session: bytes, seq: int, nonce: bytes) -> bytes:
    """What the agent signs for probe `seq`: landmark id || 0x00 || session || seq || nonce."""
    if len(session) != SESSION_LEN or len(nonce) != NONCE_LEN or not 0 <= seq < MAX_PROBES:
        raise ValueError("challenge needs a 16-byte session, a 32-byte nonce and seq < 64")
    return landmark_id.encode("utf-8") + b"\x00" + session + struct.pack(">I", seq) + nonce


def answer_message(challenge: bytes) -> bytes:
    """The bytes an agent's answer signs: PAE(CHALLENGE_PAYLOAD_TYPE, challenge)."""
    return dsse.pae(CHALLENGE_PAYLOAD_TYPE, challenge)


def answer(signer: Signer, challenge: bytes) -> bytes:
    """The agent's answer to one challenge. Kept to a signature by a software key: a TPM takes
    ~200 ms a signature, which would widen the distance bound by 30,000 km."""
    return signer.sign(answer_message(challenge))


def sign_statement(statement: Statement, landmark: Signer) -> bytes:
    """The serialized DSSE envelope the landmark sends and the agent carries."""
    payload = encode_statement(statement)
    return encode_envelope(dsse.sign(STATEMENT_PAYLOAD_TYPE, payload, [landmark]))


def verify_statement(
    raw: bytes, landmark_key: PublicKey, *, agent_id: str, agent_keys: Collection[bytes]
) -> Statement:
    """Check a carried statement end to end and return it.

    `raw` is the serialized envelope as the agent carried it; `landmark_key` comes from the
    registry (never from the statement); `agent_keys` are the SPKI DER keys the agent held.
    Fails closed: the envelope must be signed by that landmark key alone, the statement must be
    about `agent_id` and one of its keys, and every answer must verify under that key.
    Raises DecodeError, SignatureError or IdentityMismatchError (all AttestError).
    """
    envelope = decode_envelope(raw, MAX_STATEMENT_BYTES)
    verified = dsse.verify(envelope, STATEMENT_PAYLOAD_TYPE, {landmark_key.keyid: landmark_key})
    statement = decode_statement(verified.payload)
    if statement.agent_id != agent_id:
        raise IdentityMismatchError(
            f"landmark statement is about agent {statement.agent_id!r}, not {agent_id!r}"
        )
    if statement.agent_public_key not in agent_keys:
        raise UnknownKeyError("landmark statement names a key this agent never held")
    try:
        key = PublicKey.from_spki_der(statement.agent_public_key)
    except KeyMaterialError as exc:
        raise BadSignatureError(f"landmark statement's agent key: {exc}") from exc
    for seq, (challenge, signature) in enumerate(
        zip(statement.challenges, statement.signatures, strict=True)
    ):
        try:
            key.verify(signature, answer_message(challenge))
        except BadSignatureError as exc:
            raise BadSignatureError(f"the agent's answer to probe {seq} does not verify") from exc
    return statement


# --- physics ------------------------------------------------------------------------------------


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance on a sphere of EARTH_RADIUS_KM."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlambda = phi2 - phi1, math.radians(lon2 - lon1)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def bound_km(rtt_ns: int) -> float:
    """The farthest a responder can be from the landmark: c * rtt / 2."""
    return C_KM_PER_S * rtt_ns / 2e9


def min_rtt_ns(distance_km: float) -> float:
    """The least round trip light allows over `distance_km`: 2 d / c."""
    return 2e9 * distance_km / C_KM_PER_S


def contradicts(rtt_min_ns: int, distance_km: float) -> bool:
    """True when a responder that answered within `rtt_min_ns` cannot be `distance_km` away:
    rtt_min < 2 d / c (location-contradicted, docs/design.md §16)."""
    return rtt_min_ns < min_rtt_ns(distance_km)
