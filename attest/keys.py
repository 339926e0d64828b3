"""Keys: Ed25519 for software keys, ECDSA P-256 (ES256, DER signatures) for TPM-held keys.

A key id is the hex SHA-256 of the SubjectPublicKeyInfo DER. `PublicKey.verify` raises; it never
returns a bool. Private key files are written atomically with mode 0600 (`attest.files`) and
refused on load when anyone but the owner can read them.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from attest.errors import (
    BadSignatureError,
    KeyFilePermissionError,
    KeyMaterialError,
    UnsupportedKeyError,
)
from attest.files import write_secret_file

Algorithm = Literal["ed25519", "ecdsa-p256-sha256"]
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


#: Order n of the P-256 group (SEC 2, secp256r1). (r, s) and (r, n - s) both verify under
#: ECDSA, so only signatures with s <= n / 2 ("low S", as in BIP 62) are accepted: otherwise
#: anyone could, without the key, make a second, different envelope (and envelope hash) for the
#: same evidence and break the agent's hash chain.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def ecdsa_low_s(signature_der: bytes) -> bytes:
    """The same P-256 DER signature with s moved to the lower half of the group order.

    Every ECDSA signer (software or TPM) must pass its signatures through this.
    Raises BadSignatureError when the bytes are not a DER ECDSA signature.
    """
    r, s = _decode_ecdsa(signature_der)
    return encode_dss_signature(r, min(s, P256_ORDER - s))


def _decode_ecdsa(signature_der: bytes) -> tuple[int, int]:
    try:
        return decode_dss_signature(signature_der)
    except ValueError as exc:
        raise BadSignatureError("not a DER ECDSA signature") from exc


def key_id(spki_der: bytes) -> str:
    """Hex SHA-256 of a SubjectPublicKeyInfo DER encoding."""
    return hashlib.sha256(spki_der).hexdigest()


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A parsed, supported public key with its SPKI DER and key id."""

    spki_der: bytes
    algorithm: Algorithm
    keyid: str
    _key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey = field(repr=False, compare=False)

    @classmethod
    def from_spki_der(cls, der: bytes) -> PublicKey:
        """Parse SPKI DER; raise KeyMaterialError or UnsupportedKeyError."""
        try:
            key = serialization.load_der_public_key(der)
        except (ValueError, TypeError) as exc:
            raise KeyMaterialError(f"not a SubjectPublicKeyInfo DER public key: {exc}") from exc
        return cls._from_key(key)

    @classmethod
    def from_pem(cls, pem: bytes) -> PublicKey:
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError) as exc:
            raise KeyMaterialError(f"not a PEM public key: {exc}") from exc
        return cls._from_key(key)

    @classmethod
    def from_base64(cls, text: str) -> PublicKey:
        """Parse base64 SPKI DER, the form used in registry files."""
        try:
            der = base64.b64decode(text.strip(), validate=True)
        except ValueError as exc:
            raise KeyMaterialError(f"public key is not valid base64: {exc}") from exc
        return cls.from_spki_der(der)

    @classmethod
    def _from_key(cls, key: object) -> PublicKey:
        if isinstance(key, ed25519.Ed25519PublicKey):
            algorithm: Algorithm = "ed25519"
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            algorithm = "ecdsa-p256-sha256"
        else:
            raise UnsupportedKeyError(
                f"unsupported public key type {type(key).__name__}: use Ed25519 or ECDSA P-256"
            )
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(spki_der=der, algorithm=algorithm, keyid=key_id(der), _key=key)

    def to_base64(self) -> str:
        return base64.b64encode(self.spki_der).decode("ascii")

    def to_pem(self) -> bytes:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def raw(self) -> bytes:
        """The bare key: 32 bytes for Ed25519 (RFC 8032), the X9.62 uncompressed point for P-256."""
        if isinstance(self._key, ed25519.Ed25519PublicKey):
            return self._key.public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        return self._key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def verify(self, signature: bytes, data: bytes) -> None:
        """Raise BadSignatureError unless `signature` is this key's signature over `data`.

        ECDSA signatures must be DER with low S (see `ecdsa_low_s`).
        """
        try:
            if isinstance(self._key, ed25519.Ed25519PublicKey):
                self._key.verify(signature, data)
            else:
                if _decode_ecdsa(signature)[1] > P256_ORDER // 2:
                    raise BadSignatureError("ECDSA signature with high S (malleable) is refused")
                self._key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as exc:
            raise BadSignatureError(f"signature by key {self.keyid[:16]} does not verify") from exc


