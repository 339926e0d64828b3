"""check_evidence (the verifier's per-envelope parse) accepts exactly what decode_evidence does.

Both run the same checking code; these tests hold them to it: on every invariant case, on
mutated payloads and on random bytes, they accept the same inputs, raise the same error
class, and what check_evidence keeps agrees with the fully decoded evidence.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from attest import model, wire
from attest.errors import AttestError, InvariantError
from attest.v1 import attest_pb2 as pb
from tests.attest.factories import full_evidence, unavailable_evidence
from tests.attest.test_wire import INVARIANTS

SEEDS = (
    wire.encode_evidence(full_evidence(gpus=3)),
    wire.encode_evidence(unavailable_evidence()),
)
#: GPU sections a verifier may hold from an agent's earlier evidence.
KNOWN = tuple(wire.check_evidence(seed).gpu_section for seed in SEEDS)


def _outcome(decode: object, payload: bytes) -> type[BaseException] | None:
    try:
        decode(payload)  # type: ignore[operator]
    except AttestError as exc:
        return type(exc)
    return None


def _same_outcome(payload: bytes) -> None:
    full = _outcome(wire.decode_evidence, payload)
    assert _outcome(wire.check_evidence, payload) is full
    for known in KNOWN:  # a known GPU section never changes the outcome
        assert _outcome(lambda p, k=known: wire.check_evidence(p, k), payload) is full
    if full is None:
        checked = wire.check_evidence(payload)
        _agrees(checked, wire.decode_evidence(payload))
        for known in KNOWN:
            assert wire.check_evidence(payload, known) == checked


def _agrees(checked: wire.CheckedEvidence, evidence: model.Evidence) -> None:
    for name in ("agent_id", "seq", "prev_hash", "nonce", "created_at", "site_id", "inventory"):
        assert getattr(checked, name) == getattr(evidence, name)
    assert (checked.host, checked.driver) == (evidence.host, evidence.driver)
    assert (checked.posture, checked.landmarks) == (evidence.posture, evidence.landmarks)
    assert len(checked.gpus) == len(evidence.gpus)
    for claim, gpu in zip(checked.gpus, evidence.gpus, strict=True):
        pci = gpu.pci
        device_id = None if isinstance(pci, model.Unavailable) else pci.device_id
        assert (claim.index, claim.uuid, claim.name) == (gpu.index, gpu.uuid, gpu.name)
        assert (claim.pci_device_id, claim.mig) == (device_id, gpu.mig)


def test_valid_payloads_agree() -> None:
    for payload in SEEDS:
        _same_outcome(payload)


def test_every_invariant_case_agrees() -> None:
    for mutate in INVARIANTS.values():
        msg = pb.Evidence()
        msg.ParseFromString(wire.encode_evidence(full_evidence(gpus=1)))
        mutate(msg)
        payload = msg.SerializeToString()
        assert _outcome(wire.check_evidence, payload) is not None
        _same_outcome(payload)


@settings(max_examples=300)
@given(st.sampled_from(SEEDS), st.data())
def test_mutated_payloads_agree(seed: bytes, data: st.DataObject) -> None:
    raw = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    _same_outcome(bytes(raw))


@given(st.binary(max_size=512))
def test_random_bytes_agree(payload: bytes) -> None:
    _same_outcome(payload)


def _with_gpu_entries(payload: bytes, entries: list[bytes]) -> bytes:
    """`payload` with its GPU entries replaced by these exact bytes."""
    rest = pb.Evidence.FromString(payload)
    del rest.gpus[:]
    view = pb.EvidenceGpuEntries(gpus=entries)
    return rest.SerializeToString() + view.SerializeToString()


def test_same_gpu_bytes_are_not_checked_again() -> None:
    known = wire.check_evidence(SEEDS[0]).gpu_section
    later = wire.encode_evidence(full_evidence(gpus=3, seq=7))
    checked = wire.check_evidence(later, known)
    assert checked.seq == 7
    assert checked.gpus is known.gpus  # reused, not rebuilt
    assert checked.gpu_section == known


def test_changed_gpu_bytes_are_checked_again() -> None:
    known = wire.check_evidence(SEEDS[0]).gpu_section
    entries = list(pb.EvidenceGpuEntries.FromString(SEEDS[0]).gpus)
    gpu = pb.Gpu.FromString(entries[1])
    gpu.uuid = pb.Gpu.FromString(entries[0]).uuid  # the same UUID twice: must be refused
    entries[1] = gpu.SerializeToString()
    payload = _with_gpu_entries(SEEDS[0], entries)
    assert _outcome(lambda p: wire.check_evidence(p, known), payload) is InvariantError
    assert _outcome(wire.decode_evidence, payload) is InvariantError


def test_entries_cannot_be_regrouped_under_a_known_digest() -> None:
    # Two entries sent as one parse as one merged GPU; the digest must tell them apart.
    entries = list(pb.EvidenceGpuEntries.FromString(SEEDS[0]).gpus)
    merged = _with_gpu_entries(SEEDS[0], [entries[0] + entries[1], entries[2]])
    split = _with_gpu_entries(SEEDS[0], entries)
    assert wire.check_evidence(split).gpu_digest == KNOWN[0].digest
    assert wire.check_evidence(merged).gpu_digest != KNOWN[0].digest
