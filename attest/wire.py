"""Wire <-> domain conversion. The only module besides the gRPC shells that touches `*_pb2`.

Decoders take untrusted bytes and either return validated frozen values or raise `DecodeError`
(or a subclass). They never return partially parsed data.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar, cast

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from attest import model
from attest.envelope import Envelope, EnvelopeSignature
from attest.errors import DecodeError, InvariantError, SizeLimitError
from attest.v1 import attest_pb2 as pb

T = TypeVar("T")
M = TypeVar("M", bound=Message)

#: Default bound on one serialized envelope; the verifier's configured limit may be lower.
MAX_ENVELOPE_BYTES = 4 * 1024 * 1024
MAX_GPUS = 1024
MAX_MIG_DEVICES = 64
MAX_POSTURE_CHECKS = 256
MAX_LANDMARKS = 64
MAX_STRING = 4096
HASH_LEN = 32
NONCE_LEN = 32
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_REASON = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def _parse(message: M, raw: bytes, what: str, *, reject_unknown: bool = True) -> M:
    try:
        message.ParseFromString(raw)
    except (ProtobufDecodeError, ValueError, RuntimeError) as exc:
        raise DecodeError(f"{what} is not a valid protobuf message: {exc}") from exc
    if reject_unknown and _has_unknown_fields(message):
        raise DecodeError(f"{what} carries fields this version does not know")
    return message


def _has_unknown_fields(message: Message) -> bool:
    """Whether `message`, or any message inside it, carries fields this version does not know.

    Drops them while looking (the caller refuses such a message): DiscardUnknownFields removes
    unknown fields and nothing else, at every depth, and each one takes at least a byte, so the
    serialized size changes exactly when there were some. Two C-level passes instead of a
    Python walk over every sub-message.
    """
    size = message.ByteSize()
    message.DiscardUnknownFields()
    return message.ByteSize() != size


# --- timestamps --------------------------------------------------------------------------------


def _ts(when: datetime) -> Timestamp:
    if when.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    # What Timestamp.FromDatetime computes, without its Python-level calendar round trip
    # (receipts and challenges are encoded per envelope). Every datetime is in range.
    seconds, micros = divmod((when - _EPOCH) // _MICROSECOND, 1_000_000)
    return Timestamp(seconds=seconds, nanos=micros * 1000)


def _from_ts(stamp: Timestamp, what: str) -> datetime:
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise DecodeError(f"{what} is not a valid timestamp") from exc


# --- envelope ----------------------------------------------------------------------------------


def encode_envelope(envelope: Envelope) -> bytes:
    msg = pb.Envelope(
        payload=envelope.payload,
        payload_type=envelope.payload_type,
        signatures=[pb.Signature(sig=s.sig, keyid=s.keyid) for s in envelope.signatures],
    )
    return msg.SerializeToString(deterministic=True)


def decode_envelope(raw: bytes, max_bytes: int = MAX_ENVELOPE_BYTES) -> Envelope:
    """Parse serialized Envelope bytes (untrusted). Raise SizeLimitError or DecodeError."""
    if len(raw) > max_bytes:
        raise SizeLimitError(f"envelope of {len(raw)} bytes exceeds the limit of {max_bytes}")
    msg = _parse(pb.Envelope(), raw, "envelope")
    if not msg.payload_type or len(msg.payload_type) > 256:
        raise DecodeError("envelope payload type is missing or too long")
    return Envelope(
        payload_type=msg.payload_type,
        payload=msg.payload,
        signatures=tuple(EnvelopeSignature(keyid=s.keyid, sig=s.sig) for s in msg.signatures),
    )


# --- readings: set value, or unset and named in `unavailable` ----------------------------------


class _ReadingWriter:
    """Collects readings into a message and its `unavailable` map."""

    def __init__(self, unavailable: MutableMapping[str, str]) -> None:
        self.unavailable = unavailable

    def scalar(self, msg: Any, name: str, reading: object) -> None:
        if isinstance(reading, model.Unavailable):
            self.unavailable[name] = reading.reason
        else:
            setattr(msg, name, reading)

    def sub(self, msg: Any, name: str, reading: object, build: Callable[[Any], Message]) -> None:
        if isinstance(reading, model.Unavailable):
            self.unavailable[name] = reading.reason
        else:
            getattr(msg, name).CopyFrom(build(reading))


#: One shared Unavailable per reason already seen (frozen, so sharing is safe); a reason found
#: here has passed _REASON. Bounded: reasons come from the sender.
_UNAVAILABLE: dict[str, model.Unavailable] = {}
_UNAVAILABLE_CACHED = 256
_NOTHING_ABSENT: Mapping[str, model.Unavailable] = MappingProxyType({})


def _absent(msg: Any, what: str, readings: frozenset[str]) -> Mapping[str, model.Unavailable]:
    """The readings `msg.unavailable` names: each must be a reading field with a sane reason."""
    unavailable = msg.unavailable
    if not unavailable:
        return _NOTHING_ABSENT
    out: dict[str, model.Unavailable] = {}
    for name in unavailable:  # keys, then [name]: the map's items() is a Python-level view
        reason = unavailable[name]
        if name not in readings:
            unknown = sorted(set(unavailable) - readings)
            raise InvariantError(f"{what}: unavailable names unknown fields {unknown}")
        reading = _UNAVAILABLE.get(reason)
        if reading is None:
            if not _REASON.match(reason):
                raise InvariantError(f"{what}: unavailable reason {reason[:40]!r} is malformed")
            reading = model.Unavailable(reason)
            if len(_UNAVAILABLE) < _UNAVAILABLE_CACHED:
                _UNAVAILABLE[reason] = reading
        out[name] = reading
    return out


def _plain_readings(
    msg: Any, what: str, absent: Mapping[str, model.Unavailable], names: tuple[str, ...]
) -> dict[str, Any]:
    """Plain proto3 scalars: unavailable only when named, and then they must hold the default."""
    out: dict[str, Any] = {}
    for name in names:
        value = getattr(msg, name)
        reading = absent.get(name)
        if reading is not None:
            if value:
                raise InvariantError(f"{what}: {name} is both set and unavailable")
            out[name] = reading
        else:
            if isinstance(value, str) and len(value) > MAX_STRING:
                raise InvariantError(f"{what}.{name} is longer than {MAX_STRING} characters")
            out[name] = value
    return out


def _fields(cls: type) -> frozenset[str]:
    """The fields of a model class that hold a `Reading`, the only ones that may be absent."""
    return frozenset(
        f.name
        for f in dataclasses.fields(cls)
        if str(f.type).startswith("Reading[") or "Unavailable" in str(f.type)
    )


# --- GPU ---------------------------------------------------------------------------------------

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
    if len(msg.devices) > MAX_MIG_DEVICES:
        raise InvariantError(f"{where}: more than {MAX_MIG_DEVICES} MIG devices")
    what = f"{where}.mig"
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
    uuid = msg.uuid
    if not uuid or len(uuid) > 128:
        raise InvariantError(f"{where}: uuid is missing or too long")
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
                raise InvariantError(f"{where}.{name} is longer than {MAX_STRING} characters")
    subs: dict[str, object] = {}
    if "mig" not in absent:
        subs["mig"] = _mig_from_pb(msg.mig, where)
    if "cc" not in absent:
        subs["cc"] = _cc_from_pb(msg.cc, where)
    return _GpuRules(state, absent, capability, subs)


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
        name=absent.get("name", msg.name),
        pci_device_id=None if "pci" in absent else msg.pci.device_id,
        mig=absent.get("mig") or cast("model.MigInfo", rules.checked_subs["mig"]),
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


# --- host and driver ---------------------------------------------------------------------------

_HOST_FIELDS = tuple(sorted(_fields(model.HostFacts)))
_DRIVER_FIELDS = ("driver_version", "nvml_version", "cuda_driver_version")
_HOST_READINGS = frozenset(_HOST_FIELDS)
_DRIVER_READINGS = frozenset(_DRIVER_FIELDS)


def _host_pb(host: model.HostFacts) -> pb.HostFacts:
    out = pb.HostFacts()
    w = _ReadingWriter(out.unavailable)
    for name in sorted(_HOST_FIELDS):
        w.scalar(out, name, getattr(host, name))
    return out


def _driver_pb(driver: model.DriverInfo) -> pb.DriverInfo:
    out = pb.DriverInfo()
    w = _ReadingWriter(out.unavailable)
    for name in _DRIVER_FIELDS:
        w.scalar(out, name, getattr(driver, name))
    return out


def _host_from_pb(msg: pb.HostFacts) -> model.HostFacts:
    absent = _absent(msg, "host", _HOST_READINGS)
    return model.HostFacts(**_plain_readings(msg, "host", absent, _HOST_FIELDS))


def _driver_from_pb(msg: pb.DriverInfo) -> model.DriverInfo:
    absent = _absent(msg, "driver", _DRIVER_READINGS)
    return model.DriverInfo(**_plain_readings(msg, "driver", absent, _DRIVER_FIELDS))


# --- evidence ----------------------------------------------------------------------------------

_INVENTORY_STATE = {
    model.InventoryState.OK: pb.InventoryStatus.STATE_OK,
    model.InventoryState.LIBRARY_NOT_FOUND: pb.InventoryStatus.STATE_LIBRARY_NOT_FOUND,
    model.InventoryState.DRIVER_NOT_LOADED: pb.InventoryStatus.STATE_DRIVER_NOT_LOADED,
    model.InventoryState.ERROR: pb.InventoryStatus.STATE_ERROR,
}
_INVENTORY_STATE_BACK = {v: k for k, v in _INVENTORY_STATE.items()}
_POSTURE = {
    model.PostureResult.PASS: pb.PostureCheck.RESULT_PASS,
    model.PostureResult.FAIL: pb.PostureCheck.RESULT_FAIL,
    model.PostureResult.UNKNOWN: pb.PostureCheck.RESULT_UNKNOWN,
}
_POSTURE_BACK = {v: k for k, v in _POSTURE.items()}


def encode_evidence(evidence: model.Evidence) -> bytes:
    """Serialize evidence once; these bytes are what the agent signs and the verifier stores."""
    msg = pb.Evidence(
        agent_id=evidence.agent_id,
        seq=evidence.seq,
        prev_hash=evidence.prev_hash,
        nonce=evidence.nonce,
        created_at=_ts(evidence.created_at),
        agent_version=evidence.agent_version,
        host=_host_pb(evidence.host),
        driver=_driver_pb(evidence.driver),
        inventory=pb.InventoryStatus(
            state=_INVENTORY_STATE[evidence.inventory.state],
            detail=evidence.inventory.detail,
            device_count=evidence.inventory.device_count,
        ),
        gpus=[_gpu_pb(g) for g in evidence.gpus],
        site=pb.SiteClaim(site_id=evidence.site_id),
        posture=[
            pb.PostureCheck(name=p.name, result=_POSTURE[p.result], detail=p.detail)
            for p in evidence.posture
        ],
        landmarks=[
            pb.LandmarkMeasurement(
                landmark_id=m.landmark_id, statement=m.statement, rtt_us=list(m.rtt_us)
            )
            for m in evidence.landmarks
        ],
    )
    return msg.SerializeToString(deterministic=True)


@dataclass(frozen=True)
class CheckedGpu:
    """One GPU entry of checked evidence, as far as the verifier's fleet state reads it."""

    index: int
    uuid: str
    name: model.Reading[str]
    pci_device_id: int | None
    mig: model.Reading[model.MigInfo]


