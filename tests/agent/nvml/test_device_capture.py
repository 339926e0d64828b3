"""scripts/device_capture.sh and scripts/scrub_capture.py, run against the fake library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agent.render import inventory_to_json
from agent.simulate import SimulatedInventory, load_machine

from .capture_checks import check_capture
from .fake_library import ROOT, config_lines

SCRUB = ROOT / "scripts" / "scrub_capture.py"


def _scrub(out_dir: Path, *inputs: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRUB), "--out-dir", str(out_dir), *map(str, inputs)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout


def test_capture_then_scrub(fake_library_dir: Path, tmp_path: Path) -> None:
    machine = load_machine(ROOT / "examples" / "machines" / "gb200-node.toml")
    config = tmp_path / "machine.conf"
    config.write_text("\n".join(config_lines(machine)) + "\n")
    out = tmp_path / "out"
    env = {
        "PATH": "/usr/bin:/bin",  # no nvidia-smi here: the script must go on without it
        "OUT": str(out),
        "PYTHON": sys.executable,
        "LD_LIBRARY_PATH": str(fake_library_dir),
        "FAKE_NVML_CONFIG": str(config),
    }
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "device_capture.sh")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert "nvidia-ml-py 13.615.71" in done.stdout
    assert "inventory: exit 0" in done.stdout and "nvidia-smi: not found" in done.stdout
    raw = json.loads((out / "inventory.json").read_text())
    assert raw == inventory_to_json(SimulatedInventory(machine).collect())
    assert json.loads((out / "timing.json").read_text())["gpus"] == 4
    assert "real-nvidia-gb200.json" in done.stdout

    scrubbed_text = (out / "scrubbed" / "inventory.json").read_text()
    scrubbed = json.loads(scrubbed_text)
    for gpu in raw["gpus"]:
        assert gpu["uuid"] not in scrubbed_text and gpu["serial"] not in scrubbed_text
        assert gpu["fabric"]["cluster_uuid"] not in scrubbed_text
    inventory = check_capture(scrubbed)
    serials = [g.serial for g in inventory.gpus]
    assert serials[0] == serials[1] != serials[2] == serials[3]  # module pairs survive
    again = tmp_path / "again"
    _scrub(again, out / "inventory.json")
    assert (again / "inventory.json").read_text() == scrubbed_text


def test_scrub_keeps_one_mapping_across_json_and_xml(tmp_path: Path) -> None:
    machine = load_machine(ROOT / "examples" / "machines" / "h100-cc-node.toml")
    inventory = SimulatedInventory(machine).collect(b"\x01" * 32)
    first = inventory.gpus[0]
    doc_path = tmp_path / "inventory.json"
    doc_path.write_text(json.dumps(inventory_to_json(inventory, machine.host)))
    xml_path = tmp_path / "nvidia-smi.xml"
    xml_path.write_text(
        '<?xml version="1.0" ?>\n<nvidia_smi_log><gpu id="00000000:53:00.0">'
        f"<serial>{first.serial}</serial><uuid>{first.uuid}</uuid><pdi>0x4917e5a9bae974c7</pdi>"
        "<fabric><cluster_uuid>N/A</cluster_uuid></fabric>"
        "<platform_info><chassis_serial_number>1821324000123</chassis_serial_number>"
        "</platform_info></gpu></nvidia_smi_log>\n"
    )
    _scrub(tmp_path / "s", doc_path, xml_path)
    doc = json.loads((tmp_path / "s" / "inventory.json").read_text())
    xml = (tmp_path / "s" / "nvidia-smi.xml").read_text()
    fake_uuid, fake_serial = doc["gpus"][0]["uuid"], doc["gpus"][0]["serial"]
    assert f"<uuid>{fake_uuid}</uuid>" in xml and f"<serial>{fake_serial}</serial>" in xml
    assert "4917e5a9" not in xml and "1821324000123" not in xml
    assert "<cluster_uuid>N/A</cluster_uuid>" in xml
    assert doc["gpus"][0]["cc"]["certificate_chain"] == {"unavailable": "Scrubbed"}
    assert doc["gpus"][0]["cc"]["attestation_report"] == {"unavailable": "Scrubbed"}
    assert doc["host"]["hostname"] == "scrubbed-hostname-1"
    assert machine.host.hostname not in json.dumps(doc)
