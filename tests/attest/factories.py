"""Evidence values for tests and vectors: one with every field set, one with every reading absent.

Values follow a simulated 8x H100-SXM host (docs/design.md §7); the numbers are plausible, not
captured.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from attest import model

CREATED_AT = datetime(2026, 5, 4, 12, 30, 15, 123456, tzinfo=UTC)
NOT_SUPPORTED = model.Unavailable("NotSupported")
MIG = "MIG-0a1b2c3d-0000-4000-8000-0000000000"  # + two hex digits: NVML's MIG UUID form


def full_gpu(index: int) -> model.Gpu:
    """A GPU with every reading present, MIG devices, fabric and CC report included."""
    return model.Gpu(
        index=index,
        state=model.GpuState.OK,
        uuid=f"GPU-0a1b2c3d-0000-4000-8000-00000000000{index}",
        serial=f"165012345678{index}",
        name="NVIDIA H100 80GB HBM3",
        board_part_number="692-2G520-0200-000",
        board_id=0x1800 + index,
        module_id=index + 1,
        pci=model.PciInfo(f"00000000:{0x18 + index:02X}:00.0", 0x233010DE, 0x16C110DE),
        vbios_version="96.00.99.00.01",
        inforom_image_version="G520.0200.00.05",
        memory_total_bytes=85_520_809_984,
        architecture="hopper",
        compute_capability=(9, 0),
        power_limit_mw=700_000,
        power_default_limit_mw=700_000,
        power_max_limit_mw=700_000,
        mig=model.MigInfo(
            current_mode=1,
            pending_mode=1,
            devices=(
                model.MigDevice(f"{MIG}a{index}", 1, 0, 10_000_000_000),
                model.MigDevice(f"{MIG}b{index}", 2, 0, NOT_SUPPORTED),
            ),
        ),
        fabric=model.FabricInfo("0" * 8 + "-0000-0000-0000-" + "0" * 12, 7, 3, 0),
        ecc=model.EccInfo(1, 1, 0, 2),
        remapped_rows=model.RemappedRows(1, 0, False, False),
        persistence_mode=True,
        cc=model.ConfidentialComputing(
            enabled=True,
            attestation_report=b"\x11" * 64,
            certificate_chain=b"-----BEGIN CERTIFICATE-----\n...\n",
            cec_attestation_report=b"\x22" * 16,
            report_nonce=b"\x33" * 32,
        ),
    )


def full_evidence(gpus: int = 2, seq: int = 2) -> model.Evidence:
    """Evidence with every field and reading set (posture and a landmark included)."""
    return model.Evidence(
        agent_id="agent-0001",
        seq=seq,
        prev_hash=b"\x44" * 32 if seq > 1 else b"",
        nonce=b"\x55" * 32,
        created_at=CREATED_AT,
        agent_version="0.1.0",
        host=model.HostFacts(
            machine_id="0123456789abcdef0123456789abcdef",
            hostname="gpu-host-01",
            dmi_sys_vendor="Supermicro",
            dmi_product_name="SYS-821GE-TNHR",
            dmi_product_serial="S123456",
            boot_id="8f1e2d3c-0000-4000-8000-000000000001",
            kernel="6.8.0-48-generic",
            os_release="Ubuntu 24.04.1 LTS",
            cpu_model="Intel(R) Xeon(R) Platinum 8480+",
            cpu_count=224,
            memory_bytes=2_164_000_000_000,
            uptime_s=86_400,
        ),
        driver=model.DriverInfo("570.124.06", "12.570.124.06", 12080),
        inventory=model.InventoryStatus(model.InventoryState.OK, "", gpus),
        gpus=tuple(full_gpu(i) for i in range(gpus)),
        site_id="site-sg-1",
        posture=(
            model.PostureCheck("secure-boot", model.PostureResult.PASS, "enabled"),
            model.PostureCheck("kernel-lockdown", model.PostureResult.UNKNOWN, "not readable"),
        ),
        landmarks=(model.LandmarkMeasurement("landmark-sg-1", b"\x66" * 40, (812, 790, 805)),),
    )


def _absent(cls: type, reason: str) -> dict[str, model.Unavailable]:
    return {
        f.name: model.Unavailable(reason)
        for f in dataclasses.fields(cls)
        if str(f.type).startswith("Reading[")
    }


def unavailable_evidence() -> model.Evidence:
    """Evidence in which every reading is Unavailable, as on a host without a driver."""
    gpu = model.Gpu(
        index=0,
        state=model.GpuState.LOST,
        uuid="GPU-ffffffff-0000-4000-8000-000000000000",
        **_absent(model.Gpu, "GpuIsLost"),
    )
    return model.Evidence(
        agent_id="agent-0002",
        seq=1,
        prev_hash=b"",
        nonce=b"",
        created_at=CREATED_AT,
        agent_version="0.1.0",
        host=model.HostFacts(**_absent(model.HostFacts, "NotFound")),
        driver=model.DriverInfo(**_absent(model.DriverInfo, "LibraryNotFound")),
        inventory=model.InventoryStatus(model.InventoryState.ERROR, "nvmlInit failed", 1),
        gpus=(gpu,),
        site_id="",
    )
