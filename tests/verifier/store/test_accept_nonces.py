"""Store.accept issues the nonces it is given in the same transaction; both backends."""

from __future__ import annotations

import secrets
from datetime import timedelta

from attest.errors import GapError
from attest.model import Freshness
from tests.verifier.store.helpers import T0, Chain, enroll
from verifier.model import Accepted, NonceRecord
from verifier.store.api import Store


def _record(ttl: timedelta = timedelta(minutes=5), agent_id: str = "a1") -> NonceRecord:
    return NonceRecord(secrets.token_bytes(32), T0, T0 + ttl, "replica-test", agent_id)


def test_nonces_ride_along_with_an_accepted_batch_and_can_be_answered(store: Store) -> None:
    enroll(store, "a1")
    chain = Chain("a1")
    issued = [_record(), _record()]
    [outcome] = store.accept([chain.next(T0)], T0, issued)
    assert isinstance(outcome, Accepted)
    for record in issued:
        found = store.get_nonce(record.nonce)
        assert found is not None and found.consumed_at is None
        assert (found.issued_at, found.expires_at) == (record.issued_at, record.expires_at)
    [answer] = store.accept([chain.next(T0, nonce=issued[0].nonce)], T0)
    assert isinstance(answer, Accepted) and answer.freshness is Freshness.NONCE


def test_nonces_are_issued_even_when_the_item_is_refused(store: Store) -> None:
    enroll(store, "a1")
    chain = Chain("a1")
    chain.next(T0)  # skipped: the next one leaves a gap
    record = _record()
    [outcome] = store.accept([chain.next(T0)], T0, [record])
    assert isinstance(outcome, GapError)
    assert store.get_nonce(record.nonce) is not None


def test_nonces_alone(store: Store) -> None:
    record = _record()
    assert store.accept([], T0, [record]) == []
    assert store.get_nonce(record.nonce) is not None
