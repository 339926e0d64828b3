"""`gpu-attest-agent inventory`: every field of every GPU of every catalogue model, exit codes."""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pynvml
import pytest

from agent.catalogue import CATALOGUE
from agent.exits import AgentExit
from agent.inventory_cli import main
from agent.render import inventory_from_json
from agent.simulate import SimulatedInventory, load_machine
from attest import model

ROOT = Path(__file__).resolve().parents[2]
GPU_FIELDS = {f.name for f in dataclasses.fields(model.Gpu)}
NONCE_HEX = "5a" * 32


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_filled(value: Any, where: str) -> None:
    """Every field is present and is a value or an `unavailable` record, never empty."""
    assert value is not None, where
    assert value != "", where
    if isinstance(value, dict):
        if "unavailable" in value:
            assert set(value) == {"unavailable"} and value["unavailable"], where
        for key, item in value.items():
            if key == "report_nonce" and "unavailable" in value["attestation_report"]:
                continue  # a plain bytes field of the model: empty when no report was made
            _assert_filled(item, f"{where}.{key}")


@pytest.mark.parametrize("key", sorted(CATALOGUE))
@pytest.mark.parametrize("cc", ["false", "true"])
def test_every_catalogue_model_prints_every_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, key: str, cc: str
) -> None:
    path = tmp_path / "m.toml"
    path.write_text(
        f'[host]\nhostname = "h"\nsite = "s1"\n[[gpu]]\nmodel = "{key}"\ncount = 4\n'
        f"cc = {{ enabled = {cc} }}\n"
    )
    rc, out, err = _run(capsys, "--json", "--simulate", str(path), "--nonce", NONCE_HEX)
    assert (rc, err) == (AgentExit.OK, "")
    doc = json.loads(out)
    assert doc["host"] == {"hostname": "h", "machine_id": doc["host"]["machine_id"], "site": "s1"}
    assert len(doc["gpus"]) == 4
    for gpu in doc["gpus"]:
        assert set(gpu) == GPU_FIELDS
        _assert_filled(gpu, f"{key}[{gpu['index']}]")
        assert gpu["name"] == CATALOGUE[key].name
        assert gpu["pci"]["device_id"] == CATALOGUE[key].pci_device_id
        if cc == "true":
            assert base64.b64decode(gpu["cc"]["report_nonce"]) == bytes.fromhex(NONCE_HEX)
    expected = SimulatedInventory(load_machine(path)).collect(bytes.fromhex(NONCE_HEX))
    assert inventory_from_json(doc) == expected


def test_human_table_and_leading_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "examples" / "machines" / "degraded-node.toml"
    rc, out, _ = _run(capsys, "inventory", "--simulate", str(path))
    lines = out.splitlines()
    assert rc == AgentExit.OK and len(lines) == 2 + 8
    assert "n/a (NotSupported)" in lines[-1] and "lost" in lines[2 + 5]


@pytest.mark.parametrize(
    "argv",
    [["--bogus"], ["--nonce", "zz"], ["--nonce", "00"], ["--simulate"], ["extra"]],
)
def test_usage_errors_exit_config(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    rc, out, err = _run(capsys, *argv)
    assert (rc, out) == (AgentExit.CONFIG, "")
    assert err.count("\n") == 1 and "error" in err


def test_bad_machine_file_exits_config_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[[gpu]]\nmodel = "H100-SXM"\ncolour = "green"\n')
    rc, out, err = _run(capsys, "--simulate", str(path))
    assert (rc, out) == (AgentExit.CONFIG, "")
    assert "m.toml: [gpu[0]] colour: unknown key" in err and err.count("\n") == 1
    rc, _, err = _run(capsys, "--simulate", str(tmp_path / "absent.toml"))
    assert rc == AgentExit.CONFIG and "cannot read" in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(capsys, "--help")
    assert rc == AgentExit.OK and "--simulate" in out


def test_simulated_driver_states_map_to_exit_codes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for status, code in [
        ("library-not-found", AgentExit.NO_LIBRARY),
        ("driver-not-loaded", AgentExit.NO_DRIVER),
        ("error", AgentExit.NVML_ERROR),
    ]:
        path = tmp_path / f"{status}.toml"
        path.write_text(f'[driver]\nstatus = "{status}"\ndetail = "simulated"\n')
        rc, out, err = _run(capsys, "--json", "--simulate", str(path))
        assert rc == code
        assert json.loads(out)["status"]["state"] == status
        assert err.count("\n") == 1


def test_no_library_on_this_host(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pynvml, "nvmlLib", None)
    rc, out, err = _run(capsys)
    assert (rc, out) == (AgentExit.NO_LIBRARY, "")
    assert "libnvidia-ml.so.1 not found" in err


_BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"grpc", "google", "cryptography", "psutil"}:
            raise ImportError(f"{name} is not installed on this GPU host")
        return None
sys.meta_path.insert(0, Block())
from agent.inventory_cli import main
import agent.nvml, agent.simulate, agent.render
sys.exit(main(sys.argv[1:]))
"""


def test_runs_without_grpc_protobuf_cryptography() -> None:
    path = ROOT / "examples" / "machines" / "h100-node.toml"
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", _BLOCKER, "--json", "--simulate", str(path)],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == AgentExit.OK, done.stderr
    assert len(json.loads(done.stdout)["gpus"]) == 8


def test_console_script_prints_every_model(tmp_path: Path) -> None:
    """The issue's check, end to end: `gpu-attest-agent inventory --json --simulate M.toml`."""
    script = Path(sys.executable).with_name("gpu-attest-agent")
    groups = "".join(f'[[gpu]]\nmodel = "{key}"\ncount = 2\n' for key in sorted(CATALOGUE))
    path = tmp_path / "all.toml"
    path.write_text(f'[host]\nhostname = "all-models"\n{groups}')
    done = subprocess.run(
        [str(script), "inventory", "--json", "--simulate", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == AgentExit.OK, done.stderr
    gpus = json.loads(done.stdout)["gpus"]
    assert sorted({g["name"] for g in gpus}) == sorted(m.name for m in CATALOGUE.values())
    for gpu in gpus:
        assert set(gpu) == GPU_FIELDS
        _assert_filled(gpu, gpu["uuid"])
