"""Simulated-machine files: expansion, identities, overrides, and typed errors for bad input."""

from __future__ import annotations

import contextlib
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.catalogue import CATALOGUE
from agent.simulate import SimulatedInventory, load_machine, machine_from_mapping, parse_machine
from attest import model
from attest.errors import ConfigError, MachineFileError
from attest.model import Unavailable

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "machines"


def _gpus(text: str) -> list[model.Gpu]:
    return [sim.gpu for sim in parse_machine(text).gpus]


def test_examples_load_and_are_deterministic() -> None:
    for path in sorted(EXAMPLES.glob("*.toml")):
        assert load_machine(path) == load_machine(path), path
    h100 = load_machine(EXAMPLES / "h100-node.toml")
    assert h100.host.hostname == "gpu-node-017" and h100.host.site == "acme-fra1"
    assert len(h100.gpus) == 8
    assert len(load_machine(EXAMPLES / "h200-node.toml").gpus) == 8
    assert len(load_machine(EXAMPLES / "gb200-node.toml").gpus) == 4


@pytest.mark.parametrize("key", sorted(CATALOGUE))
def test_count_expansion_gives_distinct_identities(key: str) -> None:
    gpus = _gpus(f'[[gpu]]\nmodel = "{key}"\ncount = 16\nuuid_seed = "s"\n')
    assert [g.index for g in gpus] == list(range(16))
    assert len({g.uuid for g in gpus}) == 16
    assert len({g.pci.bus_id for g in gpus if isinstance(g.pci, model.PciInfo)}) == 16
    serials = [g.serial for g in gpus]
    per_module = CATALOGUE[key].gpus_per_module
    assert len(set(serials)) == 16 // per_module
    if per_module == 2:  # GB200/GB300: both GPUs of a module report its serial
        assert all(serials[i] == serials[i + 1] for i in range(0, 16, 2))
    assert all(isinstance(s, str) and len(s) == 13 and s.isdigit() for s in serials)


def test_identities_depend_on_seed_only() -> None:
    one = _gpus('[[gpu]]\nmodel = "H100-SXM"\ncount = 2\nuuid_seed = "a"\n')
    two = _gpus('[host]\nhostname = "x"\n[[gpu]]\nmodel = "H100-SXM"\ncount = 2\nuuid_seed = "a"\n')
    other = _gpus('[[gpu]]\nmodel = "H100-SXM"\ncount = 2\nuuid_seed = "b"\n')
    assert [g.uuid for g in one] == [g.uuid for g in two]
    assert not {g.uuid for g in one} & {g.uuid for g in other}


def test_bus_ids_stay_unique_across_groups() -> None:
    gpus = _gpus('[[gpu]]\nmodel = "H100-SXM"\ncount = 8\n[[gpu]]\nmodel = "H200"\ncount = 8\n')
    buses = [g.pci.bus_id for g in gpus if isinstance(g.pci, model.PciInfo)]
    assert len(set(buses)) == 16
    modules = [g.module_id for g in gpus[:8]]
    assert sorted(modules) == list(range(1, 9))  # type: ignore[type-var]


def test_overrides_and_errors() -> None:
    (gpu,) = _gpus(
        '[[gpu]]\nmodel = "B200"\nuuid = "GPU-2f4c0000-0000-0000-0000-000000000001"\n'
        'serial = { error = "NotSupported" }\nname = "NVIDIA B200 (relabelled)"\n'
        'pci = { bus_id = "00000000:1A:00.0" }\nfabric = { clique_id = 9 }\n'
        'ecc = { error = "NoPermission" }\nremapped_rows = { uncorrected = 2, failure = true }\n'
        "compute_capability = [10, 1]\npersistence_mode = false\n"
    )
    assert gpu.uuid == "GPU-2f4c0000-0000-0000-0000-000000000001"
    assert gpu.serial == Unavailable("NotSupported")
    assert gpu.name == "NVIDIA B200 (relabelled)"
    assert gpu.pci == model.PciInfo("00000000:1A:00.0", 0x290110DE, 0x199910DE)
    assert isinstance(gpu.fabric, model.FabricInfo) and gpu.fabric.clique_id == 9
    assert gpu.ecc == Unavailable("NoPermission")
    assert gpu.remapped_rows == model.RemappedRows(0, 2, pending=False, failure=True)
    assert gpu.compute_capability == (10, 1)
    assert gpu.persistence_mode is False


def test_table_override_on_a_board_without_it() -> None:
    (gpu,) = _gpus('[[gpu]]\nmodel = "L4"\nmig = { current_mode = 1, devices = 2 }\n')
    assert isinstance(gpu.mig, model.MigInfo)
    assert gpu.mig.current_mode == 1 and len(gpu.mig.devices) == 2
    assert gpu.remapped_rows == Unavailable("NotSupported")  # MIG active: NVML refuses it


