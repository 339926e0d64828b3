"""NvmlInventory over the real pynvml module whose wrappers answer from simulated machines."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import pynvml
import pytest

from agent.catalogue import CATALOGUE
from agent.nvml import NvmlInventory, nvml_reason
from agent.readings import NVML_ERROR_NAMES, placeholder_uuid
from agent.simulate import SimulatedInventory, load_machine, parse_machine
from attest import model
from attest.errors import InventoryError
from attest.model import Unavailable

from .fake_driver import FakeDriver, nvml_error

NONCE = bytes(range(32))
EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "machines"


def _machine(gpu_toml: str) -> Any:
    return parse_machine(f'[host]\nhostname = "t"\n\n[[gpu]]\n{gpu_toml}\n')


def _collect(
    monkeypatch: pytest.MonkeyPatch, driver: FakeDriver, nonce: bytes | None = None
) -> Any:
    driver.install(monkeypatch)
    with NvmlInventory() as nvml:
        return nvml.collect(nonce)


@pytest.mark.parametrize("key", sorted(CATALOGUE))
@pytest.mark.parametrize("cc", [False, True])
@pytest.mark.parametrize("nonce", [None, NONCE])
def test_every_model_reads_as_simulated(
    monkeypatch: pytest.MonkeyPatch, key: str, cc: bool, nonce: bytes | None
) -> None:
    machine = _machine(f'model = "{key}"\ncount = 4\ncc = {{ enabled = {str(cc).lower()} }}')
    driver = FakeDriver(machine)
    got = _collect(monkeypatch, driver, nonce)
    assert got == SimulatedInventory(machine).collect(nonce)
    assert got.status.state is model.InventoryState.OK and len(got.gpus) == 4
    assert driver.initialized == 1 and driver.shutdowns == 1
    assert not driver.shared_module_id_used, "the wrapper's shared default c_uint was used"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.stem)
def test_example_machines_read_as_simulated(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    machine = load_machine(path)
    assert _collect(monkeypatch, FakeDriver(machine), NONCE) == SimulatedInventory(machine).collect(
        NONCE
    )


@pytest.mark.parametrize(
    ("error", "state"),
    [
        ("LibraryNotFound", model.InventoryState.LIBRARY_NOT_FOUND),
        ("DriverNotLoaded", model.InventoryState.DRIVER_NOT_LOADED),
        ("LibRmVersionMismatch", model.InventoryState.ERROR),
        ("NoPermission", model.InventoryState.ERROR),
    ],
)
def test_init_failure_is_a_status_not_an_exception(
    monkeypatch: pytest.MonkeyPatch, error: str, state: model.InventoryState
) -> None:
    driver = FakeDriver(_machine('model = "H100-SXM"'), init_error=error).install(monkeypatch)
    nvml = NvmlInventory()
    got = nvml.collect()
    assert got.status.state is state and got.gpus == ()
    assert got.driver.driver_version == Unavailable("Uninitialized")
    if state is model.InventoryState.ERROR:
        assert error in got.status.detail
    driver.init_error = None  # the driver came up: the next cycle succeeds
    assert nvml.collect().status.state is model.InventoryState.OK
    nvml.close()
    nvml.close()
    assert driver.shutdowns == 1


def test_library_missing_with_the_real_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    # No fake at all: pynvml's own CDLL("libnvidia-ml.so.1") fails on this GPU-less host.
    monkeypatch.setattr(pynvml, "nvmlLib", None)
    got = NvmlInventory().collect()
    assert got.status.state is model.InventoryState.LIBRARY_NOT_FOUND
    assert got.status.detail == "NVML Shared Library Not Found"


def test_gpu_lost_at_its_handle(monkeypatch: pytest.MonkeyPatch) -> None:
    machine = parse_machine(
        '[[gpu]]\nmodel = "H100-SXM"\ncount = 2\n[[gpu]]\nmodel = "H100-SXM"\nstate = "lost"\n'
        '[[gpu]]\nmodel = "H100-SXM"\nstate = "inaccessible"\n'
    )
    got = _collect(monkeypatch, FakeDriver(machine))
    assert [g.state for g in got.gpus] == [
        model.GpuState.OK, model.GpuState.OK, model.GpuState.LOST, model.GpuState.INACCESSIBLE
    ]  # fmt: skip
    assert got.gpus[2].uuid == placeholder_uuid(2)
    assert got.gpus[2].serial == Unavailable("GpuIsLost")
    assert got.gpus[3].pci == Unavailable("NoPermission")


def test_gpu_lost_in_the_middle_of_a_read(monkeypatch: pytest.MonkeyPatch) -> None:
    driver = FakeDriver(_machine('model = "H100-SXM"\ncount = 3')).install(monkeypatch)
    real_serial = driver.nvmlDeviceGetSerial

    def serial(handle: Any) -> str:
        if ctypes.cast(handle, ctypes.c_void_p).value == 2:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return real_serial(handle)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetSerial", serial)
    got = NvmlInventory().collect()
    lost = got.gpus[1]
    assert lost.state is model.GpuState.LOST
    assert lost.uuid == driver.machine.gpus[1].gpu.uuid  # what was read before stays
    assert lost.serial == Unavailable("GpuIsLost")
    assert [g.state for g in got.gpus].count(model.GpuState.OK) == 2


def test_mig_slots_with_gaps_and_the_c_uint_quirk(monkeypatch: pytest.MonkeyPatch) -> None:
    machine = _machine('model = "A100"\nmig = { current_mode = 1, pending_mode = 1, devices = 3 }')
    driver = FakeDriver(machine).install(monkeypatch)
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    first = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, 1)
    assert isinstance(pynvml.nvmlDeviceIsMigDeviceHandle(first), ctypes.c_uint)
    with pytest.raises(pynvml.NVMLError_NotFound):
        pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, 0)
    mig = NvmlInventory().collect().gpus[0].mig
    assert isinstance(mig, model.MigInfo)
    assert mig == driver.machine.gpus[0].gpu.mig
    assert [d.gpu_instance_id for d in mig.devices] == [7, 8, 9]
    assert all(d.uuid.startswith("MIG-") for d in mig.devices)


def test_gb200_domain_shares_cluster_and_serials(monkeypatch: pytest.MonkeyPatch) -> None:
    got = _collect(monkeypatch, FakeDriver(load_machine(EXAMPLES / "gb200-node.toml")))
    fabrics = [g.fabric for g in got.gpus]
    assert all(isinstance(f, model.FabricInfo) for f in fabrics)
    assert {f.cluster_uuid for f in fabrics if isinstance(f, model.FabricInfo)} == {
        "3f2a1b0c-9d8e-4f7a-8b6c-5d4e3f2a1b0c"
    }
    assert {(f.clique_id, f.state) for f in fabrics if isinstance(f, model.FabricInfo)} == {(2, 3)}
    serials = [g.serial for g in got.gpus]
    assert serials[0] == serials[1] != serials[2] == serials[3]
    assert len({g.uuid for g in got.gpus}) == 4


def test_cc_report_is_bound_to_the_nonce(monkeypatch: pytest.MonkeyPatch) -> None:
    got = _collect(monkeypatch, FakeDriver(load_machine(EXAMPLES / "h100-cc-node.toml")), NONCE)
    for gpu in got.gpus:
        assert isinstance(gpu.cc, model.ConfidentialComputing) and gpu.cc.enabled
        report = gpu.cc.attestation_report
        assert isinstance(report, bytes) and report[4:36] == NONCE
        assert gpu.cc.report_nonce == NONCE
        assert isinstance(gpu.cc.certificate_chain, bytes)
        assert gpu.cc.certificate_chain.startswith(b"-----BEGIN CERTIFICATE-----")
        assert gpu.cc.cec_attestation_report == Unavailable("NotPresent")


def test_nonce_must_be_32_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    driver = FakeDriver(load_machine(EXAMPLES / "h100-cc-node.toml")).install(monkeypatch)
    with pytest.raises(TypeError):  # the pynvml quirk the adapter guards against
        pynvml.nvmlDeviceGetConfComputeGpuAttestationReport(_first(), b"\x00" * 31)
    with pytest.raises(InventoryError):
        NvmlInventory().collect(b"\x00" * 31)
    assert driver.initialized == 0  # refused before touching the driver


def _first() -> Any:
    return pynvml.nvmlDeviceGetHandleByIndex(0)


def test_real_wrapper_rejects_a_short_nonce_before_the_library() -> None:
    with pytest.raises(TypeError):
        pynvml.nvmlDeviceGetConfComputeGpuAttestationReport(None, b"\x00" * 16)


def test_missing_wrapper_and_missing_symbol(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeDriver(_machine('model = "H100-SXM"')).install(monkeypatch)
    monkeypatch.delattr(pynvml, "nvmlDeviceGetGpuFabricInfoV")  # an older nvidia-ml-py

    def old_driver(_handle: Any) -> Any:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetRemappedRows", old_driver)
    gpu = NvmlInventory().collect().gpus[0]
    assert gpu.fabric == Unavailable("FunctionNotFound")
    assert gpu.remapped_rows == Unavailable("FunctionNotFound")
    assert gpu.state is model.GpuState.OK


def test_odd_failures_keep_their_names(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeDriver(_machine('model = "H100-SXM"')).install(monkeypatch)

    def unknown_code(_handle: Any) -> Any:
        raise pynvml.NVMLError(12345)

    def not_utf8(_handle: Any) -> Any:
        return b"\xff\xfe".decode()

    def ecc_off(_handle: Any, _kind: int, _counter: int) -> Any:
        raise nvml_error("NotSupported")

    monkeypatch.setattr(pynvml, "nvmlDeviceGetBoardId", unknown_code)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetSerial", not_utf8)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEccErrors", ecc_off)
    gpu = NvmlInventory().collect().gpus[0]
    assert gpu.board_id == Unavailable("NvmlCode12345")
    assert gpu.serial == Unavailable("InvalidUtf8")
    assert gpu.ecc == Unavailable("NotSupported")


def test_error_names_match_pynvml() -> None:
    classes = {n.removeprefix("NVMLError_") for n in dir(pynvml) if n.startswith("NVMLError_")}
    assert classes >= NVML_ERROR_NAMES
    assert nvml_reason(pynvml.NVMLError(3)) == "NotSupported"
    assert type(pynvml.NVMLError(3)) is pynvml.NVMLError_NotSupported
    with pytest.raises(TypeError):
        hash(pynvml.NVMLError_NotSupported())  # __eq__ without __hash__: never key on errors


def test_driver_readings_can_fail_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    machine = parse_machine('[driver]\ncuda_version = { error = "FunctionNotFound" }\n')
    got = _collect(monkeypatch, FakeDriver(machine))
    assert got.driver.cuda_driver_version == Unavailable("FunctionNotFound")
    assert got == SimulatedInventory(machine).collect()


def test_unreadable_uuid_makes_the_gpu_inaccessible(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeDriver(_machine('model = "H100-SXM"\ncount = 2')).install(monkeypatch)

    def no_uuid(_handle: Any) -> str:
        raise nvml_error("NoPermission")

    monkeypatch.setattr(pynvml, "nvmlDeviceGetUUID", no_uuid)
    gpus = NvmlInventory().collect().gpus
    assert [g.state for g in gpus] == [model.GpuState.INACCESSIBLE] * 2
    assert [g.uuid for g in gpus] == [placeholder_uuid(0), placeholder_uuid(1)]
    assert gpus[0].name == "NVIDIA H100 80GB HBM3"  # the rest is still read


def test_fabric_state_not_supported_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real H200 in a VM answers the fabric call with state 0 (NOT_SUPPORTED), zeros elsewhere."""
    driver = FakeDriver(_machine('model = "H200"\ncount = 2')).install(monkeypatch)

    def fabric_not_supported(handle: Any, ref: Any) -> int:
        info = ref._obj
        info.state = 0xABABAB00 | pynvml.NVML_GPU_FABRIC_STATE_NOT_SUPPORTED
        info.cliqueId, info.status = 0, 0
        return int(pynvml.NVML_SUCCESS)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetGpuFabricInfoV", fabric_not_supported)
    with NvmlInventory() as nvml:
        got = nvml.collect()
    assert [g.fabric for g in got.gpus] == [Unavailable("NotSupported")] * 2
    assert driver.initialized == 1