@dataclass(frozen=True)
class CheckedEvidence:
    """Evidence that passed every rule `decode_evidence` applies; only the GPU entries are
    left unconverted beyond what `CheckedGpu` holds (they are the bulk of a payload)."""

    agent_id: str
    seq: int
    prev_hash: bytes
    nonce: bytes
    created_at: datetime
    agent_version: str
    host: model.HostFacts
    driver: model.DriverInfo
    inventory: model.InventoryStatus
    gpus: tuple[CheckedGpu, ...]
    site_id: str
    posture: tuple[model.PostureCheck, ...]
    landmarks: tuple[model.LandmarkMeasurement, ...]


def decode_evidence(payload: bytes) -> model.Evidence:
    """Parse and validate an evidence payload whose signature has already been verified.

    Raises DecodeError when the bytes are not an Evidence message, InvariantError when the
    message breaks a rule of the contract (duplicate GPU UUID, malformed hash, sizes).
    """
    return model.Evidence(**_checked_evidence(payload, _gpu_from_pb))


def check_evidence(payload: bytes) -> CheckedEvidence:
    """Apply every rule of `decode_evidence` to `payload` (the same code runs), converting the
    GPU entries only as far as `CheckedGpu`: the verifier's per-envelope path.

    Accepts exactly the payloads `decode_evidence` accepts; raises what it raises.
    """
    return CheckedEvidence(**_checked_evidence(payload, _gpu_claim))


