"""Pure evidence building: values in, signed envelope bytes out. No I/O, explicit `now`.

The evidence is serialized exactly once (attest.wire.encode_evidence); those bytes are signed
(DSSE) and the serialized envelope is what the spool stores and the stream sends.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime
from importlib import metadata

from attest.envelope import EVIDENCE_PAYLOAD_TYPE, HEARTBEAT_PAYLOAD_TYPE, sign
from attest.keys import Signer
from attest.model import (
    Evidence,
    Heartbeat,
    HostFacts,
    Inventory,
    LandmarkMeasurement,
    PostureCheck,
    Unavailable,
)
from attest.wire import encode_envelope, encode_evidence, encode_heartbeat


def _version() -> str:
    try:
        return metadata.version("gpu-attest")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


AGENT_VERSION = _version()


def build_evidence(
    *,
    agent_id: str,
    seq: int,
    prev_hash: bytes,
    nonce: bytes,
    now: datetime,
    host: HostFacts,
    inventory: Inventory,
    site_id: str,
    posture: tuple[PostureCheck, ...],
    landmarks: tuple[LandmarkMeasurement, ...] = (),
) -> Evidence:
    """Assemble one attestation. `now` must be timezone-aware; it is normalized to UTC."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return Evidence(
        agent_id=agent_id,
        seq=seq,
        prev_hash=prev_hash,
        nonce=nonce,
        created_at=now.astimezone(UTC),
        agent_version=AGENT_VERSION,
        host=host,
        driver=inventory.driver,
        inventory=inventory.status,
        gpus=inventory.gpus,
        site_id=site_id,
        posture=posture,
        landmarks=landmarks,
    )


def sign_evidence(evidence: Evidence, signer: Signer) -> bytes:
    """Serialize, sign and wrap: the exact envelope bytes to spool and send."""
    payload = encode_evidence(evidence)
    return encode_envelope(sign(EVIDENCE_PAYLOAD_TYPE, payload, [signer]))


def sign_heartbeat(heartbeat: Heartbeat, signer: Signer) -> bytes:
    """Serialize, sign and wrap a heartbeat (docs/protocol.md §4.1)."""
    payload = encode_heartbeat(heartbeat)
    return encode_envelope(sign(HEARTBEAT_PAYLOAD_TYPE, payload, [signer]))


def repeat_digest(
    inventory: Inventory, host: HostFacts, posture: tuple[PostureCheck, ...], site_id: str
) -> bytes:
    """What a heartbeat says is unchanged since the full evidence it names: the inventory (as
    `inventory_fingerprint` sees it), the host facts but its uptime, each posture check's
    result and the site. Equal digests let a heartbeat stand for full evidence."""
    steady_host = dataclasses.replace(host, uptime_s=Unavailable("Volatile"))
    checks = tuple((p.name, p.result.value) for p in posture)
    text = repr((steady_host, checks, site_id))
    return hashlib.sha256(inventory_fingerprint(inventory) + text.encode("utf-8")).digest()


def inventory_fingerprint(inventory: Inventory) -> bytes:
    """A digest that changes when the GPUs or their configuration change.

    Confidential-computing reports are excluded: they embed the nonce they were requested with,
    so they differ on every collection without anything having changed.
    """
    gpus = tuple(
        gpu
        if isinstance(gpu.cc, Unavailable)
        else dataclasses.replace(
            gpu,
            cc=dataclasses.replace(
                gpu.cc,
                attestation_report=b"",
                cec_attestation_report=b"",
                report_nonce=b"",
            ),
        )
        for gpu in inventory.gpus
    )
    text = repr((inventory.driver, inventory.status, gpus))
    return hashlib.sha256(text.encode("utf-8")).digest()
