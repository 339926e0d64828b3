"""The agent's enrolled identity: files in its state directory, the lock on it, and the pure
checks of receipts and certificates.

Files (docs/protocol.md §10): agent.key (0600, signs evidence and is the mTLS client key),
agent.crt, ca.pem, verifier.pub (PEM SPKI of the verifier's log key, which signs the checkpoints
receipts carry) and identity.toml (agent_id, site_id, verifier address). How agent.key and
agent.crt are replaced is agent.rotation's.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from attest import receipts, tomlconf
from attest.errors import (
    ConfigError,
    KeyMaterialError,
    KeyRotationError,
    NotEnrolledError,
    ReceiptMismatchError,
)
from attest.files import write_secret_file
from attest.keys import AGENT_URI_PREFIX, PublicKey, SoftwareSigner, certificate_spki
from attest.model import Receipt

KEY_FILE = "agent.key"
CERT_FILE = "agent.crt"
CA_FILE = "ca.pem"
VERIFIER_KEY_FILE = "verifier.pub"
IDENTITY_FILE = "identity.toml"
#: A key rotation's next key and its certificate, until installed (agent.rotation).
PENDING_KEY_FILE = "agent.key.pending"
PENDING_CERT_FILE = "agent.crt.pending"
LOCK_FILE = "agent.lock"
#: How far ahead of the agent's clock an issued certificate may start.
_CLOCK_SKEW = timedelta(minutes=10)


@dataclass(frozen=True)
class Identity:
    agent_id: str
    site_id: str
    verifier: str  # HOST:PORT as given at enrollment


@dataclass(frozen=True)
class TlsMaterial:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def make_csr(signer: SoftwareSigner, hostname: str) -> bytes:
    """A PKCS#10 request (DER) for the mTLS client certificate, signed by the agent key."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64] or "agent")])
    key = signer.private_key
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, algorithm)
    return csr.public_bytes(serialization.Encoding.DER)


def _toml_string(value: str) -> str:
    # JSON string escapes are a subset of TOML basic-string escapes.
    return json.dumps(value, ensure_ascii=True)


def save_enrollment(
    state_dir: Path, identity: Identity, cert_pem: bytes, ca_pem: bytes, verifier_spki: bytes
) -> None:
    """Store what Enroll returned; identity.toml is written last, so it marks completion."""
    verifier_key = PublicKey.from_spki_der(verifier_spki)
    x509.load_pem_x509_certificate(cert_pem)
    x509.load_pem_x509_certificates(ca_pem)
    write_secret_file(state_dir / CERT_FILE, cert_pem)
    write_secret_file(state_dir / CA_FILE, ca_pem)
    write_secret_file(state_dir / VERIFIER_KEY_FILE, verifier_key.to_pem())
    text = "".join(
        f"{key} = {_toml_string(value)}\n"
        for key, value in (
            ("agent_id", identity.agent_id),
            ("site_id", identity.site_id),
            ("verifier", identity.verifier),
        )
    )
    write_secret_file(state_dir / IDENTITY_FILE, text.encode("utf-8"))


def retire_enrollment(state_dir: Path, stamp: str) -> Path:
    """Move the current identity, key and spool into `state_dir/retired-<stamp>/`.

    A new enrollment is a new agent whose chain starts at seq 1; the old spool belongs to the
    old agent and is kept (not deleted) for `gpu-attest-verifier ingest`. Stop the daemon first.
    """
    target = state_dir / f"retired-{stamp}"
    target.mkdir(mode=0o700)
    names = (
        IDENTITY_FILE, KEY_FILE, CERT_FILE, CA_FILE, VERIFIER_KEY_FILE, PENDING_KEY_FILE,
        PENDING_CERT_FILE,
    )  # fmt: skip
    spool = ("spool.sqlite3", "spool.sqlite3-wal", "spool.sqlite3-shm")
    for name in (*names, *spool):
        if (state_dir / name).exists():
            (state_dir / name).rename(target / name)
    return target


def load_identity(state_dir: Path) -> Identity:
    """Raise NotEnrolledError when the state dir holds no (valid) identity.toml."""
    path = state_dir / IDENTITY_FILE
    if not path.exists():
        raise NotEnrolledError(f"{path} not found: enroll first with `gpu-attest-agent enroll`")
    table = tomlconf.load(path, NotEnrolledError)
    as_text = tomlconf.text(empty=True)
    identity = Identity(
        table.get("agent_id", as_text),
        table.get("site_id", as_text),
        table.get("verifier", as_text),
    )
    table.done()
    return identity


def load_verifier_key(state_dir: Path) -> PublicKey:
    try:
        return PublicKey.from_pem((state_dir / VERIFIER_KEY_FILE).read_bytes())
    except OSError as exc:
        raise NotEnrolledError(f"verifier key missing in {state_dir}: {exc.strerror}") from exc


