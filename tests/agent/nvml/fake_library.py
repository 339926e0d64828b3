"""Drive the fake libnvidia-ml.so.1 (fake_nvml/fake_nvml.c) from a simulated machine.

`config_lines` writes what the C fake reads at nvmlInitWithFlags, so the same machine can be
collected through the real pynvml + ctypes + fake library and compared with SimulatedInventory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid as uuidlib
from pathlib import Path
from typing import Any

import pynvml

from agent.exits import AgentExit
from agent.readings import ARCHITECTURES
from agent.simulate import SimulatedMachine, simulated_report
from attest import model
from attest.model import Unavailable

ROOT = Path(__file__).resolve().parents[3]
SOURCE = Path(__file__).with_name("fake_nvml") / "fake_nvml.c"
MIG_BASE = 100000
SYSTEM = -1
_ARCH_CODES = {name: code for code, name in ARCHITECTURES.items()}


def build(out_dir: Path) -> Path:
    """Compile the fake into `out_dir/libnvidia-ml.so.1` (the name pynvml dlopens)."""
    target = out_dir / "libnvidia-ml.so.1"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O1", "-Wall", "-Wextra", "-Werror", "-o", target, SOURCE],
        check=True,
        capture_output=True,
    )
    return target


def code(reason: str) -> int:
    """The NVML return code of an error name, from pynvml's own classes."""
    value: int = getattr(pynvml, f"NVMLError_{reason}")().value
    return value


def _fact(reading: object, render: Any = str) -> str:
    if isinstance(reading, Unavailable):
        return f"!{code(reading.reason)}"
    return str(render(reading))


def _compound(dev: int, key: str, reading: object, parts: dict[str, Any]) -> list[str]:
    if isinstance(reading, Unavailable):
        return [f"{dev} {key} !{code(reading.reason)}"]
    return [f"{dev} {key} ok"] + [f"{dev} {key}.{k} {v}" for k, v in parts.items()]


def _mig_slots(count: int) -> tuple[int, ...]:
    return (1, 3, 5)[:count] if count <= 3 else tuple(range(count))


def _gpu_lines(index: int, gpu: model.Gpu, refusal: str | None, nonce: bytes | None) -> list[str]:
    if gpu.state is not model.GpuState.OK:
        return [f"{index} handle {_fact(gpu.serial)}"]
    lines = [f"{index} uuid {gpu.uuid}"]
    simple = {
        "serial": gpu.serial, "name": gpu.name, "board_part_number": gpu.board_part_number,
        "vbios": gpu.vbios_version, "inforom": gpu.inforom_image_version,
        "board_id": gpu.board_id, "module_id": gpu.module_id, "power_limit": gpu.power_limit_mw,
        "power_default": gpu.power_default_limit_mw, "power_max": gpu.power_max_limit_mw,
        "memory_total": gpu.memory_total_bytes,
    }  # fmt: skip
    lines += [f"{index} {key} {_fact(value)}" for key, value in simple.items()]
    lines.append(f"{index} arch {_fact(gpu.architecture, _ARCH_CODES.__getitem__)}")
    lines.append(f"{index} persistence {_fact(gpu.persistence_mode, int)}")
    pci, cap = gpu.pci, gpu.compute_capability
    if isinstance(pci, model.PciInfo):
        parts = {"bus_id": pci.bus_id, "device_id": pci.device_id, "subsystem_id": pci.subsystem_id}
    lines += _compound(index, "pci", pci, parts if isinstance(pci, model.PciInfo) else {})
    lines += _compound(
        index,
        "capability",
        cap,
        {"major": cap[0], "minor": cap[1]} if isinstance(cap, tuple) else {},
    )
    lines += _mig_lines(index, gpu.mig)
    fabric = gpu.fabric
    if isinstance(fabric, model.FabricInfo):
        parts = {
            "cluster_uuid": uuidlib.UUID(fabric.cluster_uuid).bytes.hex(),
            "clique_id": fabric.clique_id, "state": fabric.state, "status": fabric.status,
        }  # fmt: skip
    lines += _compound(
        index, "fabric", fabric, parts if isinstance(fabric, model.FabricInfo) else {}
    )
    ecc = gpu.ecc
    lines += _compound(index, "ecc", ecc, vars(ecc) if isinstance(ecc, model.EccInfo) else {})
    if isinstance(ecc, model.EccInfo):
        lines += [f"{index} ecc.volatile {ecc.volatile_uncorrected}"]
        lines += [f"{index} ecc.aggregate {ecc.aggregate_uncorrected}"]
    rows = gpu.remapped_rows
    row_parts = (
        {k: int(v) for k, v in vars(rows).items()} if not isinstance(rows, Unavailable) else {}
    )
    lines += _compound(index, "remapped", rows, row_parts)
    lines += _cc_lines(index, gpu, refusal, nonce)
    return lines


