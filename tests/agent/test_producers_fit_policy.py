"""Every string the agent's real producers emit passes the verifier's decoding policy
(attest/wire/_policy.py, attest/identifiers.py): the simulator's identities, each catalogue
model, each example machine, and the real NVML captures."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from agent.catalogue import CATALOGUE
from agent.render import inventory_from_json
from agent.simulate import SimulatedInventory, derived_uuid, load_machine, parse_machine
from attest import identifiers as ids
from attest import model, wire
from tests.attest.factories import full_evidence

REPO = Path(__file__).resolve().parents[2]


@given(st.binary(min_size=1, max_size=32), st.integers(0, 63))
def test_simulator_identities_fit_the_grammars(seed: bytes, index: int) -> None:
    assert ids.GPU_UUID.match(derived_uuid("GPU", seed.hex(), index))
    assert ids.MIG_UUID.match(derived_uuid("MIG", seed.hex(), index))


def _decodes(inventory: model.Inventory) -> None:
    evidence = replace(
        full_evidence(),
        gpus=inventory.gpus,
        driver=inventory.driver,
        inventory=replace(inventory.status, device_count=len(inventory.gpus)),
    )
    wire.decode_evidence(wire.encode_evidence(evidence))


def test_every_catalogue_model_and_example_machine_decodes() -> None:
    """What the simulator makes of each catalogue model and example machine passes the policy."""
    for key in CATALOGUE:
        machine = parse_machine(f'[[gpu]]\nmodel = "{key}"\ncount = 8\n')
        _decodes(SimulatedInventory(machine).collect(b"\x01" * 32))
    for path in sorted((REPO / "examples" / "machines").glob("*.toml")):
        inventory = SimulatedInventory(load_machine(path)).collect(b"\x01" * 32)
        if inventory.status.state is model.InventoryState.OK:
            _decodes(inventory)


def test_real_capture_decodes() -> None:
    for path in sorted((REPO / "tests" / "agent" / "nvml" / "fixtures").glob("real-*.json")):
        _decodes(inventory_from_json(json.loads(path.read_text())))
