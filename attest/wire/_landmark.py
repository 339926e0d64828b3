"""Landmark statements (docs/protocol.md §12): the signed payload a landmark sends, encoded and
decoded with every bound checked. attest/landmark.py holds the protocol around it."""

from __future__ import annotations

import math
import struct

from attest import identifiers as ids
from attest import model
from attest.errors import InvariantError
from attest.v1 import attest_pb2 as pb
from attest.wire._common import NONCE_LEN, _from_ts, _parse, _ts
from attest.wire._policy import identifier

SESSION_LEN = 16
#: Probes per measurement: at least one, at most this many (a statement stays small).
MAX_PROBES = 64
#: One round trip longer than this is not a measurement of distance (it is 1.5 x 10^8 km).
MAX_RTT_NS = 1_000_000_000


def encode_landmark_statement(statement: model.LandmarkStatement) -> bytes:
    return pb.LandmarkStatement(
        landmark_id=statement.landmark_id,
        lat=statement.lat,
        lon=statement.lon,
        agent_id=statement.agent_id,
        agent_public_key=statement.agent_public_key,
        session=statement.session,
        challenges=statement.challenges,
        signatures=statement.signatures,
        rtt_ns=statement.rtt_ns,
        rtt_min_ns=statement.rtt_min_ns,
        measured_at=_ts(statement.measured_at),
    ).SerializeToString(deterministic=True)


def decode_landmark_statement(payload: bytes) -> model.LandmarkStatement:
    """Parse and check a statement's payload (untrusted bytes): identifiers, sizes, coordinates,
    that every challenge is this landmark's and session's in seq order, one answer and one time
    per challenge, and that `rtt_min_ns` is the least time. Raises DecodeError (a subclass)."""
    msg = _parse(pb.LandmarkStatement(), payload, "landmark statement")
    identifier(msg.landmark_id, "landmark id", ids.TOKEN)
    identifier(msg.agent_id, "agent id", ids.TOKEN)
    if not (math.isfinite(msg.lat) and -90 <= msg.lat <= 90):
        raise InvariantError("landmark latitude is not within -90..90")
    if not (math.isfinite(msg.lon) and -180 <= msg.lon <= 180):
        raise InvariantError("landmark longitude is not within -180..180")
    if len(msg.session) != SESSION_LEN:
        raise InvariantError(f"landmark session is not {SESSION_LEN} bytes")
    probes = len(msg.challenges)
    if not 1 <= probes <= MAX_PROBES:
        raise InvariantError(f"a statement holds 1 to {MAX_PROBES} probes, not {probes}")
    if len(msg.signatures) != probes or len(msg.rtt_ns) != probes:
        raise InvariantError("a statement needs one answer and one round trip per challenge")
    prefix = msg.landmark_id.encode("utf-8") + b"\x00" + msg.session
    nonces = set()
    for seq, challenge in enumerate(msg.challenges):
        expected_len = len(prefix) + 4 + NONCE_LEN
        if len(challenge) != expected_len or not challenge.startswith(prefix):
            raise InvariantError(f"challenge {seq} is not of this landmark and session")
        if struct.unpack(">I", challenge[len(prefix) : len(prefix) + 4])[0] != seq:
            raise InvariantError(f"challenge {seq} is out of order")
        nonces.add(challenge[-NONCE_LEN:])
    if len(nonces) != probes:
        raise InvariantError("a nonce repeats within the statement")
    if any(not 0 < rtt <= MAX_RTT_NS for rtt in msg.rtt_ns):
        raise InvariantError("a round trip is zero or longer than one second")
    if msg.rtt_min_ns != min(msg.rtt_ns):
        raise InvariantError("rtt_min_ns is not the least round trip")
    if any(len(sig) > 80 for sig in msg.signatures):
        raise InvariantError("an answer is longer than any supported signature")
    if not msg.HasField("measured_at"):
        raise InvariantError("a statement has no measurement time")
    return model.LandmarkStatement(
        landmark_id=msg.landmark_id,
        lat=msg.lat,
        lon=msg.lon,
        agent_id=msg.agent_id,
        agent_public_key=msg.agent_public_key,
        session=msg.session,
        challenges=tuple(msg.challenges),
        signatures=tuple(msg.signatures),
        rtt_ns=tuple(msg.rtt_ns),
        rtt_min_ns=msg.rtt_min_ns,
        measured_at=_from_ts(msg.measured_at, "measured_at"),
    )
