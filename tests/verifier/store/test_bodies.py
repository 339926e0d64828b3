"""The stored form of envelope bytes (verifier/store/bodies.py): whatever is stored gives back
the envelope byte for byte, compact where it can be, and a damaged body is refused."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest.envelope import (
    EVIDENCE_PAYLOAD_TYPE,
    HEARTBEAT_PAYLOAD_TYPE,
    Envelope,
    EnvelopeSignature,
    sign,
)
from attest.errors import StoreError
from attest.keys import SoftwareSigner
from attest.v1 import attest_pb2 as pb
from attest.wire import encode_envelope
from tests.verifier.store.conftest import Backend
from tests.verifier.store.helpers import Chain, accept_heartbeats, enroll, heartbeat
from verifier.store import bodies


def _p256() -> SoftwareSigner:
    return SoftwareSigner.generate("ecdsa-p256-sha256")


_KNOWN = (EVIDENCE_PAYLOAD_TYPE, HEARTBEAT_PAYLOAD_TYPE)
_hex_keyids = st.binary(min_size=32, max_size=32).map(bytes.hex)
_signatures = st.builds(
    EnvelopeSignature,
    keyid=st.one_of(_hex_keyids, _hex_keyids.map(str.upper), st.text(max_size=70)),
    sig=st.one_of(st.binary(max_size=80), st.binary(min_size=250, max_size=300)),
)
_envelopes = st.builds(
    Envelope,
    payload_type=st.one_of(st.sampled_from(_KNOWN), st.text(min_size=1, max_size=60)),
    payload=st.binary(max_size=600),
    signatures=st.lists(_signatures, min_size=1, max_size=4).map(tuple),
)


@settings(max_examples=400, deadline=None)
@given(_envelopes)
def test_every_envelope_comes_back_byte_for_byte(envelope: Envelope) -> None:
    raw = encode_envelope(envelope)
    stored = bodies.compact(raw)
    assert bodies.expand(stored) == raw
    compactable = envelope.payload_type in _KNOWN and all(
        len(s.keyid) == 64 and set(s.keyid) <= set("0123456789abcdef") and len(s.sig) <= 255
        for s in envelope.signatures
    )
    if compactable:
        assert stored[0] == 0x01 and len(stored) < len(raw)
    else:
        assert stored == raw


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_come_back_as_they_came(raw: bytes) -> None:
    """The store takes any bytes as an envelope: those no canonical envelope is come back
    verbatim, those that could be taken for a stored form (empty, led by a byte below 0x08)
    escaped."""
    stored = bodies.compact(raw)
    assert bodies.expand(stored) == raw
    assert len(stored) <= len(raw) + 1


@settings(max_examples=200, deadline=None)
@given(_envelopes, st.binary(min_size=1, max_size=8))
def test_non_canonical_serializations_are_stored_verbatim(envelope: Envelope, tail: bytes) -> None:
    """The same fields serialized another way (fields out of order, an unknown field after
    them) hash differently, so they must come back as sent, not as the canonical form."""
    reordered = (
        pb.Envelope(payload_type=envelope.payload_type).SerializeToString()
        + pb.Envelope(payload=envelope.payload).SerializeToString()
        + pb.Envelope(
            signatures=[pb.Signature(sig=s.sig, keyid=s.keyid) for s in envelope.signatures]
        ).SerializeToString()
    )
    unknown = encode_envelope(envelope) + b"\x22" + bytes([len(tail)]) + tail  # field 4, bytes
    for raw in (reordered, unknown):
        stored = bodies.compact(raw)
        assert bodies.expand(stored) == raw
        if raw != encode_envelope(envelope):
            assert stored == raw


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_a_damaged_compact_body_is_refused_or_read_never_crashes(tail: bytes) -> None:
    """What a damaged row yields is checked against the log's hashes by every reader; here it
    must be a StoreError or bytes, never another exception."""
    for lead in (b"\x01\x01", b"\x01\x02", b"\x01\x09", b"\x01", b"\x02", b"\x07"):
        with contextlib.suppress(StoreError):
            assert isinstance(bodies.expand(lead + tail), bytes)


def test_a_truncated_heartbeat_body_is_refused() -> None:
    raw = encode_envelope(sign(HEARTBEAT_PAYLOAD_TYPE, b"\x08\x01" * 60, [_p256()]))
    stored = bodies.compact(raw)
    for cut in range(1, len(stored)):
        try:
            expanded = bodies.expand(stored[:cut])
        except StoreError:
            continue
        assert expanded != raw


def test_a_signed_heartbeat_is_stored_in_three_quarters_of_its_bytes() -> None:
    """A heartbeat's size as agents send it (130-byte payload, one P-256 signature)."""
    raw = encode_envelope(sign(HEARTBEAT_PAYLOAD_TYPE, bytes(130), [_p256()]))
    stored = bodies.compact(raw)
    assert bodies.expand(stored) == raw
    assert len(stored) <= len(raw) - 80, (len(raw), len(stored))