def load_tls(state_dir: Path, signer: SoftwareSigner) -> TlsMaterial:
    """The enrolled mTLS material; raise NotEnrolledError, or KeyMaterialError when the client
    certificate is not for agent.key (a half-finished rotation or a copied state dir), which
    would otherwise surface only as an opaque handshake failure on every reconnect."""
    try:
        material = TlsMaterial(
            ca_pem=(state_dir / CA_FILE).read_bytes(),
            cert_pem=(state_dir / CERT_FILE).read_bytes(),
            key_pem=signer.private_pem(),
        )
    except OSError as exc:
        raise NotEnrolledError(f"TLS material missing in {state_dir}: {exc.strerror}") from exc
    check_key_matches_cert(signer, material.cert_pem)
    return material


def read_receipt(raw: bytes) -> Receipt:
    """Parse receipt bytes (untrusted, nothing verified yet: only to find the spooled entry it
    answers). Raises DecodeError (and subclasses)."""
    return receipts.parse_receipt(raw)


def verify_receipt(raw: bytes, envelope: bytes, verifier_key: PublicKey, agent_id: str) -> Receipt:
    """Verify a receipt for the spooled `envelope` against the pinned verifier (log) key.

    The checkpoint must carry the key's note signature over its origin, and the receipt's
    inclusion proof must lead from the leaf hash of `envelope` at its log index to that
    checkpoint's root (docs/protocol.md §5). Raises DecodeError, ProofError, or
    ReceiptMismatchError when the receipt names another agent or envelope.
    """
    receipt = receipts.verify_receipt(raw, envelope, verifier_key).receipt
    if receipt.agent_id != agent_id:
        raise ReceiptMismatchError(f"receipt names agent {receipt.agent_id!r}, not {agent_id!r}")
    return receipt


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """Hold the state dir's lock (`run`, `once` and `rotate-key` each take it: one writer of the
    evidence chain, and no key rotated under a running agent). Raises NotEnrolledError without
    a state dir, ConfigError when another process holds it."""
    if not state_dir.is_dir():
        raise NotEnrolledError(f"{state_dir} does not exist: enroll first")
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ConfigError(
                f"another gpu-attest-agent (run, once or rotate-key) is using {state_dir}"
            ) from exc
        yield
    finally:
        os.close(fd)


def check_key_matches_cert(signer: SoftwareSigner, cert_pem: bytes) -> None:
    """Raise KeyMaterialError when the client certificate is not for the agent key."""
    try:
        x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise KeyMaterialError(f"the enrolled client certificate is not valid PEM: {exc}") from exc
    if not cert_is_for(cert_pem, signer.public_key):
        raise KeyMaterialError("the enrolled client certificate is not for agent.key")


def cert_is_for(cert_pem: bytes, key: PublicKey) -> bool:
    """True when `cert_pem` is a PEM certificate of `key`."""
    try:
        return certificate_spki(x509.load_pem_x509_certificate(cert_pem)) == key.spki_der
    except ValueError:
        return False


def certificate_window(cert_pem: bytes) -> tuple[datetime, datetime]:
    """(notBefore, notAfter) of a PEM certificate, timezone-aware."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.not_valid_before_utc, cert.not_valid_after_utc


def check_issued_certificate(
    cert_pem: bytes, *, ca_pem: bytes, key: PublicKey, agent_id: str, now: datetime
) -> x509.Certificate:
    """Raise KeyRotationError unless `cert_pem` is a client certificate for `key`, naming
    `agent_id`, valid at `now` and issued by a CA certificate of `ca_pem` (the pinned one)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        cas = x509.load_pem_x509_certificates(ca_pem)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (ValueError, x509.ExtensionNotFound) as exc:
        raise KeyRotationError(f"the verifier returned an unusable certificate: {exc}") from exc
    if not cert_is_for(cert_pem, key):
        raise KeyRotationError("the verifier returned a certificate for another key")
    if san.get_values_for_type(x509.UniformResourceIdentifier) != [AGENT_URI_PREFIX + agent_id]:
        raise KeyRotationError(f"the returned certificate does not name agent {agent_id}")
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
        raise KeyRotationError("the returned certificate is not for TLS client authentication")
    if not cert.not_valid_before_utc - _CLOCK_SKEW <= now < cert.not_valid_after_utc:
        raise KeyRotationError("the returned certificate is not valid now")
    for ca in cas:
        with contextlib.suppress(ValueError, TypeError, InvalidSignature):
            cert.verify_directly_issued_by(ca)
            return cert
    raise KeyRotationError("the returned certificate is not issued by the pinned CA")
