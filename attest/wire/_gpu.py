"""GPU entries: model.Gpu <-> pb.Gpu, and the rules one entry of evidence must follow."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from google.protobuf.descriptor import FieldDescriptor

from attest import identifiers as ids
from attest import model
from attest.errors import EvidenceBoundsError, InvariantError
from attest.v1 import attest_pb2 as pb
from attest.wire import _policy as policy
from attest.wire._common import (
    NONCE_LEN,
    _absent,
    _check_strings,
    _fields,
    _plain_readings,
    _ReadingWriter,
)
from attest.wire._policy import MAX_CC_BLOB, MAX_MIG_DEVICES, MAX_STRING

_GPU_STATE = {
    model.GpuState.OK: pb.Gpu.STATE_OK,
    model.GpuState.LOST: pb.Gpu.STATE_LOST,
    model.GpuState.INACCESSIBLE: pb.Gpu.STATE_INACCESSIBLE,
}
_GPU_STATE_BACK = {v: k for k, v in _GPU_STATE.items()}


def _pci_pb(pci: model.PciInfo) -> pb.PciInfo:
    return pb.PciInfo(bus_id=pci.bus_id, device_id=pci.device_id, subsystem_id=pci.subsystem_id)


def _mig_pb(mig: model.MigInfo) -> pb.MigInfo:
    out = pb.MigInfo(current_mode=mig.current_mode, pending_mode=mig.pending_mode)
    for dev in mig.devices:
        item = out.devices.add(uuid=dev.uuid)
        w = _ReadingWriter(item.unavailable)
        w.scalar(item, "gpu_instance_id", dev.gpu_instance_id)
        w.scalar(item, "compute_instance_id", dev.compute_instance_id)
        w.scalar(item, "memory_total_bytes", dev.memory_total_bytes)
    return out


def _cc_pb(cc: model.ConfidentialComputing) -> pb.ConfidentialComputing:
    out = pb.ConfidentialComputing(enabled=cc.enabled, report_nonce=cc.report_nonce)
    w = _ReadingWriter(out.unavailable)
    w.scalar(out, "attestation_report", cc.attestation_report)
    w.scalar(out, "certificate_chain", cc.certificate_chain)
    w.scalar(out, "cec_attestation_report", cc.cec_attestation_report)
    return out


def _gpu_pb(gpu: model.Gpu) -> pb.Gpu:
    out = pb.Gpu(index=gpu.index, state=_GPU_STATE[gpu.state], uuid=gpu.uuid)
    w = _ReadingWriter(out.unavailable)
    for name in (
        "serial", "name", "board_part_number", "board_id", "module_id", "vbios_version",
        "inforom_image_version", "memory_total_bytes", "architecture", "power_limit_mw",
        "power_default_limit_mw", "power_max_limit_mw", "persistence_mode",
    ):  # fmt: skip
        w.scalar(out, name, getattr(gpu, name))
    if isinstance(gpu.compute_capability, model.Unavailable):
        out.unavailable["compute_capability"] = gpu.compute_capability.reason
    else:
        out.compute_capability_major, out.compute_capability_minor = gpu.compute_capability
    w.sub(out, "pci", gpu.pci, _pci_pb)
    w.sub(out, "mig", gpu.mig, _mig_pb)
    w.sub(out, "fabric", gpu.fabric, lambda f: pb.FabricInfo(**vars(f)))
    w.sub(out, "ecc", gpu.ecc, lambda e: pb.EccInfo(**vars(e)))
    w.sub(out, "remapped_rows", gpu.remapped_rows, lambda r: pb.RemappedRows(**vars(r)))
    w.sub(out, "cc", gpu.cc, _cc_pb)
    return out


def _mig_from_pb(msg: pb.MigInfo, where: str) -> model.MigInfo:
    policy.count(len(msg.devices), f"{where}: MIG devices", MAX_MIG_DEVICES)
    what = f"{where}.mig"
    for dev in msg.devices:
        policy.identifier(dev.uuid, f"{what} device uuid", ids.MIG_UUID)
    devices = tuple(
        model.MigDevice(
            uuid=dev.uuid,
            **_plain_readings(dev, what, _absent(dev, what, _MIG_READINGS), _MIG_PLAIN),
        )
        for dev in msg.devices
    )
    return model.MigInfo(msg.current_mode, msg.pending_mode, devices)


def _cc_from_pb(msg: pb.ConfidentialComputing, where: str) -> model.ConfidentialComputing:
    what = f"{where}.cc"
    absent = _absent(msg, what, _CC_READINGS)
    if msg.report_nonce and len(msg.report_nonce) != NONCE_LEN:
        raise InvariantError(f"{where}.cc: report nonce must be {NONCE_LEN} bytes")
    for name in _CC_PLAIN:
        if len(getattr(msg, name)) > MAX_CC_BLOB:
            raise EvidenceBoundsError(f"{what}.{name} is larger than {MAX_CC_BLOB} bytes")
    return model.ConfidentialComputing(
        enabled=msg.enabled,
        report_nonce=msg.report_nonce,
        **_plain_readings(msg, what, absent, _CC_PLAIN),
    )


# Per-class field tables, built once: the decoder runs per GPU of every envelope received.
_MIG_READINGS = _fields(model.MigDevice)
_MIG_PLAIN = ("gpu_instance_id", "compute_instance_id", "memory_total_bytes")
_CC_READINGS = _fields(model.ConfidentialComputing)
_CC_PLAIN = ("attestation_report", "certificate_chain", "cec_attestation_report")
_GPU_READINGS = _fields(model.Gpu)
#: The sub-messages with rules of their own, checked (and converted) in _checked_gpu.
_GPU_CHECKED_SUBS = ("mig", "cc")
_GPU_PLAIN_SUBS: dict[str, Callable[[Any], object]] = {
    "pci": lambda p: model.PciInfo(p.bus_id, p.device_id, p.subsystem_id),
    "fabric": lambda f: model.FabricInfo(f.cluster_uuid, f.clique_id, f.state, f.status),
    "ecc": lambda e: model.EccInfo(
        e.mode_current, e.mode_pending, e.volatile_uncorrected, e.aggregate_uncorrected
    ),
    "remapped_rows": lambda x: model.RemappedRows(x.corrected, x.uncorrected, x.pending, x.failure),
}
#: Every reading of Gpu with explicit presence; compute_capability (two fields) is apart.
_GPU_OPTIONAL = (
    "serial", "name", "board_part_number", "board_id", "module_id", "vbios_version",
    "inforom_image_version", "memory_total_bytes", "architecture", "power_limit_mw",
    "power_default_limit_mw", "power_max_limit_mw", "persistence_mode", *_GPU_CHECKED_SUBS,
    *_GPU_PLAIN_SUBS,
)  # fmt: skip
_GPU_STRINGS = tuple(
    name
    for name in _GPU_OPTIONAL
    if pb.Gpu.DESCRIPTOR.fields_by_name[name].type == FieldDescriptor.TYPE_STRING
)
if {*_GPU_OPTIONAL, "compute_capability"} != _GPU_READINGS:  # model and tables must agree
    raise RuntimeError("attest.wire: GPU reading tables do not match model.Gpu")


class _GpuRules(NamedTuple):
    """What checking one GPU entry established, for the converters that follow."""

    state: model.GpuState
    absent: Mapping[str, model.Unavailable]
    capability: model.Reading[tuple[int, int]]
    checked_subs: dict[str, object]  # mig, cc when present: converted while checked


def _checked_gpu(msg: pb.Gpu, where: str) -> _GpuRules:
    """Every rule of one GPU entry (both decoders call this, then only read fields).

    (A NamedTuple, not a dataclass: this runs per GPU of every envelope received.)"""
    state = _GPU_STATE_BACK.get(msg.state)
    if state is None:
        raise InvariantError(f"{where}: unknown state {msg.state}")
    if state is model.GpuState.OK or not ids.PLACEHOLDER_UUID.match(msg.uuid):
        policy.identifier(msg.uuid, f"{where}.uuid", ids.GPU_UUID)
    absent = _absent(msg, where, _GPU_READINGS)
    capability = _capability(msg, where, absent.get("compute_capability"))
    has: Callable[[str], bool] = msg.HasField  # type: ignore[assignment]
    for name in _GPU_OPTIONAL:  # explicit presence: exactly one of set and unavailable
        if has(name) == (name in absent):
            how = "both set and" if name in absent else "neither set nor named"
            raise InvariantError(f"{where}: {name} is {how} unavailable")
    # A string of more than MAX_STRING characters takes more than MAX_STRING bytes.
    if msg.ByteSize() > MAX_STRING:
        for name in _GPU_STRINGS:
            if name not in absent and len(getattr(msg, name)) > MAX_STRING:
                raise EvidenceBoundsError(f"{where}.{name} is longer than {MAX_STRING} characters")
    _check_gpu_strings(msg, where, absent)
    subs: dict[str, object] = {}
    if "mig" not in absent:
        subs["mig"] = _mig_from_pb(msg.mig, where)
    if "cc" not in absent:
        subs["cc"] = _cc_from_pb(msg.cc, where)
    return _GpuRules(state, absent, capability, subs)


def _check_gpu_strings(msg: pb.Gpu, where: str, absent: Mapping[str, object]) -> None:
    """The decoding policy's rules for the strings of one GPU entry (attest/wire/_policy.py)."""
    _check_strings(
        {name: None if name in absent else getattr(msg, name) for name in policy.GPU_STRINGS},
        where,
        policy.GPU_STRINGS,
    )
    if "pci" not in absent:
        policy.identifier(msg.pci.bus_id, f"{where}.pci.bus_id", ids.BUS_ID)
    if "fabric" not in absent and msg.fabric.cluster_uuid:
        cluster = msg.fabric.cluster_uuid
        policy.identifier(cluster, f"{where}.fabric.cluster_uuid", ids.PLAIN_UUID)


