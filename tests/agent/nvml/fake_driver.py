"""A fake driver behind the real `pynvml` module: its wrapper functions replaced (monkeypatch).

The answers come from a simulated machine, so a test can compare what `NvmlInventory` reads
through pynvml with what `SimulatedInventory` says about the same machine. The fake keeps the
real module's types and habits (nvidia-ml-py's pynvml.py and the NVML API reference):

- errors are the real `pynvml.NVMLError_*` classes, raised as `NVMLError(code)`;
- handles are real `c_nvmlDevice_t` pointers; strings come back as `str`;
- `nvmlDeviceIsMigDeviceHandle` returns the `c_uint` object, not an int;
- empty MIG slots raise `NVMLError_NotFound`;
- `nvmlDeviceGetGpuFabricInfoV` fills the caller's versioned struct through `byref`, and the
  three padding bytes after the one-byte `state` are garbage, as with the real ABI;
- `nvmlDeviceGetConfComputeGpuAttestationReport` builds its nonce array exactly like pynvml, so
  a nonce of any length but 32 raises `TypeError` before the "driver" is reached;
- `nvmlDeviceGetModuleId`'s default out-parameter is one shared `c_uint` (recorded if used).
"""

# The methods carry pynvml's own camelCase names: install() patches them in by name.
# ruff: noqa: N802, N803

from __future__ import annotations

import ctypes
import uuid as uuidlib
from collections.abc import Callable
from typing import Any

import pynvml
import pytest

from agent.readings import ARCHITECTURES
from agent.simulate import SimulatedGpu, SimulatedMachine, simulated_report
from attest import model
from attest.model import Unavailable

_ARCH_CODES = {name: code for code, name in ARCHITECTURES.items()}
_MIG_BASE = 0x10000
_SHARED_MODULE_ID = ctypes.c_uint()


def nvml_error(reason: str) -> pynvml.NVMLError:
    """The real pynvml exception for an NVML error name ("NotSupported")."""
    error: pynvml.NVMLError = getattr(pynvml, f"NVMLError_{reason}")()
    return error


def _value(reading: object) -> Any:
    if isinstance(reading, Unavailable):
        raise nvml_error(reading.reason)
    return reading


def _slots(count: int) -> tuple[int, ...]:
    """The slots a GPU's MIG devices occupy: with gaps when they fit, as after deletions."""
    return (1, 3, 5)[:count] if count <= 3 else tuple(range(count))


def _handle(address: int) -> Any:
    return ctypes.cast(ctypes.c_void_p(address), pynvml.c_nvmlDevice_t)


def _address(handle: Any) -> int:
    return int(ctypes.cast(handle, ctypes.c_void_p).value or 0)


