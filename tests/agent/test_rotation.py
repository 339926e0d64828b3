"""Key rotation end to end: the real agent (daemon in-process, CLI in a thread) against a real
verifier on loopback with mTLS and SQLite."""

from __future__ import annotations

import asyncio
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from agent.client import (
    AGENT_KEY_ALGORITHM,
    open_channel,
)
from agent.exits import AgentExit
from agent.identity import (
    CERT_FILE,
    KEY_FILE,
    PENDING_CERT_FILE,
    PENDING_KEY_FILE,
    check_issued_certificate,
    check_key_matches_cert,
    load_tls,
    make_csr,
    retire_enrollment,
    state_lock,
)
from agent.rotation import (
    begin_rotation,
    finish_install,
    install_rotation,
    recover,
    signing_key,
)
from agent.spool import Spool
from attest.envelope import rotation_statement
from attest.errors import KeyRotationError
from attest.files import write_secret_file
from attest.hostport import HostPort
from attest.keys import SoftwareSigner, load_private_key, write_private_key
from attest.v1 import attest_pb2 as pb
from attest.v1 import attest_pb2_grpc as pb_grpc
from tests.verifier.rpc import Enrolled, Stream, mtls_channel
from verifier.ca import CertificateAuthority, issue_client_certificate, load_or_create_ca
from verifier.enroll import revoke
from verifier.model import AuditKind
from verifier.server import Running

from .helpers import self_signed_cert
from .live import enrolled_agent, run_until


def _no_pending(state_dir: Path) -> bool:
    return (
        not (state_dir / PENDING_KEY_FILE).exists() and not (state_dir / PENDING_CERT_FILE).exists()
    )


async def test_rotate_key_moves_the_identity_and_the_old_pair_is_refused(
    tmp_path: Path, running: Running
) -> None:
    agent = await enrolled_agent(tmp_path, running)
    old = load_private_key(agent.state_dir / KEY_FILE)
    old_cert = (agent.state_dir / CERT_FILE).read_bytes()
    await run_until(agent, lambda: agent.record().last_seq >= 1)

    assert await asyncio.to_thread(agent.cli, "rotate-key") == AgentExit.OK
    new = load_private_key(agent.state_dir / KEY_FILE)
    assert new.public_key.keyid != old.public_key.keyid
    assert stat.S_IMODE((agent.state_dir / KEY_FILE).stat().st_mode) == 0o600
    load_tls(agent.state_dir, new)  # agent.crt is for the new key
    assert _no_pending(agent.state_dir)
    assert agent.current_keyid() == new.public_key.keyid

    # The stream works with the new pair: the next envelope is the new key's.
    seq = agent.record().last_seq
    await run_until(agent, lambda: agent.record().last_seq > seq)
    assert agent.signed_by(seq + 1) == new.public_key.keyid

    # The old pair still completes a TLS handshake (its certificate has not expired), but gets
    # nothing through: its stream is refused at the door, and it cannot rotate to a key of
    # its own.
    record = agent.record()
    verifier_key = running.core.receipt_signer.public_key
    stale = Enrolled(record.agent_id, old, old_cert, running.core.ca.pem, verifier_key)
    async with mtls_channel(running, stale) as channel:
        stream = Stream(channel)
        assert await stream.status() == grpc.StatusCode.UNAUTHENTICATED
        assert "not a current key" in (await stream.call.details() or "")
        mine = SoftwareSigner.generate(AGENT_KEY_ALGORITHM)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pb_grpc.AttestationStub(channel).RotateKey(
                _rotate_request(record.agent_id, old, mine), timeout=10
            )
        assert "signature-unknown-key" in (info.value.details() or "")
    assert agent.record().last_seq == seq + 1


def _rotate_request(agent_id: str, old: SoftwareSigner, new: SoftwareSigner) -> pb.RotateKeyRequest:
    statement = rotation_statement(agent_id, new.public_key.spki_der)
    return pb.RotateKeyRequest(
        agent_id=agent_id, new_public_key=new.public_key.spki_der, csr=make_csr(new, agent_id),
        old_key_signature=pb.Signature(keyid=old.public_key.keyid, sig=old.sign(statement)),
    )  # fmt: skip


