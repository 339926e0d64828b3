"""Reading conventions shared by the NVML adapter and the simulated machines.

Both backends must describe the same situation with the same values, so the reasons they record
themselves and the shape of a GPU they could not read live here, in one place.
"""

from __future__ import annotations

import types
from typing import Final

from attest import model
from attest.model import Unavailable

#: nvml.h NVML_DEVICE_ARCH_*, spelled as the wire contract spells architectures.
ARCHITECTURES: Final = types.MappingProxyType(
    {
        2: "kepler",
        3: "maxwell",
        4: "pascal",
        5: "volta",
        6: "turing",
        7: "ampere",
        8: "ada",
        9: "hopper",
        10: "blackwell",
        13: "rubin",
    }
)

#: Every NVML error class suffix (`NVMLError_<name>`) that nvidia-ml-py's pynvml.py defines.
NVML_ERROR_NAMES: Final = frozenset(
    {
        "Uninitialized", "InvalidArgument", "NotSupported", "NoPermission",
        "AlreadyInitialized", "NotFound", "InsufficientSize", "InsufficientPower",
        "DriverNotLoaded", "Timeout", "IrqIssue", "LibraryNotFound", "FunctionNotFound",
        "CorruptedInforom", "GpuIsLost", "ResetRequired", "OperatingSystem",
        "LibRmVersionMismatch", "InUse", "Memory", "NoData", "VgpuEccNotSupported",
        "InsufficientResources", "FreqNotSupported", "ArgumentVersionMismatch", "Deprecated",
        "NotReady", "GpuNotFound", "InvalidState", "ResetTypeNotSupported", "Unknown",
    }
)  # fmt: skip

LOST: Final = "GpuIsLost"
#: Reasons recorded by gpu-attest itself rather than by NVML.
NO_NONCE: Final = "NoNonce"  # no verifier nonce was given, so no report was requested
NOT_PRESENT: Final = "NotPresent"  # the driver said there is no CEC report
BAD_ENCODING: Final = "InvalidUtf8"  # the driver returned a string that is not UTF-8
#: SPDM nonce size NVML requires (NVML_CC_GPU_CEC_NONCE_SIZE).
NONCE_LEN: Final = 32


def architecture_name(code: int) -> str:
    """The wire spelling of an `NVML_DEVICE_ARCH_*` value ("hopper"); unknown ones as "arch-N"."""
    return ARCHITECTURES.get(code, f"arch-{code}")


def placeholder_uuid(index: int) -> str:
    """The identity recorded for a GPU whose UUID the driver could not give (lost, no access).

    Unique within one inventory, and deliberately not shaped like `GPU-...`, so that it is never
    mistaken for a real identity.
    """
    return f"unknown-gpu-index-{index}"


def absent_gpu(index: int, reason: str) -> model.Gpu:
    """A GPU whose handle could not be had: LOST when the reason is GpuIsLost, else INACCESSIBLE."""
    gone = Unavailable(reason)
    state = model.GpuState.LOST if reason == LOST else model.GpuState.INACCESSIBLE
    return model.Gpu(
        index=index, state=state, uuid=placeholder_uuid(index), serial=gone, name=gone,
        board_part_number=gone, board_id=gone, module_id=gone, pci=gone, vbios_version=gone,
        inforom_image_version=gone, memory_total_bytes=gone, architecture=gone,
        compute_capability=gone, power_limit_mw=gone, power_default_limit_mw=gone,
        power_max_limit_mw=gone, mig=gone, fabric=gone, ecc=gone, remapped_rows=gone,
        persistence_mode=gone, cc=gone,
    )  # fmt: skip
