"""DSSE envelopes: the PAE vector and every rule of the verification policy."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from attest import envelope
from attest.envelope import Envelope, EnvelopeSignature
from attest.errors import (
    BadSignatureError,
    DuplicateSignatureError,
    NoSignatureError,
    PayloadTypeError,
    SignatureError,
    TooManySignaturesError,
    UnknownKeyError,
)
from attest.keys import PublicKey, SoftwareSigner

TYPE = envelope.EVIDENCE_PAYLOAD_TYPE
ED = SoftwareSigner.from_private_key(ed25519.Ed25519PrivateKey.from_private_bytes(b"\2" * 32))
P256 = SoftwareSigner.from_private_key(ec.derive_private_key(777, ec.SECP256R1()))
STRANGER = SoftwareSigner.from_private_key(ed25519.Ed25519PrivateKey.from_private_bytes(b"\3" * 32))


def _trusted(*signers: SoftwareSigner) -> dict[str, PublicKey]:
    return {s.public_key.keyid: s.public_key for s in signers}


def test_pae_vector() -> None:
    # secure-systems-lab/dsse protocol.md
    expected = b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    assert envelope.pae("http://example.com/HelloWorld", b"hello world") == expected


def test_pae_counts_bytes_not_characters() -> None:
    assert envelope.pae("t\u00e9", b"") == b"DSSEv1 3 t\xc3\xa9 0 "


@pytest.mark.parametrize("signer", [ED, P256], ids=["ed25519", "p256"])
def test_sign_and_verify(signer: SoftwareSigner) -> None:
    signed = envelope.sign(TYPE, b"payload", [signer])
    assert signed.signatures[0].keyid == signer.public_key.keyid
    signer.public_key.verify(signed.signatures[0].sig, envelope.pae(TYPE, b"payload"))
    verified = envelope.verify(signed, TYPE, _trusted(signer))
    assert verified == envelope.VerifiedPayload(TYPE, b"payload", (signer.public_key.keyid,))


def test_two_trusted_signers() -> None:
    signed = envelope.sign(TYPE, b"payload", [ED, P256])
    assert envelope.verify(signed, TYPE, _trusted(ED, P256)).keyids == (
        ED.public_key.keyid,
        P256.public_key.keyid,
    )


def test_sign_without_signers_is_refused() -> None:
    with pytest.raises(NoSignatureError):
        envelope.sign(TYPE, b"payload", [])


def _with_signatures(*sigs: EnvelopeSignature, payload: bytes = b"payload") -> Envelope:
    return Envelope(payload_type=TYPE, payload=payload, signatures=sigs)


GOOD = envelope.sign(TYPE, b"payload", [ED]).signatures[0]
P256_GOOD = envelope.sign(TYPE, b"payload", [P256]).signatures[0]
STRANGER_SIG = envelope.sign(TYPE, b"payload", [STRANGER]).signatures[0]


@pytest.mark.parametrize(
    ("candidate", "error"),
    [
        # the payload type is authenticated and must be the one the caller expects
        (envelope.sign(envelope.RECEIPT_PAYLOAD_TYPE, b"payload", [ED]), PayloadTypeError),
        (_with_signatures(), NoSignatureError),
        (_with_signatures(*([GOOD] * (envelope.MAX_SIGNATURES + 1))), TooManySignaturesError),
        (_with_signatures(GOOD, GOOD), DuplicateSignatureError),
        (_with_signatures(STRANGER_SIG, STRANGER_SIG), DuplicateSignatureError),
        (_with_signatures(STRANGER_SIG), UnknownKeyError),
        # an extra signature by an untrusted key is refused, not ignored
        (_with_signatures(GOOD, STRANGER_SIG), UnknownKeyError),
        (_with_signatures(GOOD, payload=b"payloaD"), BadSignatureError),
        (_with_signatures(EnvelopeSignature(GOOD.keyid, b"")), BadSignatureError),
        # the keyid is only a hint: a signature filed under another trusted key fails
        (_with_signatures(EnvelopeSignature(P256_GOOD.keyid, GOOD.sig)), BadSignatureError),
        (_with_signatures(EnvelopeSignature(GOOD.keyid.upper(), GOOD.sig)), UnknownKeyError),
        (_with_signatures(EnvelopeSignature("", GOOD.sig)), UnknownKeyError),
        # one good signature does not excuse a bad one by another trusted key
        (
            _with_signatures(GOOD, EnvelopeSignature(P256_GOOD.keyid, b"\x30\x00")),
            BadSignatureError,
        ),
    ],
)
def test_policy(candidate: Envelope, error: type[SignatureError]) -> None:
    with pytest.raises(error):
        envelope.verify(candidate, TYPE, _trusted(ED, P256))


def test_no_trusted_keys_fails_closed() -> None:
    with pytest.raises(UnknownKeyError):
        envelope.verify(envelope.sign(TYPE, b"payload", [ED]), TYPE, {})


def test_envelope_hash() -> None:
    assert envelope.envelope_hash(b"abc") == hashlib.sha256(b"abc").digest()
