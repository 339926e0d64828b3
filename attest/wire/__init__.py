"""Wire <-> domain conversion. The only package besides the gRPC shells that touches `*_pb2`.

Decoders take untrusted bytes and either return validated frozen values or raise `DecodeError`
(or a subclass). They never return partially parsed data.

The code lives in private modules by concern (`_policy`: the decoding policy's bounds and
identifier grammars; `_common`: strict parsing, timestamps, readings; `_gpu`: GPU entries;
`_evidence`: host, driver, evidence; `_heartbeat`: heartbeats; `_landmark`: landmark
statements; `_messages`: envelope, receipt, challenge, rejection).
Callers import from `attest.wire` only; the names below are the same objects, so
`wire.check_evidence(...)` costs one attribute lookup, as before the split.
"""

from __future__ import annotations

from attest.wire._common import HASH_LEN, MAX_ENVELOPE_BYTES, NONCE_LEN
from attest.wire._common import _fields as _fields  # tests check the reading tables
from attest.wire._evidence import (
    CheckedEvidence,
    GpuSection,
    check_evidence,
    decode_evidence,
    encode_evidence,
)
from attest.wire._gpu import CheckedGpu
from attest.wire._heartbeat import decode_heartbeat, encode_heartbeat
from attest.wire._landmark import decode_landmark_statement, encode_landmark_statement
from attest.wire._messages import (
    challenge_from_pb,
    challenge_to_pb,
    decode_envelope,
    decode_receipt,
    encode_envelope,
    encode_receipt,
    rejection_from_pb,
    rejection_to_pb,
)
from attest.wire._policy import (
    MAX_GPUS,
    MAX_LANDMARKS,
    MAX_MIG_DEVICES,
    MAX_POSTURE_CHECKS,
    MAX_STRING,
)

__all__ = [
    "HASH_LEN",
    "MAX_ENVELOPE_BYTES",
    "MAX_GPUS",
    "MAX_LANDMARKS",
    "MAX_MIG_DEVICES",
    "MAX_POSTURE_CHECKS",
    "MAX_STRING",
    "NONCE_LEN",
    "CheckedEvidence",
    "CheckedGpu",
    "GpuSection",
    "challenge_from_pb",
    "challenge_to_pb",
    "check_evidence",
    "decode_envelope",
    "decode_evidence",
    "decode_heartbeat",
    "decode_landmark_statement",
    "decode_receipt",
    "encode_envelope",
    "encode_evidence",
    "encode_heartbeat",
    "encode_landmark_statement",
    "encode_receipt",
    "rejection_from_pb",
    "rejection_to_pb",
]
