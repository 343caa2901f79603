"""Capacity-bounded key → entry stores for the cache: LRU and O(1) LFU.

A cache node (and a gateway's L1) holds at most ``capacity`` entries, so a full store must pick a
victim on every insert of a new key. The two classic answers trade differently:

* **LRU** evicts the key used longest ago. It adapts at once to a shifting working set, but a
  one-off scan of many cold keys pushes every hot key out (each scanned key is "recent").
* **LFU** evicts the key used least often (LRU among keys used equally often). Hot keys survive a
  scan, because scanned keys arrive with a count of 1 and evict each other; the price is that a
  formerly hot key lingers after the workload moves on (there is no ageing here).

Both are O(1) per operation because the simulator calls them on every cache read. LFU uses the
frequency-bucket scheme of Shah, Mitra & Matani (2010): a doubly linked list of buckets in
increasing frequency, each bucket an insertion-ordered map of its keys (oldest touch first), so
the victim is always the first key of the first bucket and a hit moves its key to the next
bucket in constant time. Keeping the bucket list (rather than a ``min_freq`` integer) also makes
``delete`` O(1): removing the last key of the lowest bucket simply unlinks that bucket.

``keys()`` yields in eviction order (next victim first) from a snapshot, so callers such as
pattern invalidation may delete while iterating and the order never depends on hash seeds.
``evictions`` counts capacity evictions over the store's lifetime; ``delete`` and ``clear`` are
not evictions and do not reset it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # cache.py imports this module; the entry type is only needed for hints
    from labkit.core.cache import Entry

__all__ = ["LfuStore", "LruStore", "make_store"]


def _check_capacity(capacity: int) -> None:
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}")


class LruStore:
    """Least-recently-used eviction: ``get`` (a hit) and ``put`` both make a key most recent."""

    __slots__ = ("_data", "capacity", "evictions")

    def __init__(self, capacity: int) -> None:
        _check_capacity(capacity)
        self.capacity = capacity
        self.evictions = 0
        # least recent first: the victim is always the first item
        self._data: OrderedDict[str, Entry] = OrderedDict()

    def get(self, key: str) -> Entry | None:
        """The entry for ``key`` (and refresh its recency), or None."""
        data = self._data
        entry = data.get(key)
        if entry is not None:
            data.move_to_end(key)
        return entry

    def put(self, key: str, entry: Entry) -> str | None:
        """Store ``entry`` as the most recent; return the key evicted to make room, if any."""
        data = self._data
        if key in data:
            data[key] = entry
            data.move_to_end(key)
            return None
        evicted = None
        if len(data) >= self.capacity:
            evicted = data.popitem(last=False)[0]
            self.evictions += 1
        data[key] = entry
        return evicted

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it was there."""
        try:
            del self._data[key]
        except KeyError:
            return False
        return True

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        """Membership without touching recency (for inspection, not for reads)."""
        return key in self._data

    def keys(self) -> Iterator[str]:
        """A snapshot of the keys, least recently used (next victim) first."""
        return iter(list(self._data))

    def clear(self) -> None:
        """Drop every entry (a cold restart); ``evictions`` is a lifetime count and stays."""
        self._data.clear()


class _Bucket:
    """All keys with one access count, oldest touch first, in the LFU's bucket list."""

    __slots__ = ("freq", "items", "next", "prev")

    def __init__(self, freq: int, prev: _Bucket | None, next_: _Bucket | None) -> None:
        self.freq = freq
        self.items: OrderedDict[str, Entry] = OrderedDict()
        self.prev = prev
        self.next = next_


class LfuStore:
    """Least-frequently-used eviction, LRU among keys with the same count, all O(1).

    A new key starts at count 1; each ``get`` hit adds 1 and makes the key the most recent of
    its new count. ``put`` of a key already present replaces its entry and keeps its count (a
    write-through update or a refill is not a read, so it must not make a key look hot), but it
    does make the key the most recent among those with its count.
    """

    __slots__ = ("_head", "_where", "capacity", "evictions")

    def __init__(self, capacity: int) -> None:
        _check_capacity(capacity)
        self.capacity = capacity
        self.evictions = 0
        self._where: dict[str, _Bucket] = {}
        self._head: _Bucket | None = None  # lowest count; buckets are never empty

    def get(self, key: str) -> Entry | None:
        """The entry for ``key`` (and count the access), or None."""
        bucket = self._where.get(key)
        if bucket is None:
            return None
        entry = bucket.items.pop(key)
        freq = bucket.freq + 1
        nxt = bucket.next
        if nxt is None or nxt.freq != freq:
            nxt = _Bucket(freq, bucket, nxt)
            if bucket.next is not None:
                bucket.next.prev = nxt
            bucket.next = nxt
        nxt.items[key] = entry
        self._where[key] = nxt
        if not bucket.items:
            self._unlink(bucket)
        return entry

    def put(self, key: str, entry: Entry) -> str | None:
        """Store ``entry``; return the key evicted to make room, if any."""
        where = self._where
        bucket = where.get(key)
        if bucket is not None:
            bucket.items[key] = entry
            bucket.items.move_to_end(key)
            return None
        evicted = None
        if len(where) >= self.capacity:
            head = self._head
            assert head is not None  # capacity >= 1 and the store is full
            evicted = head.items.popitem(last=False)[0]
            del where[evicted]
            if not head.items:
                self._unlink(head)
            self.evictions += 1
        head = self._head
        if head is None or head.freq != 1:
            head = _Bucket(1, None, head)
            if head.next is not None:
                head.next.prev = head
            self._head = head
        head.items[key] = entry
        where[key] = head
        return evicted

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it was there."""
        bucket = self._where.pop(key, None)
        if bucket is None:
            return False
        del bucket.items[key]
        if not bucket.items:
            self._unlink(bucket)
        return True

    def frequency(self, key: str) -> int:
        """The key's access count (0 if absent); read-only, for inspection and tests."""
        bucket = self._where.get(key)
        return 0 if bucket is None else bucket.freq

    def _unlink(self, bucket: _Bucket) -> None:
        prev, nxt = bucket.prev, bucket.next
        if prev is None:
            self._head = nxt
        else:
            prev.next = nxt
        if nxt is not None:
            nxt.prev = prev

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: object) -> bool:
        """Membership without counting an access (for inspection, not for reads)."""
        return key in self._where

    def keys(self) -> Iterator[str]:
        """A snapshot of the keys in eviction order: lowest count first, oldest touch first."""
        out: list[str] = []
        bucket = self._head
        while bucket is not None:
            out.extend(bucket.items)
            bucket = bucket.next
        return iter(out)

    def clear(self) -> None:
        """Drop every entry (a cold restart); ``evictions`` is a lifetime count and stays."""
        self._where.clear()
        self._head = None


def make_store(policy: str, capacity: int) -> LruStore | LfuStore:
    """A store for ``policy`` (one of ``cache.EVICTION_POLICIES``)."""
    if policy == "lru":
        return LruStore(capacity)
    if policy == "lfu":
        return LfuStore(capacity)
    from labkit.core.cache import EVICTION_POLICIES  # deferred: cache.py imports this module

    raise ValueError(f"eviction must be one of {', '.join(EVICTION_POLICIES)}, got {policy!r}")
