"""Receipts, enrollment errors, backoff, metrics and log lines: the small pure parts."""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from agent.client import Backoff, enrollment_error
from agent.identity import (
    CA_FILE,
    CERT_FILE,
    Identity,
    load_identity,
    load_tls,
    make_csr,
    read_receipt,
    save_enrollment,
    verify_receipt,
)
from agent.metrics import AgentMetrics
from attest import merkle
from attest.checkpoint import Checkpoint, sign_checkpoint
from attest.errors import (
    AttestError,
    EnrollmentError,
    KeyMaterialError,
    NotEnrolledError,
    ProofError,
    ReceiptMismatchError,
    TokenExpiredError,
)
from attest.keys import SoftwareSigner
from attest.logfmt import JournaldFormatter, JsonFormatter
from attest.model import Freshness, Receipt
from attest.wire import encode_receipt
from tests.verifier.sim import free_port

from .helpers import self_signed_cert

ORIGIN = "verifier.test/log"
#: The log: three other entries, then the agent's envelope at index 3.
ENVELOPE = b"the spooled envelope bytes"
LEAVES = [merkle.leaf_hash(b"entry-%d" % i) for i in range(3)] + [merkle.leaf_hash(ENVELOPE)]


def _receipt(
    signer: SoftwareSigner,
    agent_id: str = "agt-1",
    envelope: bytes = ENVELOPE,
    origin: str = ORIGIN,
    proof: tuple[bytes, ...] | None = None,
) -> bytes:
    checkpoint = Checkpoint(origin, len(LEAVES), merkle.root(LEAVES))
    note = sign_checkpoint(checkpoint, origin, signer)
    path = merkle.inclusion_proof(3, len(LEAVES), LEAVES) if proof is None else proof
    body = Receipt(
        agent_id, 3, hashlib.sha256(envelope).digest(), 3, note,
        datetime(2026, 6, 1, tzinfo=UTC), Freshness.NONCE, path,
    )  # fmt: skip
    return encode_receipt(body)


def test_receipts_are_checked_against_the_pinned_key_and_the_entry() -> None:
    verifier = SoftwareSigner.generate("ed25519")
    key = verifier.public_key
    receipt = verify_receipt(_receipt(verifier), ENVELOPE, key, "agt-1")
    assert (receipt.seq, receipt.log_index, len(receipt.inclusion_proof)) == (3, 3, 2)
    assert read_receipt(_receipt(verifier)) == receipt
    with pytest.raises(ReceiptMismatchError):  # for another envelope
        verify_receipt(_receipt(verifier), b"another envelope", key, "agt-1")
    with pytest.raises(ReceiptMismatchError):  # for another agent
        verify_receipt(_receipt(verifier), ENVELOPE, key, "agt-2")
    with pytest.raises(ProofError):  # checkpoint signed by another key
        verify_receipt(_receipt(SoftwareSigner.generate("ed25519")), ENVELOPE, key, "agt-1")
    bad_path = (b"\x00" * 32, merkle.inclusion_proof(3, 4, LEAVES)[1])
    with pytest.raises(ProofError):  # the proof does not lead to the signed root
        verify_receipt(_receipt(verifier, proof=bad_path), ENVELOPE, key, "agt-1")
    with pytest.raises(ProofError):  # a proof of the wrong length
        verify_receipt(_receipt(verifier, proof=()), ENVELOPE, key, "agt-1")
    # The hash names an envelope, but the log's leaf at index 3 is something else.
    with pytest.raises(ProofError):
        verify_receipt(_receipt(verifier, envelope=b"entry-2"), b"entry-2", key, "agt-1")
    raw = bytearray(_receipt(verifier))
    raw[-40] ^= 1
    with pytest.raises(AttestError):
        verify_receipt(bytes(raw), ENVELOPE, key, "agt-1")


