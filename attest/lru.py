"""A bounded map that forgets its least recently used entry: the one mechanism behind every
cache a long-running process keeps per peer (parsed keys, checked GPU entries), so that their
memory has a ceiling however many peers there are."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """At most `size` entries (0: keeps nothing); `get` and `put` make an entry the newest."""

    __slots__ = ("_entries", "_size")

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError("an LRU cache cannot hold a negative number of entries")
        self._size = size
        self._entries: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        if not self._size:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
