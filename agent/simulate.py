"""Simulated machines: the agent's inventory backend on hosts without GPUs (docs/design.md §7).

`load_machine` turns a machine file (format in `agent.machine_file`) into a frozen
`SimulatedMachine`, expanding each `[[gpu]]` group from the catalogue of real values with
deterministic identities; `SimulatedInventory` serves it through the same `InventorySource`
port as the NVML adapter, and answers like NVML would for the same machine.
"""

from __future__ import annotations

import base64
import hashlib
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from agent.catalogue import CATALOGUE, FABRIC_COMPLETED, GpuModel
from agent.machine_file import (
    GPU_STATES,
    SimulatedHost,
    as_str,
    gpu_overrides,
    parse_driver,
    parse_host,
    parse_toml,
    root_table,
)
from agent.readings import NO_NONCE, NONCE_LEN, NOT_PRESENT, absent_gpu
from attest import model
from attest import tomlconf as tc
from attest.errors import InventoryError, MachineFileError
from attest.model import Reading, Unavailable

__all__ = [
    "SimulatedGpu",
    "SimulatedHost",
    "SimulatedInventory",
    "SimulatedMachine",
    "load_machine",
    "machine_from_mapping",
    "parse_machine",
]

MAX_GPUS: Final = 64  # the wire contract's bound on GPUs per evidence (attest/wire/_policy.py)
_U32: Final = 2**32 - 1
_ZERO_UUID: Final = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class SimulatedGpu:
    """One GPU as collected without a nonce, plus how a report request would be answered."""

    gpu: model.Gpu
    #: None: an attestation report is produced for any nonce; else NVML's refusal reason.
    report_refusal: str | None


@dataclass(frozen=True)
class SimulatedMachine:
    host: SimulatedHost
    driver: model.DriverInfo
    state: model.InventoryState
    detail: str
    gpus: tuple[SimulatedGpu, ...]


def load_machine(path: str | Path) -> SimulatedMachine:
    """Read and validate a machine file. Raises `MachineFileError` (unreadable, bad TOML, keys)."""
    return _machine(tc.load(Path(path), MachineFileError))


def parse_machine(text: str, source: str = "<machine>") -> SimulatedMachine:
    """Parse machine-file TOML text. Raises `MachineFileError` for anything but a valid file."""
    return _machine(parse_toml(text, source))


def machine_from_mapping(data: Mapping[str, Any], source: str = "<machine>") -> SimulatedMachine:
    """Validate an already-decoded machine description. Raises `MachineFileError`."""
    return _machine(root_table(data, source))


def _machine(root: tc.Table) -> SimulatedMachine:
    host = parse_host(root.table("host"))
    expander = _Expander(host)
    for number, group in enumerate(root.tables("gpu")):
        expander.add(number, group)
    first = expander.first_model or CATALOGUE["H100-SXM"]
    driver, state, detail = parse_driver(root.table("driver"), first)
    root.done()
    return SimulatedMachine(host, driver, state, detail, tuple(expander.gpus))


# --- expansion of [[gpu]] groups ---------------------------------------------------------------


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()


def derived_uuid(prefix: str, *parts: object) -> str:
    """A deterministic `GPU-...`/`MIG-...` identity in NVML's 8-4-4-4-12 form."""
    return f"{prefix}-{uuidlib.UUID(bytes=_digest(*parts)[:16])}"


def simulated_chain(gpu_uuid: str) -> bytes:
    """PEM-armoured placeholder bytes, deliberately not a parseable X.509 certificate."""
    body = base64.b64encode(f"gpu-attest simulated certificate for {gpu_uuid}".encode())
    return b"-----BEGIN CERTIFICATE-----\n" + body + b"\n-----END CERTIFICATE-----\n"


