"""Holdings and posture for reconciliation: aggregated in SQL now and as of the end of a date
(receipt time, not the agent's creation time), written only when an inventory or a posture
changes. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from tests.verifier.store.conftest import Backend
from tests.verifier.store.helpers import H100, Chain, enroll
from verifier.model import GpuClaim, VerifiedAttestation
from verifier.reconcile.model import HoldingRow, PostureRow
from verifier.store.api import Store

H100_SUB = 0x16C110DE
H200 = 0x233510DE
H200_SUB = 0x18BE10DE
DAY1 = datetime(2026, 3, 1, 23, 59, 59, 999_999, tzinfo=UTC)  # the last microsecond of 1 March
DAY2 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)  # the first of 2 March


def gpu(uuid: str, device: int = H100, sub: int = H100_SUB, watts: int = 700) -> GpuClaim:
    return GpuClaim(
        uuid, "NVIDIA H100", pci_device_id=device, pci_subsystem_id=sub, power_limit_w=watts
    )


def h200(uuid: str) -> GpuClaim:
    return gpu(uuid, H200, H200_SUB, 600)


def send(
    store: Store,
    chain: Chain,
    at: datetime,
    inventory: tuple[GpuClaim, ...] | None = None,
    *,
    received: datetime | None = None,
    posture: tuple[tuple[str, str], ...] = (),
) -> int:
    """Accept the chain's next attestation; returns its log index."""
    item: VerifiedAttestation = chain.next(at, inventory=inventory)
    item = replace(item, received_at=received or at, posture=posture)
    (outcome,) = store.accept([item], received or at)
    assert not isinstance(outcome, Exception), outcome
    return outcome.log_index


def test_current_holdings_group_per_site_and_model(store: Store) -> None:
    enroll(store, "a1", "site-a")
    enroll(store, "a2", "site-a")
    enroll(store, "b1", "site-b")
    i1 = send(store, Chain("a1"), DAY1, (gpu("GPU-1"), gpu("GPU-2"), h200("GPU-3")))
    i2 = send(store, Chain("a2"), DAY2, (gpu("GPU-4"),))
    i3 = send(store, Chain("b1"), DAY2, (gpu("GPU-5", watts=0),))
    assert list(store.holdings()) == [
        # 3 x 700 W; the earliest first receipt is a1's on 1 March; evidence: a1's and a2's
        HoldingRow("site-a", H100, H100_SUB, 3, 2100, date(2026, 3, 1), (i1, i2)),
        HoldingRow("site-a", H200, H200_SUB, 1, 600, date(2026, 3, 1), (i1,)),
        HoldingRow("site-b", H100, H100_SUB, 1, 0, date(2026, 3, 2), (i3,)),
    ]


def test_holdings_at_the_end_of_a_date_count_what_was_received_by_then(store: Store) -> None:
    enroll(store, "a1", "site-a")
    enroll(store, "a2", "site-a")
    a1 = Chain("a1")
    send(store, a1, DAY1, (gpu("GPU-1"), gpu("GPU-2")))
    # Created on 1 March but received on 2 March: it does not count on 1 March.
    send(store, Chain("a2"), DAY1, (gpu("GPU-3"),), received=DAY2)
    send(store, a1, DAY2 + timedelta(days=1), (gpu("GPU-2"),))  # GPU-1 leaves on 3 March
    send(store, a1, DAY2 + timedelta(days=2), (gpu("GPU-2"),))  # unchanged heartbeat

    def count(on: date) -> int:
        return sum(row.count for row in store.holdings(on))

    table = [
        (date(2026, 2, 28), 0),  # before any evidence: nothing held
        (date(2026, 3, 1), 2),  # GPU-1, GPU-2 received at 23:59:59.999999
        (date(2026, 3, 2), 3),  # GPU-3 received at midnight after 1 March
        (date(2026, 3, 3), 2),  # GPU-1 left
        (date(2026, 3, 9), 2),
    ]
    assert [(on, count(on)) for on in table_dates(table)] == table
    assert count(date(2026, 3, 3)) == sum(r.count for r in store.holdings())


def table_dates(table: list[tuple[date, int]]) -> list[date]:
    return [on for on, _ in table]


def test_an_unchanged_heartbeat_writes_no_interval(backend: Backend) -> None:
    store = backend.open()
    enroll(store, "a1")
    chain = Chain("a1")
    send(store, chain, DAY1, (gpu("GPU-1"), gpu("GPU-2")))
    for hours in range(1, 4):
        send(store, chain, DAY1 + timedelta(hours=hours))
    assert backend.query("SELECT COUNT(*) FROM gpu_presence") == [(2,)]


def test_a_changed_power_limit_reopens_the_interval_and_keeps_the_first_receipt(
    backend: Backend,
) -> None:
    store = backend.open()
    enroll(store, "a1")
    chain = Chain("a1")
    send(store, chain, DAY1, (gpu("GPU-1"),))
    send(store, chain, DAY2, (gpu("GPU-1", watts=400),))
    assert backend.query("SELECT COUNT(*) FROM gpu_presence WHERE to_us IS NULL") == [(1,)]
    (row,) = store.holdings()
    assert (row.power_limit_w, row.first_received) == (400, date(2026, 3, 1))
    (old,) = store.holdings(date(2026, 3, 1))
    assert old.power_limit_w == 700


