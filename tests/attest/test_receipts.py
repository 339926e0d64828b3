"""Receipts: the protobuf-free parser (attest.receipts.parse_receipt) reads exactly what
attest.wire encodes, agrees with the protobuf decoder wherever both accept, and turns untrusted
bytes into a receipt or a DecodeError, nothing else; verification fails closed."""

from __future__ import annotations

import contextlib
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from attest import merkle, model, receipts, wire
from attest.checkpoint import Checkpoint, NoteKey, sign_checkpoint
from attest.errors import DecodeError, InvariantError, ProofError, SizeLimitError
from attest.keys import SoftwareSigner
from attest.v1 import attest_pb2 as pb

_HASH = st.binary(min_size=32, max_size=32)
_WHEN = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
)
RECEIPTS = st.builds(
    model.Receipt,
    agent_id=st.text(max_size=40),
    seq=st.integers(0, 2**64 - 1),
    envelope_hash=_HASH,
    log_index=st.integers(0, 2**64 - 1),
    checkpoint=st.binary(max_size=200),
    accepted_at=_WHEN,
    freshness=st.sampled_from(model.Freshness),
    inclusion_proof=st.lists(_HASH, max_size=8).map(tuple),
)


@given(RECEIPTS)
def test_parse_reads_what_wire_encodes(receipt: model.Receipt) -> None:
    raw = wire.encode_receipt(receipt)
    assert receipts.parse_receipt(raw) == receipt
    assert wire.decode_receipt(raw) == receipt


def _parse_or_none(decode: object, data: bytes) -> model.Receipt | None:
    assert callable(decode)
    with contextlib.suppress(DecodeError):
        result = decode(data)
        assert isinstance(result, model.Receipt)
        return result
    return None


@given(st.binary(max_size=512))
def test_random_bytes_raise_only_decode_errors(data: bytes) -> None:
    ours = _parse_or_none(receipts.parse_receipt, data)
    theirs = _parse_or_none(wire.decode_receipt, data)
    if ours is not None and theirs is not None:
        assert ours == theirs


@settings(max_examples=400)
@given(
    RECEIPTS,
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255), st.booleans()), max_size=6),
)
def test_mutated_receipts_raise_only_decode_errors(
    receipt: model.Receipt, edits: list[tuple[int, int, bool]]
) -> None:
    data = bytearray(wire.encode_receipt(receipt))
    for position, value, insert in edits:
        where = position % (len(data) + 1)
        if insert or where == len(data):
            data.insert(where, value)
        else:
            data[where] = value
    ours = _parse_or_none(receipts.parse_receipt, bytes(data))
    theirs = _parse_or_none(wire.decode_receipt, bytes(data))
    if ours is not None and theirs is not None:
        assert ours == theirs


def test_parse_refuses_what_decode_refuses() -> None:
    base = pb.ReceiptBody.FromString(wire.encode_receipt(_receipt()))
    cases: list[tuple[pb.ReceiptBody, type[Exception]]] = []
    for edit in (
        lambda m: setattr(m, "envelope_hash", b"\x01"),
        lambda m: setattr(m, "freshness", pb.ReceiptBody.FRESHNESS_UNSPECIFIED),
        lambda m: m.inclusion_proof.append(b"short"),
        lambda m: m.inclusion_proof.extend([b"\x00" * 32] * (merkle.MAX_PROOF_HASHES + 1)),
    ):
        msg = pb.ReceiptBody()
        msg.CopyFrom(base)
        edit(msg)
        cases.append((msg, InvariantError))
    for msg, error in cases:
        raw = msg.SerializeToString()
        with pytest.raises(error):
            receipts.parse_receipt(raw)
        with pytest.raises(error):
            wire.decode_receipt(raw)
    raw = wire.encode_receipt(_receipt())
    for bad in (raw + b"\x48\x01", raw[:-1], b"\x0a\x02\xff\xfe"):  # unknown 9, cut, not UTF-8
        with pytest.raises(DecodeError):
            receipts.parse_receipt(bad)
    with pytest.raises(SizeLimitError):
        receipts.parse_receipt(b"\x00" * (receipts.MAX_RECEIPT_BYTES + 1))


def test_repeated_fields_follow_protobuf() -> None:
    """A scalar given twice: the last wins; the timestamp given twice: the two merge."""
    raw = wire.encode_receipt(_receipt())
    extra = pb.ReceiptBody(seq=77, accepted_at=Timestamp(nanos=5000)).SerializeToString()
    ours, theirs = receipts.parse_receipt(raw + extra), wire.decode_receipt(raw + extra)
    assert ours == theirs
    assert ours.seq == 77
    assert ours.accepted_at == _receipt().accepted_at + timedelta(microseconds=5)


LEAVES = [merkle.leaf_hash(b"entry-%d" % i) for i in range(6)]
ENVELOPE = b"entry-4"
SIGNER = SoftwareSigner.generate("ed25519")
ORIGIN = "verifier.test/log"


def _receipt(proof: tuple[bytes, ...] | None = None, index: int = 4) -> model.Receipt:
    note = sign_checkpoint(Checkpoint(ORIGIN, 6, merkle.root(LEAVES)), ORIGIN, SIGNER)
    return model.Receipt(
        "agt-1", 9, hashlib.sha256(ENVELOPE).digest(), index, note,
        datetime(2026, 6, 1, tzinfo=UTC), model.Freshness.NONCE,
        merkle.inclusion_proof(4, 6, LEAVES) if proof is None else proof,
    )  # fmt: skip


def test_verify_checks_key_origin_envelope_and_proof() -> None:
    raw = wire.encode_receipt(_receipt())
    verified = receipts.verify_receipt(raw, ENVELOPE, SIGNER.public_key, ORIGIN)
    assert (verified.checkpoint.size, verified.receipt.log_index) == (6, 4)
    key = NoteKey(ORIGIN, SIGNER.public_key)
    assert receipts.verify_receipt(raw, ENVELOPE, key).receipt == verified.receipt
    with pytest.raises(ProofError):
        receipts.verify_receipt(raw, ENVELOPE, SIGNER.public_key, "another/origin")
    with pytest.raises(ProofError):
        receipts.verify_receipt(raw, ENVELOPE, SoftwareSigner.generate("ed25519").public_key)
    with pytest.raises(ProofError):  # right proof, wrong index
        receipts.verify_receipt(wire.encode_receipt(_receipt(index=5)), ENVELOPE, key)
    no_checkpoint = wire.encode_receipt(model.Receipt(**{**_receipt().__dict__, "checkpoint": b""}))
    with pytest.raises(ProofError):
        receipts.verify_receipt(no_checkpoint, ENVELOPE, key)


@settings(max_examples=200)
@given(st.integers(0, 5), st.integers(0, 31), st.integers(0, 7))
def test_any_changed_proof_bit_is_refused(which: int, byte: int, bit: int) -> None:
    proof = list(merkle.inclusion_proof(4, 6, LEAVES))
    changed = bytearray(proof[which % len(proof)])
    changed[byte] ^= 1 << bit
    proof[which % len(proof)] = bytes(changed)
    raw = wire.encode_receipt(_receipt(tuple(proof)))
    with pytest.raises(ProofError):
        receipts.verify_receipt(raw, ENVELOPE, SIGNER.public_key)