def test_driver_table_and_no_gpus() -> None:
    machine = parse_machine('[driver]\nversion = "999.1"\ncuda_version = 13010\n')
    got = SimulatedInventory(machine).collect()
    assert got.driver.driver_version == "999.1" and got.driver.cuda_driver_version == 13010
    assert got.gpus == () and got.status == model.InventoryStatus(model.InventoryState.OK)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('colour = "red"\n', "m.toml: colour: unknown key"),
        ('[host]\nname = "x"\n', "m.toml: [host] name: unknown key"),
        ('[[gpu]]\nmodel = "H100-SXM"\nfoo = 1\n', "[gpu[0]] foo: unknown key"),
        ('[[gpu]]\nmodel = "H100-SXM"\npci = { slot = 1 }\n', "[gpu[0].pci] slot: unknown key"),
        ('[[gpu]]\nmodel = "H100-SXM"\nboard_id = nan\n', "[gpu[0]] board_id: must be an integer"),
        ('[[gpu]]\nmodel = "H100-SXM"\nserial = { error = "Nope" }\n', "NVML error name"),
        ('[[gpu]]\nmodel = "H100-SXM"\nserial = { error = "NotSupported", x = 1 }\n', "x"),
        ('[[gpu]]\nmodel = "X9000"\n', "must be one of"),
        ("[[gpu]]\ncount = 2\n", "model"),
        ('[[gpu]]\nmodel = "H100-SXM"\ncount = 2\nuuid = "GPU-1"\n', "count = 1"),
        ('[[gpu]]\nmodel = "H100-SXM"\ncount = 2\npci = { bus_id = "0000:01:00.0" }\n', "count"),
        ('[[gpu]]\nmodel = "H100-SXM"\ncount = 2000\n', "64"),
        (
            '[[gpu]]\nmodel = "H100-SXM"\ncount = 40\n[[gpu]]\nmodel = "A100"\ncount = 30\n',
            "at most 64 GPUs",
        ),
        ('[[gpu]]\nmodel = "H100-SXM"\ncount = -1\n', "integer"),
        ('[[gpu]]\nmodel = "H100-SXM"\nboard_id = true\n', "integer"),
        ('[[gpu]]\nmodel = "H100-SXM"\npersistence_mode = 1\n', "true or false"),
        ('[[gpu]]\nmodel = "H100-SXM"\nstate = "melted"\n', "state"),
        ('[[gpu]]\nmodel = "H100-SXM"\npci = { bus_id = "slot 3" }\n', "PCI bus id"),
        ('[[gpu]]\nmodel = "H100-SXM"\nfabric = { cluster_uuid = "x" }\n', "UUID"),
        ('[[gpu]]\nmodel = "H100-SXM"\nmig = { devices = 8 }\n', "0 to 7"),
        ('[[gpu]]\nmodel = "H100-SXM"\ncompute_capability = [9]\n', "major"),
        ('[driver]\nstatus = "fine"\n', "status"),
        ("gpu = 3\n", "array of tables"),
        ("[[gpu]\n", "TOML"),
    ],
)
def test_bad_files_raise_machine_file_error(text: str, message: str) -> None:
    with pytest.raises(MachineFileError, match=None) as caught:
        parse_machine(text, source="m.toml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("m.toml")
    assert isinstance(caught.value, ConfigError) and caught.value.code == "machine-file-invalid"


# --- properties ----------------------------------------------------------------------------------

_KEYS = sorted(
    {"host", "driver", "gpu", "model", "count", "uuid_seed", "uuid", "state", "serial", "name",
     "board_id", "module_id", "pci", "mig", "fabric", "ecc", "remapped_rows", "cc", "error",
     "bus_id", "devices", "enabled", "clique_id", "cluster_uuid", "hostname", "status",
     "compute_capability", "memory_total_bytes", "persistence_mode", "current_mode"}
)  # fmt: skip
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["H100-SXM", "GB200", "NotSupported", "lost", "00000000:53:00.0", "ok"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=5), inner, max_size=5),
    ),
    max_leaves=20,
)
_DOCS = st.dictionaries(
    st.sampled_from(["host", "driver", "gpu"]) | st.text(max_size=4),
    st.one_of(_VALUES, st.lists(_VALUES, max_size=3)),
    max_size=4,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_DOCS)
def test_any_structure_is_a_machine_or_a_typed_error(doc: dict[str, Any]) -> None:
    try:
        machine = machine_from_mapping(doc)
    except MachineFileError:
        return
    SimulatedInventory(machine).collect(b"\x00" * 32)


_VALID = (EXAMPLES / "degraded-node.toml").read_text()


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_text_is_a_machine_or_a_typed_error(data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(_VALID)))
    end = data.draw(st.integers(start, min(len(_VALID), start + 12)))
    insert = data.draw(st.text(alphabet='[]{}=".,#\n 0123456789abcdefxyz-', max_size=12))
    text = _VALID[:start] + insert + _VALID[end:]
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        with pytest.raises(MachineFileError):
            parse_machine(text)
        return
    with contextlib.suppress(MachineFileError):
        parse_machine(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_a_machine_or_a_typed_error(text: str) -> None:
    with contextlib.suppress(MachineFileError):
        parse_machine(text)