class _Expander:
    """Turns [[gpu]] groups into GPUs with machine-wide unique indices and bus ids."""

    def __init__(self, host: SimulatedHost) -> None:
        self.host = host
        self.gpus: list[SimulatedGpu] = []
        self.used_bus_ids: set[str] = set()
        self.synthetic = 0
        self.first_model: GpuModel | None = None

    def add(self, number: int, group: tc.Table) -> None:
        gpu_model = CATALOGUE[group.get("model", tc.one_of(CATALOGUE))]
        self.first_model = self.first_model or gpu_model
        count = group.get("count", tc.integer(0, MAX_GPUS), 1)
        if len(self.gpus) + count > MAX_GPUS:
            raise group.fail("count", f"a machine holds at most {MAX_GPUS} GPUs")
        seed = group.get("uuid_seed", as_str, self.host.hostname)
        state = group.get("state", tc.one_of(GPU_STATES), "ok")
        overrides = gpu_overrides(group)
        identity = group.opt("uuid", as_str)
        group.done()
        pci = overrides.get("pci")
        if count > 1 and (identity is not None or (isinstance(pci, dict) and "bus_id" in pci)):
            raise group.fail(None, "uuid and pci.bus_id name one GPU; they need count = 1")
        for position in range(count):
            index = len(self.gpus)
            lost = GPU_STATES[state]
            if lost is not None:
                self._slot(gpu_model, None)  # a lost board still occupies its slot
                self.gpus.append(SimulatedGpu(absent_gpu(index, lost), None))
                continue
            gpu_uuid = identity or derived_uuid("GPU", seed, number, position)
            self.gpus.append(
                self._gpu(gpu_model, index, gpu_uuid, (seed, number, position), overrides)
            )

    def _slot(self, gpu_model: GpuModel, wanted: object) -> tuple[str, int]:
        """A free bus id, preferring the model's real slots, and the slot's position."""
        slot = len(self.used_bus_ids)
        if isinstance(wanted, str):
            bus = wanted
        else:
            free = [n for n, b in enumerate(gpu_model.bus_ids) if b not in self.used_bus_ids]
            if free:
                slot = free[0]
                bus = gpu_model.bus_ids[slot]
            else:
                bus = self._synthetic_bus_id()
        self.used_bus_ids.add(bus)
        return bus, slot

    def _synthetic_bus_id(self) -> str:
        while True:
            n = self.synthetic
            self.synthetic += 1
            bus = f"{0x100 + n // 200:08X}:{n % 200 + 1:02X}:00.0"
            if bus not in self.used_bus_ids:
                return bus

    def _gpu(
        self,
        gpu_model: GpuModel,
        index: int,
        gpu_uuid: str,
        where: tuple[str, int, int],
        overrides: Mapping[str, Any],
    ) -> SimulatedGpu:
        seed, number, position = where
        pci_override = overrides.get("pci")
        bus_id, slot = self._slot(
            gpu_model, pci_override.get("bus_id") if isinstance(pci_override, dict) else None
        )
        module = position // gpu_model.gpus_per_module
        serial_digits = int.from_bytes(_digest(seed, number, module, "serial")[:8]) % 10**9
        defaults = _defaults(gpu_model, index, gpu_uuid, bus_id)
        defaults["serial"] = f"{gpu_model.serial_prefix}{serial_digits:09d}"
        defaults["module_id"] = gpu_model.module_ids[slot % len(gpu_model.module_ids)]
        if gpu_model.fabric_clique_id:
            cluster = str(uuidlib.UUID(bytes=_digest(seed, "fabric")[:16]))
            defaults["fabric"] = replace(defaults["fabric"], cluster_uuid=cluster)
        return _apply(defaults, overrides, gpu_model, gpu_uuid)


def _defaults(gpu_model: GpuModel, index: int, gpu_uuid: str, bus_id: str) -> dict[str, Any]:
    """The catalogue's values for one GPU, as `model.Gpu` keyword arguments."""
    domain, bus = (int(part, 16) for part in bus_id.split(":")[:2])
    not_supported = Unavailable("NotSupported")
    fabric: Reading[model.FabricInfo] = not_supported
    if gpu_model.fabric_clique_id is not None:
        fabric = model.FabricInfo(_ZERO_UUID, gpu_model.fabric_clique_id, FABRIC_COMPLETED, 0)
    return {
        "index": index,
        "state": model.GpuState.OK,
        "uuid": gpu_uuid,
        "name": gpu_model.name,
        "board_part_number": gpu_model.board_part_number,
        # HGX reports bus << 8 (NVML API reference, nvmlPciInfo_t); the domain term is an
        # estimate for Grace.
        "board_id": ((domain << 16) | (bus << 8)) & _U32,
        "pci": model.PciInfo(bus_id, gpu_model.pci_device_id, gpu_model.pci_subsystem_id),
        "vbios_version": gpu_model.vbios_version,
        "inforom_image_version": gpu_model.inforom_image_version,
        "memory_total_bytes": gpu_model.memory_total_bytes,
        "architecture": gpu_model.architecture,
        "compute_capability": gpu_model.compute_capability,
        "power_limit_mw": gpu_model.power_limit_mw,
        "power_default_limit_mw": gpu_model.power_default_limit_mw,
        "power_max_limit_mw": gpu_model.power_max_limit_mw,
        "mig": model.MigInfo(0, 0, ()) if gpu_model.mig_capable else not_supported,
        "fabric": fabric,
        "ecc": model.EccInfo(1, 1, 0, 0),
        "remapped_rows": model.RemappedRows(0, 0, pending=False, failure=False),
        "persistence_mode": True,
    }


_TEMPLATES: Final[Mapping[str, object]] = {
    "pci": model.PciInfo("", 0, 0),
    "mig": model.MigInfo(0, 0, ()),
    "fabric": model.FabricInfo(_ZERO_UUID, 0, FABRIC_COMPLETED, 0),
    "ecc": model.EccInfo(1, 1, 0, 0),
    "remapped_rows": model.RemappedRows(0, 0, pending=False, failure=False),
}


