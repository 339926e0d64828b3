"""Location checks end to end over the store (docs/design.md §16): statements carried by
accepted evidence are kept in the accept transaction, checked once against the registry's
landmark key and the agent's keys, and the sites judged; the findings open, refresh and resolve.
Both backends."""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import datetime, timedelta

from attest import landmark as lm
from attest.keys import SoftwareSigner
from tests.verifier.store.helpers import T0, Chain
from verifier import locate
from verifier.location import LOCATION_CONTRADICTED, LOCATION_UNVERIFIED, VALID
from verifier.model import EnrollmentRequest, FindingStatus, NewToken, token_hash
from verifier.registry_model import Entity, Landmark, Registry, Site, VeuStatus
from verifier.store.api import Store

LANDMARK = SoftwareSigner.generate("ed25519")
FRA = (50.11, 8.68)
IAD = (39.04, -77.49)  # Ashburn, ~6,500 km from Frankfurt
DEADLINE = timedelta(hours=6)
SKEW = timedelta(minutes=5)


def _enroll(store: Store, agent_id: str, site: str, key: SoftwareSigner) -> None:
    token = secrets.token_urlsafe(16)
    store.create_token(NewToken(token_hash(token), site, T0, T0 + timedelta(hours=1)))
    spki = key.public_key.spki_der
    store.enroll(
        EnrollmentRequest(token_hash(token), agent_id, spki, key.public_key.keyid, agent_id, "m"),
        T0,
    )


def _registry(*landmarks: Landmark) -> Registry:
    return Registry(
        entities=(Entity("acme", "Acme", "US", "US", VeuStatus.NONE),),
        sites=(Site("fra1", "acme", "DE", *FRA), Site("iad1", "acme", "US", *IAD)),
        landmarks=landmarks,
    )


LM_FRA = Landmark("lm-fra", *FRA, LANDMARK.public_key.spki_der)


def _statement(agent_id: str, key: SoftwareSigner, rtt_ns: int, *, signer=LANDMARK) -> bytes:  # type: ignore[no-untyped-def]
    session = secrets.token_bytes(lm.SESSION_LEN)
    challenges = tuple(
        lm.challenge_bytes("lm-fra", session, seq, secrets.token_bytes(32)) for seq in range(3)
    )
    rtts = (rtt_ns + 500, rtt_ns, rtt_ns + 900)
    return lm.sign_statement(
        lm.Statement(
            "lm-fra", *FRA, agent_id, key.public_key.spki_der, session, challenges,
            tuple(lm.answer(key, c) for c in challenges), rtts, rtt_ns, T0,
        ),
        signer,
    )  # fmt: skip


def _carry(store: Store, chain: Chain, *statements: bytes) -> int:
    item = chain.next(T0)
    item = replace(item, landmarks=tuple(("lm-fra", s) for s in statements))
    outcome = store.accept([item], T0)[0]
    return int(outcome.log_index)  # type: ignore[union-attr]


def _open(store: Store) -> dict[tuple[str, str], str]:
    return {
        (f.rule, f.subject): f.message
        for f in store.iter_findings()
        if f.status is not FindingStatus.RESOLVED
    }


def test_a_host_near_the_landmark_verifies_its_site_and_contradicts_a_far_one(
    store: Store,
) -> None:
    fra, iad = SoftwareSigner.generate(), SoftwareSigner.generate("ecdsa-p256-sha256")
    _enroll(store, "agt-fra", "fra1", fra)
    _enroll(store, "agt-iad", "iad1", iad)
    store.import_registry(_registry(LM_FRA), T0)
    # Both hosts answer the Frankfurt landmark within 1 ms: right for fra1, impossible for iad1.
    fra_index = _carry(store, Chain("agt-fra"), _statement("agt-fra", fra, 800_000))
    iad_index = _carry(store, Chain("agt-iad"), _statement("agt-iad", iad, 900_000))

    done = locate.run_pass(store, T0 + timedelta(minutes=1), deadline=DEADLINE, clock_skew=SKEW)

    assert done.checked == 2
    status = {s.site_id: s for s in done.judged}
    assert status["fra1"].status == "verified"
    assert status["fra1"].tightest is not None
    assert round(status["fra1"].tightest.bound_km) == 120
    assert status["iad1"].status == "contradicted"
    assert status["iad1"].evidence == (iad_index,)
    found = _open(store)
    assert set(found) == {(LOCATION_CONTRADICTED, "agent:agt-iad")}
    assert "not at site iad1" in found[LOCATION_CONTRADICTED, "agent:agt-iad"]
    assert fra_index != iad_index
    # Checked once: a second pass checks nothing and raises the same.
    again = locate.run_pass(store, T0 + timedelta(minutes=2), deadline=DEADLINE, clock_skew=SKEW)
    assert again.checked == 0 and again.raised == done.raised


