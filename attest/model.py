"""Domain values of the evidence contract: frozen, validated, free of protobuf.

A reading the host or NVML could not provide is an `Unavailable` carrying the reason (the NVML
error name such as "NotSupported", or a host-side reason such as "NotFound"), never an empty
string or a zero that could be mistaken for a value.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Unavailable:
    """Why a reading is absent."""

    reason: str


Reading: TypeAlias = T | Unavailable

# --- GPU ---------------------------------------------------------------------------------------


class GpuState(enum.Enum):
    OK = "ok"
    LOST = "lost"
    INACCESSIBLE = "inaccessible"


@dataclass(frozen=True)
class PciInfo:
    bus_id: str
    device_id: int  # (device << 16) | vendor
    subsystem_id: int


@dataclass(frozen=True)
class MigDevice:
    uuid: str
    gpu_instance_id: Reading[int]
    compute_instance_id: Reading[int]
    memory_total_bytes: Reading[int]


@dataclass(frozen=True)
class MigInfo:
    current_mode: int
    pending_mode: int
    devices: tuple[MigDevice, ...] = ()


@dataclass(frozen=True)
class FabricInfo:
    cluster_uuid: str
    clique_id: int
    state: int
    status: int


@dataclass(frozen=True)
class EccInfo:
    mode_current: int
    mode_pending: int
    volatile_uncorrected: int
    aggregate_uncorrected: int


@dataclass(frozen=True)
class RemappedRows:
    corrected: int
    uncorrected: int
    pending: bool
    failure: bool


@dataclass(frozen=True)
class ConfidentialComputing:
    enabled: bool
    attestation_report: Reading[bytes]
    certificate_chain: Reading[bytes]
    cec_attestation_report: Reading[bytes]
    report_nonce: bytes = b""


@dataclass(frozen=True)
class Gpu:
    """One physical GPU as NVML reported it. `uuid` is the identity."""

    index: int
    state: GpuState
    uuid: str
    serial: Reading[str]
    name: Reading[str]
    board_part_number: Reading[str]
    board_id: Reading[int]
    module_id: Reading[int]
    pci: Reading[PciInfo]
    vbios_version: Reading[str]
    inforom_image_version: Reading[str]
    memory_total_bytes: Reading[int]
    architecture: Reading[str]
    compute_capability: Reading[tuple[int, int]]
    power_limit_mw: Reading[int]
    power_default_limit_mw: Reading[int]
    power_max_limit_mw: Reading[int]
    mig: Reading[MigInfo]
    fabric: Reading[FabricInfo]
    ecc: Reading[EccInfo]
    remapped_rows: Reading[RemappedRows]
    persistence_mode: Reading[bool]
    cc: Reading[ConfidentialComputing]


# --- host, driver, inventory -------------------------------------------------------------------


@dataclass(frozen=True)
class HostFacts:
    machine_id: Reading[str]
    hostname: Reading[str]
    dmi_sys_vendor: Reading[str]
    dmi_product_name: Reading[str]
    dmi_product_serial: Reading[str]
    boot_id: Reading[str]
    kernel: Reading[str]
    os_release: Reading[str]
    cpu_model: Reading[str]
    cpu_count: Reading[int]
    memory_bytes: Reading[int]
    uptime_s: Reading[int]


@dataclass(frozen=True)
class DriverInfo:
    driver_version: Reading[str]
    nvml_version: Reading[str]
    cuda_driver_version: Reading[int]


class InventoryState(enum.Enum):
    OK = "ok"
    LIBRARY_NOT_FOUND = "library-not-found"
    DRIVER_NOT_LOADED = "driver-not-loaded"
    ERROR = "error"


@dataclass(frozen=True)
class InventoryStatus:
    state: InventoryState
    detail: str = ""
    device_count: int = 0


@dataclass(frozen=True)
class Inventory:
    """What the NVML port returns: driver facts, status, and every GPU it could see."""

    driver: DriverInfo
    status: InventoryStatus
    gpus: tuple[Gpu, ...]


# --- posture, site, landmarks ------------------------------------------------------------------


class PostureResult(enum.Enum):
    PASS = "pass"  # noqa: S105 - a result name, not a password
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class PostureCheck:
    name: str
    result: PostureResult
    detail: str


@dataclass(frozen=True)
class LandmarkMeasurement:
    landmark_id: str
    statement: bytes  # serialized Envelope signed by the landmark
    rtt_us: tuple[int, ...]


@dataclass(frozen=True)
class LandmarkStatement:
    """A landmark's signed measurement of an agent (attest/landmark.py, docs/protocol.md §12)."""

    landmark_id: str
    lat: float
    lon: float
    agent_id: str
    agent_public_key: bytes  # SPKI DER
    session: bytes
    challenges: tuple[bytes, ...]
    signatures: tuple[bytes, ...]
    rtt_ns: tuple[int, ...]
    rtt_min_ns: int
    measured_at: datetime

    @property
    def probes(self) -> int:
        return len(self.challenges)


# --- the evidence payload ----------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """One attestation: signed once by the agent, verified and stored verbatim by the verifier."""

    agent_id: str
    seq: int
    prev_hash: bytes
    nonce: bytes
    created_at: datetime  # timezone-aware UTC
    agent_version: str
    host: HostFacts
    driver: DriverInfo
    inventory: InventoryStatus
    gpus: tuple[Gpu, ...]
    site_id: str
    posture: tuple[PostureCheck, ...] = ()
    landmarks: tuple[LandmarkMeasurement, ...] = ()


@dataclass(frozen=True)
class Heartbeat:
    """A link of the agent's chain that repeats its last full evidence, named by `base` (the
    SHA-256 of that evidence's envelope), instead of sending it again (docs/protocol.md §4.1).

    It says the host, driver, inventory, GPUs, posture and site are what `base` reported; it
    carries what is new each time: time, nonce, chain position and landmark measurements.
    """

    agent_id: str
    seq: int
    prev_hash: bytes
    nonce: bytes
    created_at: datetime  # timezone-aware UTC
    agent_version: str
    site_id: str
    base: bytes
    landmarks: tuple[LandmarkMeasurement, ...] = ()


# --- verifier messages -------------------------------------------------------------------------


class Freshness(enum.Enum):
    NONCE = "nonce"
    OFFLINE = "offline"


@dataclass(frozen=True)
class Receipt:
    agent_id: str
    seq: int
    envelope_hash: bytes
    log_index: int
    checkpoint: bytes
    accepted_at: datetime
    freshness: Freshness
    #: PATH(log_index, D[checkpoint size]) of RFC 9162: with the signed checkpoint it proves
    #: the envelope is in the log (docs/protocol.md §5); no signature of its own.
    inclusion_proof: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Challenge:
    nonce: bytes
    expires_at: datetime
    last_seq: int = 0
    last_hash: bytes = b""


@dataclass(frozen=True)
class Rejection:
    seq: int
    envelope_hash: bytes
    code: str
    message: str
    retryable: bool