def _apply(
    fields: dict[str, Any], overrides: Mapping[str, Any], gpu_model: GpuModel, gpu_uuid: str
) -> SimulatedGpu:
    for key, value in overrides.items():
        if key == "cc":
            continue
        if not isinstance(value, dict):
            fields[key] = value
            continue
        base = fields[key]
        if isinstance(base, Unavailable):
            base = _TEMPLATES[key]
        changes = {k: v for k, v in value.items() if k not in {"bus_id", "devices"}}
        merged = replace(base, **changes)
        if key == "mig" and "devices" in value:
            merged = replace(merged, devices=_mig_devices(value["devices"], fields, gpu_uuid))
        fields[key] = merged
    mig = fields["mig"]
    if isinstance(mig, model.MigInfo) and mig.devices and "remapped_rows" not in overrides:
        # NVML refuses row-remapping counters on a GPU with active MIG instances (NVML API
        # reference, nvmlDeviceGetRemappedRows).
        fields["remapped_rows"] = Unavailable("NotSupported")
    cc, refusal = _cc(overrides.get("cc"), gpu_model, gpu_uuid)
    return SimulatedGpu(model.Gpu(**fields, cc=cc), refusal)


def _mig_devices(
    count: int, fields: Mapping[str, Any], gpu_uuid: str
) -> tuple[model.MigDevice, ...]:
    total = fields["memory_total_bytes"]
    # Seven 1g slices, numbered as nvidia-smi numbers them (GPU instances 7..13); an estimate.
    memory: Reading[int] = total // 8 if isinstance(total, int) else total
    return tuple(
        model.MigDevice(derived_uuid("MIG", gpu_uuid, slot), 7 + slot, 0, memory)
        for slot in range(count)
    )


def _cc(
    override: object, gpu_model: GpuModel, gpu_uuid: str
) -> tuple[Reading[model.ConfidentialComputing], str | None]:
    if isinstance(override, Unavailable):
        return override, override.reason
    enabled = bool(isinstance(override, dict) and override.get("enabled", False))
    no_nonce = Unavailable(NO_NONCE)
    if enabled:
        return model.ConfidentialComputing(
            True, no_nonce, simulated_chain(gpu_uuid), no_nonce
        ), None
    # Off: a CC-capable GPU refuses with InvalidState (NVML API reference; to confirm on hardware).
    refusal = "InvalidState" if gpu_model.cc_capable else "NotSupported"
    chain = Unavailable(refusal)
    return model.ConfidentialComputing(False, no_nonce, chain, no_nonce), refusal


# --- the port ----------------------------------------------------------------------------------


def simulated_report(gpu_uuid: str, nonce: bytes) -> bytes:
    """Report-shaped bytes bound to the nonce: the SPDM request header NVIDIA's reports start
    with (11 e0 01 ff), the nonce, then a digest of GPU and nonce. Not signed by anything."""
    digest = hashlib.sha256(gpu_uuid.encode() + nonce).digest()
    return b"\x11\xe0\x01\xff" + nonce + b"\x00gpu-attest-simulated" + digest


class SimulatedInventory:
    """`InventorySource` over a `SimulatedMachine`: what NVML would say on that machine."""

    def __init__(self, machine: SimulatedMachine) -> None:
        self.machine = machine

    @classmethod
    def from_file(cls, path: str | Path) -> SimulatedInventory:
        """Load a machine file. Raises `MachineFileError`."""
        return cls(load_machine(path))

    def collect(self, cc_nonce: bytes | None = None) -> model.Inventory:
        """The machine's inventory; reports are bound to `cc_nonce` as NVML would bind them.

        Raises `InventoryError` when `cc_nonce` is given and is not 32 bytes.
        """
        if cc_nonce is not None and len(cc_nonce) != NONCE_LEN:
            raise InventoryError(f"cc_nonce must be {NONCE_LEN} bytes, got {len(cc_nonce)}")
        machine = self.machine
        if machine.state is not model.InventoryState.OK:
            absent = Unavailable("Uninitialized")
            driver = model.DriverInfo(absent, absent, absent)
            status = model.InventoryStatus(machine.state, machine.detail)
            return model.Inventory(driver=driver, status=status, gpus=())
        gpus = tuple(_answer(sim, cc_nonce) for sim in machine.gpus)
        status = model.InventoryStatus(model.InventoryState.OK, machine.detail, len(gpus))
        return model.Inventory(driver=machine.driver, status=status, gpus=gpus)

    def close(self) -> None:
        """Nothing to release."""


def _answer(sim: SimulatedGpu, nonce: bytes | None) -> model.Gpu:
    gpu = sim.gpu
    if nonce is None or not isinstance(gpu.cc, model.ConfidentialComputing):
        return gpu
    if sim.report_refusal is not None:
        refused = Unavailable(sim.report_refusal)
        cc = replace(gpu.cc, attestation_report=refused, cec_attestation_report=refused)
    else:
        cc = replace(
            gpu.cc,
            attestation_report=simulated_report(gpu.uuid, nonce),
            cec_attestation_report=Unavailable(NOT_PRESENT),
            report_nonce=nonce,
        )
    return replace(gpu, cc=cc)