def _gpu_from_pb(msg: pb.Gpu, where: str) -> model.Gpu:
    rules = _checked_gpu(msg, where)
    absent = rules.absent
    values: dict[str, Any] = {
        name: absent[name] if name in absent else getattr(msg, name) for name in _GPU_OPTIONAL
    }
    values.update(rules.checked_subs)
    for name, convert in _GPU_PLAIN_SUBS.items():
        if name not in absent:
            values[name] = convert(values[name])
    return model.Gpu(
        index=msg.index,
        state=rules.state,
        uuid=msg.uuid,
        compute_capability=rules.capability,
        **values,
    )


def _gpu_claim(msg: pb.Gpu, where: str) -> CheckedGpu:
    rules = _checked_gpu(msg, where)
    absent = rules.absent
    return CheckedGpu(
        index=msg.index,
        uuid=msg.uuid,
        # Interned: a verifier holds the checked entries of every open stream, and a fleet has
        # few distinct model names.
        name=absent.get("name") or sys.intern(msg.name),
        pci_device_id=None if "pci" in absent else msg.pci.device_id,
        mig=absent.get("mig") or cast("model.MigInfo", rules.checked_subs["mig"]),
        pci_subsystem_id=None if "pci" in absent else msg.pci.subsystem_id,
        power_limit_mw=None if "power_limit_mw" in absent else msg.power_limit_mw,
        lost=rules.state is model.GpuState.LOST,
        serial=None if "serial" in absent else msg.serial,
        board_part_number=None if "board_part_number" in absent else msg.board_part_number,
    )


def _capability(
    msg: pb.Gpu, where: str, absent: model.Unavailable | None
) -> model.Reading[tuple[int, int]]:
    has_major = msg.HasField("compute_capability_major")
    has_minor = msg.HasField("compute_capability_minor")
    if absent is not None:
        if has_major or has_minor:
            raise InvariantError(f"{where}: compute_capability is both set and unavailable")
        return absent
    if not (has_major and has_minor):
        raise InvariantError(f"{where}: compute capability is neither set nor unavailable")
    return (msg.compute_capability_major, msg.compute_capability_minor)


@dataclass(frozen=True, slots=True)
class CheckedGpu:
    """One GPU entry of checked evidence, as far as the verifier's fleet state reads it."""

    index: int
    uuid: str
    name: model.Reading[str]
    pci_device_id: int | None
    mig: model.Reading[model.MigInfo]
    # Compliance classifies by (device, subsystem) id and checks power against the model's.
    pci_subsystem_id: int | None = None
    power_limit_mw: int | None = None
    # Fleet state: a GPU fallen off the bus is `lost`; serial and board part number identify
    # the board to a licence officer (None when the agent could not read them).
    lost: bool = False
    serial: str | None = None
    board_part_number: str | None = None