def test_the_store_keeps_real_envelopes_compact_and_serves_them_verbatim(
    backend: Backend,
) -> None:
    store = backend.open()
    chain = Chain("bodies-1")
    enroll(store, chain.agent_id)
    # Payloads that do not open with their link: stored compact, not linked.
    sent = accept_heartbeats(store, chain, 3, lambda _agent, seq, _prev: b"beat %d" % seq)
    stored = backend.query("SELECT body FROM envelopes ORDER BY log_index")
    assert [bytes(body)[0] for (body,) in stored] == [0x01] * 3
    assert all(len(bytes(body)) < len(raw) for (body,), raw in zip(stored, sent, strict=True))
    assert [store.get_envelope(index) for index in range(3)] == sent


def test_an_empty_or_unknown_stored_form_is_refused() -> None:
    for body in (b"", b"\x02", b"\x07abc", b"\x01\x04\x00"):
        with pytest.raises(StoreError):
            bodies.expand(body)


_agent_ids = st.text(min_size=1, max_size=31)  # at most 124 bytes: a one-byte length
_seqs = st.integers(min_value=1, max_value=2**64 - 1)
_hashes = st.binary(min_size=32, max_size=32)


@settings(max_examples=300, deadline=None)
@given(_agent_ids, _seqs, _hashes, st.binary(max_size=32), _agent_ids, _hashes)
def test_a_linked_body_needs_its_own_link(
    agent_id: str, seq: int, prev: bytes, nonce: bytes, other_id: str, other_prev: bytes
) -> None:
    """A payload that opens with its row's link is stored without it (form 0x02) and comes
    back byte for byte with that link; without one it is refused, and with another link it
    is refused or comes back as other bytes, which every reader's hash check then refuses."""
    raw = encode_envelope(
        sign(HEARTBEAT_PAYLOAD_TYPE, heartbeat(agent_id, seq, prev, nonce), [_p256()])
    )
    link = bodies.Link(agent_id, prev)
    stored = bodies.compact(raw, link)
    assert stored[0] == 0x02 and len(stored) <= len(bodies.compact(raw)) - 2 - 34
    assert bodies.expand(stored, link) == raw
    with pytest.raises(StoreError):
        bodies.expand(stored)
    for wrong in (bodies.Link(other_id, prev), bodies.Link(agent_id, other_prev)):
        if wrong != link:
            with contextlib.suppress(StoreError):
                assert bodies.expand(stored, wrong) != raw


@settings(max_examples=300, deadline=None)
@given(_envelopes, _agent_ids, st.binary(max_size=40))
def test_any_envelope_with_any_link_comes_back_byte_for_byte(
    envelope: Envelope, agent_id: str, prev: bytes
) -> None:
    """A link the payload does not open with leaves the body in the unlinked forms."""
    raw = encode_envelope(envelope)
    link = bodies.Link(agent_id, prev)
    stored = bodies.compact(raw, link)
    assert bodies.expand(stored, link) == raw
    if stored[:1] == b"\x02":
        assert envelope.payload.startswith(b"\x0a") and len(prev) == 32


def test_a_real_heartbeat_fits_four_to_a_small_page() -> None:
    """A heartbeat as agents send it, with its nonce and one P-256 signature: stored linked
    in at most 243 bytes, so four rows fit a 1 KiB SQLite page (three did at ~275)."""
    agent_id = "agt-" + "0" * 20
    prev, nonce = hashlib.sha256(b"prev").digest(), bytes(32)
    raw = encode_envelope(
        sign(HEARTBEAT_PAYLOAD_TYPE, heartbeat(agent_id, 4321, prev, nonce), [_p256()])
    )
    stored = bodies.compact(raw, bodies.Link(agent_id, prev))
    assert len(stored) <= 243 < len(bodies.compact(raw)), (len(raw), len(stored))


def test_the_store_links_real_heartbeats_and_refuses_one_whose_link_is_damaged(
    backend: Backend,
) -> None:
    store = backend.open()
    chain = Chain("agt-linked-000000000001")
    enroll(store, chain.agent_id)
    sent = accept_heartbeats(store, chain, 4)
    forms = [bytes(body)[0] for (body,) in backend.query("SELECT body FROM envelopes ORDER BY 1")]
    # seq 1 has no previous envelope to link to; the others are stored linked.
    assert sorted(forms) == [0x01, 0x02, 0x02, 0x02]
    assert [store.get_envelope(index) for index in range(4)] == sent
    # Entry 2 is stored against entry 1's envelope hash: another one rebuilds other bytes.
    other = "X'" + "00" * 32 + "'" if backend.name == "sqlite" else "'\\x" + "00" * 32 + "'::bytea"
    backend.execute(f"UPDATE attestations SET envelope_hash = {other} WHERE log_index = 1")
    for index in (1, 2):
        with pytest.raises(StoreError, match="does not match its hash"):
            store.get_envelope(index)
    assert [store.get_envelope(index) for index in (0, 3)] == [sent[0], sent[3]]
