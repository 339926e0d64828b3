"""Bounded-memory listings and sweep: keyset pages give the same rows in the same order as the
database's own ORDER BY, whatever the page size, including pages that end inside a run of
equal sort prefixes; the paged sweep raises and resolves what the rules say. Both backends."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.verifier.store.conftest import Backend
from tests.verifier.store.helpers import T0, Chain, enroll, gpus, nonce
from verifier.model import FindingDraft, Severity
from verifier.store.api import Store, StoreOptions

_PROFILE = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Short ids over an alphabet with punctuation and case: collations order these differently,
# and the pages must follow the database's order, not Python's.
_IDS = st.text(alphabet="aAb-_.9", min_size=1, max_size=4)
_counter = itertools.count()


def _chunks(n: int) -> list[int]:
    """Page sizes at the edges: 1, 2, exact multiples, one short, the whole table, larger."""
    return sorted({1, 2, 3, max(1, n // 2), max(1, n - 1), max(1, n), n + 1, 1000})


def _fleet_reference(backend: Backend, site: str | None) -> list[tuple[str, list[str]]]:
    where = "" if site is None else f" WHERE a.site_id = '{site}'"
    rows = backend.query(
        "SELECT a.agent_id, s.uuid FROM agents a LEFT JOIN gpu_sightings s "
        f"ON s.agent_id = a.agent_id{where} ORDER BY a.agent_id, s.uuid"
    )
    hosts: list[tuple[str, list[str]]] = []
    for agent_id, uuid in rows:
        if not hosts or hosts[-1][0] != agent_id:
            hosts.append((agent_id, []))
        if uuid is not None:
            hosts[-1][1].append(uuid)
    return hosts


def _fleet(store: Store, site: str | None, chunk: int) -> list[tuple[str, list[str]]]:
    return [
        (h.agent.agent_id, [g.uuid for g in h.gpus]) for h in store.iter_fleet(site, chunk=chunk)
    ]


@pytest.mark.parametrize("hosts", [0, 1, 6])
def test_fleet_pages_at_every_boundary(backend: Backend, hosts: int) -> None:
    store = backend.open()
    for i in range(hosts):
        agent_id = f"agent-{i:02d}"
        enroll(store, agent_id, site="fra1" if i % 3 else "ams1")
        # Host sizes 0..5: a page of hosts can end anywhere in the sightings.
        inventory = gpus(*(f"GPU-{i}-{j}" for j in range(i)))
        store.accept([Chain(agent_id, inventory=inventory).next(T0)], T0)
    for site in (None, "fra1", "ams1", "nowhere"):
        expected = _fleet_reference(backend, site)
        if site is None:
            assert len(expected) == hosts
        for chunk in _chunks(len(expected)):
            assert _fleet(store, site, chunk) == expected, (site, chunk)


@given(
    hosts=st.lists(st.tuples(_IDS, st.sampled_from(["s1", "s2"]), st.integers(0, 3)), max_size=7),
    chunk=st.integers(1, 9),
)
@_PROFILE
def test_fleet_pages_follow_the_database_order(
    backend: Backend, hosts: list[tuple[str, str, int]], chunk: int
) -> None:
    # One store for every example: the reference is the whole table, so rows of earlier
    # examples only make the listing longer.
    store = backend.opened[0] if backend.opened else backend.open()
    example = next(_counter)
    for name, site, count in hosts:
        agent_id = f"{name}{example}"
        if any(a == agent_id for a, _ in _fleet_reference(backend, None)):
            continue
        enroll(store, agent_id, site=site)
        inventory = gpus(*(f"{name}-GPU-{example}-{j}" for j in range(count)))
        store.accept([Chain(agent_id, inventory=inventory).next(T0)], T0)
    for listed in (None, "s1"):
        assert _fleet(store, listed, chunk) == _fleet_reference(backend, listed), (listed, chunk)


def _findings_reference(backend: Backend, include_resolved: bool) -> list[tuple[str, str]]:
    where = "" if include_resolved else " WHERE status = 'open'"
    return [
        (r[0], r[1])
        for r in backend.query(
            f"SELECT rule, subject FROM findings{where} ORDER BY opened_at, rule, subject"
        )
    ]


@given(
    drafts=st.lists(
        st.tuples(
            st.sampled_from(["evidence-gap", "evidence-fork"]),
            _IDS,
            st.integers(0, 2),  # opening time: equal times make pages end inside a tie
            st.booleans(),  # resolved afterwards
        ),
        max_size=10,
    ),
    chunk=st.integers(1, 12),
)
@_PROFILE
def test_findings_pages_follow_the_listing_order(
    backend: Backend, drafts: list[tuple[str, str, int, bool]], chunk: int
) -> None:
    store = backend.opened[0] if backend.opened else backend.open()
    for rule, subject, offset, resolved in drafts:
        at = T0 + timedelta(seconds=offset)
        store.upsert_findings([FindingDraft(rule, Severity.HIGH, f"agent:{subject}", "m")], at)
        if resolved:
            store.resolve_findings([(rule, f"agent:{subject}")], at)
    for include_resolved in (False, True):
        expected = _findings_reference(backend, include_resolved)
        listed = store.iter_findings(include_resolved, chunk=chunk)
        assert [(f.rule, f.subject) for f in listed] == expected


def test_agents_pages_hold_each_agent_once_with_its_keys(store: Store) -> None:
    keyids = {f"a{i}": enroll(store, f"a{i}") for i in range(5)}
    for chunk in _chunks(5):
        listed = list(store.iter_agents(chunk=chunk))
        assert [a.agent_id for a in listed] == sorted(keyids)
        assert {a.agent_id: a.keys[0].keyid for a in listed} == keyids


def test_a_page_size_below_one_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="chunk"):
        store.iter_fleet(chunk=0)
    with pytest.raises(ValueError, match="chunk"):
        store.iter_findings(chunk=0)
    with pytest.raises(ValueError, match="chunk"):
        store.iter_agents(chunk=-1)
    with pytest.raises(ValueError, match="chunk"):
        store.sweep(T0, timedelta(minutes=1), chunk=0)


def test_a_listing_is_one_snapshot_while_writers_go_on(store: Store) -> None:
    """A GPU that moves between hosts while the listing is read is listed once, where it was;
    a host enrolled meanwhile is not listed; the writes themselves are not held up."""
    a0 = Chain("a0", inventory=gpus("GPU-0", "GPU-moving"))
    a1 = Chain("a1", inventory=gpus("GPU-1"))
    enroll(store, "a0")
    enroll(store, "a1")
    store.accept(
        [
            a0.next(T0, nonce=nonce(store, a0.agent_id)),
            a1.next(T0, nonce=nonce(store, a1.agent_id)),
        ],
        T0,
    )
    before = _fleet(store, None, 1000)

    pages = store.iter_fleet(chunk=1)
    first = next(pages)
    t1 = T0 + timedelta(minutes=1)
    store.accept(
        [
            a0.next(t1, nonce=nonce(store, a0.agent_id, t1), inventory=gpus("GPU-0")),
            a1.next(t1, nonce=nonce(store, a1.agent_id, t1), inventory=gpus("GPU-1", "GPU-moving")),
        ],
        t1,
    )
    enroll(store, "a2")
    listed = [(h.agent.agent_id, [g.uuid for g in h.gpus]) for h in [first, *pages]]

    assert listed == before
    after = _fleet(store, None, 1000)
    assert after != before and [a for a, _ in after] == ["a0", "a1", "a2"]
    assert "GPU-moving" in dict(after)["a1"]


# --- the paged sweep ---------------------------------------------------------------------------

GRACE = timedelta(minutes=2)
DEADLINE = StoreOptions().attestation_deadline


def _open(store: Store) -> set[tuple[str, str]]:
    return {(f.rule, f.subject) for f in store.iter_findings()}


@pytest.mark.parametrize("chunk", [1, 2, 3, 500])
def test_paged_sweep_raises_and_resolves_across_pages(store: Store, chunk: int) -> None:
    chains = {}
    for i in range(7):
        enroll(store, f"a{i}")
        own = [f"GPU-{i}-0", f"GPU-{i}-1"]
        shared = {1: ["GPU-dup-x"], 2: ["GPU-dup-x"], 3: ["GPU-dup-y"], 4: ["GPU-dup-y"]}
        chains[i] = Chain(f"a{i}", inventory=gpus(*own, *shared.get(i, [])))
    store.accept([c.next(T0, nonce=nonce(store, c.agent_id)) for c in chains.values()], T0)
    assert _open(store) == {("duplicate-gpu", "gpu:GPU-dup-x"), ("duplicate-gpu", "gpu:GPU-dup-y")}
    # a0..a3 stay fresh; a0 drops GPU-0-1; a4..a6 fall silent.
    t1 = T0 + timedelta(minutes=4)
    store.accept(
        [chains[0].next(t1, nonce=nonce(store, chains[0].agent_id, t1), inventory=gpus("GPU-0-0"))],
        t1,
    )
    store.accept(
        [chains[i].next(t1, nonce=nonce(store, chains[i].agent_id, t1)) for i in (1, 2, 3)], t1
    )

    t2 = T0 + DEADLINE + timedelta(seconds=1)
    counts = store.sweep(t2, GRACE, chunk=chunk)
    silent_gpus = [f"GPU-{i}-{j}" for i in (4, 5, 6) for j in (0, 1)]
    expected = (
        {("agent-stale", f"agent:a{i}") for i in (4, 5, 6)}
        | {("gpu-missing", f"gpu:{u}") for u in ["GPU-0-1", *silent_gpus]}
        # a4's claim on GPU-dup-y is no longer fresh: that duplicate is resolved.
        | {("duplicate-gpu", "gpu:GPU-dup-x")}
    )
    assert _open(store) == expected
    assert counts == {"agent-stale": 3, "gpu-missing": 7, "duplicate-gpu": 1}

    # a4 comes back with all its GPUs: its findings resolve and GPU-dup-y is a duplicate again.
    t3 = t2 + timedelta(seconds=30)  # a1..a3 (seen at t1) are not missing yet
    store.accept([chains[4].next(t3, nonce=nonce(store, chains[4].agent_id, t3))], t3)
    store.sweep(t3, GRACE, chunk=chunk)
    expected -= {("agent-stale", "agent:a4")}
    expected -= {("gpu-missing", f"gpu:GPU-4-{j}") for j in (0, 1)}
    expected |= {("duplicate-gpu", "gpu:GPU-dup-y")}
    assert _open(store) == expected
    resolved = {(f.rule, f.subject) for f in store.iter_findings(True)} - expected
    assert ("agent-stale", "agent:a4") in resolved
