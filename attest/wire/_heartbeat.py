"""Heartbeat: a chain link that repeats the agent's last full evidence by naming it
(docs/protocol.md §4.1). Same rules as Evidence for every field the two share."""

from __future__ import annotations

from attest import identifiers as ids
from attest import model
from attest.errors import InvariantError
from attest.v1 import attest_pb2 as pb
from attest.wire import _policy as policy
from attest.wire._common import HASH_LEN, NONCE_LEN, _from_ts, _parse, _ts
from attest.wire._policy import MAX_LANDMARKS


def encode_heartbeat(heartbeat: model.Heartbeat) -> bytes:
    """Serialize a heartbeat once; these bytes are what the agent signs and the verifier logs."""
    msg = pb.Heartbeat(
        agent_id=heartbeat.agent_id,
        seq=heartbeat.seq,
        prev_hash=heartbeat.prev_hash,
        nonce=heartbeat.nonce,
        created_at=_ts(heartbeat.created_at),
        agent_version=heartbeat.agent_version,
        site=pb.SiteClaim(site_id=heartbeat.site_id),
        landmarks=[
            pb.LandmarkMeasurement(
                landmark_id=m.landmark_id, statement=m.statement, rtt_us=list(m.rtt_us)
            )
            for m in heartbeat.landmarks
        ],
        base=heartbeat.base,
    )
    return msg.SerializeToString(deterministic=True)


def decode_heartbeat(payload: bytes) -> model.Heartbeat:
    """Parse and validate a heartbeat payload whose signature has already been verified.

    Raises DecodeError when the bytes are not a Heartbeat message (or carry fields this version
    does not know: an Evidence payload is not a heartbeat), InvariantError when a rule of the
    contract is broken (the same rules as Evidence, and a base of exactly 32 bytes).
    """
    msg = _parse(pb.Heartbeat(), payload, "heartbeat")
    if not msg.agent_id or len(msg.agent_id) > 128:
        raise InvariantError("heartbeat agent_id is missing or too long")
    if msg.seq < 2:
        # The first link of a chain has no earlier full evidence to repeat.
        raise InvariantError("a heartbeat cannot be the first evidence of a chain")
    if len(msg.prev_hash) != HASH_LEN:
        raise InvariantError(f"heartbeat prev_hash must be {HASH_LEN} bytes")
    if msg.nonce and len(msg.nonce) != NONCE_LEN:
        raise InvariantError(f"heartbeat nonce must be empty or {NONCE_LEN} bytes")
    if len(msg.base) != HASH_LEN:
        raise InvariantError(f"heartbeat base must be {HASH_LEN} bytes")
    if not msg.HasField("created_at"):
        raise InvariantError("heartbeat has no creation time")
    if not msg.HasField("site"):
        raise InvariantError("heartbeat has no site section")
    policy.count(len(msg.landmarks), "landmark measurements", MAX_LANDMARKS)
    policy.identifier(msg.agent_id, "heartbeat agent_id", ids.TOKEN)
    policy.text(msg.agent_version, "heartbeat agent_version", 64)
    policy.text(msg.site.site_id, "heartbeat site", 128)
    for measurement in msg.landmarks:
        policy.identifier(measurement.landmark_id, "landmark id", ids.TOKEN)
    return model.Heartbeat(
        agent_id=msg.agent_id,
        seq=msg.seq,
        prev_hash=msg.prev_hash,
        nonce=msg.nonce,
        created_at=_from_ts(msg.created_at, "heartbeat created_at"),
        agent_version=msg.agent_version,
        site_id=msg.site.site_id,
        base=msg.base,
        landmarks=tuple(
            model.LandmarkMeasurement(m.landmark_id, m.statement, tuple(m.rtt_us))
            for m in msg.landmarks
        ),
    )
