"""The pure pipeline: every rejection is a typed error; freshness and chain verdicts."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from attest import errors, wire
from attest.envelope import (
    EVIDENCE_PAYLOAD_TYPE,
    Envelope,
    EnvelopeSignature,
    envelope_hash,
    sign,
)
from attest.keys import SoftwareSigner
from attest.model import Freshness, InventoryState, InventoryStatus
from tests.verifier.helpers import T0, Chain, evidence, seal
from verifier.model import NonceRecord
from verifier.pipeline import (
    ChainHead,
    Limits,
    PinnedAgent,
    authenticate,
    check_state,
    to_attestation,
)

LIMITS = Limits(64 * 1024, timedelta(minutes=5), timedelta(days=30), timedelta(minutes=10))
NONCE = b"\x07" * 32


def pinned(
    signer: SoftwareSigner, agent_id: str = "agt-1", *, revoked: bool = False
) -> PinnedAgent:
    key = signer.public_key
    return PinnedAgent(agent_id, "site-a", {key.keyid: key}, revoked=revoked)


def issued(nonce: bytes = NONCE, *, consumed: bool = False, ttl_s: int = 300) -> NonceRecord:
    return NonceRecord(
        nonce=nonce, issued_at=T0, expires_at=T0 + timedelta(seconds=ttl_s), replica="r1",
        agent_id="agt-1", consumed_at=T0 if consumed else None,
    )  # fmt: skip


@pytest.fixture
def signer() -> SoftwareSigner:
    return SoftwareSigner.generate()


def test_fresh_first_envelope_is_accepted_with_nonce_freshness(signer: SoftwareSigner) -> None:
    raw = Chain("agt-1", signer).next(NONCE, T0)
    auth = authenticate(raw, "agt-1", pinned(signer), LIMITS)
    verified = check_state(auth, issued(), ChainHead(), None, now=T0, limits=LIMITS)
    assert verified.freshness is Freshness.NONCE
    assert verified.envelope_hash == envelope_hash(raw)
    item = to_attestation(verified, T0)
    assert item.nonce == NONCE and item.gpus[0].pci_device_id == 0x233010DE


def test_empty_nonce_is_offline(signer: SoftwareSigner) -> None:
    raw = Chain("agt-1", signer).next(b"", T0 - timedelta(days=2))
    auth = authenticate(raw, "agt-1", pinned(signer), LIMITS)
    verified = check_state(auth, None, ChainHead(), None, now=T0, limits=LIMITS)
    assert verified.freshness is Freshness.OFFLINE
    assert to_attestation(verified, T0).nonce == b""


def test_issued_but_expired_nonce_is_offline(signer: SoftwareSigner) -> None:
    raw = Chain("agt-1", signer).next(NONCE, T0)
    auth = authenticate(raw, "agt-1", pinned(signer), LIMITS)
    later = T0 + timedelta(hours=1)
    verified = check_state(auth, issued(), ChainHead(), None, now=later, limits=LIMITS)
    assert verified.freshness is Freshness.OFFLINE


def test_oversized_envelope(signer: SoftwareSigner) -> None:
    raw = Chain("agt-1", signer).next(NONCE, T0)
    with pytest.raises(errors.SizeLimitError):
        authenticate(raw, "agt-1", pinned(signer), replace(LIMITS, max_envelope_bytes=100))


def test_garbage_is_a_decode_error(signer: SoftwareSigner) -> None:
    with pytest.raises(errors.DecodeError):
        authenticate(b"\xff\xff\xff", "agt-1", pinned(signer), LIMITS)


def test_unknown_agent(signer: SoftwareSigner) -> None:
    raw = Chain("agt-1", signer).next(NONCE, T0)
    with pytest.raises(errors.AgentUnknownError):
        authenticate(raw, "agt-1", None, LIMITS)


def test_revoked_agent(signer: SoftwareSigner) -> None:
    raw = Chain("agt-1", signer).next(NONCE, T0)
    with pytest.raises(errors.AgentRevokedError):
        authenticate(raw, "agt-1", pinned(signer, revoked=True), LIMITS)


def test_signature_by_a_key_that_is_not_pinned(signer: SoftwareSigner) -> None:
    raw = Chain("agt-1", SoftwareSigner.generate()).next(NONCE, T0)
    with pytest.raises(errors.UnknownKeyError):
        authenticate(raw, "agt-1", pinned(signer), LIMITS)


def test_flipped_payload_byte(signer: SoftwareSigner) -> None:
    env = wire.decode_envelope(Chain("agt-1", signer).next(NONCE, T0))
    payload = bytearray(env.payload)
    payload[-1] ^= 1
    raw = wire.encode_envelope(replace(env, payload=bytes(payload)))
    with pytest.raises(errors.BadSignatureError):
        authenticate(raw, "agt-1", pinned(signer), LIMITS)


def test_wrong_payload_type(signer: SoftwareSigner) -> None:
    env = wire.decode_envelope(Chain("agt-1", signer).next(NONCE, T0))
    raw = wire.encode_envelope(replace(env, payload_type="application/x-other"))
    with pytest.raises(errors.PayloadTypeError):
        authenticate(raw, "agt-1", pinned(signer), LIMITS)


def test_no_signature(signer: SoftwareSigner) -> None:
    env = wire.decode_envelope(Chain("agt-1", signer).next(NONCE, T0))
    raw = wire.encode_envelope(Envelope(env.payload_type, env.payload, ()))
    with pytest.raises(errors.NoSignatureError):
        authenticate(raw, "agt-1", pinned(signer), LIMITS)


def test_signed_garbage_payload_is_a_decode_error(signer: SoftwareSigner) -> None:
    raw = wire.encode_envelope(sign(EVIDENCE_PAYLOAD_TYPE, b"\xff\x01", [signer]))
    with pytest.raises(errors.DecodeError):
        authenticate(raw, "agt-1", pinned(signer), LIMITS)


def test_evidence_naming_another_agent(signer: SoftwareSigner) -> None:
    raw = Chain("agt-2", signer).next(NONCE, T0)
    with pytest.raises(errors.IdentityMismatchError):
        authenticate(raw, "agt-1", pinned(signer), LIMITS)


def test_evidence_claiming_another_site_than_enrolled_passes_with_its_claim(
    signer: SoftwareSigner,
) -> None:
    """Not refused: the agent stays counted at its enrolled site and the store raises
    site-claim-mismatch from the claim carried here (tests/verifier/store/test_site_claims.py)."""
    raw = Chain("agt-1", signer).next(NONCE, T0, site_id="site-b")
    auth = authenticate(raw, "agt-1", pinned(signer), LIMITS)
    verified = check_state(auth, issued(), ChainHead(), None, now=T0, limits=LIMITS)
    assert to_attestation(verified, T0).site_claim == "site-b"


def test_transport_identity_other_than_the_pinned_agent(signer: SoftwareSigner) -> None:
    raw = Chain("agt-1", signer).next(NONCE, T0)
    with pytest.raises(errors.AgentUnknownError):
        authenticate(raw, "agt-9", pinned(signer), LIMITS)


def test_gpus_without_a_driver_break_an_invariant(signer: SoftwareSigner) -> None:
    status = InventoryStatus(InventoryState.DRIVER_NOT_LOADED, "no driver", 0)
    raw = seal(signer, replace(evidence("agt-1", 1, b"", NONCE, T0), inventory=status))
    with pytest.raises(errors.InvariantError):
        authenticate(raw, "agt-1", pinned(signer), LIMITS)


def test_an_unreadable_inventory_is_carried_to_the_store(signer: SoftwareSigner) -> None:
    """No driver, no GPUs listed: the store must learn that the inventory was not read, so that
    the host's GPUs are held as lost instead of gone."""
    status = InventoryStatus(InventoryState.DRIVER_NOT_LOADED, "no driver", 0)
    raw = seal(signer, replace(evidence("agt-1", 1, b"", NONCE, T0, uuids=()), inventory=status))
    auth = authenticate(raw, "agt-1", pinned(signer), LIMITS)
    verified = check_state(auth, issued(), ChainHead(), None, now=T0, limits=LIMITS)
    assert to_attestation(verified, T0).inventory_read is False
    read = _auth(signer, Chain("agt-1", signer).next(NONCE, T0))
    ok = check_state(read, issued(), ChainHead(), None, now=T0, limits=LIMITS)
    assert to_attestation(ok, T0).inventory_read is True


