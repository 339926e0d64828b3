"""The NVML adapter: the one module that talks to the driver, through the real `pynvml` module.

`NvmlInventory` owns `nvmlInit` / `nvmlShutdown` and turns every NVML answer into the frozen
values of `attest.model`. A call the board or driver refuses becomes `Unavailable(reason)`, the
reason being the suffix of the NVML error class (`NVMLError_NotSupported` -> "NotSupported"),
so the verifier sees *why* a field is absent instead of an empty string.

This module runs on GPU hosts that may lack the agent's other dependencies (the capture script
copies the repository onto a bare machine), so it imports only `pynvml`, the standard library,
`agent.readings` and `attest.model` / `attest.errors` -- never protobuf, grpc or cryptography.
"""

from __future__ import annotations

import contextlib
import ctypes
import uuid as uuidlib
from collections.abc import Callable
from typing import Any, Final, TypeVar

import pynvml

from agent.readings import (
    BAD_ENCODING,
    LOST,
    NO_NONCE,
    NONCE_LEN,
    NOT_PRESENT,
    absent_gpu,
    architecture_name,
    placeholder_uuid,
)
from attest import model
from attest.errors import InventoryError
from attest.model import Reading, Unavailable

T = TypeVar("T")
U = TypeVar("U")

_NVML_FEATURE_ENABLED: Final = 1  # NVML_FEATURE_ENABLED / NVML_DEVICE_MIG_ENABLE
_CC_FEATURE_ENABLED: Final = 1  # NVML_CC_SYSTEM_FEATURE_ENABLED
_MEMORY_ERROR_UNCORRECTED: Final = 1  # NVML_MEMORY_ERROR_TYPE_UNCORRECTED
_VOLATILE_ECC: Final = 0
_AGGREGATE_ECC: Final = 1


def nvml_reason(exc: BaseException) -> str:
    """The reason for an NVML failure: the error class suffix, e.g. "NotSupported"."""
    name = type(exc).__name__
    if name.startswith("NVMLError_"):
        return name.removeprefix("NVMLError_")
    # A code this pynvml has no class for (a newer driver): keep the number.
    return f"NvmlCode{getattr(exc, 'value', 'Unknown')}"


class _FunctionMissingError(Exception):
    """The installed pynvml has no wrapper of that name (older nvidia-ml-py)."""


def _call(name: str, *args: Any) -> Any:
    fn = getattr(pynvml, name, None)
    if fn is None:
        raise _FunctionMissingError(name)
    return fn(*args)


def _read(name: str, *args: Any) -> Reading[Any]:
    """Call one pynvml wrapper; an NVML error becomes `Unavailable(reason)`."""
    try:
        return _call(name, *args)
    except pynvml.NVMLError as exc:
        return Unavailable(nvml_reason(exc))
    except _FunctionMissingError:
        return Unavailable("FunctionNotFound")
    except UnicodeDecodeError:
        return Unavailable(BAD_ENCODING)


def _map(reading: Reading[T], convert: Callable[[T], U]) -> Reading[U]:
    return reading if isinstance(reading, Unavailable) else convert(reading)


def _as_int(value: object) -> int:
    # nvmlDeviceIsMigDeviceHandle returns the c_uint itself, not its value (pynvml quirk).
    if isinstance(value, ctypes.c_uint):
        return int(value.value)
    if isinstance(value, int):
        return value
    raise TypeError(f"expected an integer from NVML, got {type(value).__name__}")


def _buffer(array: Any, size: int) -> bytes:
    """The first `size` bytes of a ctypes uint8 array, never reading past its end."""
    return bytes(array[: max(0, min(int(size), len(array)))])


def _fabric_uuid(raw: bytes) -> str:
    return str(uuidlib.UUID(bytes=raw))


