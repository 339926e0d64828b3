"""Crash-safe replacement of the agent key and its mTLS client certificate (the files of
RotateKey; the RPC itself is `agent.client.rotate_key`).

Files beside agent.key / agent.crt in the state dir, and the order they change in:

1. agent.key.pending: the next key (0600), written before RotateKey is called (temporary file,
   fsync, rename, fsync of the directory). From here on the agent is committed to it: the
   verifier may pin it and the answer be lost, and a retry of the same request always ends
   with it pinned (RotateKey is idempotent for a repeated request), so evidence produced from
   this point on is signed by the pending key, never by the old one.
2. The answer is checked (for the pending key, names this agent, issued by the pinned CA) and
   written as agent.crt.pending (same steps).
3. agent.key.pending is renamed over agent.key; the directory is fsync'd.
4. agent.crt.pending is renamed over agent.crt; the directory is fsync'd.

A crash before 1 leaves the old pair; between 1 and 2 the next start retries RotateKey with the
pending key (the old pair still authenticates the call: the verifier takes the retired key's
signature for that one repeat); after 2, `finish_install` completes the renames at the next
start without the network. No point loses the identity.

The spool rule: envelopes already spooled are signed by the old key, which the verifier stops
accepting once it pins the new one, so a rotation only *begins* with an empty spool (the caller
checks it, and produces no evidence between that check and step 1).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from agent.identity import CERT_FILE, KEY_FILE, PENDING_CERT_FILE, PENDING_KEY_FILE
from attest.errors import ConfigError, KeyRotationError, NotEnrolledError
from attest.files import fsync_dir, write_secret_file
from attest.keys import (
    AGENT_URI_PREFIX,
    Algorithm,
    PublicKey,
    SoftwareSigner,
    certificate_spki,
    load_private_key,
    write_private_key,
)

LOCK_FILE = "agent.lock"
#: Renew once less than this fraction of the certificate's lifetime is left.
RENEW_WHEN_LEFT = 1 / 3
_CLOCK_SKEW = timedelta(minutes=10)


@dataclass(frozen=True)
class PendingKey:
    signer: SoftwareSigner
    #: Created by this call: no RotateKey carrying it can have reached the verifier yet.
    fresh: bool


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


def load_pending_key(state_dir: Path) -> SoftwareSigner | None:
    """The key of a rotation begun and not installed, or None. Raises KeyMaterialError."""
    path = state_dir / PENDING_KEY_FILE
    return load_private_key(path) if path.exists() else None


def begin_rotation(state_dir: Path, algorithm: Algorithm) -> PendingKey:
    """Step 1: the pending key, made durable now, or the one a previous attempt left."""
    existing = load_pending_key(state_dir)
    if existing is not None:
        return PendingKey(existing, fresh=False)
    signer = SoftwareSigner.generate(algorithm)
    write_private_key(state_dir / PENDING_KEY_FILE, signer)
    return PendingKey(signer, fresh=True)


def abandon_rotation(state_dir: Path) -> None:
    """Forget a pending key the verifier cannot have pinned (it refused the only request)."""
    (state_dir / PENDING_CERT_FILE).unlink(missing_ok=True)
    (state_dir / PENDING_KEY_FILE).unlink(missing_ok=True)
    fsync_dir(state_dir)


def install_rotation(state_dir: Path, cert_pem: bytes) -> None:
    """Steps 2-4 for a checked certificate of the pending key."""
    write_secret_file(state_dir / PENDING_CERT_FILE, cert_pem)
    if not finish_install(state_dir):
        raise KeyRotationError("the new certificate is not for the pending key")


def finish_install(state_dir: Path) -> bool:
    """Complete steps 3-4 when agent.crt.pending is there; True when it was installed.

    A pending certificate for neither key (not written by this code) is removed. Raises
    KeyMaterialError when a key file is unreadable.
    """
    cert_path = state_dir / PENDING_CERT_FILE
    try:
        cert_pem = cert_path.read_bytes()
    except FileNotFoundError:
        return False
    pending = load_pending_key(state_dir)
    if pending is not None:
        if not _is_for(cert_pem, pending.public_key):
            cert_path.unlink()
            fsync_dir(state_dir)
            return False
        (state_dir / PENDING_KEY_FILE).replace(state_dir / KEY_FILE)
        fsync_dir(state_dir)
    if not _is_for(cert_pem, load_private_key(state_dir / KEY_FILE).public_key):
        cert_path.unlink()
        fsync_dir(state_dir)
        return False
    cert_path.replace(state_dir / CERT_FILE)
    fsync_dir(state_dir)
    return True


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
    if not _is_for(cert_pem, key):
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


def certificate_window(cert_pem: bytes) -> tuple[datetime, datetime]:
    """(notBefore, notAfter) of a PEM certificate, timezone-aware."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.not_valid_before_utc, cert.not_valid_after_utc


def renewal_due_at(cert_pem: bytes) -> datetime:
    """When less than RENEW_WHEN_LEFT of the certificate's lifetime is left."""
    not_before, not_after = certificate_window(cert_pem)
    return not_after - (not_after - not_before) * RENEW_WHEN_LEFT


def _is_for(cert_pem: bytes, key: PublicKey) -> bool:
    try:
        return certificate_spki(x509.load_pem_x509_certificate(cert_pem)) == key.spki_der
    except ValueError:
        return False
