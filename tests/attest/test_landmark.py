"""The landmark statement: what a landmark signs, what the verifier accepts, and the physics."""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest import landmark as lm
from attest.errors import (
    AttestError,
    BadSignatureError,
    DecodeError,
    IdentityMismatchError,
    UnknownKeyError,
)
from attest.keys import SoftwareSigner

LANDMARK = SoftwareSigner.generate("ed25519")
AGENT = SoftwareSigner.generate("ecdsa-p256-sha256")
AT = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


def measured(
    probes: int = 4, agent: SoftwareSigner = AGENT, rtts: tuple[int, ...] = ()
) -> lm.Statement:
    session = secrets.token_bytes(lm.SESSION_LEN)
    challenges = tuple(
        lm.challenge_bytes("lm-fra", session, seq, secrets.token_bytes(32)) for seq in range(probes)
    )
    rtt = rtts or tuple(1_000_000 + 1000 * i for i in range(probes))
    return lm.Statement(
        landmark_id="lm-fra",
        lat=50.11,
        lon=8.68,
        agent_id="agt-1",
        agent_public_key=agent.public_key.spki_der,
        session=session,
        challenges=challenges,
        signatures=tuple(lm.answer(agent, c) for c in challenges),
        rtt_ns=rtt,
        rtt_min_ns=min(rtt),
        measured_at=AT,
    )


def check(raw: bytes) -> lm.Statement:
    return lm.verify_statement(
        raw, LANDMARK.public_key, agent_id="agt-1", agent_keys={AGENT.public_key.spki_der}
    )


def test_a_signed_statement_verifies_and_round_trips() -> None:
    statement = measured()
    assert check(lm.sign_statement(statement, LANDMARK)) == statement
    assert statement.probes == 4


def test_another_landmark_key_is_refused() -> None:
    raw = lm.sign_statement(measured(), SoftwareSigner.generate())
    with pytest.raises(UnknownKeyError):
        check(raw)


def test_a_statement_about_another_agent_or_key_is_refused() -> None:
    with pytest.raises(IdentityMismatchError):
        check(lm.sign_statement(replace(measured(), agent_id="agt-2"), LANDMARK))
    stranger = SoftwareSigner.generate()
    with pytest.raises(UnknownKeyError):
        check(lm.sign_statement(measured(agent=stranger), LANDMARK))


def test_an_answer_that_does_not_verify_is_refused() -> None:
    statement = measured()
    other = lm.answer(AGENT, statement.challenges[0])
    forged = replace(statement, signatures=(*statement.signatures[:-1], other))
    with pytest.raises(BadSignatureError, match="probe 3"):
        check(lm.sign_statement(forged, LANDMARK))


def test_an_answer_signed_as_evidence_is_not_an_answer() -> None:
    """Domain separation: the same key's signature over the bare challenge does not count."""
    statement = measured(probes=1)
    bare = replace(statement, signatures=(AGENT.sign(statement.challenges[0]),))
    with pytest.raises(BadSignatureError):
        check(lm.sign_statement(bare, LANDMARK))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: replace(s, rtt_min_ns=s.rtt_min_ns + 1), "least round trip"),
        (lambda s: replace(s, rtt_ns=(0, *s.rtt_ns[1:]), rtt_min_ns=0), "zero"),
        (lambda s: replace(s, challenges=s.challenges[::-1], signatures=s.signatures[::-1]),
         "out of order"),
        (lambda s: replace(s, signatures=s.signatures[:-1]), "one answer"),
        (lambda s: replace(s, lat=91.0), "latitude"),
        (lambda s: replace(s, session=b"short"), "session"),
        (lambda s: replace(s, landmark_id="lm-other"), "not of this landmark"),
    ],
)  # fmt: skip
def test_malformed_statements_are_refused_with_a_reason(change: object, message: str) -> None:
    bad = change(measured())  # type: ignore[operator]
    with pytest.raises(DecodeError, match=message):
        check(lm.sign_statement(bad, LANDMARK))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_any_bytes_are_refused_with_a_typed_error(raw: bytes) -> None:
    with pytest.raises(AttestError):
        check(raw)


def test_any_single_byte_change_of_a_statement_is_refused() -> None:
    signed = lm.sign_statement(measured(probes=2), LANDMARK)
    check(signed)
    for at in range(len(signed)):
        for flip in (0x01, 0x80):
            raw = bytearray(signed)
            raw[at] ^= flip
            with pytest.raises(AttestError):
                check(bytes(raw))


def test_great_circle_distance_matches_known_city_pairs() -> None:
    # Frankfurt -> Kaliningrad ~946 km; Singapore -> Hong Kong ~2,589 km (evidence figures).
    assert lm.great_circle_km(50.11, 8.68, 54.71, 20.51) == pytest.approx(946, abs=15)
    assert lm.great_circle_km(1.35, 103.82, 22.32, 114.17) == pytest.approx(2589, abs=15)
    assert lm.great_circle_km(10.0, 20.0, 10.0, 20.0) == 0.0


def test_the_bound_is_light_in_vacuum() -> None:
    assert lm.bound_km(1_000_000) == pytest.approx(149.896229)
    assert lm.min_rtt_ns(2000) == pytest.approx(13_342_563.8, rel=1e-6)
    # A responder 1 ms away cannot be 2,000 km away; one 30 ms away can.
    assert lm.contradicts(1_000_000, 2000)
    assert not lm.contradicts(30_000_000, 2000)