async def test_a_crash_after_the_verifier_answered_is_recovered_at_start(
    tmp_path: Path, running: Running
) -> None:
    """Pending key persisted, RotateKey answered (the verifier pinned the new key), then the
    agent died before installing anything: the old pair alone is no longer accepted."""
    agent = await enrolled_agent(tmp_path, running)
    old = load_private_key(agent.state_dir / KEY_FILE)
    pending = begin_rotation(agent.state_dir)
    channel = open_channel(
        HostPort("127.0.0.1", running.ports["listen"]), load_tls(agent.state_dir, old), None,
        insecure_plaintext=False,
    )  # fmt: skip
    async with channel:
        request = _rotate_request(agent.identity.agent_id, old, pending.signer)
        await pb_grpc.AttestationStub(channel).RotateKey(request, timeout=10)
    assert agent.current_keyid() == pending.signer.public_key.keyid
    assert (agent.state_dir / PENDING_KEY_FILE).exists()  # ... and nothing installed

    # While the rotation is unfinished, evidence is signed by the key it is committed to.
    assert (
        await asyncio.to_thread(agent.cli, "once", "--out", str(tmp_path / "offline.dsse"))
        == AgentExit.OK
    )
    await run_until(agent, lambda: agent.record().last_seq >= 2)
    assert load_private_key(agent.state_dir / KEY_FILE).public_key == pending.signer.public_key
    load_tls(agent.state_dir, pending.signer)
    assert _no_pending(agent.state_dir)
    assert agent.signed_by(1) == agent.signed_by(2) == pending.signer.public_key.keyid
    kinds = [a.kind for a in running.core.store.list_audit()]
    assert kinds.count(AuditKind.ROTATION) == 1  # the retry was answered idempotently
    assert AuditKind.REJECTION not in kinds


async def test_renewal_runs_by_itself_when_the_certificate_nears_expiry(
    tmp_path: Path, running: Running
) -> None:
    agent = await enrolled_agent(tmp_path, running, metrics=True)
    old = load_private_key(agent.state_dir / KEY_FILE)
    # A one-day certificate issued 20 hours ago: under a third of its lifetime is left.
    short = issue_client_certificate(
        running.core.ca, make_csr(old, "x"), expected_key=old.public_key,
        agent_id=agent.identity.agent_id, now=datetime.now(UTC) - timedelta(hours=20), days=1,
    )  # fmt: skip
    write_secret_file(agent.state_dir / CERT_FILE, short)

    daemon = await run_until(
        agent,
        lambda: agent.current_keyid() != old.public_key.keyid and agent.record().last_seq >= 2,
    )
    new = load_private_key(agent.state_dir / KEY_FILE)
    assert agent.signed_by(1) == old.public_key.keyid
    assert agent.signed_by(2) == new.public_key.keyid == agent.current_keyid()
    cert_pem = (agent.state_dir / CERT_FILE).read_bytes()
    check_key_matches_cert(new, cert_pem)
    cert = x509.load_pem_x509_certificate(cert_pem)
    # seq 2 came over a new stream (the verifier refuses the new key's evidence on a stream
    # opened before it pinned that key), which presented the new certificate.
    assert daemon.stream is not None and daemon.stream.settings.tls is not None
    assert daemon.stream.settings.tls.cert_pem == cert_pem
    registry = daemon.metrics.registry
    sample = registry.get_sample_value
    assert sample("gpu_attest_agent_key_rotations_total", {"result": "ok"}) == 1.0
    assert sample("gpu_attest_agent_key_rotations_total", {"result": "refused"}) == 0.0
    expiry = sample("gpu_attest_agent_cert_expiry_timestamp_seconds")
    assert expiry == cert.not_valid_after_utc.timestamp()
    assert cert.not_valid_after_utc > datetime.now(UTC) + timedelta(days=30)


