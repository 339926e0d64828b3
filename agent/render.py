"""The stable JSON form of an inventory (`gpu-attest-agent inventory --json`) and its parser.

Shape (schema "gpu-attest.inventory/v1"); every key is always present:

```
{"schema": "gpu-attest.inventory/v1",
 "status": {"state": "ok" | "library-not-found" | "driver-not-loaded" | "error",
            "detail": str, "device_count": int},
 "driver": {"driver_version": R[str], "nvml_version": R[str], "cuda_driver_version": R[int]},
 "gpus": [{"index": int, "state": "ok" | "lost" | "inaccessible", "uuid": str,
           "serial", "name", "board_part_number", "vbios_version", "inforom_image_version",
           "architecture": R[str], "board_id", "module_id", "memory_total_bytes",
           "power_limit_mw", "power_default_limit_mw", "power_max_limit_mw": R[int],
           "persistence_mode": R[bool], "compute_capability": R[[major, minor]],
           "pci": R[{"bus_id": str, "device_id": int, "subsystem_id": int}],
           "mig": R[{"current_mode": int, "pending_mode": int, "devices": [{"uuid": str,
                     "gpu_instance_id": R[int], "compute_instance_id": R[int],
                     "memory_total_bytes": R[int]}]}],
           "fabric": R[{"cluster_uuid": str, "clique_id": int, "state": int, "status": int}],
           "ecc": R[{"mode_current": int, "mode_pending": int, "volatile_uncorrected": int,
                     "aggregate_uncorrected": int}],
           "remapped_rows": R[{"corrected": int, "uncorrected": int, "pending": bool,
                               "failure": bool}],
           "cc": R[{"enabled": bool, "attestation_report": R[b64], "certificate_chain": R[b64],
                    "cec_attestation_report": R[b64], "report_nonce": b64}]}],
 "host": {...}}          # only when a host was given: its fields, same conventions
```

R[T] is either the value or `{"unavailable": "<reason>"}` (an NVML error name such as
"NotSupported", or one of agent.readings' own reasons); b64 is standard base64 of the raw bytes.
Field names are those of `attest.model`, so the shape changes only with the model.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
from collections.abc import Callable, Mapping
from typing import Any, Final, NoReturn, TypeVar

from agent.machine_file import SimulatedHost
from attest import model
from attest.errors import DecodeError
from attest.model import Reading, Unavailable

SCHEMA: Final = "gpu-attest.inventory/v1"
T = TypeVar("T")


def inventory_to_json(
    inventory: model.Inventory, host: model.HostFacts | SimulatedHost | None = None
) -> dict[str, Any]:
    """The JSON-ready dict of an inventory (and of the host, when given). Pure."""
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "status": to_json(inventory.status),
        "driver": to_json(inventory.driver),
        "gpus": [to_json(gpu) for gpu in inventory.gpus],
    }
    if host is not None:
        out["host"] = to_json(host)
    return out


def to_json(value: object) -> Any:
    """Any model value as JSON-ready data, by the conventions in this module's docstring."""
    if isinstance(value, Unavailable):
        return {"unavailable": value.reason}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [to_json(item) for item in value]
    return value


# --- parsing back (captures committed as fixtures, round trips) ----------------------------------


def _fail(where: str, message: str) -> NoReturn:
    raise DecodeError(f"inventory JSON {where}: {message}")


def _obj(value: object, where: str, keys: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict) or set(value) != keys:
        _fail(where, f"must be an object with exactly the keys {sorted(keys)}")
    return value


def _s(value: object, where: str) -> str:
    if not isinstance(value, str):
        _fail(where, "must be a string")
    return value