def test_duplicate_gpu_uuid_is_refused(signer: SoftwareSigner) -> None:
    raw = seal(signer, evidence("agt-1", 1, b"", NONCE, T0, uuids=("GPU-a", "GPU-a")))
    with pytest.raises(errors.InvariantError):
        authenticate(raw, "agt-1", pinned(signer), LIMITS)


def _auth(signer: SoftwareSigner, raw: bytes):  # type: ignore[no-untyped-def]
    return authenticate(raw, "agt-1", pinned(signer), LIMITS)


def test_nonce_never_issued(signer: SoftwareSigner) -> None:
    auth = _auth(signer, Chain("agt-1", signer).next(NONCE, T0))
    with pytest.raises(errors.NonceUnknownError):
        check_state(auth, None, ChainHead(), None, now=T0, limits=LIMITS)


def test_a_purged_nonce_on_old_evidence_is_offline_not_unknown(signer: SoftwareSigner) -> None:
    """A spooled envelope that answered a challenge, replayed after an outage long enough for
    the sweep to purge the nonce's row, must not be refused for good: it is OFFLINE evidence.
    Up to the retention (10 min here) plus the skew (5 min) the row must still exist, so an
    unknown nonce is refused until then."""
    auth = _auth(signer, Chain("agt-1", signer).next(NONCE, T0))
    edge = T0 + timedelta(minutes=15)
    with pytest.raises(errors.NonceUnknownError):
        check_state(auth, None, ChainHead(), None, now=edge, limits=LIMITS)
    later = edge + timedelta(microseconds=1)
    verified = check_state(auth, None, ChainHead(), None, now=later, limits=LIMITS)
    assert verified.freshness is Freshness.OFFLINE
    assert to_attestation(verified, later).nonce == b""  # nothing for the store to consume