class FakeDriver:
    """Serves one simulated machine through pynvml's function names."""

    def __init__(self, machine: SimulatedMachine, *, init_error: str | None = None) -> None:
        self.machine = machine
        self.init_error = init_error
        self.initialized = 0
        self.shutdowns = 0
        self.shared_module_id_used = False
        self.overrides: dict[tuple[str, int], Callable[..., Any]] = {}

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeDriver:
        for name in dir(self):
            if name.startswith("nvml"):
                monkeypatch.setattr(pynvml, name, getattr(self, name))
        return self

    # --- lookups ---------------------------------------------------------------------------

    def _sim(self, handle: Any) -> SimulatedGpu:
        address = _address(handle)
        return self.machine.gpus[(address % _MIG_BASE) - 1]

    def _gpu(self, handle: Any) -> model.Gpu:
        return self._sim(handle).gpu

    def _mig(self, handle: Any) -> model.MigDevice | None:
        address = _address(handle)
        if address < _MIG_BASE:
            return None
        mig: model.MigInfo = _value(self._gpu(handle).mig)
        return mig.devices[_slots(len(mig.devices)).index(address // _MIG_BASE - 1)]

    # --- system ------------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise nvml_error(self.init_error)
        self.initialized += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return str(_value(self.machine.driver.driver_version))

    def nvmlSystemGetNVMLVersion(self) -> str:
        return str(_value(self.machine.driver.nvml_version))

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return int(_value(self.machine.driver.cuda_driver_version))

    def nvmlDeviceGetCount(self) -> int:
        return len(self.machine.gpus)

    def nvmlSystemGetConfComputeState(self) -> Any:
        # CC is a system setting; the machine is on when any of its GPUs is.
        on = any(
            isinstance(sim.gpu.cc, model.ConfidentialComputing) and sim.gpu.cc.enabled
            for sim in self.machine.gpus
        )
        return pynvml.c_nvmlConfComputeSystemState_t(0, int(on), 0)

    # --- per GPU ---------------------------------------------------------------------------

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        gpu = self.machine.gpus[index].gpu
        if gpu.state is not model.GpuState.OK:
            _value(gpu.serial)  # absent GPUs carry their reason in every reading
        return _handle(index + 1)

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        mig = self._mig(handle)
        return mig.uuid if mig is not None else self._gpu(handle).uuid

    def nvmlDeviceGetSerial(self, handle: Any) -> str:
        return str(_value(self._gpu(handle).serial))

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return str(_value(self._gpu(handle).name))

    def nvmlDeviceGetBoardPartNumber(self, handle: Any) -> str:
        return str(_value(self._gpu(handle).board_part_number))

    def nvmlDeviceGetVbiosVersion(self, handle: Any) -> str:
        return str(_value(self._gpu(handle).vbios_version))

    def nvmlDeviceGetInforomImageVersion(self, handle: Any) -> str:
        return str(_value(self._gpu(handle).inforom_image_version))

    def nvmlDeviceGetBoardId(self, handle: Any) -> int:
        return int(_value(self._gpu(handle).board_id))

    def nvmlDeviceGetModuleId(self, handle: Any, moduleId: Any = _SHARED_MODULE_ID) -> int:
        if moduleId is _SHARED_MODULE_ID:
            self.shared_module_id_used = True
        moduleId.value = int(_value(self._gpu(handle).module_id))
        return int(moduleId.value)

    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any:
        pci = _value(self._gpu(handle).pci)
        domain, bus, rest = pci.bus_id.split(":")
        info = pynvml.nvmlPciInfo_t()
        info.busIdLegacy = pci.bus_id[-12:]
        info.domain, info.bus, info.device = int(domain, 16), int(bus, 16), int(rest[:2], 16)
        info.pciDeviceId, info.pciSubSystemId = pci.device_id, pci.subsystem_id
        info.busId = pci.bus_id
        return info

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        mig = self._mig(handle)
        total = _value(mig.memory_total_bytes if mig else self._gpu(handle).memory_total_bytes)
        return pynvml.c_nvmlMemory_t(total, total, 0)

    def nvmlDeviceGetArchitecture(self, handle: Any) -> int:
        return _ARCH_CODES[_value(self._gpu(handle).architecture)]

    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]:
        major, minor = _value(self._gpu(handle).compute_capability)
        return (int(major), int(minor))

    def nvmlDeviceGetPowerManagementLimit(self, handle: Any) -> int:
        return int(_value(self._gpu(handle).power_limit_mw))

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: Any) -> int:
        return int(_value(self._gpu(handle).power_default_limit_mw))

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: Any) -> list[int]:
        top = int(_value(self._gpu(handle).power_max_limit_mw))
        return [top // 4, top]

    def nvmlDeviceGetMigMode(self, handle: Any) -> list[int]:
        mig = _value(self._gpu(handle).mig)
        return [mig.current_mode, mig.pending_mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int:
        _value(self._gpu(handle).mig)
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int) -> Any:
        mig = _value(self._gpu(handle).mig)
        if index not in _slots(len(mig.devices)):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return _handle((index + 1) * _MIG_BASE + _address(handle))

    def nvmlDeviceIsMigDeviceHandle(self, handle: Any) -> ctypes.c_uint:
        return ctypes.c_uint(int(_address(handle) >= _MIG_BASE))

    def nvmlDeviceGetGpuInstanceId(self, handle: Any) -> int:
        mig = self._mig(handle)
        if mig is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return int(_value(mig.gpu_instance_id))

    def nvmlDeviceGetComputeInstanceId(self, handle: Any) -> int:
        mig = self._mig(handle)
        if mig is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return int(_value(mig.compute_instance_id))

    def nvmlDeviceGetGpuFabricInfoV(self, handle: Any, ref: Any) -> int:
        info = ref._obj  # what ctypes.byref(x) keeps: x itself
        if info.version != pynvml.nvmlGpuFabricInfo_v2:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
        fabric = _value(self._gpu(handle).fabric)
        info.clusterUuid[:] = list(uuidlib.UUID(fabric.cluster_uuid).bytes)
        info.cliqueId, info.status = fabric.clique_id, fabric.status
        info.state = fabric.state | 0xABABAB00  # garbage in the padding after a 1-byte field
        return int(pynvml.NVML_SUCCESS)

    def nvmlDeviceGetEccMode(self, handle: Any) -> list[int]:
        ecc = _value(self._gpu(handle).ecc)
        return [ecc.mode_current, ecc.mode_pending]

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, error_type: int, counter: int) -> int:
        ecc = _value(self._gpu(handle).ecc)
        if error_type != pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED:
            return 0
        if counter == pynvml.NVML_VOLATILE_ECC:
            return int(ecc.volatile_uncorrected)
        return int(ecc.aggregate_uncorrected)

    def nvmlDeviceGetRemappedRows(self, handle: Any) -> tuple[int, int, int, int]:
        rows = _value(self._gpu(handle).remapped_rows)
        return (rows.corrected, rows.uncorrected, int(rows.pending), int(rows.failure))

    def nvmlDeviceGetPersistenceMode(self, handle: Any) -> int:
        return int(_value(self._gpu(handle).persistence_mode))

    def nvmlDeviceGetConfComputeGpuCertificate(self, handle: Any) -> Any:
        cc = _value(self._gpu(handle).cc)
        chain = _value(cc.certificate_chain)
        cert = pynvml.c_nvmlConfComputeGpuCertificate_t()
        cert.attestationCertChainSize = len(chain)
        ctypes.memmove(cert.attestationCertChain, chain, len(chain))
        return cert

    def nvmlDeviceGetConfComputeGpuAttestationReport(self, handle: Any, c_nonce: Any) -> Any:
        report = pynvml.c_nvmlConfComputeGpuAttestationReport_t()
        # Exactly what the real wrapper does; other lengths raise TypeError right here.
        c_nonce_arr = (ctypes.c_uint8 * len(c_nonce))(*(c_nonce))
        report.nonce = c_nonce_arr
        sim = self._sim(handle)
        _value(sim.gpu.cc)
        if sim.report_refusal is not None:
            raise nvml_error(sim.report_refusal)
        raw = simulated_report(sim.gpu.uuid, bytes(report.nonce))
        report.attestationReportSize = len(raw)
        ctypes.memmove(report.attestationReport, raw, len(raw))
        report.isCecAttestationReportPresent = 0
        return report
