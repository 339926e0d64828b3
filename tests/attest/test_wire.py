"""Wire <-> domain: round trips, every invariant of decode_evidence, and fuzzed decoders.

The invariant cases craft malformed messages with the generated protobuf classes, because the
domain model cannot express them (that is its point); product code still only touches `*_pb2`
through the attest.wire package.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest import model, wire
from attest.envelope import Envelope, EnvelopeSignature
from attest.errors import DecodeError, InvariantError, SizeLimitError
from attest.v1 import attest_pb2 as pb
from tests.attest.factories import full_evidence, unavailable_evidence

RECEIPT = model.Receipt(
    agent_id="agent-0001",
    seq=9,
    envelope_hash=b"\x01" * 32,
    log_index=1234,
    checkpoint=b"log.example\n1235\nAAAA\n\n",
    accepted_at=datetime(2026, 5, 4, 12, 0, tzinfo=UTC),
    freshness=model.Freshness.OFFLINE,
)


def test_full_evidence_round_trip() -> None:
    evidence = full_evidence(gpus=4)
    raw = wire.encode_evidence(evidence)
    assert wire.decode_evidence(raw) == evidence
    assert wire.encode_evidence(evidence) == raw  # deterministic for one library version


def test_unavailable_evidence_round_trip() -> None:
    evidence = unavailable_evidence()
    decoded = wire.decode_evidence(wire.encode_evidence(evidence))
    assert decoded == evidence
    assert decoded.gpus[0].compute_capability == model.Unavailable("GpuIsLost")
    assert decoded.host.hostname == model.Unavailable("NotFound")


def test_envelope_round_trip() -> None:
    env = Envelope("type/x", b"\x00payload", (EnvelopeSignature("ab" * 32, b"\x01" * 64),))
    assert wire.decode_envelope(wire.encode_envelope(env)) == env


def test_receipt_challenge_rejection_round_trip() -> None:
    assert wire.decode_receipt(wire.encode_receipt(RECEIPT)) == RECEIPT
    challenge = model.Challenge(b"\x02" * 32, RECEIPT.accepted_at, 4, b"\x03" * 32)
    assert wire.challenge_from_pb(wire.challenge_to_pb(challenge)) == challenge
    rejection = model.Rejection(3, b"\x04" * 32, "nonce-replayed", "seen before", False)
    assert wire.rejection_from_pb(wire.rejection_to_pb(rejection)) == rejection


def test_reading_fields_are_exactly_the_readings() -> None:
    # Identity fields can never be "unavailable": the decoder must refuse to hear otherwise.
    assert "uuid" not in wire._fields(model.Gpu)
    assert {"index", "state"}.isdisjoint(wire._fields(model.Gpu))
    assert wire._fields(model.ConfidentialComputing) == {
        "attestation_report",
        "certificate_chain",
        "cec_attestation_report",
    }
    assert len(wire._fields(model.HostFacts)) == 12


def test_size_limit() -> None:
    with pytest.raises(SizeLimitError):
        wire.decode_envelope(b"\x00" * 11, max_bytes=10)


# --- every invariant of decode_evidence --------------------------------------------------------

Mutation = Callable[[pb.Evidence], object]


def _gpu(msg: pb.Evidence) -> pb.Gpu:
    return msg.gpus[0]


def _set_capability_and_unavailable(msg: pb.Evidence) -> None:
    _gpu(msg).unavailable["compute_capability"] = "NotSupported"


def _clear_capability(msg: pb.Evidence) -> None:
    _gpu(msg).ClearField("compute_capability_minor")


def _duplicate_gpu(msg: pb.Evidence) -> None:
    msg.gpus.add().CopyFrom(msg.gpus[0])


def _too_many_gpus(msg: pb.Evidence) -> None:
    for i in range(wire.MAX_GPUS):
        msg.gpus.add(uuid=f"GPU-{i}", state=pb.Gpu.STATE_OK)


INVARIANTS: dict[str, Mutation] = {
    "agent-id-missing": lambda m: m.ClearField("agent_id"),
    "agent-id-too-long": lambda m: setattr(m, "agent_id", "a" * 129),
    "seq-zero": lambda m: setattr(m, "seq", 0),
    "first-with-prev-hash": lambda m: setattr(m, "seq", 1),
    "prev-hash-short": lambda m: setattr(m, "prev_hash", b"\x01" * 31),
    "prev-hash-missing": lambda m: m.ClearField("prev_hash"),
    "nonce-short": lambda m: setattr(m, "nonce", b"\x01" * 16),
    "created-at-missing": lambda m: m.ClearField("created_at"),
    "host-missing": lambda m: m.ClearField("host"),
    "driver-missing": lambda m: m.ClearField("driver"),
    "inventory-missing": lambda m: m.ClearField("inventory"),
    "site-missing": lambda m: m.ClearField("site"),
    "too-many-gpus": _too_many_gpus,
    "too-many-posture": lambda m: [m.posture.add(name="x", result=1) for _ in range(257)],
    "too-many-landmarks": lambda m: [m.landmarks.add() for _ in range(65)],
    "inventory-state-unknown": lambda m: setattr(m.inventory, "state", 99),
    "inventory-state-unspecified": lambda m: setattr(m.inventory, "state", 0),
    "gpu-state-unknown": lambda m: setattr(_gpu(m), "state", 0),
    "gpu-uuid-missing": lambda m: _gpu(m).ClearField("uuid"),
    "gpu-uuid-too-long": lambda m: setattr(_gpu(m), "uuid", "G" * 129),
    "gpu-duplicate-uuid": _duplicate_gpu,
    "unavailable-unknown-field": lambda m: _gpu(m).unavailable.__setitem__("bogus", "X"),
    "unavailable-identity-field": lambda m: _gpu(m).unavailable.__setitem__("uuid", "X"),
    "unavailable-bad-reason": lambda m: _gpu(m).unavailable.__setitem__("serial", "no way!"),
    "optional-set-and-unavailable": lambda m: _gpu(m).unavailable.__setitem__("serial", "X"),
    "optional-neither": lambda m: _gpu(m).ClearField("serial"),
    "submessage-neither": lambda m: _gpu(m).ClearField("pci"),
    "capability-neither": _clear_capability,
    "capability-both": _set_capability_and_unavailable,
    "plain-set-and-unavailable": lambda m: m.host.unavailable.__setitem__("hostname", "X"),
    "host-unavailable-unknown": lambda m: m.host.unavailable.__setitem__("gpu", "X"),
    "string-too-long": lambda m: setattr(_gpu(m), "serial", "s" * (wire.MAX_STRING + 1)),
    "host-string-too-long": lambda m: setattr(m.host, "kernel", "k" * (wire.MAX_STRING + 1)),
    "mig-too-many": lambda m: [_gpu(m).mig.devices.add() for _ in range(65)],
    "mig-unavailable-unknown": lambda m: _gpu(m).mig.devices[0].unavailable.__setitem__("x", "X"),
    "cc-nonce-short": lambda m: setattr(_gpu(m).cc, "report_nonce", b"\x01"),
    "cc-enabled-unavailable": lambda m: _gpu(m).cc.unavailable.__setitem__("enabled", "X"),
    "posture-unnamed": lambda m: setattr(m.posture[0], "name", ""),
    "posture-result-unknown": lambda m: setattr(m.posture[0], "result", 0),
}


@pytest.mark.parametrize("mutate", INVARIANTS.values(), ids=INVARIANTS.keys())
def test_invariants(mutate: Mutation) -> None:
    msg = pb.Evidence()
    msg.ParseFromString(wire.encode_evidence(full_evidence(gpus=1)))
    mutate(msg)
    with pytest.raises(InvariantError):
        wire.decode_evidence(msg.SerializeToString())


def _unknown_nested_field(msg: pb.Evidence) -> bytes:
    # field 99, varint 1, inside the first GPU: an unknown field deep in the message
    gpu = _gpu(msg).SerializeToString() + b"\x98\x06\x01"
    msg.ClearField("gpus")
    return msg.SerializeToString() + b"\x52" + _varint(len(gpu)) + gpu


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def test_unknown_fields_are_decode_errors() -> None:
    msg = pb.Evidence()
    msg.ParseFromString(wire.encode_evidence(full_evidence(gpus=1)))
    with pytest.raises(DecodeError, match="fields this version does not know"):
        wire.decode_evidence(msg.SerializeToString() + b"\x98\x06\x01")
    with pytest.raises(DecodeError, match="fields this version does not know"):
        wire.decode_evidence(_unknown_nested_field(msg))


def test_invalid_timestamp_is_a_decode_error() -> None:
    msg = pb.Evidence()
    msg.ParseFromString(wire.encode_evidence(full_evidence(gpus=1)))
    msg.created_at.seconds = 2**62
    with pytest.raises(DecodeError):
        wire.decode_evidence(msg.SerializeToString())


def test_receipt_invariants() -> None:
    msg = pb.ReceiptBody()
    msg.ParseFromString(wire.encode_receipt(RECEIPT))
    msg.envelope_hash = b"\x01"
    with pytest.raises(InvariantError):
        wire.decode_receipt(msg.SerializeToString())
    msg.ParseFromString(wire.encode_receipt(RECEIPT))
    msg.freshness = pb.ReceiptBody.FRESHNESS_UNSPECIFIED
    with pytest.raises(InvariantError):
        wire.decode_receipt(msg.SerializeToString())


def test_envelope_payload_type_rules() -> None:
    with pytest.raises(DecodeError):
        wire.decode_envelope(pb.Envelope(payload=b"x").SerializeToString())
    with pytest.raises(DecodeError):
        wire.decode_envelope(pb.Envelope(payload_type="t" * 257).SerializeToString())


# --- fuzz: untrusted bytes only ever raise DecodeError subclasses ------------------------------

SEEDS = [
    wire.encode_evidence(full_evidence(gpus=1)),
    wire.encode_evidence(unavailable_evidence()),
    wire.encode_receipt(RECEIPT),
    wire.encode_envelope(Envelope("t", b"p", (EnvelopeSignature("k", b"s"),))),
]
DECODERS = (wire.decode_envelope, wire.decode_evidence, wire.decode_receipt)


def _decode_all(data: bytes) -> None:
    for decode in DECODERS:
        with contextlib.suppress(DecodeError):
            decode(data)


@given(st.binary(max_size=512))
def test_random_bytes_raise_only_decode_errors(data: bytes) -> None:
    _decode_all(data)


@settings(max_examples=300)
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255), st.booleans()), max_size=6),
)
def test_mutated_messages_raise_only_decode_errors(
    seed: bytes, edits: list[tuple[int, int, bool]]
) -> None:
    data = bytearray(seed)
    for position, value, insert in edits:
        where = position % (len(data) + 1)
        if insert or where == len(data):
            data.insert(where, value)
        else:
            data[where] = value
    _decode_all(bytes(data))
