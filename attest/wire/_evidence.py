"""Evidence: host, driver and the whole Evidence message; decode_evidence and check_evidence."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from attest import identifiers as ids
from attest import model
from attest.errors import InvariantError
from attest.v1 import attest_pb2 as pb
from attest.wire import _policy as policy
from attest.wire._common import (
    HASH_LEN,
    NONCE_LEN,
    _absent,
    _check_strings,
    _fields,
    _from_ts,
    _parse,
    _plain_readings,
    _ReadingWriter,
    _ts,
)
from attest.wire._gpu import CheckedGpu, _gpu_claim, _gpu_from_pb, _gpu_pb
from attest.wire._policy import MAX_GPUS, MAX_LANDMARKS, MAX_POSTURE_CHECKS, MAX_STRING

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
    values = _plain_readings(msg, "host", absent, _HOST_FIELDS)
    _check_strings(values, "host", policy.HOST_STRINGS)
    return model.HostFacts(**values)


def _driver_from_pb(msg: pb.DriverInfo) -> model.DriverInfo:
    absent = _absent(msg, "driver", _DRIVER_READINGS)
    values = _plain_readings(msg, "driver", absent, _DRIVER_FIELDS)
    _check_strings(values, "driver", policy.DRIVER_STRINGS)
    return model.DriverInfo(**values)


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
    gpu_digest: bytes  # of the GPU entries' exact bytes: see GpuSection

    @property
    def gpu_section(self) -> GpuSection:
        return GpuSection(self.gpu_digest, self.gpus)


@dataclass(frozen=True, slots=True)
class GpuSection:
    """Checked GPU entries and the SHA-256 of their exact bytes (each length-prefixed).

    Checking is a pure function of those bytes, so a later payload whose GPU entries have the
    same digest has the same checked entries: `check_evidence(payload, known=section)` reuses
    them instead of checking every entry again (a host's GPUs rarely change between
    attestations, and they are most of a payload). It never changes what is accepted.
    """

    digest: bytes
    gpus: tuple[CheckedGpu, ...]


def decode_evidence(payload: bytes) -> model.Evidence:
    """Parse and validate an evidence payload whose signature has already been verified.

    Raises DecodeError when the bytes are not an Evidence message, InvariantError when the
    message breaks a rule of the contract (duplicate GPU UUID, malformed hash, sizes).
    """
    return model.Evidence(**_checked_evidence(payload, _gpu_from_pb))


def check_evidence(payload: bytes, known: GpuSection | None = None) -> CheckedEvidence:
    """Apply every rule of `decode_evidence` to `payload` (the same code runs), converting the
    GPU entries only as far as `CheckedGpu`: the verifier's per-envelope path.

    `known`, the GPU section of an earlier payload, is reused when the GPU entries are the same
    bytes (see GpuSection). Accepts exactly the payloads `decode_evidence` accepts; raises what
    it raises.
    """
    msg = _parse(pb.Evidence(), payload, "evidence")
    digest = _gpu_digest(payload)
    reuse = known.gpus if known is not None and known.digest == digest else None
    return CheckedEvidence(**_checked_fields(msg, _gpu_claim, reuse), gpu_digest=digest)


def _gpu_digest(payload: bytes) -> bytes:
    """SHA-256 over the GPU entries of a payload that parsed as Evidence, each length-prefixed
    (so that entries cannot be re-split without changing it). Every other field of Evidence
    is unknown to the view, hence not refused."""
    digest = hashlib.sha256()
    view = _parse(pb.EvidenceGpuEntries(), payload, "evidence", reject_unknown=False)
    for entry in view.gpus:
        digest.update(len(entry).to_bytes(4, "big"))
        digest.update(entry)
    return digest.digest()


def _checked_evidence(payload: bytes, gpu: Callable[[pb.Gpu, str], object]) -> dict[str, Any]:
    """The fields of the evidence in `payload`, every rule applied; `gpu` converts (and
    checks, through _checked_gpu) each GPU entry."""
    return _checked_fields(_parse(pb.Evidence(), payload, "evidence"), gpu, None)


def _check_bounds(msg: pb.Evidence) -> None:
    """The decoding policy (attest/wire/_policy.py) for the fields outside GPU entries."""
    policy.count(len(msg.gpus), "GPUs in one evidence", MAX_GPUS)
    policy.count(msg.inventory.device_count, "NVML device count", MAX_GPUS)
    policy.count(len(msg.posture), "posture checks", MAX_POSTURE_CHECKS)
    policy.count(len(msg.landmarks), "landmark measurements", MAX_LANDMARKS)
    policy.identifier(msg.agent_id, "evidence agent_id", ids.TOKEN)
    policy.text(msg.agent_version, "evidence agent_version", 64)
    policy.text(msg.site.site_id, "evidence site", 128)
    policy.text(msg.inventory.detail, "inventory detail", MAX_STRING)
    for check in msg.posture:
        policy.identifier(check.name, "posture check name", ids.TOKEN)
        policy.text(check.detail, f"posture {check.name} detail", MAX_STRING)
    for measurement in msg.landmarks:
        policy.identifier(measurement.landmark_id, "landmark id", ids.TOKEN)


def _checked_fields(
    msg: pb.Evidence, gpu: Callable[[pb.Gpu, str], object], reuse: tuple[object, ...] | None
) -> dict[str, Any]:
    """`_checked_evidence` of a parsed message; `reuse`: the GPU entries, already checked."""
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
    _check_bounds(msg)
    if msg.inventory.state not in _INVENTORY_STATE_BACK:
        raise InvariantError(f"unknown inventory state {msg.inventory.state}")
    if reuse is not None:
        gpus = reuse
    else:
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
