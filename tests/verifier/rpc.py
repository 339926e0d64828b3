"""A minimal test-side client of the Attestation service (no agent/ import: layering)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from attest import model, wire
from attest.keys import PublicKey, SoftwareSigner
from attest.receipts import verify_receipt
from attest.v1 import attest_pb2 as pb
from attest.v1 import attest_pb2_grpc as pb_grpc
from tests.verifier.helpers import T0
from verifier import enroll
from verifier.server import Running
from verifier.store.api import Store

TIMEOUT = 20.0


def csr_for(signer: SoftwareSigner) -> bytes:
    key = signer.private_key
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, algorithm)
    return csr.public_bytes(serialization.Encoding.DER)


def new_token(store: Store, site: str = "site-a") -> str:
    return enroll.create_token(store, site, timedelta(hours=1), datetime.now(UTC))


@dataclass
class Enrolled:
    agent_id: str
    signer: SoftwareSigner
    cert_pem: bytes
    ca_pem: bytes
    verifier_key: PublicKey


def tls_channel(running: Running, port_name: str = "enroll") -> grpc.aio.Channel:
    creds = grpc.ssl_channel_credentials(root_certificates=running.core.ca.pem)
    return grpc.aio.secure_channel(f"127.0.0.1:{running.ports[port_name]}", creds)


def mtls_channel(running: Running, agent: Enrolled) -> grpc.aio.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=agent.ca_pem,
        private_key=agent.signer.private_pem(),
        certificate_chain=agent.cert_pem,
    )
    return grpc.aio.secure_channel(f"127.0.0.1:{running.ports['listen']}", creds)


async def enroll_agent(
    running: Running, token: str, signer: SoftwareSigner | None = None
) -> Enrolled:
    return await enroll_at(running.ports["enroll"], running.core.ca.pem, token, signer)


async def enroll_at(
    port: int, ca_pem: bytes, token: str, signer: SoftwareSigner | None = None
) -> Enrolled:
    """Enroll over server-authenticated TLS; agent keys are P-256 (BoringSSL mTLS, see ca.py)."""
    signer = signer or SoftwareSigner.generate("ecdsa-p256-sha256")
    creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        response = await pb_grpc.AttestationStub(channel).Enroll(
            pb.EnrollRequest(
                token=token, public_key=signer.public_key.spki_der, csr=csr_for(signer),
                hostname="node-1", machine_id="m-1",
            ),
            timeout=TIMEOUT,
        )  # fmt: skip
    return Enrolled(
        agent_id=response.agent_id,
        signer=signer,
        cert_pem=response.client_certificate,
        ca_pem=response.ca_certificate,
        verifier_key=PublicKey.from_spki_der(response.verifier_public_key),
    )


def check_receipt(agent: Enrolled, raw_receipt: bytes, raw_envelope: bytes) -> model.Receipt:
    """Verify the receipt like an agent does: the checkpoint signed by the pinned verifier key,
    the envelope hash, and the inclusion proof of the envelope's leaf in that checkpoint."""
    verified = verify_receipt(raw_receipt, raw_envelope, agent.verifier_key)
    receipt = verified.receipt
    assert receipt.agent_id == agent.agent_id
    assert verified.checkpoint.size > receipt.log_index
    return receipt


class Stream:
    """One Attest stream driven message by message."""

    def __init__(self, channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] = ()):
        self.call = pb_grpc.AttestationStub(channel).Attest(  # type: ignore[call-arg]
            metadata=metadata, timeout=TIMEOUT
        )

    async def recv(self) -> pb.VerifierMessage:
        message = await self.call.read()
        assert isinstance(message, pb.VerifierMessage), f"stream ended: {message!r}"
        return message

    async def challenge(self) -> model.Challenge:
        message = await self.recv()
        assert message.WhichOneof("kind") == "challenge"
        return wire.challenge_from_pb(message.challenge)

    async def send(self, raw: bytes) -> None:
        await self.call.write(pb.AgentMessage(evidence=raw))

    async def status(self) -> grpc.StatusCode:
        return await self.call.code()


__all__ = ["T0"]
