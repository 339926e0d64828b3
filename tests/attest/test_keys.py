"""Keys: key ids, encodings, 0600 key files, unsupported types, signatures that only raise."""

from __future__ import annotations

import contextlib
import hashlib
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from hypothesis import given
from hypothesis import strategies as st

from attest import keys
from attest.errors import (
    BadSignatureError,
    KeyFilePermissionError,
    KeyMaterialError,
    UnsupportedKeyError,
)

ED = keys.SoftwareSigner.from_private_key(ed25519.Ed25519PrivateKey.from_private_bytes(b"\1" * 32))
P256 = keys.SoftwareSigner.from_private_key(ec.derive_private_key(4242, ec.SECP256R1()))
SIGNERS = [ED, P256]


def _spki(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize("signer", SIGNERS, ids=["ed25519", "p256"])
def test_key_id_is_sha256_of_spki_der(signer: keys.SoftwareSigner) -> None:
    der = _spki(signer.private_key.public_key())
    assert signer.public_key.spki_der == der
    assert signer.public_key.keyid == hashlib.sha256(der).hexdigest() == keys.key_id(der)


@pytest.mark.parametrize("signer", SIGNERS, ids=["ed25519", "p256"])
def test_public_key_round_trips(signer: keys.SoftwareSigner) -> None:
    public = signer.public_key
    assert keys.PublicKey.from_pem(public.to_pem()) == public
    assert keys.PublicKey.from_spki_der(public.spki_der) == public
    assert keys.PublicKey.from_base64(public.to_base64()) == public
    assert keys.PublicKey.from_base64(" " + public.to_base64() + "\n") == public


def test_raw_public_key_bytes() -> None:
    assert len(ED.public_key.raw()) == 32
    assert ED.public_key.spki_der.endswith(ED.public_key.raw())
    assert P256.public_key.raw()[0] == 0x04 and len(P256.public_key.raw()) == 65


def test_algorithms() -> None:
    assert ED.public_key.algorithm == "ed25519"
    assert P256.public_key.algorithm == "ecdsa-p256-sha256"
    for algorithm in ("ed25519", "ecdsa-p256-sha256"):
        assert keys.SoftwareSigner.generate(algorithm).public_key.algorithm == algorithm


@pytest.mark.parametrize(
    "private",
    [
        rsa.generate_private_key(65537, 2048),
        ec.generate_private_key(ec.SECP384R1()),
        ec.generate_private_key(ec.SECP256K1()),
        ed448.Ed448PrivateKey.generate(),
        x25519.X25519PrivateKey.generate(),
    ],
    ids=["rsa", "p384", "secp256k1", "ed448", "x25519"],
)
def test_unsupported_key_types_are_rejected(private: object) -> None:
    public = private.public_key()  # type: ignore[attr-defined]
    with pytest.raises(UnsupportedKeyError):
        keys.PublicKey.from_spki_der(_spki(public))
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(UnsupportedKeyError):
        keys.PublicKey.from_pem(pem)
    private_pem = private.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(UnsupportedKeyError):
        keys.parse_private_pem(private_pem)


def test_malformed_keys_are_rejected() -> None:
    for bad in (b"", b"\x30\x00", ED.public_key.spki_der[:-1]):
        with pytest.raises(KeyMaterialError):
            keys.PublicKey.from_spki_der(bad)
    with pytest.raises(KeyMaterialError):
        keys.PublicKey.from_base64("not base64!")
    with pytest.raises(KeyMaterialError):
        keys.PublicKey.from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(KeyMaterialError):
        keys.PublicKey.from_pem(ED.private_pem())
    encrypted = ED.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(KeyMaterialError):
        keys.parse_private_pem(encrypted)


@given(st.binary(max_size=200))
def test_key_parsers_raise_only_key_errors(data: bytes) -> None:
    for parse in (keys.PublicKey.from_spki_der, keys.PublicKey.from_pem, keys.parse_private_pem):
        with contextlib.suppress(KeyMaterialError):
            parse(data)
    with contextlib.suppress(KeyMaterialError):
        keys.PublicKey.from_base64(data.decode("latin-1"))


# --- signatures --------------------------------------------------------------------------------


@pytest.mark.parametrize("signer", SIGNERS, ids=["ed25519", "p256"])
def test_sign_verify(signer: keys.SoftwareSigner) -> None:
    signature = signer.sign(b"message")
    signer.public_key.verify(signature, b"message")
    with pytest.raises(BadSignatureError):
        signer.public_key.verify(signature, b"messagf")
    other = ED if signer is P256 else P256
    with pytest.raises(BadSignatureError):
        other.public_key.verify(signature, b"message")


@given(st.binary(max_size=100))
def test_malformed_signatures_raise_bad_signature(signature: bytes) -> None:
    for signer in SIGNERS:
        with pytest.raises(BadSignatureError):
            signer.public_key.verify(signature, b"message")


# --- key files ---------------------------------------------------------------------------------


def test_written_key_is_0600_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "state" / "agent.key"
    keys.write_private_key(path, ED)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.load_private_key(path).public_key == ED.public_key
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o601, 0o610])
def test_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "agent.key"
    keys.write_private_key(path, P256)
    path.chmod(mode)
    with pytest.raises(KeyFilePermissionError, match="0600"):
        keys.load_private_key(path)


