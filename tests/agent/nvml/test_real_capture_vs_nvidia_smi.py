"""The agent's inventory of a real host agrees with what nvidia-smi printed on that same host.

Both files were captured in one run of scripts/device_capture.sh (fixtures/REAL-CAPTURES.md) and
scrubbed with the same deterministic replacements, so identities line up too. nvidia-smi is
NVIDIA's own reading of the driver: any field our adapter maps wrongly (a byte order, a unit, a
struct offset) shows up here as a disagreement.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

FIXTURES = Path(__file__).with_name("fixtures")
PAIRS = [
    ("real-nvidia-h200.json", "nvidia-smi-real-h200.xml"),
    ("real-nvidia-h200-b.json", "nvidia-smi-real-h200-b.xml"),
]


def _text(gpu: ET.Element, path: str) -> str:
    node = gpu.find(path)
    assert node is not None and node.text is not None, path
    return node.text.strip()


def _watts_to_mw(text: str) -> int:
    return round(float(text.removesuffix(" W")) * 1000)


@pytest.mark.parametrize(("inventory_file", "smi_file"), PAIRS)
def test_inventory_matches_nvidia_smi(inventory_file: str, smi_file: str) -> None:
    inventory = json.loads((FIXTURES / inventory_file).read_text())
    smi = ET.parse(FIXTURES / smi_file).getroot()
    assert inventory["driver"]["driver_version"] == _text(smi, "driver_version")
    major, minor = _text(smi, "cuda_version").split(".")
    assert inventory["driver"]["cuda_driver_version"] == int(major) * 1000 + int(minor) * 10
    smi_gpus = smi.findall("gpu")
    assert len(inventory["gpus"]) == len(smi_gpus)
    for ours, theirs in zip(inventory["gpus"], smi_gpus, strict=True):
        assert ours["pci"]["bus_id"] == theirs.get("id") == _text(theirs, "pci/pci_bus_id")
        assert ours["uuid"] == _text(theirs, "uuid")
        assert ours["serial"] == _text(theirs, "serial")
        assert ours["name"] == _text(theirs, "product_name")
        assert ours["board_part_number"] == _text(theirs, "board_part_number")
        assert ours["board_id"] == int(_text(theirs, "board_id"), 16)
        assert ours["module_id"] == int(_text(theirs, "platformInfo/module_id"))
        assert ours["vbios_version"] == _text(theirs, "vbios_version")
        assert ours["inforom_image_version"] == _text(theirs, "inforom_version/img_version")
        assert ours["pci"]["device_id"] == int(_text(theirs, "pci/pci_device_id"), 16)
        assert ours["pci"]["subsystem_id"] == int(_text(theirs, "pci/pci_sub_system_id"), 16)
        total_mib = int(_text(theirs, "fb_memory_usage/total").removesuffix(" MiB"))
        assert ours["memory_total_bytes"] // (1024 * 1024) == total_mib
        assert ours["persistence_mode"] is (_text(theirs, "persistence_mode") == "Enabled")
        power = "gpu_power_readings"
        assert ours["power_limit_mw"] == _watts_to_mw(_text(theirs, f"{power}/current_power_limit"))
        assert ours["power_default_limit_mw"] == _watts_to_mw(
            _text(theirs, f"{power}/default_power_limit")
        )
        assert ours["power_max_limit_mw"] == _watts_to_mw(_text(theirs, f"{power}/max_power_limit"))