def test_nonce_record_for_another_nonce_is_unknown(signer: SoftwareSigner) -> None:
    auth = _auth(signer, Chain("agt-1", signer).next(NONCE, T0))
    with pytest.raises(errors.NonceUnknownError):
        check_state(auth, issued(b"\x01" * 32), ChainHead(), None, now=T0, limits=LIMITS)


def test_nonce_already_consumed(signer: SoftwareSigner) -> None:
    auth = _auth(signer, Chain("agt-1", signer).next(NONCE, T0))
    with pytest.raises(errors.NonceReplayedError):
        check_state(auth, issued(consumed=True), ChainHead(), None, now=T0, limits=LIMITS)


def test_replay_of_an_accepted_envelope(signer: SoftwareSigner) -> None:
    raw = Chain("agt-1", signer).next(NONCE, T0)
    auth = _auth(signer, raw)
    head = ChainHead(1, envelope_hash(raw))
    with pytest.raises(errors.ReplayError):
        check_state(auth, issued(consumed=True), head, auth.payload_digest, now=T0, limits=LIMITS)


def test_same_seq_other_payload_is_a_fork(signer: SoftwareSigner) -> None:
    first = Chain("agt-1", signer).next(NONCE, T0)
    other = _auth(signer, Chain("agt-1", signer).next(b"", T0))
    head = ChainHead(1, envelope_hash(first))
    prior = _auth(signer, first).payload_digest
    with pytest.raises(errors.ForkError):
        check_state(other, None, head, prior, now=T0, limits=LIMITS)


def test_skipped_seq_is_a_gap(signer: SoftwareSigner) -> None:
    chain = Chain("agt-1", signer)
    chain.next(b"", T0)
    chain.next(b"", T0)
    third = _auth(signer, chain.next(b"", T0))
    head = ChainHead(1, envelope_hash(chain.sent[0]))
    with pytest.raises(errors.GapError):
        check_state(third, None, head, None, now=T0, limits=LIMITS)


