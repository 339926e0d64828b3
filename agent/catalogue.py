"""Real per-model GPU values for simulated machines (docs/design.md §7).

Every value comes from a capture named beside it (sources below; this project's own captures
are described in tests/agent/nvml/fixtures/REAL-CAPTURES.md):

- [K-<sku>] NVIDIA/k8s-test-infra tests/e2e/go/assertions/nvidiasmi/testdata/hardware/qx-<sku>.xml,
  real `nvidia-smi -q -x` captures with identities scrubbed.
- [S] thamada/nvidia-smi nvsim/H100SXMx8_smi.py (8x H100 SXM, driver 565.57.01).
- [G] thamada/gls gls/H200_smi.py (H200, driver 550.90.12).
- [M-l40s] NVIDIA/k8s-test-infra pkg/gpu/mocknvml/configs/mock-nvml-config-l40s.yaml, a
  hand-written mock profile rather than a capture.

Where no capture was at hand, the entry says `estimated=(...)` and lists which of its values are
best public knowledge rather than read from a capture. Replace them when a capture arrives
(scripts/device_capture.sh).
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Final

MIB: Final = 1024 * 1024

#: NVML_GPU_FABRIC_STATE_COMPLETED
FABRIC_COMPLETED: Final = 3


@dataclass(frozen=True)
class GpuModel:
    """What every GPU of one SKU reports, before per-board identities are drawn."""

    key: str
    name: str
    pci_device_id: int
    pci_subsystem_id: int
    board_part_number: str
    vbios_version: str
    inforom_image_version: str
    memory_total_bytes: int
    architecture: str
    compute_capability: tuple[int, int]
    power_limit_mw: int
    power_max_limit_mw: int
    driver_version: str
    cuda_driver_version: int
    #: None: the board has no NVLink fabric and NVML answers NotSupported.
    fabric_clique_id: int | None
    mig_capable: bool
    cc_capable: bool
    #: SXM position per slot; PCIe boards report 1.
    module_ids: tuple[int, ...]
    #: Bus ids of the slots, in index order, as the capture lists them.
    bus_ids: tuple[str, ...]
    serial_prefix: str
    #: GB200/GB300 carry two GPUs per module, and both report the module's serial.
    gpus_per_module: int = 1
    mig_slots: int = 7
    source: str = ""
    estimated: tuple[str, ...] = field(default=())

    @property
    def power_default_limit_mw(self) -> int:
        return self.power_limit_mw

    @property
    def nvml_version(self) -> str:
        return f"{self.cuda_driver_version // 1000}.{self.driver_version}"


# [K-h100]: bus ids 53..CA carry module ids 7, 5, 6, 8, 1, 3, 4, 2.
_HGX_BUS_IDS = tuple(
    f"00000000:{bus}:00.0" for bus in ("53", "64", "75", "86", "97", "A8", "B9", "CA")
)
_HGX_MODULE_IDS = (7, 5, 6, 8, 1, 3, 4, 2)
_PCIE_BUS_IDS = tuple(
    f"00000000:{bus}:00.0" for bus in ("17", "31", "B1", "CA", "18", "32", "B2", "CB")
)  # [M-l40s] slot layout of a 2-socket PCIe server
# [K-gb300]: PCI domains 0008, 0009, 0018 (and 0019 for the fourth GPU of the tray).
_GRACE_BUS_IDS = tuple(f"0000{dom}:01:00.0" for dom in ("0008", "0009", "0018", "0019"))

_MODELS = (
    GpuModel(
        key="H100-SXM", name="NVIDIA H100 80GB HBM3", source="[K-h100] driver 580.105.08; [S]",
        pci_device_id=0x233010DE, pci_subsystem_id=0x16C110DE,
        board_part_number="692-2G520-0200-000", vbios_version="96.00.99.00.01",
        inforom_image_version="G520.0200.00.05", memory_total_bytes=81559 * MIB,
        architecture="hopper", compute_capability=(9, 0),
        power_limit_mw=700_000, power_max_limit_mw=700_000,
        driver_version="580.105.08", cuda_driver_version=13000, fabric_clique_id=0,
        mig_capable=True, cc_capable=True, module_ids=_HGX_MODULE_IDS, bus_ids=_HGX_BUS_IDS,
        serial_prefix="1654",  # [S] serial 1654423001593
    ),
    GpuModel(
        key="H100-PCIe", name="NVIDIA H100 PCIe", source="no capture",
        estimated=("subsystem id", "board part number", "vbios", "inforom", "power", "driver"),
        pci_device_id=0x233110DE, pci_subsystem_id=0x162610DE,
        board_part_number="900-21010-0000-000", vbios_version="96.00.30.00.01",
        inforom_image_version="1010.0200.00.02", memory_total_bytes=81559 * MIB,
        architecture="hopper", compute_capability=(9, 0),
        power_limit_mw=350_000, power_max_limit_mw=350_000,
        driver_version="580.105.08", cuda_driver_version=13000, fabric_clique_id=None,
        mig_capable=True, cc_capable=True, module_ids=(1,), bus_ids=_PCIE_BUS_IDS,
        serial_prefix="1321",
    ),
    GpuModel(
        key="H100-NVL", name="NVIDIA H100 NVL",
        source="thamada/nvidia-smi nvsim/H100NVLx2_smi.py exists; values not transcribed",
        estimated=("ids", "part number", "vbios", "inforom", "memory", "power", "driver"),
        pci_device_id=0x232110DE, pci_subsystem_id=0x183910DE,
        board_part_number="900-21010-0020-000", vbios_version="96.00.74.00.0B",
        inforom_image_version="1010.0230.00.03", memory_total_bytes=95830 * MIB,
        architecture="hopper", compute_capability=(9, 0),
        power_limit_mw=400_000, power_max_limit_mw=400_000,
        driver_version="580.105.08", cuda_driver_version=13000, fabric_clique_id=None,
        mig_capable=True, cc_capable=True, module_ids=(1,), bus_ids=_PCIE_BUS_IDS,
        serial_prefix="1322",
    ),
    GpuModel(
        key="H200", name="NVIDIA H200", source="[G] driver 550.90.12; mig-parted#120",
        estimated=("bus and module ids (HGX layout of [K-h100])",),
        pci_device_id=0x233510DE, pci_subsystem_id=0x18BE10DE,
        board_part_number="695-2G520-0280-000", vbios_version="96.00.A5.00.03",
        inforom_image_version="G520.0280.02.02", memory_total_bytes=143771 * MIB,
        architecture="hopper", compute_capability=(9, 0),
        power_limit_mw=700_000, power_max_limit_mw=700_000,
        driver_version="550.90.12", cuda_driver_version=12040, fabric_clique_id=0,
        mig_capable=True, cc_capable=True, module_ids=_HGX_MODULE_IDS, bus_ids=_HGX_BUS_IDS,
        serial_prefix="1655",
    ),
    GpuModel(
        key="H20", name="NVIDIA H20", source="no capture",
        estimated=("ids", "part number", "vbios", "inforom", "memory", "power", "driver"),
        pci_device_id=0x232910DE, pci_subsystem_id=0x198B10DE,
        board_part_number="692-2G520-0280-001", vbios_version="96.00.99.00.0A",
        inforom_image_version="G520.0280.00.04", memory_total_bytes=97871 * MIB,
        architecture="hopper", compute_capability=(9, 0),
        power_limit_mw=500_000, power_max_limit_mw=500_000,
        driver_version="580.105.08", cuda_driver_version=13000, fabric_clique_id=0,
        mig_capable=True, cc_capable=True, module_ids=_HGX_MODULE_IDS, bus_ids=_HGX_BUS_IDS,
        serial_prefix="1656",
    ),
    GpuModel(
        key="A100", name="NVIDIA A100-SXM4-40GB", source="[K-a100] driver 570.148.08",
        estimated=("bus and module ids (HGX layout of [K-h100])",),
        pci_device_id=0x20B010DE, pci_subsystem_id=0x134F10DE,
        board_part_number="692-2G506-0200-003", vbios_version="92.00.45.00.03",
        inforom_image_version="G506.0200.00.04", memory_total_bytes=40960 * MIB,
        architecture="ampere", compute_capability=(8, 0),
        power_limit_mw=400_000, power_max_limit_mw=400_000,
        driver_version="570.148.08", cuda_driver_version=12080, fabric_clique_id=None,
        mig_capable=True, cc_capable=False, module_ids=_HGX_MODULE_IDS, bus_ids=_HGX_BUS_IDS,
        serial_prefix="1563",
    ),
    GpuModel(
        key="B200", name="NVIDIA B200", source="[K-b200] driver 580.105.08",
        estimated=("bus and module ids (HGX layout of [K-h100])",),
        pci_device_id=0x290110DE, pci_subsystem_id=0x199910DE,
        board_part_number="692-2G525-0220-500", vbios_version="97.00.FA.00.09",
        inforom_image_version="G525.0220.00.03", memory_total_bytes=183359 * MIB,
        architecture="blackwell", compute_capability=(10, 0),
        power_limit_mw=1_000_000, power_max_limit_mw=1_000_000,
        driver_version="580.105.08", cuda_driver_version=13000, fabric_clique_id=0,
        mig_capable=True, cc_capable=True, module_ids=_HGX_MODULE_IDS, bus_ids=_HGX_BUS_IDS,
        serial_prefix="1790",
    ),
    GpuModel(
        key="GB200", name="NVIDIA GB200", source="[K-gb200] driver 580.173.02, arm64, 4 GPUs",
        estimated=("module ids 1..4", "PCI domains (layout of [K-gb300])"),
        pci_device_id=0x294110DE, pci_subsystem_id=0x204610DE,
        board_part_number="900-2G548-A801-000", vbios_version="97.00.B9.00.69",
        inforom_image_version="G548.0201.00.06", memory_total_bytes=189471 * MIB,
        architecture="blackwell", compute_capability=(10, 0),
        power_limit_mw=1_200_000, power_max_limit_mw=1_200_000,
        driver_version="580.173.02", cuda_driver_version=13000, fabric_clique_id=2,
        mig_capable=True, cc_capable=True, module_ids=(1, 2, 3, 4), bus_ids=_GRACE_BUS_IDS,
        serial_prefix="1792", gpus_per_module=2,
    ),
    GpuModel(
        key="GB300", name="NVIDIA GB300", source="[K-gb300]",
        estimated=("module ids 1..4", "driver version", "compute capability 10.3"),
        pci_device_id=0x31C210DE, pci_subsystem_id=0x21F110DE,
        board_part_number="900-2G548-0081-000", vbios_version="97.10.4A.00.1A",
        inforom_image_version="G548.0301.00.03", memory_total_bytes=284208 * MIB,
        architecture="blackwell", compute_capability=(10, 3),
        power_limit_mw=1_400_000, power_max_limit_mw=1_400_000,
        driver_version="580.173.02", cuda_driver_version=13000, fabric_clique_id=32766,
        mig_capable=True, cc_capable=True, module_ids=(1, 2, 3, 4), bus_ids=_GRACE_BUS_IDS,
        serial_prefix="1793", gpus_per_module=2,
    ),
    GpuModel(
        key="L40S", name="NVIDIA L40S", source="[M-l40s] driver 550.163.01",
        estimated=("memory total (real boards report about 46068 MiB)", "module id"),
        pci_device_id=0x26B910DE, pci_subsystem_id=0x185110DE,
        board_part_number="900-2G133-0020-000", vbios_version="95.02.5C.00.03",
        inforom_image_version="G133.0020.00.02", memory_total_bytes=46068 * MIB,
        architecture="ada", compute_capability=(8, 9),
        power_limit_mw=350_000, power_max_limit_mw=350_000,
        driver_version="550.163.01", cuda_driver_version=12040, fabric_clique_id=None,
        mig_capable=False, cc_capable=False, module_ids=(1,), bus_ids=_PCIE_BUS_IDS,
        serial_prefix="1562",  # [M-l40s] serial 1562830094500
    ),
    GpuModel(
        key="L4", name="NVIDIA L4", source="no capture",
        estimated=("subsystem id", "part number", "vbios", "inforom", "memory", "driver"),
        pci_device_id=0x27B810DE, pci_subsystem_id=0x16CA10DE,
        board_part_number="900-2G193-0000-001", vbios_version="95.04.29.00.06",
        inforom_image_version="G193.0200.00.01", memory_total_bytes=23034 * MIB,
        architecture="ada", compute_capability=(8, 9),
        power_limit_mw=72_000, power_max_limit_mw=72_000,
        driver_version="550.163.01", cuda_driver_version=12040, fabric_clique_id=None,
        mig_capable=False, cc_capable=False, module_ids=(1,), bus_ids=_PCIE_BUS_IDS,
        serial_prefix="1324",
    ),
)  # fmt: skip

CATALOGUE: Final = types.MappingProxyType({m.key: m for m in _MODELS})