def _mig_lines(index: int, mig: object) -> list[str]:
    if not isinstance(mig, model.MigInfo):
        return _compound(index, "mig", mig, {})
    parts = {"current": mig.current_mode, "pending": mig.pending_mode, "max_count": 7}
    lines = _compound(index, "mig", mig, parts)
    for slot, dev in zip(_mig_slots(len(mig.devices)), mig.devices, strict=True):
        mig_dev = MIG_BASE + 8 * index + slot
        lines += [
            f"{mig_dev} uuid {dev.uuid}",
            f"{mig_dev} gi {_fact(dev.gpu_instance_id)}",
            f"{mig_dev} ci {_fact(dev.compute_instance_id)}",
            f"{mig_dev} memory_total {_fact(dev.memory_total_bytes)}",
        ]
    return lines


def _cc_lines(index: int, gpu: model.Gpu, refusal: str | None, nonce: bytes | None) -> list[str]:
    cc = gpu.cc
    if not isinstance(cc, model.ConfidentialComputing):
        return []
    lines = [f"{index} cert {_fact(cc.certificate_chain, bytes.hex)}"]
    if refusal is not None:
        return [*lines, f"{index} report !{code(refusal)}"]
    tail = simulated_report(gpu.uuid, nonce)[36:].hex() if nonce is not None else ""
    return [*lines, f"{index} report ok", f"{index} report.tail {tail}"]


def config_lines(machine: SimulatedMachine, nonce: bytes | None = None) -> list[str]:
    """The fake library's description of `machine` (reports pre-bound to `nonce`)."""
    driver = machine.driver
    ccs = [sim.gpu.cc for sim in machine.gpus if sim.gpu.state is model.GpuState.OK]
    cc_on = any(isinstance(cc, model.ConfidentialComputing) and cc.enabled for cc in ccs)
    lines = [
        f"{SYSTEM} init ok",
        f"{SYSTEM} driver_version {_fact(driver.driver_version)}",
        f"{SYSTEM} nvml_version {_fact(driver.nvml_version)}",
        f"{SYSTEM} cuda_version {_fact(driver.cuda_driver_version)}",
        f"{SYSTEM} cc_feature {int(cc_on)}",
        f"{SYSTEM} count {len(machine.gpus)}",
    ]
    for index, sim in enumerate(machine.gpus):
        lines += _gpu_lines(index, sim.gpu, sim.report_refusal, nonce)
    return lines


def run_cli(
    library_dir: Path, config: Path, *args: str, check_rc: int | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m agent.inventory_cli ARGS` with the fake library first on the loader path."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "LD_LIBRARY_PATH": str(library_dir),
        "FAKE_NVML_CONFIG": str(config),
    }
    done = subprocess.run(
        [sys.executable, "-W", "error", "-m", "agent.inventory_cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check_rc is not None:
        assert done.returncode == check_rc, done.stderr
    return done


def collect_json(library_dir: Path, config: Path, *args: str) -> dict[str, Any]:
    done = run_cli(library_dir, config, "--json", *args, check_rc=AgentExit.OK)
    result: dict[str, Any] = json.loads(done.stdout)
    return result