def test_statements_that_do_not_count_leave_the_site_unverified(store: Store) -> None:
    key = SoftwareSigner.generate()
    _enroll(store, "agt-1", "fra1", key)
    store.import_registry(_registry(LM_FRA), T0)
    chain = Chain("agt-1")
    forged = _statement("agt-1", key, 100_000, signer=SoftwareSigner.generate())
    stranger = _statement("agt-1", SoftwareSigner.generate(), 100_000)
    _carry(store, chain, forged, stranger, b"\x00garbage")

    done = locate.run_pass(store, T0, deadline=DEADLINE, clock_skew=SKEW)

    assert done.checked == 3
    assert [s.status for s in done.judged] == ["unverified"]
    assert set(_open(store)) == {(LOCATION_UNVERIFIED, "site:fra1")}
    rows = store._transact(  # type: ignore[attr-defined]
        lambda db: db.all(
            "SELECT position, verdict, statement FROM landmark_measurements ORDER BY position"
        ),
        write=False,
    )
    verdicts = [r[1] for r in rows]
    assert verdicts[0].startswith("UnknownKeyError")  # another landmark key signed it
    assert verdicts[1].startswith("UnknownKeyError")  # about a key the agent never held
    assert verdicts[2].startswith(("DecodeError", "SizeLimitError", "InvariantError"))
    assert VALID not in verdicts
    # Checked once, the bytes leave the row (the logged envelope keeps them).
    assert all(bytes(r[2]) == b"" for r in rows)


def test_a_finding_resolves_when_a_measurement_counts_and_returns_past_the_deadline(
    store: Store,
) -> None:
    key = SoftwareSigner.generate()
    _enroll(store, "agt-1", "fra1", key)
    store.import_registry(_registry(LM_FRA), T0)
    locate.run_pass(store, T0, deadline=DEADLINE, clock_skew=SKEW)
    assert set(_open(store)) == {(LOCATION_UNVERIFIED, "site:fra1")}

    _carry(store, Chain("agt-1"), _statement("agt-1", key, 2_000_000))
    done = locate.run_pass(store, T0 + timedelta(hours=1), deadline=DEADLINE, clock_skew=SKEW)
    assert [s.status for s in done.judged] == ["verified"]
    assert _open(store) == {}
    assert done.resolved == ((LOCATION_UNVERIFIED, "site:fra1"),)

    later = T0 + DEADLINE + timedelta(minutes=1)
    done = locate.run_pass(store, later, deadline=DEADLINE, clock_skew=SKEW)
    assert [s.status for s in done.judged] == ["unverified"]
    assert set(_open(store)) == {(LOCATION_UNVERIFIED, "site:fra1")}


def test_without_landmarks_in_the_registry_no_location_finding_is_raised(store: Store) -> None:
    key = SoftwareSigner.generate()
    _enroll(store, "agt-1", "fra1", key)
    store.import_registry(_registry(), T0)
    _carry(store, Chain("agt-1"), _statement("agt-1", key, 800_000))
    done = locate.run_pass(store, T0, deadline=DEADLINE, clock_skew=SKEW)
    assert [s.status for s in done.judged] == ["unverified"]
    assert _open(store) == {}
    verdicts = store._transact(  # type: ignore[attr-defined]
        lambda db: db.all("SELECT verdict FROM landmark_measurements"), write=False
    )
    assert [r[0] for r in verdicts] == ["landmark 'lm-fra' is not in the registry"]


def test_a_contradicted_host_that_goes_silent_stays_flagged_until_measured_consistent(
    store: Store,
) -> None:
    """Silence must not clear a critical finding: only a measurement that counts and agrees
    with the site does (or revocation)."""
    key = SoftwareSigner.generate()
    _enroll(store, "agt-iad", "iad1", key)
    store.import_registry(_registry(LM_FRA), T0)
    chain = Chain("agt-iad")
    _carry(store, chain, _statement("agt-iad", key, 900_000))  # 0.9 ms from Frankfurt
    locate.run_pass(store, T0, deadline=DEADLINE, clock_skew=SKEW)
    assert (LOCATION_CONTRADICTED, "agent:agt-iad") in _open(store)

    # The host stops answering: the measurement ages out, the site reads unverified, and the
    # contradiction stays open beside it.
    later = T0 + DEADLINE + timedelta(hours=1)
    done = locate.run_pass(store, later, deadline=DEADLINE, clock_skew=SKEW)
    assert [s.status for s in done.judged] == ["unverified"]
    assert set(_open(store)) == {
        (LOCATION_CONTRADICTED, "agent:agt-iad"),
        (LOCATION_UNVERIFIED, "site:iad1"),
    }

    # A measurement consistent with Virginia (80 ms from Frankfurt) clears both.
    item = replace(chain.next(later), landmarks=(("lm-fra", _late_statement(key, later)),))
    store.accept([item], later)
    done = locate.run_pass(store, later, deadline=DEADLINE, clock_skew=SKEW)
    assert [s.status for s in done.judged] == ["verified"]
    assert _open(store) == {}


def _late_statement(key: SoftwareSigner, at: datetime) -> bytes:
    session = secrets.token_bytes(lm.SESSION_LEN)
    challenge = lm.challenge_bytes("lm-fra", session, 0, secrets.token_bytes(32))
    statement = lm.Statement(
        "lm-fra", *FRA, "agt-iad", key.public_key.spki_der, session, (challenge,),
        (lm.answer(key, challenge),), (80_000_000,), 80_000_000, at,
    )  # fmt: skip
    return lm.sign_statement(statement, LANDMARK)