async def test_refused_rotation_is_typed_and_keeps_the_current_pair(
    tmp_path: Path, running: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = await enrolled_agent(tmp_path, running)
    key_before = (agent.state_dir / KEY_FILE).read_bytes()
    cert_before = (agent.state_dir / CERT_FILE).read_bytes()

    # Not while the daemon (or another rotate-key) holds the state dir.
    with state_lock(agent.state_dir):
        assert await asyncio.to_thread(agent.cli, "rotate-key") == AgentExit.CONFIG
    # Not while envelopes signed by the current key await receipts.
    assert (
        await asyncio.to_thread(agent.cli, "once", "--out", str(tmp_path / "offline.dsse"))
        == AgentExit.OK
    )
    assert await asyncio.to_thread(agent.cli, "rotate-key") == AgentExit.ROTATE
    assert "await receipts" in capsys.readouterr().err
    spool = Spool.open(agent.state_dir, 1 << 20)
    spool.drop_through(spool.head().seq)
    spool.close()

    revoke(running.core.store, agent.identity.agent_id, datetime.now(UTC), "test")
    assert await asyncio.to_thread(agent.cli, "rotate-key") == AgentExit.ROTATE
    err = capsys.readouterr().err
    assert "key-rotation-refused" in err and "agent-revoked" in err
    # The verifier refused the only request for the fresh key: it is abandoned.
    assert _no_pending(agent.state_dir)
    assert (agent.state_dir / KEY_FILE).read_bytes() == key_before
    assert (agent.state_dir / CERT_FILE).read_bytes() == cert_before


@pytest.mark.parametrize("crashed_after", ["certificate written", "key renamed"])
def test_an_install_cut_short_is_finished_at_the_next_start(
    tmp_path: Path, crashed_after: str
) -> None:
    old = SoftwareSigner.generate(AGENT_KEY_ALGORITHM)
    write_private_key(tmp_path / KEY_FILE, old)
    write_secret_file(tmp_path / CERT_FILE, self_signed_cert(old))
    with pytest.raises(KeyRotationError, match="2 spooled envelope"):
        begin_rotation(tmp_path, spooled=2)  # a new key only with an empty spool
    pending = begin_rotation(tmp_path)
    assert pending.fresh and not begin_rotation(tmp_path, spooled=3).fresh  # resumed
    assert signing_key(tmp_path).public_key == pending.signer.public_key
    new_cert = self_signed_cert(pending.signer)
    write_secret_file(tmp_path / PENDING_CERT_FILE, new_cert)
    if crashed_after == "key renamed":
        (tmp_path / PENDING_KEY_FILE).replace(tmp_path / KEY_FILE)
    assert finish_install(tmp_path)
    key = load_private_key(tmp_path / KEY_FILE)
    assert key.public_key == pending.signer.public_key
    assert (tmp_path / CERT_FILE).read_bytes() == new_cert
    assert _no_pending(tmp_path)
    assert not finish_install(tmp_path)  # nothing left to do
    assert recover(tmp_path) is None
    assert signing_key(tmp_path).public_key == pending.signer.public_key


def test_a_pending_certificate_for_neither_key_is_dropped(tmp_path: Path) -> None:
    old = SoftwareSigner.generate(AGENT_KEY_ALGORITHM)
    write_private_key(tmp_path / KEY_FILE, old)
    write_secret_file(tmp_path / CERT_FILE, self_signed_cert(old))
    stranger = self_signed_cert(SoftwareSigner.generate(AGENT_KEY_ALGORITHM))
    write_secret_file(tmp_path / PENDING_CERT_FILE, stranger)
    assert not finish_install(tmp_path)
    assert _no_pending(tmp_path)
    assert load_private_key(tmp_path / KEY_FILE).public_key == old.public_key
    begin_rotation(tmp_path)
    with pytest.raises(KeyRotationError, match="not for the pending key"):
        install_rotation(tmp_path, stranger)
    assert (tmp_path / PENDING_KEY_FILE).exists()  # kept: the verifier may hold it already


def test_re_enrolling_retires_a_pending_rotation_with_the_old_identity(tmp_path: Path) -> None:
    write_private_key(tmp_path / KEY_FILE, SoftwareSigner.generate(AGENT_KEY_ALGORITHM))
    begin_rotation(tmp_path)
    retired = retire_enrollment(tmp_path, "20260601T000000Z")
    assert (retired / PENDING_KEY_FILE).exists()
    assert _no_pending(tmp_path)  # the new agent must not take it for a rotation of its own


def test_the_returned_certificate_must_be_for_the_key_the_agent_and_the_pinned_ca(
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    pinned, other = load_or_create_ca(tmp_path / "a", now), load_or_create_ca(tmp_path / "b", now)
    key = SoftwareSigner.generate(AGENT_KEY_ALGORITHM)

    def issued(
        ca: CertificateAuthority, agent_id: str = "agt-1", signer: SoftwareSigner = key
    ) -> bytes:
        return issue_client_certificate(
            ca, make_csr(signer, "x"), expected_key=signer.public_key, agent_id=agent_id,
            now=now, days=90,
        )  # fmt: skip

    def check(cert_pem: bytes) -> None:
        check_issued_certificate(
            cert_pem, ca_pem=pinned.pem, key=key.public_key, agent_id="agt-1", now=now
        )

    check(issued(pinned))
    with pytest.raises(KeyRotationError, match="pinned CA"):
        check(issued(other))
    with pytest.raises(KeyRotationError, match="does not name agent"):
        check(issued(pinned, agent_id="agt-2"))
    with pytest.raises(KeyRotationError, match="another key"):
        check(issued(pinned, signer=SoftwareSigner.generate(AGENT_KEY_ALGORITHM)))
    with pytest.raises(KeyRotationError, match="unusable"):
        check(b"garbage")
    with pytest.raises(KeyRotationError, match="not valid now"):
        check_issued_certificate(
            issued(pinned), ca_pem=pinned.pem, key=key.public_key, agent_id="agt-1",
            now=now + timedelta(days=91),
        )  # fmt: skip
