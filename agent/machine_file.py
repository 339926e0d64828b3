"""Simulated-machine files (DESIGN section 7): TOML in, one frozen `SimulatedMachine` out.

```toml
[host]                        # optional; exposed to the agent as SimulatedMachine.host
hostname = "gpu-node-017"
machine_id = "4c4c4544004b4d10..."
site = "acme-fra1"

[driver]                      # optional; defaults come from the first GPU model's capture
version = "580.105.08"        # each reading: a value or { error = "NotSupported" }
nvml_version = "13.580.105.08"
cuda_version = 13000
status = "ok"                 # "library-not-found" | "driver-not-loaded" | "error"
detail = ""

[[gpu]]
model = "H100-SXM"            # a key of agent.catalogue.CATALOGUE
count = 8                     # distinct UUIDs, serials, bus ids, module ids
uuid_seed = "node-017"        # identities are a pure function of seed, group and position
state = "ok"                  # "lost" (GpuIsLost) | "inaccessible" (NoPermission)
serial = { error = "NotSupported" }   # any field: a value or an NVML error name
fabric = { clique_id = 5 }    # tables merge over the model's values
cc = { enabled = true }       # confidential computing on: chain and reports are produced
```

Off, a CC-capable model answers the certificate and report calls with InvalidState and others
with NotSupported (what the NVML adapter then records); `SimulatedInventory` mirrors the NVML
adapter's answers for the same machine, which tests/agent/nvml checks through the real pynvml.

Scalar overrides: uuid (count = 1 only), serial, name, board_part_number, board_id, module_id,
vbios_version, inforom_image_version, memory_total_bytes, architecture, compute_capability
([major, minor]), power_limit_mw, power_default_limit_mw, power_max_limit_mw, persistence_mode.
Table overrides: pci {bus_id (count = 1 only), device_id, subsystem_id}; mig {current_mode,
pending_mode, devices (how many MIG devices, 0-7)}; fabric {cluster_uuid, clique_id, state,
status}; ecc {mode_current, mode_pending, volatile_uncorrected, aggregate_uncorrected};
remapped_rows {corrected, uncorrected, pending, failure}; cc {enabled}. Unknown keys and
ill-typed values raise `MachineFileError`.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
import uuid as uuidlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from agent.catalogue import GpuModel
from agent.readings import NVML_ERROR_NAMES
from attest import model
from attest.errors import MachineFileError
from attest.model import Unavailable

_U32: Final = 2**32 - 1
_U64: Final = 2**64 - 1
MAX_MIG_DEVICES: Final = 7  # the seven 1g slices of an A100/H100/B200
_BUS_ID: Final = re.compile(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]$")


@dataclass(frozen=True)
class SimulatedHost:
    """The `[host]` table: what the rest of the agent uses instead of the real host's names."""

    hostname: str
    machine_id: str
    site: str


def parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MachineFileError(f"{source}: not valid TOML: {exc}") from exc


# --- typed values --------------------------------------------------------------------------------


def fail(where: str, message: str) -> NoReturn:
    raise MachineFileError(f"{where}: {message}")


