"""The real pynvml over a fake libnvidia-ml.so.1 (C, built with gcc), in a subprocess.

This is the tier that notices when a new nvidia-ml-py changes a symbol name, a struct layout or
a buffer size: the agent's CLI runs unmodified, pynvml dlopens the fake through the loader path,
and the JSON it prints must equal what SimulatedInventory says about the same machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.exits import AgentExit
from agent.render import inventory_to_json
from agent.simulate import SimulatedInventory, load_machine, parse_machine

from .fake_library import collect_json, config_lines, run_cli

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "machines"
NONCE = bytes(range(100, 132))
LOST = """
[[gpu]]
model = "H100-SXM"
count = 3
[[gpu]]
model = "H100-SXM"
state = "lost"
uuid_seed = "second"
[[gpu]]
model = "H100-SXM"
count = 4
uuid_seed = "third"
"""
MIG = """
[[gpu]]
model = "H100-SXM"
mig = { current_mode = 1, pending_mode = 1, devices = 3 }
[[gpu]]
model = "A100"
mig = { current_mode = 1, pending_mode = 1, devices = 7 }
[[gpu]]
model = "L40S"
"""

SCENARIOS = {
    "h100-healthy": lambda: load_machine(EXAMPLES / "h100-node.toml"),
    "one-gpu-lost": lambda: parse_machine(LOST),
    "mig-enabled": lambda: parse_machine(MIG),
    "gb200-nvlink-domain": lambda: load_machine(EXAMPLES / "gb200-node.toml"),
    "cc-on": lambda: load_machine(EXAMPLES / "h100-cc-node.toml"),
    "degraded": lambda: load_machine(EXAMPLES / "degraded-node.toml"),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest.mark.parametrize("nonce", [None, NONCE], ids=["no-nonce", "nonce"])
def test_scenario_reads_as_simulated(
    fake_library_dir: Path, tmp_path: Path, name: str, nonce: bytes | None
) -> None:
    machine = SCENARIOS[name]()
    config = tmp_path / "machine.conf"
    config.write_text("\n".join(config_lines(machine, nonce)) + "\n")
    args = ["--nonce", nonce.hex()] if nonce is not None else []
    got = collect_json(fake_library_dir, config, *args)
    assert got == inventory_to_json(SimulatedInventory(machine).collect(nonce))


def test_library_missing(tmp_path: Path) -> None:
    done = run_cli(tmp_path, tmp_path / "absent.conf", "--json", check_rc=AgentExit.NO_LIBRARY)
    assert done.stderr.count("\n") == 1
    assert "libnvidia-ml.so.1 not found" in done.stderr


def test_driver_not_loaded(fake_library_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "machine.conf"
    config.write_text("-1 init !9\n")
    done = run_cli(fake_library_dir, config, check_rc=AgentExit.NO_DRIVER)
    assert done.stdout == ""
    assert done.stderr.strip().endswith("NVIDIA driver not loaded: Driver Not Loaded")


def test_human_table(fake_library_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "machine.conf"
    config.write_text("\n".join(config_lines(parse_machine(LOST))) + "\n")
    out = run_cli(fake_library_dir, config, check_rc=AgentExit.OK).stdout.splitlines()
    assert out[0].startswith("driver 580.105.08  NVML 13.580.105.08  CUDA 13000  GPUs 8")
    assert len(out) == 2 + 8
    assert "lost" in out[2 + 3] and "unknown-gpu-index-3" in out[2 + 3]