class KeyCache:
    """Parsed public keys by SPKI DER: the `size` most recently used.

    A parsed ECDSA key holds ~2.4 KB of OpenSSL state, so a verifier with 10,000 open streams
    would keep 24 MB of them; this keeps at most `size` and parses the others again when used
    (~10 µs). Raises what `PublicKey.from_spki_der` raises; nothing bad is cached.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._keys: OrderedDict[bytes, PublicKey] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, spki_der: bytes) -> PublicKey:
        keys = self._keys
        key = keys.get(spki_der)
        if key is not None:
            keys.move_to_end(spki_der)
            return key
        key = PublicKey.from_spki_der(spki_der)
        if self._size > 0:
            keys[spki_der] = key
            if len(keys) > self._size:
                keys.popitem(last=False)
        return key


class CachedKeys(Mapping[str, PublicKey]):
    """keyid -> PublicKey over SPKI DER values, parsed through a shared KeyCache when looked up
    (what a long-lived holder of an agent's keys keeps instead of the parsed keys)."""

    __slots__ = ("_cache", "_der")

    def __init__(self, der_by_keyid: dict[str, bytes], cache: KeyCache) -> None:
        self._der = der_by_keyid
        self._cache = cache

    def __getitem__(self, keyid: str) -> PublicKey:
        return self._cache.get(self._der[keyid])

    def __contains__(self, keyid: object) -> bool:
        return keyid in self._der  # without parsing the key

    def __iter__(self) -> Iterator[str]:
        return iter(self._der)

    def __len__(self) -> int:
        return len(self._der)


class Signer(Protocol):
    """Something that signs bytes with a private key it may not expose (file, TPM)."""

    @property
    def public_key(self) -> PublicKey: ...

    def sign(self, data: bytes) -> bytes: ...


@dataclass(frozen=True)
class SoftwareSigner:
    """A signer over an in-memory private key."""

    private_key: PrivateKey = field(repr=False)
    public_key: PublicKey

    @classmethod
    def from_private_key(cls, key: PrivateKey) -> SoftwareSigner:
        public = PublicKey._from_key(key.public_key())
        return cls(private_key=key, public_key=public)

    @classmethod
    def generate(cls, algorithm: Algorithm = "ed25519") -> SoftwareSigner:
        if algorithm == "ed25519":
            return cls.from_private_key(ed25519.Ed25519PrivateKey.generate())
        return cls.from_private_key(ec.generate_private_key(ec.SECP256R1()))

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            return self.private_key.sign(data)
        return ecdsa_low_s(self.private_key.sign(data, ec.ECDSA(hashes.SHA256())))

    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def parse_private_pem(pem: bytes) -> SoftwareSigner:
    """Parse an unencrypted PKCS#8 PEM private key (Ed25519 or P-256)."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyMaterialError(f"not an unencrypted PEM private key: {exc}") from exc
    if isinstance(key, ed25519.Ed25519PrivateKey) or (
        isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    ):
        return SoftwareSigner.from_private_key(key)
    raise UnsupportedKeyError(f"unsupported private key type {type(key).__name__}")


def write_private_key(path: Path, signer: SoftwareSigner) -> None:
    """Write the key atomically with mode 0600; never leaves a partial or world-readable file."""
    write_secret_file(path, signer.private_pem())


# --- X.509: how an agent is named and keyed in its mTLS client certificate --------------------

#: The SAN URI prefix naming the agent a verifier-issued client certificate is for.
AGENT_URI_PREFIX = "urn:gpu-attest:agent:"


def certificate_spki(cert: x509.Certificate) -> bytes:
    """The SubjectPublicKeyInfo DER of the certificate's key (its key id is key_id of it)."""
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


#: A PEM private key is a few hundred bytes; anything much larger is not one.
MAX_KEY_FILE_BYTES = 64 * 1024


def load_private_key(path: Path) -> SoftwareSigner:
    """Load a private key file; raise KeyFilePermissionError if group or others can access it.

    The mode is checked on the opened file (fstat), so it is the mode of the bytes read.
    Raises KeyMaterialError when the file cannot be read or is not a regular file.
    """
    try:
        with path.open("rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise KeyMaterialError(f"key file {path} is not a regular file")
            if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise KeyFilePermissionError(
                    f"key file {path} has mode {stat.S_IMODE(info.st_mode):04o}; it must be 0600"
                )
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyMaterialError(f"cannot read key file {path}: {exc.strerror}") from exc
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyMaterialError(f"key file {path} is too large to be a private key")
    return parse_private_pem(data)


def load_or_create_private_key(path: Path, algorithm: Algorithm = "ed25519") -> SoftwareSigner:
    """Load the key at `path`, creating a fresh one (0600) if the file does not exist."""
    if not path.exists():
        write_private_key(path, SoftwareSigner.generate(algorithm))
    return load_private_key(path)