def _checked_evidence(payload: bytes, gpu: Callable[[pb.Gpu, str], object]) -> dict[str, Any]:
    """The fields of the evidence in `payload`, every rule applied; `gpu` converts (and
    checks, through _checked_gpu) each GPU entry."""
    msg = _parse(pb.Evidence(), payload, "evidence")
    if not msg.agent_id or len(msg.agent_id) > 128:
        raise InvariantError("evidence agent_id is missing or too long")
    if msg.seq < 1:
        raise InvariantError("evidence seq must start at 1")
    if msg.seq == 1 and msg.prev_hash:
        raise InvariantError("the first evidence of a chain has no previous hash")
    if msg.seq > 1 and len(msg.prev_hash) != HASH_LEN:
        raise InvariantError(f"evidence prev_hash must be {HASH_LEN} bytes")
    if msg.nonce and len(msg.nonce) != NONCE_LEN:
        raise InvariantError(f"evidence nonce must be empty or {NONCE_LEN} bytes")
    if not msg.HasField("created_at"):
        raise InvariantError("evidence has no creation time")
    for name in ("host", "driver", "inventory", "site"):
        if not msg.HasField(name):
            raise InvariantError(f"evidence has no {name} section")
    if len(msg.gpus) > MAX_GPUS:
        raise InvariantError(f"evidence lists more than {MAX_GPUS} GPUs")
    if len(msg.posture) > MAX_POSTURE_CHECKS or len(msg.landmarks) > MAX_LANDMARKS:
        raise InvariantError("evidence lists too many posture checks or landmarks")
    if msg.inventory.state not in _INVENTORY_STATE_BACK:
        raise InvariantError(f"unknown inventory state {msg.inventory.state}")
    gpus = tuple(gpu(g, f"gpu[{i}]") for i, g in enumerate(msg.gpus))
    uuids = [g.uuid for g in msg.gpus]
    if len(set(uuids)) != len(uuids):
        seen: set[str] = set()
        for uuid in uuids:
            if uuid in seen:
                raise InvariantError(f"GPU {uuid} appears twice in one evidence")
            seen.add(uuid)
    posture = []
    for check in msg.posture:
        if check.result not in _POSTURE_BACK or not check.name:
            raise InvariantError("posture check without a name or with an unknown result")
        posture.append(model.PostureCheck(check.name, _POSTURE_BACK[check.result], check.detail))
    return {
        "agent_id": msg.agent_id,
        "seq": msg.seq,
        "prev_hash": msg.prev_hash,
        "nonce": msg.nonce,
        "created_at": _from_ts(msg.created_at, "evidence created_at"),
        "agent_version": msg.agent_version,
        "host": _host_from_pb(msg.host),
        "driver": _driver_from_pb(msg.driver),
        "inventory": model.InventoryStatus(
            _INVENTORY_STATE_BACK[msg.inventory.state],
            msg.inventory.detail,
            msg.inventory.device_count,
        ),
        "gpus": gpus,
        "site_id": msg.site.site_id,
        "posture": tuple(posture),
        "landmarks": tuple(
            model.LandmarkMeasurement(m.landmark_id, m.statement, tuple(m.rtt_us))
            for m in msg.landmarks
        ),
    }


