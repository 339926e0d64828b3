"""The pure builder: signed bytes that verify and decode to what was collected."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from agent.evidence import build_evidence, inventory_fingerprint, sign_evidence
from agent.hostfacts import collect_host_facts
from agent.simulate import SimulatedInventory, parse_machine
from attest.envelope import EVIDENCE_PAYLOAD_TYPE, verify
from attest.keys import SoftwareSigner
from attest.model import PostureCheck, PostureResult
from attest.wire import decode_envelope, decode_evidence

from .helpers import MACHINE_8X_H100

CC_MACHINE = MACHINE_8X_H100.replace(
    'uuid_seed = "node-017"', 'uuid_seed = "node-017"\ncc = { enabled = true }'
)


def test_signed_envelope_round_trips() -> None:
    signer = SoftwareSigner.generate("ecdsa-p256-sha256")
    inventory = SimulatedInventory(parse_machine(MACHINE_8X_H100)).collect(None)
    host = collect_host_facts()
    posture = (PostureCheck("secure-boot", PostureResult.PASS, "on"),)
    now = datetime(2026, 6, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    evidence = build_evidence(
        agent_id="agt-1", seq=2, prev_hash=b"p" * 32, nonce=b"n" * 32, now=now, host=host,
        inventory=inventory, site_id="acme-fra1", posture=posture,
    )  # fmt: skip
    raw = sign_evidence(evidence, signer)
    key = signer.public_key
    payload = verify(decode_envelope(raw), EVIDENCE_PAYLOAD_TYPE, {key.keyid: key})
    decoded = decode_evidence(payload.payload)
    assert decoded == dataclasses.replace(evidence, created_at=now.astimezone(UTC))
    assert len(decoded.gpus) == 8 and decoded.site_id == "acme-fra1"
    with pytest.raises(ValueError, match="timezone"):
        build_evidence(
            agent_id="a", seq=1, prev_hash=b"", nonce=b"", now=datetime(2026, 1, 1), host=host,
            inventory=inventory, site_id="", posture=(),
        )  # fmt: skip


def test_fingerprint_tracks_changes_but_not_nonce_bound_reports() -> None:
    source = SimulatedInventory(parse_machine(CC_MACHINE))
    a = source.collect(b"a" * 32)
    b = source.collect(b"b" * 32)
    assert a != b  # the reports are bound to their nonces
    assert inventory_fingerprint(a) == inventory_fingerprint(b)
    assert inventory_fingerprint(a) == inventory_fingerprint(source.collect(None))
    fewer = dataclasses.replace(a, gpus=a.gpus[:-1])
    assert inventory_fingerprint(fewer) != inventory_fingerprint(a)
    changed = dataclasses.replace(a, gpus=(dataclasses.replace(a.gpus[0], power_limit_mw=1),))
    assert inventory_fingerprint(changed) != inventory_fingerprint(fewer)
