"""`Store.attested_by_site(at)`, the read behind a report's attested share and coverage: GPUs
held at the end of the day, and those whose agent sent evidence received that day. Runs on
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime

from tests.verifier.store.conftest import backend, store  # noqa: F401 (fixtures)
from tests.verifier.store.helpers import Chain, enroll
from tests.verifier.store.test_holdings import gpu, send
from verifier.store.api import Store

MARCH_1 = datetime(2026, 3, 1, 12, tzinfo=UTC)
MARCH_2 = datetime(2026, 3, 2, 12, tzinfo=UTC)
MARCH_3 = datetime(2026, 3, 3, 12, tzinfo=UTC)


def test_held_and_attested_per_site_and_day(store: Store) -> None:  # noqa: F811
    enroll(store, "a1", "site-a")
    enroll(store, "a2", "site-a")
    enroll(store, "b1", "site-b")
    a1, a2, b1 = Chain("a1"), Chain("a2"), Chain("b1")
    send(store, a1, MARCH_1, (gpu("GPU-1"), gpu("GPU-2")))
    send(store, b1, MARCH_1, (gpu("GPU-3"),))
    send(store, a2, MARCH_2, (gpu("GPU-4"),))
    send(store, a1, MARCH_2, (gpu("GPU-1"), gpu("GPU-2")))  # a1 again; b1 is silent
    assert store.attested_by_site(date(2026, 2, 28)) == {}
    assert store.attested_by_site(date(2026, 3, 1)) == {"site-a": (2, 2), "site-b": (1, 1)}
    assert store.attested_by_site(date(2026, 3, 2)) == {"site-a": (3, 3), "site-b": (1, 0)}
    send(store, a2, MARCH_3, (gpu("GPU-4"),))
    assert store.attested_by_site(date(2026, 3, 3)) == {"site-a": (3, 1), "site-b": (1, 0)}
