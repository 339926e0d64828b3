"""Evidence built straight from attest (model + wire + envelope): no agent/ import (layering)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from attest import model, wire
from attest.envelope import EVIDENCE_PAYLOAD_TYPE, envelope_hash, sign
from attest.keys import Signer, SoftwareSigner

NA = model.Unavailable("NotSupported")
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def gpu(uuid: str, index: int = 0) -> model.Gpu:
    return model.Gpu(
        index=index, state=model.GpuState.OK, uuid=uuid,
        serial=f"165{index:010d}", name="NVIDIA H100 80GB HBM3", board_part_number=NA,
        board_id=NA, module_id=NA,
        pci=model.PciInfo(f"00000000:{0x18 + index:02x}:00.0", 0x233010DE, 0x16C110DE),
        vbios_version=NA, inforom_image_version=NA, memory_total_bytes=85520809984,
        architecture="hopper", compute_capability=(9, 0), power_limit_mw=700000,
        power_default_limit_mw=NA, power_max_limit_mw=NA, mig=NA, fabric=NA, ecc=NA,
        remapped_rows=NA, persistence_mode=NA, cc=NA,
    )  # fmt: skip


def evidence(
    agent_id: str,
    seq: int,
    prev_hash: bytes,
    nonce: bytes,
    created_at: datetime,
    uuids: tuple[str, ...] = ("GPU-00000000-0000-0000-0000-000000000001",),
    site_id: str = "site-a",
) -> model.Evidence:
    return model.Evidence(
        agent_id=agent_id, seq=seq, prev_hash=prev_hash, nonce=nonce, created_at=created_at,
        agent_version="test",
        host=model.HostFacts(
            machine_id="0123456789abcdef0123456789abcdef", hostname="node-1", dmi_sys_vendor=NA,
            dmi_product_name=NA,
            dmi_product_serial=NA, boot_id=NA, kernel="6.8", os_release=NA, cpu_model=NA,
            cpu_count=64, memory_bytes=NA, uptime_s=NA,
        ),
        driver=model.DriverInfo("570.86.15", "12.570.86.15", 12080),
        inventory=model.InventoryStatus(model.InventoryState.OK, "", len(uuids)),
        gpus=tuple(gpu(u, i) for i, u in enumerate(uuids)),
        site_id=site_id,
    )  # fmt: skip


def seal(signer: Signer, ev: model.Evidence) -> bytes:
    """Serialize once and sign: the envelope bytes an agent sends."""
    payload = wire.encode_evidence(ev)
    return wire.encode_envelope(sign(EVIDENCE_PAYLOAD_TYPE, payload, [signer]))


@dataclass
class Chain:
    """An agent's side of the chain: next seq and the previous envelope's hash."""

    agent_id: str
    signer: SoftwareSigner
    seq: int = 0
    prev: bytes = b""
    uuids: tuple[str, ...] = ("GPU-00000000-0000-0000-0000-000000000001",)
    sent: list[bytes] = field(default_factory=list)

    def next(self, nonce: bytes, created_at: datetime, **changes: object) -> bytes:
        ev = evidence(self.agent_id, self.seq + 1, self.prev, nonce, created_at, self.uuids)
        if changes:
            ev = replace(ev, **changes)  # type: ignore[arg-type]
        raw = seal(self.signer, ev)
        self.seq += 1
        self.prev = envelope_hash(raw)
        self.sent.append(raw)
        return raw


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
