"""The bounded LRU map behind the verifier's per-agent caches."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attest.lru import LruCache


def test_the_least_recently_used_entry_goes_first() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now newer than b
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c"), len(cache)) == (1, None, 3, 2)
    cache.put("a", 10)  # replacing makes it the newest too
    cache.put("d", 4)
    assert (cache.get("a"), cache.get("c"), cache.get("d")) == (10, None, 4)


def test_size_zero_keeps_nothing_and_a_negative_size_is_refused() -> None:
    cache: LruCache[str, int] = LruCache(0)
    cache.put("a", 1)
    assert cache.get("a") is None and len(cache) == 0
    with pytest.raises(ValueError, match="negative"):
        LruCache(-1)


@given(st.integers(1, 5), st.lists(st.tuples(st.booleans(), st.integers(0, 9)), max_size=60))
def test_it_agrees_with_a_plain_model(size: int, operations: list[tuple[bool, int]]) -> None:
    cache: LruCache[int, int] = LruCache(size)
    model: list[int] = []  # keys, oldest first
    for is_put, key in operations:
        if is_put:
            cache.put(key, key * 7)
            if key in model:
                model.remove(key)
            model.append(key)
            del model[:-size]
        else:
            assert cache.get(key) == (key * 7 if key in model else None)
            if key in model:
                model.remove(key)
                model.append(key)
        assert len(cache) == len(model)
