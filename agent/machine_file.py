"""Simulated-machine files (docs/design.md §7): TOML in, one frozen `SimulatedMachine` out.

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
ill-typed values raise `MachineFileError`, read through `attest.tomlconf`.
"""

from __future__ import annotations

import hashlib
import re
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from agent.catalogue import GpuModel
from agent.readings import NVML_ERROR_NAMES
from attest import model
from attest import tomlconf as tc
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


def parse_toml(text: str, source: str) -> tc.Table:
    """The machine file's top-level table; raise MachineFileError when it is not TOML."""
    return tc.parse(text, source, MachineFileError)


def root_table(data: Mapping[str, Any], source: str) -> tc.Table:
    """An already-decoded machine description as a table read with MachineFileError."""
    return tc.Table(data, source, MachineFileError)


# --- typed values --------------------------------------------------------------------------------

as_str = tc.text(max_len=256, empty=True)
as_u32 = tc.integer(0, _U32)
_u64 = tc.integer(0, _U64)
_mig_count = tc.integer(0, MAX_MIG_DEVICES)
_u8 = tc.integer(0, 255)


def _capability(value: object) -> tuple[int, int]:
    if not isinstance(value, list) or len(value) != 2:
        raise tc.Invalid(f"must be [major, minor], got {tc.got(value)}")
    return (_u8(value[0]), _u8(value[1]))


def _uuid_text(value: object) -> str:
    text = as_str(value)
    try:
        return str(uuidlib.UUID(text))
    except ValueError:
        raise tc.Invalid(f"must be a UUID, got {tc.got(value)}") from None


def _bus_id_text(value: object) -> str:
    text = as_str(value)
    if not _BUS_ID.match(text):
        raise tc.Invalid(f"must be a PCI bus id such as '00000000:53:00.0', got {tc.got(text)}")
    return text


def nvml_error(value: object) -> Unavailable | None:
    """`{ error = "Name" }` as an Unavailable; None when the value is something else."""
    if not isinstance(value, dict) or "error" not in value:
        return None
    unknown = sorted(set(value) - {"error"})
    if unknown:
        raise tc.Invalid(f"an NVML error has only the key 'error', not {unknown}")
    name = value["error"]
    if name not in NVML_ERROR_NAMES:
        raise tc.Invalid(f"error must be an NVML error name such as 'NotSupported', not {name!r}")
    return Unavailable(name)


def reading(check: tc.Check[Any]) -> tc.Check[Any]:
    """A value through `check`, or `{ error = "Name" }` as an Unavailable."""
    return lambda value: nvml_error(value) or check(value)


_SCALARS: Final[Mapping[str, tc.Check[object]]] = {
    "serial": as_str, "name": as_str, "board_part_number": as_str, "vbios_version": as_str,
    "inforom_image_version": as_str, "architecture": as_str, "board_id": as_u32,
    "module_id": as_u32,
    "memory_total_bytes": _u64, "power_limit_mw": as_u32, "power_default_limit_mw": as_u32,
    "power_max_limit_mw": as_u32, "persistence_mode": tc.boolean,
    "compute_capability": _capability,
}  # fmt: skip
_TABLES: Final[Mapping[str, Mapping[str, tc.Check[object]]]] = {
    "pci": {"bus_id": _bus_id_text, "device_id": as_u32, "subsystem_id": as_u32},
    "mig": {"current_mode": as_u32, "pending_mode": as_u32, "devices": _mig_count},
    "fabric": {"cluster_uuid": _uuid_text, "clique_id": as_u32, "state": as_u32,
               "status": as_u32},
    "ecc": {"mode_current": as_u32, "mode_pending": as_u32, "volatile_uncorrected": _u64,
            "aggregate_uncorrected": _u64},
    "remapped_rows": {"corrected": as_u32, "uncorrected": as_u32, "pending": tc.boolean,
                      "failure": tc.boolean},
    "cc": {"enabled": tc.boolean},
}  # fmt: skip
GPU_STATES: Final = {"ok": None, "lost": "GpuIsLost", "inaccessible": "NoPermission"}


def gpu_overrides(group: tc.Table) -> dict[str, Any]:
    """Validated field overrides: scalars as Readings, tables as Unavailable or a partial dict."""
    out: dict[str, Any] = {}
    for key, check in _SCALARS.items():
        if key in group:
            out[key] = group.get(key, reading(check))
    for key, fields in _TABLES.items():
        if key not in group:
            continue
        error = group.get(key, nvml_error)
        if error is not None:
            out[key] = error
            continue
        table = group.table(key)
        out[key] = {k: table.get(k, check) for k, check in fields.items() if k in table}
        table.done()
    return out


# --- host and driver -----------------------------------------------------------------------------


def parse_host(table: tc.Table) -> SimulatedHost:
    hostname = table.get("hostname", as_str, "simulated-host")
    default_id = hashlib.sha256(hostname.encode()).hexdigest()[:32]
    host = SimulatedHost(
        hostname=hostname,
        machine_id=table.get("machine_id", as_str, default_id),
        site=table.get("site", as_str, ""),
    )
    table.done()
    return host


_STATUS: Final = tc.one_of([s.value for s in model.InventoryState])


def parse_driver(
    table: tc.Table, first: GpuModel
) -> tuple[model.DriverInfo, model.InventoryState, str]:
    driver = model.DriverInfo(
        driver_version=table.get("version", reading(as_str), first.driver_version),
        nvml_version=table.get("nvml_version", reading(as_str), first.nvml_version),
        cuda_driver_version=table.get("cuda_version", reading(as_u32), first.cuda_driver_version),
    )
    state = model.InventoryState(table.get("status", _STATUS, "ok"))
    detail = table.get("detail", as_str, "")
    table.done()
    return driver, state, detail