class NvmlInventory:
    """`InventorySource` over the real driver. Not thread-safe: use one per collecting thread."""

    def __init__(self) -> None:
        self._initialized = False

    def __enter__(self) -> NvmlInventory:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the driver (nvmlShutdown). Safe to call more than once."""
        if self._initialized:
            self._initialized = False
            # Nothing is left to release when this fails; closing must not fail the caller.
            with contextlib.suppress(pynvml.NVMLError):
                pynvml.nvmlShutdown()

    def collect(self, cc_nonce: bytes | None = None) -> model.Inventory:
        """What the driver sees now.

        Never raises for a missing library or driver: `Inventory.status` says so and `gpus` is
        empty. Raises `InventoryError` only when `cc_nonce` is given and is not 32 bytes (NVML's
        SPDM nonce size), which is a caller's mistake.
        """
        if cc_nonce is not None and len(cc_nonce) != NONCE_LEN:
            raise InventoryError(f"cc_nonce must be {NONCE_LEN} bytes, got {len(cc_nonce)}")
        failed = self._init()
        if failed is not None:
            return model.Inventory(driver=_driver_unavailable(), status=failed, gpus=())
        driver = model.DriverInfo(
            driver_version=_read("nvmlSystemGetDriverVersion"),
            nvml_version=_read("nvmlSystemGetNVMLVersion"),
            cuda_driver_version=_read("nvmlSystemGetCudaDriverVersion"),
        )
        count = _read("nvmlDeviceGetCount")
        if isinstance(count, Unavailable):
            status = model.InventoryStatus(
                model.InventoryState.ERROR, f"nvmlDeviceGetCount failed: {count.reason}"
            )
            return model.Inventory(driver=driver, status=status, gpus=())
        cc_state = _read("nvmlSystemGetConfComputeState")
        cc_on = _map(cc_state, lambda s: int(s.ccFeature) == _CC_FEATURE_ENABLED)
        gpus = tuple(_collect_gpu(i, cc_on, cc_nonce) for i in range(count))
        status = model.InventoryStatus(model.InventoryState.OK, "", count)
        return model.Inventory(driver=driver, status=status, gpus=gpus)

    def _init(self) -> model.InventoryStatus | None:
        if self._initialized:
            return None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError_LibraryNotFound as exc:
            return model.InventoryStatus(model.InventoryState.LIBRARY_NOT_FOUND, str(exc))
        except pynvml.NVMLError_DriverNotLoaded as exc:
            return model.InventoryStatus(model.InventoryState.DRIVER_NOT_LOADED, str(exc))
        except pynvml.NVMLError as exc:
            detail = f"nvmlInit failed: {nvml_reason(exc)}: {exc}"
            return model.InventoryStatus(model.InventoryState.ERROR, detail)
        self._initialized = True
        return None


def _driver_unavailable() -> model.DriverInfo:
    absent = Unavailable("Uninitialized")
    return model.DriverInfo(driver_version=absent, nvml_version=absent, cuda_driver_version=absent)


def _collect_gpu(index: int, cc_on: Reading[bool], nonce: bytes | None) -> model.Gpu:
    handle = _read("nvmlDeviceGetHandleByIndex", index)
    if isinstance(handle, Unavailable):
        return absent_gpu(index, handle.reason)
    uuid = _read("nvmlDeviceGetUUID", handle)
    if isinstance(uuid, Unavailable) and uuid.reason == LOST:
        return absent_gpu(index, LOST)
    constraints = _read("nvmlDeviceGetPowerManagementLimitConstraints", handle)
    gpu = model.Gpu(
        index=index,
        state=model.GpuState.OK,
        uuid=placeholder_uuid(index) if isinstance(uuid, Unavailable) else uuid,
        serial=_read("nvmlDeviceGetSerial", handle),
        name=_read("nvmlDeviceGetName", handle),
        board_part_number=_read("nvmlDeviceGetBoardPartNumber", handle),
        board_id=_read("nvmlDeviceGetBoardId", handle),
        # Pass our own out-parameter: the wrapper's default c_uint is shared between calls.
        module_id=_read("nvmlDeviceGetModuleId", handle, ctypes.c_uint()),
        pci=_map(
            _read("nvmlDeviceGetPciInfo", handle),
            lambda p: model.PciInfo(str(p.busId), int(p.pciDeviceId), int(p.pciSubSystemId)),
        ),
        vbios_version=_read("nvmlDeviceGetVbiosVersion", handle),
        inforom_image_version=_read("nvmlDeviceGetInforomImageVersion", handle),
        memory_total_bytes=_map(_read("nvmlDeviceGetMemoryInfo", handle), lambda m: int(m.total)),
        architecture=_map(_read("nvmlDeviceGetArchitecture", handle), architecture_name),
        compute_capability=_map(
            _read("nvmlDeviceGetCudaComputeCapability", handle), lambda c: (int(c[0]), int(c[1]))
        ),
        power_limit_mw=_read("nvmlDeviceGetPowerManagementLimit", handle),
        power_default_limit_mw=_read("nvmlDeviceGetPowerManagementDefaultLimit", handle),
        power_max_limit_mw=_map(constraints, lambda c: int(c[1])),
        mig=_mig(handle),
        fabric=_fabric(handle),
        ecc=_ecc(handle),
        remapped_rows=_map(
            _read("nvmlDeviceGetRemappedRows", handle),
            lambda r: model.RemappedRows(int(r[0]), int(r[1]), bool(r[2]), bool(r[3])),
        ),
        persistence_mode=_map(
            _read("nvmlDeviceGetPersistenceMode", handle), lambda m: m == _NVML_FEATURE_ENABLED
        ),
        cc=_cc(handle, cc_on, nonce),
    )
    if _any_lost(gpu):
        return _with_state(gpu, model.GpuState.LOST)
    if isinstance(uuid, Unavailable):
        # Readable, but without its identity the GPU cannot be told apart from another.
        return _with_state(gpu, model.GpuState.INACCESSIBLE)
    return gpu


def _any_lost(gpu: model.Gpu) -> bool:
    return any(
        isinstance(value, Unavailable) and value.reason == LOST for value in vars(gpu).values()
    )


def _with_state(gpu: model.Gpu, state: model.GpuState) -> model.Gpu:
    fields = dict(vars(gpu))
    fields["state"] = state
    return model.Gpu(**fields)


def _mig(handle: Any) -> Reading[model.MigInfo]:
    mode = _read("nvmlDeviceGetMigMode", handle)
    if isinstance(mode, Unavailable):
        return mode
    current, pending = int(mode[0]), int(mode[1])
    if current != _NVML_FEATURE_ENABLED:
        return model.MigInfo(current, pending, ())
    slots = _read("nvmlDeviceGetMaxMigDeviceCount", handle)
    if isinstance(slots, Unavailable):
        return slots
    devices = []
    for slot in range(slots):
        mig = _read("nvmlDeviceGetMigDeviceHandleByIndex", handle, slot)
        if isinstance(mig, Unavailable):
            if mig.reason == "NotFound":
                continue  # an empty slot: NVML numbers slots, not instances
            return mig
        is_mig = _read("nvmlDeviceIsMigDeviceHandle", mig)
        if not isinstance(is_mig, Unavailable) and not _as_int(is_mig):
            continue
        mig_uuid = _read("nvmlDeviceGetUUID", mig)
        if isinstance(mig_uuid, Unavailable):
            return mig_uuid
        devices.append(
            model.MigDevice(
                uuid=mig_uuid,
                gpu_instance_id=_read("nvmlDeviceGetGpuInstanceId", mig),
                compute_instance_id=_read("nvmlDeviceGetComputeInstanceId", mig),
                memory_total_bytes=_map(
                    _read("nvmlDeviceGetMemoryInfo", mig), lambda m: int(m.total)
                ),
            )
        )
    return model.MigInfo(current, pending, tuple(devices))


#: pynvml's NVML_GPU_FABRIC_STATE_NOT_SUPPORTED; spelled out so an older pynvml still works.
NVML_GPU_FABRIC_STATE_NOT_SUPPORTED = 0


def _fabric(handle: Any) -> Reading[model.FabricInfo]:
    factory = getattr(pynvml, "c_nvmlGpuFabricInfoV_t", None)
    if factory is None:
        return Unavailable("FunctionNotFound")
    info = factory()
    # The caller allocates a versioned struct and NVML fills it through the pointer.
    done = _read("nvmlDeviceGetGpuFabricInfoV", handle, ctypes.byref(info))
    if isinstance(done, Unavailable):
        return done
    # nvml.h declares `state` as unsigned char but pynvml reads a c_uint, so the three padding
    # bytes after it come along; only the low byte is the state.
    state = int(info.state) & 0xFF
    if state == NVML_GPU_FABRIC_STATE_NOT_SUPPORTED:
        # Seen on a real H200 passed through to a VM (driver 580.159.04): the call succeeds
        # but reports state 0, which nvidia-smi prints as N/A. Zeros here are not readings.
        return Unavailable("NotSupported")
    return model.FabricInfo(
        cluster_uuid=_fabric_uuid(bytes(info.clusterUuid)),
        clique_id=int(info.cliqueId),
        state=state,
        status=int(info.status),
    )


def _ecc(handle: Any) -> Reading[model.EccInfo]:
    # EccInfo has no room for a partial answer, so the first refusal stands for the whole.
    mode = _read("nvmlDeviceGetEccMode", handle)
    if isinstance(mode, Unavailable):
        return mode
    volatile = _read(
        "nvmlDeviceGetTotalEccErrors", handle, _MEMORY_ERROR_UNCORRECTED, _VOLATILE_ECC
    )
    if isinstance(volatile, Unavailable):
        return volatile
    aggregate = _read(
        "nvmlDeviceGetTotalEccErrors", handle, _MEMORY_ERROR_UNCORRECTED, _AGGREGATE_ECC
    )
    if isinstance(aggregate, Unavailable):
        return aggregate
    return model.EccInfo(int(mode[0]), int(mode[1]), int(volatile), int(aggregate))


def _cc(
    handle: Any, cc_on: Reading[bool], nonce: bytes | None
) -> Reading[model.ConfidentialComputing]:
    if isinstance(cc_on, Unavailable):
        return cc_on
    chain = _map(
        _read("nvmlDeviceGetConfComputeGpuCertificate", handle),
        lambda c: _buffer(c.attestationCertChain, c.attestationCertChainSize),
    )
    if nonce is None:
        absent = Unavailable(NO_NONCE)
        return model.ConfidentialComputing(cc_on, absent, chain, absent)
    # Asked whenever a nonce is given, not only in CC mode: Blackwell answers outside it, and
    # where the GPU cannot, NVML's refusal is itself the recorded fact.
    report = _read("nvmlDeviceGetConfComputeGpuAttestationReport", handle, nonce)
    if isinstance(report, Unavailable):
        return model.ConfidentialComputing(cc_on, report, chain, report)
    cec: Reading[bytes] = Unavailable(NOT_PRESENT)
    if int(report.isCecAttestationReportPresent):
        cec = _buffer(report.cecAttestationReport, report.cecAttestationReportSize)
    return model.ConfidentialComputing(
        enabled=cc_on,
        attestation_report=_buffer(report.attestationReport, report.attestationReportSize),
        certificate_chain=chain,
        cec_attestation_report=cec,
        report_nonce=nonce,
    )
