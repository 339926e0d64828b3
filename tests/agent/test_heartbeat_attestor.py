"""When the attestor sends a heartbeat instead of full evidence (docs/protocol.md §4.1): only
once the full evidence it names was receipted, while what it would report is unchanged, and
for at most `full_every`; anything else sends full evidence."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

from agent.attestor import Attestor, AttestorSettings, HostOverride
from agent.simulate import SimulatedInventory, parse_machine
from agent.spool import Spool, SpoolEntry
from attest.envelope import HEARTBEAT_PAYLOAD_TYPE, verify
from attest.keys import SoftwareSigner
from attest.wire import decode_envelope, decode_heartbeat
from tests.agent.test_attestor import FIXTURES, NOW, SwappableInventory

from .helpers import MACHINE_8X_H100

EVERY = timedelta(hours=1)


def _attestor(tmp_path: Path, source: SwappableInventory) -> tuple[Attestor, Spool, SoftwareSigner]:
    signer = SoftwareSigner.generate("ecdsa-p256-sha256")
    settings = AttestorSettings(
        agent_id="agt-1", site_id="", host_root=FIXTURES / "hardened",
        state_dir=Path("/var/lib/gpu-attest"), key_file=tmp_path / "agent.key",
        host_override=HostOverride("sim-host", None, "sim-site"), full_every=EVERY,
    )  # fmt: skip
    spool = Spool.open(tmp_path, 1 << 20)
    return Attestor(settings, signer, spool, source), spool, signer


def base(entry: SpoolEntry, signer: SoftwareSigner) -> bytes | None:
    """The base a heartbeat names, or None for full evidence."""
    envelope = decode_envelope(entry.envelope)
    if envelope.payload_type != HEARTBEAT_PAYLOAD_TYPE:
        return None
    key = signer.public_key
    return decode_heartbeat(verify(envelope, HEARTBEAT_PAYLOAD_TYPE, {key.keyid: key}).payload).base


def receipted(spool: Spool, entry: SpoolEntry) -> None:
    spool.acknowledge(entry.seq, b"receipt", NOW)


def test_heartbeats_follow_a_receipted_full_evidence_while_nothing_changes(
    tmp_path: Path,
) -> None:
    source = SwappableInventory(SimulatedInventory(parse_machine(MACHINE_8X_H100)).collect())
    attestor, spool, signer = _attestor(tmp_path, source)
    full = attestor.produce(b"", NOW)
    assert base(full, signer) is None
    # Not receipted yet: the verifier may not hold it, so full evidence again.
    again = attestor.produce(b"", NOW + timedelta(seconds=1))
    assert base(again, signer) is None
    receipted(spool, full)
    receipted(spool, again)
    beat = attestor.produce(b"", NOW + timedelta(seconds=60))
    assert base(beat, signer) == again.hash
    assert len(beat.envelope) < 400 < len(again.envelope)
    # The period ends: full evidence, though nothing changed.
    late = attestor.produce(b"", NOW + timedelta(seconds=1) + EVERY)
    assert base(late, signer) is None
    receipted(spool, late)
    assert base(attestor.produce(b"", NOW + EVERY + timedelta(minutes=1)), signer) == late.hash
    # A changed power limit: full evidence at once.
    gpus = list(source.inventory.gpus)
    gpus[0] = dataclasses.replace(gpus[0], power_limit_mw=400_000)
    source.inventory = dataclasses.replace(source.inventory, gpus=tuple(gpus))
    changed = attestor.produce(b"", NOW + EVERY + timedelta(minutes=2))
    assert base(changed, signer) is None
    receipted(spool, changed)
    # A refused heartbeat makes the agent forget its base: full evidence next.
    attestor.forget_full()
    assert base(attestor.produce(b"", NOW + EVERY + timedelta(minutes=3)), signer) is None


def test_without_full_every_every_attestation_is_full(tmp_path: Path) -> None:
    source = SwappableInventory(SimulatedInventory(parse_machine(MACHINE_8X_H100)).collect())
    attestor, spool, signer = _attestor(tmp_path, source)
    attestor.settings = dataclasses.replace(attestor.settings, full_every=None)
    for minute in range(3):
        entry = attestor.produce(b"", NOW + timedelta(minutes=minute))
        receipted(spool, entry)
        assert base(entry, signer) is None
