"""THE property: flipping any single bit of a signed, serialized envelope is caught.

Whatever bit changes (payload, payload type, key id, signature, or the protobuf framing around
them), decode_envelope + verify + decode_evidence raises an AttestError; it never returns
evidence and never raises anything else.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from attest import envelope, wire
from attest.errors import AttestError
from attest.keys import SoftwareSigner
from tests.attest.factories import full_evidence, unavailable_evidence

ED = SoftwareSigner.from_private_key(ed25519.Ed25519PrivateKey.from_private_bytes(b"\5" * 32))
P256 = SoftwareSigner.from_private_key(ec.derive_private_key(31337, ec.SECP256R1()))
TRUSTED = {s.public_key.keyid: s.public_key for s in (ED, P256)}


def _signed(signer: SoftwareSigner, full: bool) -> bytes:
    evidence = full_evidence(gpus=2) if full else unavailable_evidence()
    payload = wire.encode_evidence(evidence)
    return wire.encode_envelope(envelope.sign(envelope.EVIDENCE_PAYLOAD_TYPE, payload, [signer]))


ENVELOPES = {
    (alg, full): _signed(signer, full)
    for alg, signer in (("ed25519", ED), ("p256", P256))
    for full in (True, False)
}


def _accept(raw: bytes) -> None:
    """The verifier's path for one envelope, from bytes to evidence."""
    verified = envelope.verify(wire.decode_envelope(raw), envelope.EVIDENCE_PAYLOAD_TYPE, TRUSTED)
    wire.decode_evidence(verified.payload)


def _flip(raw: bytes, bit: int) -> bytes:
    out = bytearray(raw)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def test_unflipped_envelopes_are_accepted() -> None:
    for raw in ENVELOPES.values():
        _accept(raw)


@settings(max_examples=1000)
@given(st.sampled_from(sorted(ENVELOPES)), st.data())
def test_any_single_bit_flip_raises(key: tuple[str, bool], data: st.DataObject) -> None:
    raw = ENVELOPES[key]
    bit = data.draw(st.integers(0, 8 * len(raw) - 1), label="bit")
    with pytest.raises(AttestError):
        _accept(_flip(raw, bit))


@pytest.mark.parametrize("alg", ["ed25519", "p256"])
def test_every_bit_of_one_envelope(alg: str) -> None:
    # Exhaustive over a small envelope (a host without a driver): no position is left to chance.
    raw = ENVELOPES[(alg, False)]
    survivors = []
    for bit in range(8 * len(raw)):
        try:
            _accept(_flip(raw, bit))
        except AttestError:
            continue
        survivors.append(bit)
    assert survivors == []
