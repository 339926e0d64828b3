"""The verifier's own certificate authority, server certificate and receipt-signing key.

Created on first start in the state directory (private keys 0600, written atomically):

    ca.key / ca.pem          the CA agents trust (`gpu-attest-verifier ca export`)
    server.key / server.pem  the TLS server certificate, SANs from `tls.names`
    receipt.key              Ed25519 key that signs receipts (its SPKI goes to every agent)

All TLS keys are ECDSA P-256: gRPC's BoringSSL refuses Ed25519 certificate keys in the TLS
handshake (NO_COMMON_SIGNATURE_ALGORITHMS, seen with grpcio 1.85), so agents need P-256 keys
for mTLS too. Receipts are DSSE signatures outside TLS and keep Ed25519.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from attest.errors import EnrollmentError, KeyMaterialError, TransportIdentityError
from attest.files import write_public_file
from attest.keys import (
    AGENT_URI_PREFIX,
    PublicKey,
    SoftwareSigner,
    certificate_spki,
    key_id,
    load_or_create_private_key,
)

CA_VALIDITY = timedelta(days=3650)
SERVER_VALIDITY = timedelta(days=397)
SERVER_RENEW_BEFORE = timedelta(days=30)
BACKDATE = timedelta(minutes=5)  # tolerate agents whose clocks run a little behind


@dataclass(frozen=True)
class CertificateAuthority:
    """The CA's key and certificate."""

    key: ec.EllipticCurvePrivateKey = field(repr=False)
    certificate: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class ServerIdentity:
    """PEM key and certificate chain handed to grpc.ssl_server_credentials."""

    key_pem: bytes = field(repr=False)
    cert_pem: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gpu-attest"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_ec_key(path: Path) -> ec.EllipticCurvePrivateKey:
    signer = load_or_create_private_key(path, "ecdsa-p256-sha256")
    key = signer.private_key
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyMaterialError(f"{path} must hold an ECDSA P-256 key")
    return key


def load_or_create_ca(state_dir: Path, now: datetime) -> CertificateAuthority:
    """Load ca.key/ca.pem from `state_dir`, creating both on first use."""
    key = _load_ec_key(state_dir / "ca.key")
    cert_path = state_dir / "ca.pem"
    if cert_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if cert.public_key() != key.public_key():
            raise KeyMaterialError(f"{cert_path} does not belong to ca.key")
        return CertificateAuthority(key=key, certificate=cert)
    subject = _name("gpu-attest verifier CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _CA_KEY_USAGE,
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_public_file(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return CertificateAuthority(key=key, certificate=cert)


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
    encipher_only=False, decipher_only=False,
)  # fmt: skip


def _san_for(names: tuple[str, ...]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _leaf(
    ca: CertificateAuthority,
    *,
    public_key: ec.EllipticCurvePublicKey | object,
    subject: x509.Name,
    san: x509.SubjectAlternativeName,
    usage: x509.ObjectIdentifier,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(san, critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    return builder.sign(ca.key, hashes.SHA256())


def load_or_create_server_identity(
    ca: CertificateAuthority, state_dir: Path, names: tuple[str, ...], now: datetime
) -> ServerIdentity:
    """The server key and certificate; re-issued when names change or expiry is near."""
    key = _load_ec_key(state_dir / "server.key")
    cert_path = state_dir / "server.pem"
    wanted = _san_for(names)
    if cert_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            san = None
        if (
            san == wanted
            and cert.public_key() == key.public_key()
            and cert.issuer == ca.certificate.subject
            and cert.not_valid_after_utc - SERVER_RENEW_BEFORE > now
        ):
            return ServerIdentity(key_pem=_key_pem(key), cert_pem=cert_path.read_bytes())
    cert = _leaf(
        ca, public_key=key.public_key(), subject=_name(names[0]), san=wanted,
        usage=ExtendedKeyUsageOID.SERVER_AUTH, not_before=now - BACKDATE,
        not_after=now + SERVER_VALIDITY,
    )  # fmt: skip
    pem = cert.public_bytes(serialization.Encoding.PEM)
    write_public_file(cert_path, pem)
    return ServerIdentity(key_pem=_key_pem(key), cert_pem=pem)


def load_or_create_receipt_signer(state_dir: Path) -> SoftwareSigner:
    """The Ed25519 key that signs receipts (receipt.key, 0600)."""
    return load_or_create_private_key(state_dir / "receipt.key", "ed25519")


def issue_client_certificate(
    ca: CertificateAuthority,
    csr_der: bytes,
    *,
    expected_key: PublicKey,
    agent_id: str,
    now: datetime,
    days: int,
) -> bytes:
    """A client certificate (PEM) for `agent_id` over the CSR's key.

    The CSR must be signed by its own key (proof of possession) and that key must be the one
    being pinned. Raises EnrollmentError.
    """
    try:
        csr = x509.load_der_x509_csr(csr_der)
        valid = csr.is_signature_valid
        csr_key = csr.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise EnrollmentError(f"the certificate request is not a valid PKCS#10 DER: {exc}") from exc
    if not valid:
        raise EnrollmentError("the certificate request is not signed by its own key")
    csr_spki = csr_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if csr_spki != expected_key.spki_der:
        raise EnrollmentError("the certificate request is for another key than the one enrolled")
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(agent_uri(agent_id))])
    cert = _leaf(
        ca, public_key=csr_key, subject=_name(agent_id), san=san,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH, not_before=now - BACKDATE,
        not_after=now + timedelta(days=days),
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM)


def agent_uri(agent_id: str) -> str:
    return f"{AGENT_URI_PREFIX}{agent_id}"


def peer_from_certificate(pem: bytes) -> tuple[str, str]:
    """The agent id and the key id (SHA-256 of the SPKI DER) of a (TLS-verified) client
    certificate. Raises TransportIdentityError."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
        spki = certificate_spki(cert)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound) as exc:
        raise TransportIdentityError("the client certificate carries no agent name") from exc
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    ids = [u.removeprefix(AGENT_URI_PREFIX) for u in uris if u.startswith(AGENT_URI_PREFIX)]
    if len(ids) != 1 or not ids[0]:
        raise TransportIdentityError("the client certificate must name exactly one agent")
    return ids[0], key_id(spki)
