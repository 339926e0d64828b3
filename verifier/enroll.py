"""Enrollment, key rotation, revocation and tokens: the core behind Enroll/RotateKey and the CLI.

A token is shown once and stored only as its SHA-256. Enroll binds the agent's key to a new agent
id in one store transaction that is idempotent for the same token and key until the agent's
first accepted attestation, so a response lost in transit never burns the token.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from attest.envelope import EnvelopeSignature, rotation_statement
from attest.errors import (
    AgentRevokedError,
    AgentUnknownError,
    EnrollmentError,
    IdentityMismatchError,
    TokenInvalidError,
    UnknownKeyError,
)
from attest.keys import PublicKey
from verifier.ca import CertificateAuthority, issue_client_certificate
from verifier.model import AgentRecord, AgentStatus, EnrollmentRequest, NewToken, token_hash
from verifier.store.api import Store

TOKEN_PREFIX = "gat1_"  # noqa: S105 - a prefix, not a secret
MAX_TOKEN_LEN = 128
MAX_HOST_FIELD = 256
MAX_TOKEN_TTL = timedelta(days=30)


def generate_token() -> str:
    """A fresh one-time token: 256 random bits, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def create_token(store: Store, site_id: str, ttl: timedelta, now: datetime) -> str:
    """Store a new token for `site_id` (hash only) and return its text, to be shown once."""
    if not site_id or len(site_id) > 128 or not site_id.isprintable():
        raise EnrollmentError("site id must be 1..128 printable characters")
    if not timedelta(0) < ttl <= MAX_TOKEN_TTL:
        raise EnrollmentError(f"token lifetime must be positive and at most {MAX_TOKEN_TTL}")
    token = generate_token()
    store.create_token(
        NewToken(
            token_hash=token_hash(token), site_id=site_id, created_at=now, expires_at=now + ttl
        )
    )
    return token


@dataclass(frozen=True)
class EnrollInput:
    """An Enroll request in domain form (untrusted until `enroll` checks it)."""

    token: str
    public_key: bytes  # SPKI DER
    csr: bytes  # PKCS#10 DER signed by that key
    hostname: str
    machine_id: str


@dataclass(frozen=True)
class EnrollResult:
    agent_id: str
    site_id: str
    client_certificate: bytes  # PEM
    created: bool


def _check_host_field(value: str, what: str) -> None:
    if len(value) > MAX_HOST_FIELD or not value.isprintable():
        raise EnrollmentError(f"{what} must be at most {MAX_HOST_FIELD} printable characters")


def enroll(
    store: Store, ca: CertificateAuthority, request: EnrollInput, now: datetime, cert_days: int
) -> EnrollResult:
    """Redeem the token, pin the key, issue the client certificate.

    Raises EnrollmentError (malformed request or CSR), KeyMaterialError/UnsupportedKeyError,
    TokenInvalidError, TokenExpiredError, TokenUsedError, StoreError.
    """
    if not request.token or len(request.token) > MAX_TOKEN_LEN:
        raise TokenInvalidError("the enrollment token is missing or malformed")
    _check_host_field(request.hostname, "hostname")
    _check_host_field(request.machine_id, "machine id")
    key = PublicKey.from_spki_der(request.public_key)
    # Check the CSR before the token is redeemed, so a bad CSR cannot burn it.
    issue_client_certificate(
        ca, request.csr, expected_key=key, agent_id="pending", now=now, days=cert_days
    )
    enrollment = store.enroll(
        EnrollmentRequest(
            token_hash=token_hash(request.token),
            proposed_agent_id="agt-" + secrets.token_hex(10),
            spki_der=key.spki_der,
            keyid=key.keyid,
            hostname=request.hostname,
            machine_id=request.machine_id,
        ),
        now,
    )
    agent = enrollment.agent
    cert = issue_client_certificate(
        ca, request.csr, expected_key=key, agent_id=agent.agent_id, now=now, days=cert_days
    )
    return EnrollResult(
        agent_id=agent.agent_id,
        site_id=agent.site_id,
        client_certificate=cert,
        created=enrollment.created,
    )


@dataclass(frozen=True)
class RotateInput:
    agent_id: str
    new_public_key: bytes
    csr: bytes
    old_key_signature: EnvelopeSignature


def rotate_key(
    store: Store,
    ca: CertificateAuthority,
    request: RotateInput,
    *,
    transport_agent_id: str,
    now: datetime,
    cert_days: int,
) -> bytes:
    """Replace the agent's key after checking the old key's signature; return the new cert PEM.

    Idempotent for a repeated request: when the new key is already the agent's current key and
    the signature is by the key that this very rotation retired, the signature is checked again
    and a fresh certificate for the new key is issued, with no store change. An agent whose
    answer was lost (crash, timeout) retries with the same pending key and so never loses its
    identity; a replay gains nothing, since the certificate is for a key only the agent holds.

    Raises IdentityMismatchError, AgentUnknownError, AgentRevokedError, UnknownKeyError,
    BadSignatureError, EnrollmentError, KeyMaterialError.
    """
    if request.agent_id != transport_agent_id:
        raise IdentityMismatchError("a key can only be rotated by the agent that holds it")
    agent = _active_agent(store, request.agent_id)
    new_key = PublicKey.from_spki_der(request.new_public_key)
    signed_by = request.old_key_signature.keyid
    old = {k.keyid: k for k in agent.current_keys}.get(signed_by)
    repeated = old is None and _rotated_to(agent, signed_by, new_key.keyid)
    if repeated:
        old = {k.keyid: k for k in agent.keys}[signed_by]
    if old is None:
        raise UnknownKeyError("the rotation is not signed by the agent's current key")
    PublicKey.from_spki_der(old.spki_der).verify(
        request.old_key_signature.sig, rotation_statement(request.agent_id, request.new_public_key)
    )
    if new_key.keyid == old.keyid:
        raise EnrollmentError("the new key is the current key")
    cert = issue_client_certificate(
        ca, request.csr, expected_key=new_key, agent_id=agent.agent_id, now=now, days=cert_days
    )
    if not repeated:
        store.rotate_key(agent.agent_id, new_key.spki_der, new_key.keyid, now, "rotated by agent")
    return cert


def _rotated_to(agent: AgentRecord, old_keyid: str, new_keyid: str) -> bool:
    """True when `new_keyid` is the agent's only current key and the rotation that bound it
    retired `old_keyid` (the store retires the old key at the instant it adds the new one)."""
    current = agent.current_keys
    if len(current) != 1 or current[0].keyid != new_keyid:
        return False
    return any(k.keyid == old_keyid and k.retired_at == current[0].added_at for k in agent.keys)


def _active_agent(store: Store, agent_id: str) -> AgentRecord:
    agent = store.get_agent(agent_id)
    if agent is None:
        raise AgentUnknownError(f"agent {agent_id[:64]!r} is not enrolled here")
    if agent.status is AgentStatus.REVOKED:
        raise AgentRevokedError(f"agent {agent_id} was revoked")
    return agent


def revoke(store: Store, agent_id: str, now: datetime, reason: str) -> AgentRecord:
    """Revoke the agent (audited by the store); raise AgentUnknownError."""
    return store.revoke_agent(agent_id, now, reason)