def test_a_gpu_that_moves_to_another_agent_counts_where_it_was_at_each_date(store: Store) -> None:
    enroll(store, "a1", "site-a")
    enroll(store, "b1", "site-b")
    a1, b1 = Chain("a1"), Chain("b1")
    send(store, a1, DAY1, (gpu("GPU-1"),))
    send(store, a1, DAY2, ())
    send(store, b1, DAY2, (gpu("GPU-1"),))
    assert [r.site_id for r in store.holdings(date(2026, 3, 1))] == ["site-a"]
    assert [r.site_id for r in store.holdings(date(2026, 3, 2))] == ["site-b"]
    assert [r.site_id for r in store.holdings()] == ["site-b"]


def test_a_revoked_agent_leaves_the_holdings_from_its_revocation(store: Store) -> None:
    enroll(store, "a1")
    send(store, Chain("a1"), DAY1, (gpu("GPU-1"),))
    store.revoke_agent("a1", DAY2 + timedelta(hours=5), "stolen")
    assert list(store.holdings()) == []
    assert [r.count for r in store.holdings(date(2026, 3, 1))] == [1]
    assert list(store.holdings(date(2026, 3, 2))) == []


def test_postures_now_and_at_a_date_keep_history_only_on_change(backend: Backend) -> None:
    store = backend.open()
    enroll(store, "a1", "site-a")
    enroll(store, "b1", "site-b")
    a1 = Chain("a1")
    ok = (("disk-encryption", "pass"), ("secure-boot", "pass"))
    bad = (("secure-boot", "fail"), ("disk-encryption", "pass"))
    first = send(store, a1, DAY1, (gpu("GPU-1"),), posture=ok)
    send(store, a1, DAY1 + timedelta(seconds=1), posture=ok)  # unchanged: no history row
    later = send(store, a1, DAY2, posture=bad)
    b = send(store, Chain("b1"), DAY2, posture=())
    assert backend.query("SELECT COUNT(*) FROM posture_history") == [(3,)]
    passing = {"disk-encryption": "pass", "secure-boot": "pass"}
    failing = {"disk-encryption": "pass", "secure-boot": "fail"}
    assert list(store.postures(date(2026, 2, 28))) == []
    assert list(store.postures(date(2026, 3, 1))) == [PostureRow("site-a", "a1", passing, (first,))]
    expected = [PostureRow("site-a", "a1", failing, (later,)), PostureRow("site-b", "b1", {}, (b,))]
    assert list(store.postures(date(2026, 3, 2), chunk=1)) == expected
    assert list(store.postures(chunk=1)) == expected
    store.revoke_agent("b1", DAY2 + timedelta(days=1), "gone")
    assert [p.agent_id for p in store.postures()] == ["a1"]
    assert [p.agent_id for p in store.postures(date(2026, 3, 2))] == ["a1", "b1"]


def test_an_agent_holding_gpus_without_a_stored_posture_is_judged_with_none(
    backend: Backend,
) -> None:
    """Agents that last attested before postures were stored hold GPUs but have no posture row:
    they are listed with no checks, so the safeguard rules find every required check missing
    (fail closed) instead of skipping them. An agent holding nothing is not listed."""
    store = backend.open()
    enroll(store, "a1", "site-a")
    enroll(store, "b1", "site-b")  # enrolled, never attested
    send(store, Chain("a1"), DAY1, (gpu("GPU-1"),), posture=(("secure-boot", "pass"),))
    assert backend.query("DELETE FROM agent_posture RETURNING agent_id") == [("a1",)]
    assert list(store.postures()) == [PostureRow("site-a", "a1", {}, ())]
    # The same at a past date: a1 held GPU-1 at the end of 1 March with no posture history.
    assert backend.query("DELETE FROM posture_history RETURNING agent_id") == [("a1",)]
    assert list(store.postures(date(2026, 3, 1))) == [PostureRow("site-a", "a1", {}, ())]
    assert list(store.postures(date(2026, 2, 28))) == []  # it held nothing yet


def test_a_placeholder_names_no_gpu_and_is_not_held(store: Store) -> None:
    enroll(store, "a1")
    chain = Chain("a1")
    send(store, chain, DAY1, (gpu("GPU-1"), gpu("GPU-2")))
    # Not reported LOST, the placeholder says nothing of GPU-2, which left the inventory (a LOST
    # placeholder keeps it held: tests/verifier/store/test_fleet_states.py).
    placeholder = GpuClaim("unknown-gpu-index-1")
    send(store, chain, DAY2, (gpu("GPU-1"), placeholder))
    assert [r.count for r in store.holdings(date(2026, 3, 1))] == [2]
    assert [r.count for r in store.holdings(date(2026, 3, 2))] == [1]