def as_table(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        fail(where, "must be a table")
    return value


def check_keys(table: Mapping[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        fail(where, f"unknown keys {unknown}")


def as_str(value: object, where: str) -> str:
    if not isinstance(value, str) or len(value) > 256:
        fail(where, "must be a string of at most 256 characters")
    return value


def as_uint(value: object, where: str, top: int = _U32) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        fail(where, f"must be an integer from 0 to {top}")
    return value


def _u64(value: object, where: str) -> int:
    return as_uint(value, where, _U64)


def _mig_count(value: object, where: str) -> int:
    return as_uint(value, where, MAX_MIG_DEVICES)


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        fail(where, "must be true or false")
    return value


def _capability(value: object, where: str) -> tuple[int, int]:
    if not isinstance(value, list) or len(value) != 2:
        fail(where, "must be [major, minor]")
    return (as_uint(value[0], where, 255), as_uint(value[1], where, 255))


def _uuid_text(value: object, where: str) -> str:
    text = as_str(value, where)
    try:
        return str(uuidlib.UUID(text))
    except ValueError:
        fail(where, "must be a UUID")


def _bus_id_text(value: object, where: str) -> str:
    text = as_str(value, where)
    if not _BUS_ID.match(text):
        fail(where, "must be a PCI bus id such as '00000000:53:00.0'")
    return text


def nvml_error(value: object, where: str) -> Unavailable | None:
    """`{ error = "Name" }` as an Unavailable; None when the value is something else."""
    if not isinstance(value, dict) or "error" not in value:
        return None
    check_keys(value, {"error"}, where)
    name = value["error"]
    if name not in NVML_ERROR_NAMES:
        fail(where, f"error must be an NVML error name such as 'NotSupported', not {name!r}")
    return Unavailable(name)


_SCALARS: Final[Mapping[str, Callable[[object, str], object]]] = {
    "serial": as_str, "name": as_str, "board_part_number": as_str, "vbios_version": as_str,
    "inforom_image_version": as_str, "architecture": as_str, "board_id": as_uint,
    "module_id": as_uint,
    "memory_total_bytes": _u64, "power_limit_mw": as_uint, "power_default_limit_mw": as_uint,
    "power_max_limit_mw": as_uint, "persistence_mode": _bool, "compute_capability": _capability,
}  # fmt: skip
_TABLES: Final[Mapping[str, Mapping[str, Callable[[object, str], object]]]] = {
    "pci": {"bus_id": _bus_id_text, "device_id": as_uint, "subsystem_id": as_uint},
    "mig": {"current_mode": as_uint, "pending_mode": as_uint, "devices": _mig_count},
    "fabric": {"cluster_uuid": _uuid_text, "clique_id": as_uint, "state": as_uint,
               "status": as_uint},
    "ecc": {"mode_current": as_uint, "mode_pending": as_uint, "volatile_uncorrected": _u64,
            "aggregate_uncorrected": _u64},
    "remapped_rows": {"corrected": as_uint, "uncorrected": as_uint, "pending": _bool,
                      "failure": _bool},
    "cc": {"enabled": _bool},
}  # fmt: skip
_CONTROL: Final = frozenset({"model", "count", "uuid_seed", "uuid", "state"})
GPU_KEYS: Final = _CONTROL | set(_SCALARS) | set(_TABLES)
GPU_STATES: Final = {"ok": None, "lost": "GpuIsLost", "inaccessible": "NoPermission"}


def gpu_overrides(group: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validated field overrides: scalars as Readings, tables as Unavailable or a partial dict."""
    out: dict[str, Any] = {}
    for key, check in _SCALARS.items():
        if key in group:
            value = group[key]
            out[key] = nvml_error(value, f"{where}.{key}") or check(value, f"{where}.{key}")
    for key, fields in _TABLES.items():
        if key in group:
            value = group[key]
            error = nvml_error(value, f"{where}.{key}")
            if error is not None:
                out[key] = error
                continue
            table = as_table(value, f"{where}.{key}")
            check_keys(table, set(fields), f"{where}.{key}")
            out[key] = {k: fields[k](v, f"{where}.{key}.{k}") for k, v in table.items()}
    return out


# --- host and driver -----------------------------------------------------------------------------


def parse_host(table: Mapping[str, Any], where: str) -> SimulatedHost:
    check_keys(table, {"hostname", "machine_id", "site"}, where)
    hostname = as_str(table.get("hostname", "simulated-host"), f"{where}.hostname")
    default_id = hashlib.sha256(hostname.encode()).hexdigest()[:32]
    return SimulatedHost(
        hostname=hostname,
        machine_id=as_str(table.get("machine_id", default_id), f"{where}.machine_id"),
        site=as_str(table.get("site", ""), f"{where}.site"),
    )


def parse_driver(
    value: object, first: GpuModel, where: str
) -> tuple[model.DriverInfo, model.InventoryState, str]:
    table = as_table(value, where)
    check_keys(table, {"version", "nvml_version", "cuda_version", "status", "detail"}, where)

    def reading(key: str, default: object, check: Callable[[object, str], Any]) -> Any:
        raw = table.get(key, default)
        return nvml_error(raw, f"{where}.{key}") or check(raw, f"{where}.{key}")

    status = as_str(table.get("status", "ok"), f"{where}.status")
    try:
        state = model.InventoryState(status)
    except ValueError:
        fail(f"{where}.status", f"must be one of {[s.value for s in model.InventoryState]}")
    driver = model.DriverInfo(
        driver_version=reading("version", first.driver_version, as_str),
        nvml_version=reading("nvml_version", first.nvml_version, as_str),
        cuda_driver_version=reading("cuda_version", first.cuda_driver_version, as_uint),
    )
    return driver, state, as_str(table.get("detail", ""), f"{where}.detail")
