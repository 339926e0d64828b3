"""One attestation cycle, and the change detector that makes the daemon attest at once."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

from agent.attestor import Attestor, AttestorSettings, HostOverride
from agent.simulate import SimulatedInventory, parse_machine
from agent.spool import Spool
from attest.envelope import EVIDENCE_PAYLOAD_TYPE, verify
from attest.keys import SoftwareSigner
from attest.model import Inventory
from attest.wire import decode_envelope, decode_evidence

from .helpers import MACHINE_8X_H100

NOW = datetime(2026, 6, 1, tzinfo=UTC)
FIXTURES = Path(__file__).parent / "fixtures" / "hosts"


class SwappableInventory:
    """An InventorySource port whose answer the test changes (a GPU swapped, a limit lowered)."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory

    def collect(self, cc_nonce: bytes | None = None) -> Inventory:
        return self.inventory

    def close(self) -> None:
        """Nothing held."""


def _attestor(tmp_path: Path, source: SwappableInventory) -> tuple[Attestor, SoftwareSigner]:
    signer = SoftwareSigner.generate("ecdsa-p256-sha256")
    settings = AttestorSettings(
        agent_id="agt-1",
        site_id="",
        host_root=FIXTURES / "hardened",
        state_dir=Path("/var/lib/gpu-attest"),
        key_file=tmp_path / "agent.key",
        host_override=HostOverride("sim-host", None, "sim-site"),
    )
    return Attestor(settings, signer, Spool.open(tmp_path, 1 << 20), source), signer


def test_produce_builds_signs_and_spools(tmp_path: Path) -> None:
    source = SwappableInventory(SimulatedInventory(parse_machine(MACHINE_8X_H100)).collect())
    attestor, signer = _attestor(tmp_path, source)
    first = attestor.produce(b"", NOW)
    second = attestor.produce(b"n" * 32, NOW)
    key = signer.public_key
    payload = verify(decode_envelope(second.envelope), EVIDENCE_PAYLOAD_TYPE, {key.keyid: key})
    evidence = decode_evidence(payload.payload)
    assert (evidence.seq, evidence.prev_hash, evidence.nonce) == (2, first.hash, b"n" * 32)
    assert evidence.host.hostname == "sim-host"  # the simulated host's name
    assert evidence.host.machine_id == "4c4c4544004b4d1080384ac04f4d3432"  # the fixture's
    assert evidence.site_id == "sim-site"  # no enrolled site: the machine's claim
    assert len(evidence.posture) == 11 and len(evidence.gpus) == 8
    assert attestor.spool_depth() == 2


def test_inventory_change_is_detected(tmp_path: Path) -> None:
    inventory = SimulatedInventory(parse_machine(MACHINE_8X_H100)).collect()
    source = SwappableInventory(inventory)
    attestor, _ = _attestor(tmp_path, source)
    assert not attestor.inventory_changed()  # nothing attested yet: the interval decides
    attestor.produce(b"", NOW)
    assert not attestor.inventory_changed()
    source.inventory = dataclasses.replace(inventory, gpus=inventory.gpus[1:])  # a GPU gone
    assert attestor.inventory_changed()
    attestor.produce(b"", NOW)
    assert not attestor.inventory_changed()