def _i(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        _fail(where, "must be a non-negative integer")
    return value


def _b(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        _fail(where, "must be true or false")
    return value


def _bytes(value: object, where: str) -> bytes:
    try:
        return base64.b64decode(_s(value, where), validate=True)
    except (binascii.Error, ValueError):  # ValueError: characters outside ASCII
        _fail(where, "must be base64")


def _r(value: object, where: str, convert: Callable[[object, str], T]) -> Reading[T]:
    if isinstance(value, dict) and "unavailable" in value:
        return Unavailable(_s(_obj(value, where, frozenset({"unavailable"}))["unavailable"], where))
    return convert(value, where)


def _names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


def _enum(cls: type[enum.Enum], value: object, where: str) -> Any:
    try:
        return cls(_s(value, where))
    except ValueError:
        _fail(where, f"must be one of {[member.value for member in cls]}")


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        _fail(where, "must be an array")
    return value


def _record(cls: type[T], fields: Mapping[str, Callable[[object, str], Any]]) -> Any:
    """A parser of one dataclass whose fields are plain (never Unavailable) values."""

    def parse(value: object, where: str) -> T:
        data = _obj(value, where, _names(cls))
        return cls(**{k: check(data[k], f"{where}.{k}") for k, check in fields.items()})

    return parse


_pci = _record(model.PciInfo, {"bus_id": _s, "device_id": _i, "subsystem_id": _i})
_fabric = _record(
    model.FabricInfo, {"cluster_uuid": _s, "clique_id": _i, "state": _i, "status": _i}
)
_ecc = _record(
    model.EccInfo,
    {"mode_current": _i, "mode_pending": _i, "volatile_uncorrected": _i,
     "aggregate_uncorrected": _i},
)  # fmt: skip
_rows = _record(
    model.RemappedRows, {"corrected": _i, "uncorrected": _i, "pending": _b, "failure": _b}
)


def _mig_device(value: object, where: str) -> model.MigDevice:
    data = _obj(value, where, _names(model.MigDevice))
    return model.MigDevice(
        uuid=_s(data["uuid"], f"{where}.uuid"),
        gpu_instance_id=_r(data["gpu_instance_id"], f"{where}.gpu_instance_id", _i),
        compute_instance_id=_r(data["compute_instance_id"], f"{where}.compute_instance_id", _i),
        memory_total_bytes=_r(data["memory_total_bytes"], f"{where}.memory_total_bytes", _i),
    )


def _mig(value: object, where: str) -> model.MigInfo:
    data = _obj(value, where, _names(model.MigInfo))
    devices = _list(data["devices"], f"{where}.devices")
    return model.MigInfo(
        current_mode=_i(data["current_mode"], f"{where}.current_mode"),
        pending_mode=_i(data["pending_mode"], f"{where}.pending_mode"),
        devices=tuple(_mig_device(d, f"{where}.devices[{n}]") for n, d in enumerate(devices)),
    )


def _cc(value: object, where: str) -> model.ConfidentialComputing:
    data = _obj(value, where, _names(model.ConfidentialComputing))
    return model.ConfidentialComputing(
        enabled=_b(data["enabled"], f"{where}.enabled"),
        attestation_report=_r(data["attestation_report"], f"{where}.attestation_report", _bytes),
        certificate_chain=_r(data["certificate_chain"], f"{where}.certificate_chain", _bytes),
        cec_attestation_report=_r(
            data["cec_attestation_report"], f"{where}.cec_attestation_report", _bytes
        ),
        report_nonce=_bytes(data["report_nonce"], f"{where}.report_nonce"),
    )


def _capability(value: object, where: str) -> tuple[int, int]:
    pair = _list(value, where)
    if len(pair) != 2:
        _fail(where, "must be [major, minor]")
    return (_i(pair[0], where), _i(pair[1], where))


_GPU_READINGS: Final[Mapping[str, Callable[[object, str], Any]]] = {
    "serial": _s, "name": _s, "board_part_number": _s, "board_id": _i, "module_id": _i,
    "pci": _pci, "vbios_version": _s, "inforom_image_version": _s, "memory_total_bytes": _i,
    "architecture": _s, "compute_capability": _capability, "power_limit_mw": _i,
    "power_default_limit_mw": _i, "power_max_limit_mw": _i, "mig": _mig, "fabric": _fabric,
    "ecc": _ecc, "remapped_rows": _rows, "persistence_mode": _b, "cc": _cc,
}  # fmt: skip


def _gpu(value: object, where: str) -> model.Gpu:
    data = _obj(value, where, _names(model.Gpu))
    readings = {k: _r(data[k], f"{where}.{k}", parse) for k, parse in _GPU_READINGS.items()}
    return model.Gpu(
        index=_i(data["index"], f"{where}.index"),
        state=_enum(model.GpuState, data["state"], f"{where}.state"),
        uuid=_s(data["uuid"], f"{where}.uuid"),
        **readings,
    )


def inventory_from_json(data: object) -> model.Inventory:
    """Parse the dict `inventory_to_json` produces (the `host` key is ignored).

    Raises `DecodeError` for anything else: a missing or extra key, a wrong type, bad base64.
    """
    if not isinstance(data, dict):
        _fail("document", "must be an object")
    allowed = {"schema", "status", "driver", "gpus", "host"}
    if not {"schema", "status", "driver", "gpus"} <= set(data) <= allowed:
        _fail("document", f"must have the keys {sorted(allowed)} (host optional)")
    if data["schema"] != SCHEMA:
        _fail("schema", f"must be {SCHEMA!r}")
    status = _obj(data["status"], "status", _names(model.InventoryStatus))
    driver = _obj(data["driver"], "driver", _names(model.DriverInfo))
    gpus = _list(data["gpus"], "gpus")
    return model.Inventory(
        driver=model.DriverInfo(
            driver_version=_r(driver["driver_version"], "driver.driver_version", _s),
            nvml_version=_r(driver["nvml_version"], "driver.nvml_version", _s),
            cuda_driver_version=_r(driver["cuda_driver_version"], "driver.cuda", _i),
        ),
        status=model.InventoryStatus(
            state=_enum(model.InventoryState, status["state"], "status.state"),
            detail=_s(status["detail"], "status.detail"),
            device_count=_i(status["device_count"], "status.device_count"),
        ),
        gpus=tuple(_gpu(gpu, f"gpus[{n}]") for n, gpu in enumerate(gpus)),
    )
