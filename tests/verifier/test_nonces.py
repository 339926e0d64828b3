"""Challenge nonces: unguessable, unique, and ordered by issue time (the store's key order)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from attest import wire
from verifier.model import NONCE_TIME_BYTES
from verifier.nonces import new_nonce

T0 = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)


def test_nonces_are_full_length_and_never_repeat() -> None:
    nonces = [new_nonce(T0) for _ in range(2000)]
    assert all(len(n) == wire.NONCE_LEN for n in nonces)
    assert len(set(nonces)) == len(nonces)  # same instant: the random part tells them apart
    assert len({n[NONCE_TIME_BYTES:] for n in nonces}) == len(nonces)


def test_nonces_sort_by_issue_time() -> None:
    times = [T0 + timedelta(microseconds=k * 997) for k in range(500)]
    nonces = [new_nonce(t) for t in times]
    assert sorted(nonces) == nonces
    assert int.from_bytes(nonces[0][:NONCE_TIME_BYTES], "big") == int(T0.timestamp()) * 10**6