# --- receipts, challenges, rejections ----------------------------------------------------------

_FRESHNESS = {
    model.Freshness.NONCE: pb.ReceiptBody.FRESHNESS_NONCE,
    model.Freshness.OFFLINE: pb.ReceiptBody.FRESHNESS_OFFLINE,
}
_FRESHNESS_BACK = {v: k for k, v in _FRESHNESS.items()}


def encode_receipt(receipt: model.Receipt) -> bytes:
    return pb.ReceiptBody(
        agent_id=receipt.agent_id,
        seq=receipt.seq,
        envelope_hash=receipt.envelope_hash,
        log_index=receipt.log_index,
        checkpoint=receipt.checkpoint,
        accepted_at=_ts(receipt.accepted_at),
        freshness=_FRESHNESS[receipt.freshness],
    ).SerializeToString(deterministic=True)


def decode_receipt(payload: bytes) -> model.Receipt:
    msg = _parse(pb.ReceiptBody(), payload, "receipt")
    if msg.freshness not in _FRESHNESS_BACK or len(msg.envelope_hash) != HASH_LEN:
        raise InvariantError("receipt has an unknown freshness or a malformed hash")
    return model.Receipt(
        agent_id=msg.agent_id,
        seq=msg.seq,
        envelope_hash=msg.envelope_hash,
        log_index=msg.log_index,
        checkpoint=msg.checkpoint,
        accepted_at=_from_ts(msg.accepted_at, "receipt accepted_at"),
        freshness=_FRESHNESS_BACK[msg.freshness],
    )


def challenge_to_pb(challenge: model.Challenge) -> pb.Challenge:
    return pb.Challenge(
        nonce=challenge.nonce,
        expires_at=_ts(challenge.expires_at),
        last_seq=challenge.last_seq,
        last_hash=challenge.last_hash,
    )


def challenge_from_pb(msg: pb.Challenge) -> model.Challenge:
    if len(msg.nonce) != NONCE_LEN:
        raise InvariantError(f"challenge nonce must be {NONCE_LEN} bytes")
    if msg.last_hash and len(msg.last_hash) != HASH_LEN:
        raise InvariantError("challenge last_hash is malformed")
    return model.Challenge(
        nonce=msg.nonce,
        expires_at=_from_ts(msg.expires_at, "challenge expires_at"),
        last_seq=msg.last_seq,
        last_hash=msg.last_hash,
    )


def rejection_to_pb(rejection: model.Rejection) -> pb.Rejection:
    return pb.Rejection(
        seq=rejection.seq,
        envelope_hash=rejection.envelope_hash,
        code=rejection.code,
        message=rejection.message,
        retryable=rejection.retryable,
    )


def rejection_from_pb(msg: pb.Rejection) -> model.Rejection:
    return model.Rejection(msg.seq, msg.envelope_hash, msg.code, msg.message, msg.retryable)
