"""Hypothesis: hostile bytes through the pipeline always end in a typed AttestError."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest import errors
from attest.envelope import envelope_hash
from attest.keys import SoftwareSigner
from tests.verifier.helpers import T0, Chain
from verifier.errors_map import rejection_for, status_for
from verifier.pipeline import ChainHead, Limits, PinnedAgent, authenticate, check_state

LIMITS = Limits(16 * 1024, timedelta(minutes=5), timedelta(days=30), timedelta(minutes=10))
SIGNER = SoftwareSigner.generate()
KEY = SIGNER.public_key
AGENT = PinnedAgent("agt-1", "site-a", {KEY.keyid: KEY})
CHAIN = Chain("agt-1", SIGNER)
RAW1 = CHAIN.next(b"", T0)
RAW2 = CHAIN.next(b"", T0)
RAW3 = CHAIN.next(b"", T0)
HEAD1 = ChainHead(1, envelope_hash(RAW1))


def _run(raw: bytes, head: ChainHead = HEAD1, digest: bytes | None = None) -> None:
    auth = authenticate(raw, "agt-1", AGENT, LIMITS)
    check_state(auth, None, head, digest, now=T0, limits=LIMITS)


def _typed(raw: bytes) -> errors.AttestError:
    with pytest.raises(errors.AttestError) as info:
        _run(raw)
    error = info.value
    assert error.code
    assert isinstance(status_for(error), grpc.StatusCode)
    assert rejection_for(error, 0, b"").code == error.code
    return error


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(RAW2) * 8 - 1))
def test_any_flipped_bit_is_rejected(bit: int) -> None:
    data = bytearray(RAW2)
    data[bit // 8] ^= 1 << (bit % 8)
    _typed(bytes(data))


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(RAW2) - 1))
def test_any_truncation_is_rejected(length: int) -> None:
    _typed(RAW2[:length])


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=1 << 16), st.binary(max_size=64))
def test_oversized_input_is_a_size_error(extra: int, tail: bytes) -> None:
    data = RAW2 + b"\x00" * (LIMITS.max_envelope_bytes + extra - len(RAW2)) + tail
    assert isinstance(_typed(data), errors.SizeLimitError)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_are_rejected(data: bytes) -> None:
    _typed(data)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([RAW1, RAW2, RAW3]), st.integers(min_value=1, max_value=3))
def test_replayed_and_reordered_envelopes_are_chain_errors(raw: bytes, head_seq: int) -> None:
    raws = [RAW1, RAW2, RAW3]
    head = ChainHead(head_seq, envelope_hash(raws[head_seq - 1]))
    auth = authenticate(raw, "agt-1", AGENT, LIMITS)
    seq = auth.evidence.seq
    if seq == head_seq + 1:
        check_state(auth, None, head, None, now=T0, limits=LIMITS)  # the one valid successor
        return
    digest = auth.payload_digest if seq <= head_seq else None
    with pytest.raises(errors.ChainError):
        check_state(auth, None, head, digest, now=T0, limits=LIMITS)


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(["ed25519", "ecdsa-p256-sha256"]))
def test_forged_envelopes_by_other_keys_are_rejected(algorithm: str) -> None:
    forger = SoftwareSigner.generate(algorithm)  # type: ignore[arg-type]
    raw = Chain("agt-1", forger).next(b"", T0)
    assert isinstance(_typed(raw), errors.SignatureError)
