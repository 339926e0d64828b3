"""Tokens, enrollment, revocation, key rotation and audit, on both backends."""

from __future__ import annotations

from datetime import timedelta

import pytest

from attest.errors import (
    AgentRevokedError,
    AgentUnknownError,
    StoreError,
    TokenExpiredError,
    TokenInvalidError,
    TokenUsedError,
)
from tests.verifier.store.helpers import T0, Chain, enroll, gpus
from verifier.model import AgentStatus, AuditKind, EnrollmentRequest, NewToken, token_hash
from verifier.store.api import Store, StoreOptions


def _token(store: Store, text: str = "tok-1", ttl: timedelta = timedelta(hours=1)) -> bytes:
    store.create_token(NewToken(token_hash(text), "site-a", T0, T0 + ttl))
    return token_hash(text)


def _request(th: bytes, agent_id: str = "a1", keyid: str = "k1") -> EnrollmentRequest:
    return EnrollmentRequest(th, agent_id, b"spki-" + keyid.encode(), keyid, "gpu-node-1", "mid")


def test_token_is_stored_only_as_its_hash(store: Store) -> None:
    th = _token(store, "secret-token-text")
    record = store.get_token(th)
    assert record is not None
    assert record.site_id == "site-a"
    assert record.redeemed_at is None
    assert store.get_token(token_hash("other")) is None
    with pytest.raises(StoreError):
        _token(store, "secret-token-text")


def test_enroll_binds_key_site_and_deadline(store: Store) -> None:
    th = _token(store)
    enrollment = store.enroll(_request(th), T0)
    agent = enrollment.agent
    assert enrollment.created
    assert (agent.agent_id, agent.site_id, agent.status) == ("a1", "site-a", AgentStatus.ACTIVE)
    assert [k.keyid for k in agent.current_keys] == ["k1"]
    assert (agent.last_seq, agent.last_hash, agent.first_attested_at) == (0, b"", None)
    assert agent.next_due == T0 + StoreOptions().attestation_deadline
    token = store.get_token(th)
    assert token is not None
    assert (token.redeemed_at, token.agent_id) == (T0, "a1")
    assert store.list_audit()[0].kind is AuditKind.ENROLLMENT


def test_enroll_is_idempotent_for_the_same_key_until_first_attestation(store: Store) -> None:
    th = _token(store, ttl=timedelta(minutes=1))
    first = store.enroll(_request(th), T0)
    # Even after the token expired, the same key gets the same agent back.
    again = store.enroll(_request(th, agent_id="other-id"), T0 + timedelta(minutes=5))
    assert not again.created
    assert again.agent.agent_id == first.agent.agent_id
    with pytest.raises(TokenUsedError):
        store.enroll(_request(th, agent_id="a2", keyid="k2"), T0)
    chain = Chain("a1", inventory=gpus("GPU-1"))
    assert store.accept([chain.next(T0)], T0)[0].__class__.__name__ == "Accepted"
    with pytest.raises(TokenUsedError):
        store.enroll(_request(th), T0)


def test_enroll_refuses_unknown_and_expired_tokens(store: Store) -> None:
    with pytest.raises(TokenInvalidError):
        store.enroll(_request(token_hash("never-made")), T0)
    th = _token(store, ttl=timedelta(minutes=1))
    with pytest.raises(TokenExpiredError):
        store.enroll(_request(th), T0 + timedelta(minutes=1))
    assert store.get_agent("a1") is None


def test_revoke_is_audited_idempotent_and_stops_accepts(store: Store) -> None:
    enroll(store, "a1")
    with pytest.raises(AgentUnknownError):
        store.revoke_agent("nobody", T0, "test")
    revoked = store.revoke_agent("a1", T0, "decommissioned")
    assert revoked.status is AgentStatus.REVOKED
    assert revoked.revoked_at == T0
    assert store.revoke_agent("a1", T0 + timedelta(1), "again").revoked_at == T0
    [outcome] = store.accept([Chain("a1").next(T0)], T0)
    assert isinstance(outcome, AgentRevokedError)
    revocations = [r for r in store.list_audit() if r.kind is AuditKind.REVOCATION]
    assert [r.message for r in revocations] == ["decommissioned"]


def test_rotate_key_retires_the_old_key_and_is_audited(store: Store) -> None:
    old = enroll(store, "a1")
    agent = store.rotate_key("a1", b"new-spki", "new-kid", T0 + timedelta(hours=1), "scheduled")
    assert [k.keyid for k in agent.current_keys] == ["new-kid"]
    assert {k.keyid: k.retired_at for k in agent.keys} == {
        old: T0 + timedelta(hours=1),
        "new-kid": None,
    }
    assert store.list_audit()[0].kind is AuditKind.ROTATION
    with pytest.raises(StoreError):
        store.rotate_key("a1", b"x", old, T0, "back to an old key")
    store.revoke_agent("a1", T0, "gone")
    with pytest.raises(AgentRevokedError):
        store.rotate_key("a1", b"x", "k3", T0, "after revocation")
    with pytest.raises(AgentUnknownError):
        store.rotate_key("nobody", b"x", "k4", T0, "unknown")


def test_list_agents_is_ordered(store: Store) -> None:
    for agent_id in ("b", "a", "c"):
        enroll(store, agent_id)
    assert [a.agent_id for a in store.iter_agents()] == ["a", "b", "c"]


def test_an_agent_is_found_by_a_current_key_only(store: Store) -> None:
    old = enroll(store, "a1")
    other = enroll(store, "a2")
    assert store.agents_with_current_key(old) == ["a1"]
    assert store.agents_with_current_key(other) == ["a2"]
    store.rotate_key("a1", b"new-spki", "new-kid", T0 + timedelta(hours=1), "scheduled")
    assert store.agents_with_current_key(old) == []  # retired keys name nobody
    assert store.agents_with_current_key("new-kid") == ["a1"]
    assert store.agents_with_current_key("no-such-key") == []
