"""Heartbeats through the pure pipeline and the wire decoder (docs/protocol.md §4.1): every
check of full evidence applies; a heartbeat is never mistaken for evidence or the reverse."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest import errors, model, wire
from attest.envelope import EVIDENCE_PAYLOAD_TYPE, HEARTBEAT_PAYLOAD_TYPE, envelope_hash, sign
from attest.keys import SoftwareSigner
from attest.model import Freshness
from tests.verifier.helpers import T0, Chain
from tests.verifier.test_pipeline import LIMITS, NONCE, issued, pinned
from verifier.pipeline import ChainHead, authenticate, check_state, to_attestation

BASE = b"\x0b" * 32
SIGNER = SoftwareSigner.generate()


def beat(seq: int = 2, prev: bytes = b"\x01" * 32, **changes: object) -> model.Heartbeat:
    value = model.Heartbeat(
        agent_id="agt-1", seq=seq, prev_hash=prev, nonce=NONCE, created_at=T0,
        agent_version="test", site_id="site-a", base=BASE,
    )  # fmt: skip
    return replace(value, **changes)  # type: ignore[arg-type]


def seal(payload: bytes, payload_type: str = HEARTBEAT_PAYLOAD_TYPE) -> bytes:
    return wire.encode_envelope(sign(payload_type, payload, [SIGNER]))


def test_a_heartbeat_passes_the_same_gates_as_evidence() -> None:
    chain = Chain("agt-1", SIGNER)
    first = chain.next(b"", T0 - timedelta(minutes=1))
    raw = seal(wire.encode_heartbeat(beat(prev=envelope_hash(first), base=envelope_hash(first))))
    auth = authenticate(raw, "agt-1", pinned(SIGNER), LIMITS)
    head = ChainHead(1, envelope_hash(first), T0 - timedelta(minutes=1))
    verified = check_state(auth, issued(), head, None, now=T0, limits=LIMITS)
    assert verified.freshness is Freshness.NONCE
    item = to_attestation(verified, T0)
    assert (item.base, item.gpus, item.posture) == (envelope_hash(first), (), ())
    assert item.envelope == raw and item.nonce == NONCE
    # The chain, nonce and time gates apply as they do to full evidence.
    with pytest.raises(errors.GapError):
        check_state(auth, issued(), ChainHead(1, b"\x09" * 32), None, now=T0, limits=LIMITS)
    with pytest.raises(errors.NonceReplayedError):
        check_state(auth, issued(consumed=True), head, None, now=T0, limits=LIMITS)
    with pytest.raises(errors.ClockSkewError):
        check_state(auth, issued(), head, None, now=T0 + timedelta(days=60), limits=LIMITS)


def test_signature_identity_and_invariants_apply() -> None:
    raw = seal(wire.encode_heartbeat(beat()))
    with pytest.raises(errors.UnknownKeyError):
        authenticate(raw, "agt-1", pinned(SoftwareSigner.generate()), LIMITS)
    with pytest.raises(errors.AgentUnknownError):
        authenticate(raw, "agt-1", None, LIMITS)
    other = seal(wire.encode_heartbeat(beat(agent_id="agt-2")))
    with pytest.raises(errors.IdentityMismatchError):
        authenticate(other, "agt-1", pinned(SIGNER), LIMITS)
    for bad in (beat(site_id=""), beat(base=b""), beat(base=b"x" * 31), beat(seq=1, prev=b"")):
        with pytest.raises(errors.InvariantError):
            authenticate(seal(wire.encode_heartbeat(bad)), "agt-1", pinned(SIGNER), LIMITS)


def test_a_heartbeat_is_never_read_as_evidence_nor_evidence_as_a_heartbeat() -> None:
    """The payload type is signed: relabelling breaks the signature, and a payload signed under
    the other type carries fields the other message does not know."""
    heartbeat = wire.encode_heartbeat(beat())
    with pytest.raises(errors.DecodeError):
        authenticate(seal(heartbeat, EVIDENCE_PAYLOAD_TYPE), "agt-1", pinned(SIGNER), LIMITS)
    evidence = wire.decode_envelope(Chain("agt-1", SIGNER).next(NONCE, T0)).payload
    with pytest.raises(errors.DecodeError):
        authenticate(seal(evidence), "agt-1", pinned(SIGNER), LIMITS)
    relabelled = replace(wire.decode_envelope(seal(heartbeat)), payload_type=EVIDENCE_PAYLOAD_TYPE)
    with pytest.raises(errors.BadSignatureError):
        authenticate(wire.encode_envelope(relabelled), "agt-1", pinned(SIGNER), LIMITS)


def test_round_trip() -> None:
    value = beat(landmarks=(model.LandmarkMeasurement("lm-fra", b"statement", (1200, 1300)),))
    assert wire.decode_heartbeat(wire.encode_heartbeat(value)) == value


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_raise_only_decode_errors(data: bytes) -> None:
    with contextlib.suppress(errors.DecodeError):
        wire.decode_heartbeat(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_flipping_any_signed_byte_fails_verification(data: st.DataObject) -> None:
    raw = seal(wire.encode_heartbeat(beat()))
    envelope = wire.decode_envelope(raw)
    payload = bytearray(envelope.payload)
    position = data.draw(st.integers(0, len(payload) - 1))
    payload[position] ^= data.draw(st.integers(1, 255))
    flipped = wire.encode_envelope(replace(envelope, payload=bytes(payload)))
    with pytest.raises(errors.BadSignatureError):
        authenticate(flipped, "agt-1", pinned(SIGNER), LIMITS)