def test_stricter_modes_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "agent.key"
    keys.write_private_key(path, P256)
    path.chmod(0o400)
    assert keys.load_private_key(path).public_key == P256.public_key


def test_load_or_create(tmp_path: Path) -> None:
    path = tmp_path / "agent.key"
    created = keys.load_or_create_private_key(path)
    assert created.public_key.algorithm == "ed25519"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.load_or_create_private_key(path).public_key == created.public_key
    p256 = keys.load_or_create_private_key(tmp_path / "tpm-like.key", "ecdsa-p256-sha256")
    assert p256.public_key.algorithm == "ecdsa-p256-sha256"


def test_unreadable_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialError):
        keys.load_private_key(tmp_path / "missing.key")
    with pytest.raises(KeyMaterialError):
        keys.load_private_key(tmp_path)
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"not a key")
    garbage.chmod(0o600)
    with pytest.raises(KeyMaterialError):
        keys.load_private_key(garbage)
    big = tmp_path / "big.key"
    big.write_bytes(b"A" * (keys.MAX_KEY_FILE_BYTES + 1))
    big.chmod(0o600)
    with pytest.raises(KeyMaterialError, match="too large"):
        keys.load_private_key(big)


# --- ECDSA malleability ------------------------------------------------------------------------


def _twin(signature: bytes) -> bytes:
    r, s = decode_dss_signature(signature)
    return encode_dss_signature(r, keys.P256_ORDER - s)


@given(st.binary(max_size=64))
def test_p256_signatures_are_low_s_and_twins_are_refused(message: bytes) -> None:
    signature = P256.sign(message)
    assert decode_dss_signature(signature)[1] <= keys.P256_ORDER // 2
    assert keys.ecdsa_low_s(signature) == signature
    with pytest.raises(BadSignatureError, match="high S"):
        P256.public_key.verify(_twin(signature), message)
    assert keys.ecdsa_low_s(_twin(signature)) == signature


def test_raw_high_s_signature_from_a_foreign_signer_is_refused_until_normalized() -> None:
    # What a TPM returns: plain ECDSA, high S about half of the time.
    private = P256.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    for attempt in range(64):
        message = b"tpm-%d" % attempt
        raw = private.sign(message, ec.ECDSA(hashes.SHA256()))
        if decode_dss_signature(raw)[1] > keys.P256_ORDER // 2:
            break
    with pytest.raises(BadSignatureError):
        P256.public_key.verify(raw, message)
    P256.public_key.verify(keys.ecdsa_low_s(raw), message)


def test_low_s_of_garbage() -> None:
    with pytest.raises(BadSignatureError):
        keys.ecdsa_low_s(b"\x30\x01")


def test_key_cache_keeps_the_most_recently_used_keys() -> None:
    ders = [keys.SoftwareSigner.generate("ecdsa-p256-sha256").public_key.spki_der for _ in range(4)]
    cache = keys.KeyCache(2)
    first = cache.get(ders[0])
    assert cache.get(ders[0]) is first  # a hit is the same parsed key
    cache.get(ders[1])
    cache.get(ders[0])  # ders[0] is now the most recent: ders[1] goes first
    cache.get(ders[2])
    assert len(cache) == 2
    assert cache.get(ders[0]) is first
    assert cache.get(ders[1]).spki_der == ders[1]  # evicted, parsed again
    assert keys.KeyCache(0).get(ders[3]).keyid == keys.key_id(ders[3])


def test_key_cache_refuses_bad_keys_and_caches_nothing_for_them() -> None:
    cache = keys.KeyCache(4)
    with pytest.raises(KeyMaterialError):
        cache.get(b"\x30\x03not a key")
    assert len(cache) == 0


def test_cached_keys_map_key_ids_to_parsed_keys() -> None:
    signer = keys.SoftwareSigner.generate("ecdsa-p256-sha256")
    der = signer.public_key.spki_der
    mapping = keys.CachedKeys({signer.public_key.keyid: der}, keys.KeyCache(1))
    assert list(mapping) == [signer.public_key.keyid] and len(mapping) == 1
    mapping[signer.public_key.keyid].verify(signer.sign(b"m"), b"m")
    assert mapping.get("unknown") is None
    assert signer.public_key.keyid in mapping and "unknown" not in mapping
