"""RotateKey over real mTLS: a repeated request (the agent's answer was lost) is idempotent."""

from __future__ import annotations

import grpc
import pytest
from cryptography import x509

from attest.envelope import rotation_statement
from attest.keys import SoftwareSigner, certificate_spki
from attest.v1 import attest_pb2 as pb
from attest.v1 import attest_pb2_grpc as pb_grpc
from tests.verifier.rpc import Enrolled, Stream, csr_for, enroll_agent, mtls_channel, new_token
from verifier.model import AuditKind
from verifier.server import Running


def _request(agent_id: str, old: SoftwareSigner, new: SoftwareSigner) -> pb.RotateKeyRequest:
    message = rotation_statement(agent_id, new.public_key.spki_der)
    return pb.RotateKeyRequest(
        agent_id=agent_id, new_public_key=new.public_key.spki_der, csr=csr_for(new),
        old_key_signature=pb.Signature(keyid=old.public_key.keyid, sig=old.sign(message)),
    )  # fmt: skip


def _cert_key(pem: bytes) -> bytes:
    return certificate_spki(x509.load_pem_x509_certificate(pem))


async def _rotate(running: Running, agent: Enrolled, request: pb.RotateKeyRequest) -> bytes:
    async with mtls_channel(running, agent) as channel:
        response = await pb_grpc.AttestationStub(channel).RotateKey(request, timeout=10)
    return bytes(response.client_certificate)


async def _refused(running: Running, agent: Enrolled, request: pb.RotateKeyRequest) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _rotate(running, agent, request)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    return info.value.details() or ""


async def test_a_repeated_rotation_reissues_the_certificate_without_rotating_again(
    running: Running,
) -> None:
    store = running.core.store
    agent = await enroll_agent(running, new_token(store))
    new = SoftwareSigner.generate("ecdsa-p256-sha256")
    request = _request(agent.agent_id, agent.signer, new)
    first = await _rotate(running, agent, request)
    # The answer was lost: the agent still holds only the old key and its certificate.
    again = await _rotate(running, agent, request)
    assert _cert_key(first) == _cert_key(again) == new.public_key.spki_der
    record = store.get_agent(agent.agent_id)
    assert record is not None
    assert [k.keyid for k in record.current_keys] == [new.public_key.keyid]
    rotations = [a for a in store.list_audit() if a.kind is AuditKind.ROTATION]
    assert len(rotations) == 1
    # A repeat needs the retired key's real signature, not just its key id.
    forged = _request(agent.agent_id, agent.signer, new)
    forged.old_key_signature.sig = new.sign(b"anything")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _rotate(running, agent, forged)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_the_retired_key_cannot_rotate_to_any_other_key(running: Running) -> None:
    store = running.core.store
    agent = await enroll_agent(running, new_token(store))
    new = SoftwareSigner.generate("ecdsa-p256-sha256")
    await _rotate(running, agent, _request(agent.agent_id, agent.signer, new))
    other = SoftwareSigner.generate("ecdsa-p256-sha256")
    details = await _refused(running, agent, _request(agent.agent_id, agent.signer, other))
    assert "signature-unknown-key" in details
    # Nor can it repeat its rotation once the new key has moved on itself.
    third = SoftwareSigner.generate("ecdsa-p256-sha256")
    await _rotate(running, agent, _request(agent.agent_id, new, third))
    details = await _refused(running, agent, _request(agent.agent_id, agent.signer, new))
    assert "signature-unknown-key" in details


async def test_a_certificate_of_a_rotated_away_key_cannot_open_a_stream(running: Running) -> None:
    store = running.core.store
    agent = await enroll_agent(running, new_token(store))
    new = SoftwareSigner.generate("ecdsa-p256-sha256")
    cert = await _rotate(running, agent, _request(agent.agent_id, agent.signer, new))
    # The old certificate is still within its validity and chains to the CA: TLS lets it in,
    # the stream does not.
    async with mtls_channel(running, agent) as channel:
        old = Stream(channel)
        assert await old.status() == grpc.StatusCode.UNAUTHENTICATED
        assert "not a current key" in (await old.call.details() or "")
    rotated = Enrolled(agent.agent_id, new, cert, agent.ca_pem, agent.verifier_key)
    async with mtls_channel(running, rotated) as channel:
        challenge = await Stream(channel).challenge()
        assert challenge.last_seq == 0
