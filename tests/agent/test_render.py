"""The inventory JSON: stable shape, exact round trip, and a parser that fails only typed."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.render import SCHEMA, inventory_from_json, inventory_to_json
from agent.simulate import SimulatedInventory, load_machine
from attest import model, wire
from attest.errors import DecodeError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "machines"
NONCE = b"\x07" * 32


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.stem)
def test_round_trip(path: Path) -> None:
    machine = load_machine(path)
    inventory = SimulatedInventory(machine).collect(NONCE)
    doc = inventory_to_json(inventory, machine.host)
    assert doc["schema"] == SCHEMA
    assert doc["host"]["hostname"] == machine.host.hostname
    assert inventory_from_json(json.loads(json.dumps(doc))) == inventory


def test_shape_of_unavailable_and_bytes() -> None:
    inventory = SimulatedInventory(load_machine(EXAMPLES / "h100-cc-node.toml")).collect(NONCE)
    gpu = inventory_to_json(inventory)["gpus"][0]
    assert "host" not in inventory_to_json(inventory)
    assert gpu["cc"]["cec_attestation_report"] == {"unavailable": "NotPresent"}
    assert gpu["cc"]["report_nonce"] == "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="
    assert gpu["compute_capability"] == [9, 0]
    assert gpu["state"] == "ok"


_VALID = inventory_to_json(
    SimulatedInventory(load_machine(EXAMPLES / "degraded-node.toml")).collect(NONCE)
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*prefix, index))
    return out


_ALL_PATHS = _paths(_VALID)[1:]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_ALL_PATHS), _JSON, st.booleans())
def test_a_damaged_document_is_rejected_typed(
    path: tuple[Any, ...], value: Any, drop: bool
) -> None:
    doc = copy.deepcopy(_VALID)
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    if drop:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    try:
        parsed = inventory_from_json(doc)
    except DecodeError:
        return
    assert isinstance(parsed, model.Inventory)


@settings(max_examples=200, deadline=None)
@given(_JSON)
def test_any_json_is_an_inventory_or_a_decode_error(doc: Any) -> None:
    with contextlib.suppress(DecodeError):
        inventory_from_json(doc)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.stem)
def test_simulated_gpus_survive_the_wire_contract(path: Path) -> None:
    """What the inventory backends produce is accepted as evidence by attest.wire."""
    inventory = SimulatedInventory(load_machine(path)).collect(NONCE)
    absent = model.Unavailable("NotFound")
    host = model.HostFacts(*(absent,) * len(dataclasses.fields(model.HostFacts)))
    evidence = model.Evidence(
        agent_id="agent-1", seq=1, prev_hash=b"", nonce=NONCE,
        created_at=datetime(2026, 1, 1, tzinfo=UTC), agent_version="test", host=host,
        driver=inventory.driver, inventory=inventory.status, gpus=inventory.gpus, site_id="s",
    )  # fmt: skip
    assert wire.decode_evidence(wire.encode_evidence(evidence)) == evidence