def test_identity_files(tmp_path: Path) -> None:
    with pytest.raises(NotEnrolledError):
        load_identity(tmp_path)
    (tmp_path / "identity.toml").write_text('agent_id = "a"\n')
    with pytest.raises(NotEnrolledError, match=r"identity\.toml: site_id: missing"):
        load_identity(tmp_path)
    text = 'agent_id = "a"\nsite_id = "s"\nverifier = "v:1"\nx = 1\n'
    (tmp_path / "identity.toml").write_text(text)
    with pytest.raises(NotEnrolledError, match=r"identity\.toml: x: unknown key"):
        load_identity(tmp_path)
    signer = SoftwareSigner.generate("ecdsa-p256-sha256")
    assert make_csr(signer, "gpu-node-017").startswith(b"0")  # DER SEQUENCE
    assert make_csr(SoftwareSigner.generate(), "x")


def test_save_enrollment_refuses_garbage(tmp_path: Path) -> None:
    with pytest.raises(Exception):  # noqa: B017 - cryptography's or ours
        save_enrollment(tmp_path, Identity("a", "s", "v:1"), b"not pem", b"", b"junk")
    assert not (tmp_path / "identity.toml").exists()  # written last: nothing half-enrolled


def test_tls_material_must_be_for_the_agent_key(tmp_path: Path) -> None:
    signer = SoftwareSigner.generate("ecdsa-p256-sha256")
    with pytest.raises(NotEnrolledError):
        load_tls(tmp_path, signer)
    (tmp_path / CA_FILE).write_bytes(self_signed_cert(signer))
    (tmp_path / CERT_FILE).write_bytes(self_signed_cert(signer))
    assert load_tls(tmp_path, signer).cert_pem == (tmp_path / CERT_FILE).read_bytes()
    # A certificate for another key (a copied state dir, a half-done rotation) is refused here,
    # not left to fail as an opaque TLS handshake on every reconnect.
    with pytest.raises(KeyMaterialError, match=r"not for agent\.key"):
        load_tls(tmp_path, SoftwareSigner.generate("ecdsa-p256-sha256"))
    (tmp_path / CERT_FILE).write_bytes(b"garbage")
    with pytest.raises(KeyMaterialError, match="not valid PEM"):
        load_tls(tmp_path, signer)


def test_enrollment_errors_are_typed() -> None:
    err = enrollment_error(grpc.StatusCode.PERMISSION_DENIED, "token-expired: too late")
    assert isinstance(err, TokenExpiredError)
    generic = enrollment_error(grpc.StatusCode.INVALID_ARGUMENT, "bad csr")
    assert type(generic) is EnrollmentError


def test_backoff_is_full_jitter_and_capped() -> None:
    backoff = Backoff(initial_s=1.0, cap_s=30.0)
    ceilings = [backoff.delay(n, lambda low, high: high) for n in range(8)]
    assert ceilings == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff.delay(100, lambda low, high: low) == 0.0
    assert backoff.delay(10_000) <= 30.0


def test_metrics_are_served_with_bounded_labels() -> None:
    metrics = AgentMetrics()
    metrics.count("accepted")
    metrics.spool_depth.set(3)
    with pytest.raises(ValueError, match="unbounded"):
        metrics.count("seq-17")
    port = free_port()
    from attest.hostport import HostPort  # noqa: PLC0415

    metrics.serve(HostPort("127.0.0.1", port))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'gpu_attest_agent_attestations_total{result="accepted"} 1.0' in text
    assert "gpu_attest_agent_spool_depth 3.0" in text
    assert "gpu_attest_agent_spool_full 0.0" in text
    assert "gpu_attest_agent_stream_connected 0.0" in text
    assert "gpu_attest_agent_last_receipt_timestamp_seconds" in text


def test_log_formats() -> None:
    record = logging.LogRecord(
        "gpu_attest.agent", logging.WARNING, "f", 1, "spool %s", ("full",), None
    )
    record.code = "spool-full"
    data = json.loads(JsonFormatter().format(record))
    assert (
        data["msg"] == "spool full" and data["level"] == "warning" and data["code"] == "spool-full"
    )
    assert JournaldFormatter("%(message)s").format(record) == "<4>spool full"