def test_broken_hash_link_is_a_gap(signer: SoftwareSigner) -> None:
    chain = Chain("agt-1", signer)
    chain.next(b"", T0)
    second = _auth(signer, chain.next(b"", T0))
    head = ChainHead(1, b"\x00" * 32)
    with pytest.raises(errors.GapError):
        check_state(second, None, head, None, now=T0, limits=LIMITS)


def test_successor_is_accepted(signer: SoftwareSigner) -> None:
    chain = Chain("agt-1", signer)
    first = chain.next(b"", T0)
    second = _auth(signer, chain.next(NONCE, T0))
    head = ChainHead(1, envelope_hash(first))
    verified = check_state(second, issued(), head, None, now=T0, limits=LIMITS)
    assert verified.seq == 2 and verified.evidence.prev_hash == head.last_hash


def test_created_in_the_future(signer: SoftwareSigner) -> None:
    auth = _auth(signer, Chain("agt-1", signer).next(NONCE, T0 + timedelta(hours=1)))
    with pytest.raises(errors.ClockSkewError):
        check_state(auth, issued(), ChainHead(), None, now=T0, limits=LIMITS)


def test_offline_evidence_older_than_the_maximum_age(signer: SoftwareSigner) -> None:
    auth = _auth(signer, Chain("agt-1", signer).next(b"", T0 - timedelta(days=31)))
    with pytest.raises(errors.ClockSkewError):
        check_state(auth, None, ChainHead(), None, now=T0, limits=LIMITS)


def test_evidence_predating_its_challenge(signer: SoftwareSigner) -> None:
    auth = _auth(signer, Chain("agt-1", signer).next(NONCE, T0 - timedelta(hours=1)))
    with pytest.raises(errors.ClockSkewError):
        check_state(auth, issued(), ChainHead(), None, now=T0, limits=LIMITS)


def test_extra_signature_by_unknown_key_is_refused(signer: SoftwareSigner) -> None:
    env = wire.decode_envelope(Chain("agt-1", signer).next(NONCE, T0))
    extra = EnvelopeSignature("ab" * 32, b"\x00" * 64)
    raw = wire.encode_envelope(replace(env, signatures=(*env.signatures, extra)))
    with pytest.raises(errors.UnknownKeyError):
        authenticate(raw, "agt-1", pinned(signer), LIMITS)


def test_nonce_issued_to_another_agent_is_refused_before_its_state_is_told(
    signer: SoftwareSigner,
) -> None:
    auth = _auth(signer, Chain("agt-1", signer).next(NONCE, T0))
    for consumed in (False, True):
        theirs = replace(issued(consumed=consumed), agent_id="agt-2")
        with pytest.raises(errors.NonceMismatchError):
            check_state(auth, theirs, ChainHead(), None, now=T0, limits=LIMITS)


def test_nonce_issued_before_nonces_were_bound_proves_no_freshness(
    signer: SoftwareSigner,
) -> None:
    auth = _auth(signer, Chain("agt-1", signer).next(NONCE, T0))
    verified = check_state(
        auth, replace(issued(), agent_id=""), ChainHead(), None, now=T0, limits=LIMITS
    )
    assert verified.freshness is Freshness.OFFLINE
    assert to_attestation(verified, T0).nonce == b""  # so the store consumes nothing


def test_created_before_the_chains_latest_time_beyond_the_skew(signer: SoftwareSigner) -> None:
    chain = Chain("agt-1", signer)
    first = chain.next(b"", T0)
    head = ChainHead(1, envelope_hash(first), T0)
    within = _auth(
        signer, Chain("agt-1", signer, 1, head.last_hash).next(b"", T0 - LIMITS.clock_skew)
    )
    assert check_state(within, None, head, None, now=T0, limits=LIMITS).seq == 2
    reversed_ = _auth(signer, chain.next(b"", T0 - LIMITS.clock_skew - timedelta(seconds=1)))
    with pytest.raises(errors.TimeReversedError):
        check_state(reversed_, None, head, None, now=T0, limits=LIMITS)


def test_the_chains_latest_time_never_steps_back() -> None:
    head = ChainHead().after(1, b"a" * 32, T0).after(2, b"b" * 32, T0 - timedelta(minutes=4))
    assert (head.last_seq, head.last_hash, head.last_created_at) == (2, b"b" * 32, T0)
