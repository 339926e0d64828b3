"""Consistency rules a real capture must satisfy (what the NVML API reference promises)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from agent.catalogue import CATALOGUE
from agent.render import inventory_from_json
from attest import model

_CC_MAJOR = {"ampere": {8}, "ada": {8}, "hopper": {9}, "blackwell": {10, 12}}
_BUS_ID = re.compile(r"^[0-9A-F]{8}:[0-9A-F]{2}:[0-9A-F]{2}\.[0-7]$")
_MODULE_SERIALS = ("GB200", "GB300")  # two GPUs per module share its serial


def check_capture(doc: Any) -> model.Inventory:
    """Parse a capture and assert what must hold on any real machine; returns the inventory."""
    inventory = inventory_from_json(doc)
    assert inventory.status.state is model.InventoryState.OK, inventory.status
    assert inventory.status.device_count == len(inventory.gpus) >= 1
    driver = inventory.driver.driver_version
    assert isinstance(driver, str) and re.match(r"^\d+\.\d+(\.\d+)?$", driver), driver
    nvml_version = inventory.driver.nvml_version
    assert not isinstance(nvml_version, str) or nvml_version.endswith(driver)
    gpus = [g for g in inventory.gpus if g.state is model.GpuState.OK]
    assert [g.index for g in inventory.gpus] == list(range(len(inventory.gpus)))
    assert len({g.uuid for g in inventory.gpus}) == len(inventory.gpus)
    assert all(g.uuid.startswith("GPU-") for g in gpus)
    buses = [g.pci.bus_id for g in gpus if isinstance(g.pci, model.PciInfo)]
    assert len(set(buses)) == len(buses) and all(_BUS_ID.match(b) for b in buses), buses
    for name, count in Counter(g.serial for g in gpus if isinstance(g.serial, str)).items():
        shared = any(tag in str(g.name) for g in gpus for tag in _MODULE_SERIALS)
        assert count <= (2 if shared else 1), f"serial {name} repeats {count} times"
    for gpu in gpus:
        _check_gpu(gpu)
    by_name: dict[object, set[object]] = {}
    for gpu in gpus:
        by_name.setdefault(gpu.name, set()).add((gpu.vbios_version, gpu.inforom_image_version))
    assert all(len(v) == 1 for v in by_name.values()), f"firmware differs: {by_name}"
    cliques = {
        (g.fabric.cluster_uuid, g.fabric.clique_id)
        for g in gpus
        if isinstance(g.fabric, model.FabricInfo) and g.fabric.clique_id
    }
    assert len(cliques) <= 1, f"one host, several NVLink domains: {cliques}"
    return inventory


def _check_gpu(gpu: model.Gpu) -> None:
    for field in ("name", "serial", "board_part_number", "vbios_version", "architecture"):
        assert getattr(gpu, field) != "", f"{gpu.uuid}: empty {field}"
    known = {m.name: m for m in CATALOGUE.values()}.get(str(gpu.name))
    if known is not None and isinstance(gpu.pci, model.PciInfo):
        assert gpu.pci.device_id == known.pci_device_id, (gpu.name, hex(gpu.pci.device_id))
    memory = gpu.memory_total_bytes
    assert not isinstance(memory, int) or memory > 2**30
    cap, arch = gpu.compute_capability, gpu.architecture
    if isinstance(cap, tuple) and isinstance(arch, str) and arch in _CC_MAJOR:
        assert cap[0] in _CC_MAJOR[arch], (arch, cap)
    limit, top = gpu.power_limit_mw, gpu.power_max_limit_mw
    if isinstance(limit, int) and isinstance(top, int):
        assert 0 < limit <= top
