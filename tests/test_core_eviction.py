"""Tests for ``labkit.core.eviction``: the LRU and O(1) LFU stores behind the cache."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.core.cache import EVICTION_POLICIES, Entry
from labkit.core.eviction import LfuStore, LruStore, make_store

SETTINGS = settings(derandomize=True, deadline=None, max_examples=200)


def e(version: int = 0) -> Entry:
    return Entry(version, float("inf"))


# -- construction -------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", EVICTION_POLICIES)
def test_make_store_builds_each_policy(policy: str) -> None:
    store = make_store(policy, 3)
    assert isinstance(store, {"lru": LruStore, "lfu": LfuStore}[policy])
    assert (len(store), store.capacity, store.evictions) == (0, 3, 0)


def test_make_store_rejects_unknown_policy() -> None:
    with pytest.raises(ValueError, match="eviction must be one of lru, lfu, got 'fifo'"):
        make_store("fifo", 3)


@pytest.mark.parametrize("cls", [LruStore, LfuStore])
@pytest.mark.parametrize("capacity", [0, -1, 2.0, True])
def test_stores_reject_bad_capacity(cls: type, capacity: object) -> None:
    with pytest.raises(ValueError, match="capacity"):
        cls(capacity)


# -- LRU ----------------------------------------------------------------------------------------


def test_lru_evicts_least_recently_used_and_get_refreshes() -> None:
    s = LruStore(3)
    assert [s.put(k, e()) for k in "abc"] == [None, None, None]
    assert s.get("a") is not None  # a is now the most recent: b is next out
    assert list(s.keys()) == ["b", "c", "a"]
    assert s.put("d", e()) == "b"
    assert s.put("e", e()) == "c"
    assert list(s.keys()) == ["a", "d", "e"]
    assert s.evictions == 2
    assert "b" not in s and s.get("b") is None


def test_lru_reput_replaces_entry_refreshes_and_never_evicts() -> None:
    s = LruStore(2)
    s.put("a", e(1))
    s.put("b", e(1))
    assert s.put("a", e(2)) is None  # present: replaced, no eviction
    assert s.get("a") == e(2)
    assert s.put("c", e()) == "b"  # a was refreshed by the re-put
    assert len(s) == 2 and s.evictions == 1


def test_contains_does_not_refresh_recency() -> None:
    s = LruStore(2)
    s.put("a", e())
    s.put("b", e())
    assert "a" in s
    assert s.put("c", e()) == "a"


@pytest.mark.parametrize("cls", [LruStore, LfuStore])
def test_delete_clear_and_keys_snapshot(cls: type) -> None:
    s = cls(4)
    for k in "abcd":
        s.put(k, e())
    assert s.delete("b") is True
    assert s.delete("b") is False
    assert len(s) == 3 and "b" not in s
    snapshot = s.keys()
    for k in snapshot:  # a snapshot: deleting while iterating is allowed
        s.delete(k)
    assert len(s) == 0 and list(s.keys()) == []
    s.put("x", e())
    s.clear()
    assert len(s) == 0 and s.get("x") is None
    assert s.evictions == 0  # deletes and clears are not evictions
    for k in "pqrst":
        s.put(k, e())
    assert s.evictions == 1 and len(s) == 4


# -- LFU ----------------------------------------------------------------------------------------


def test_lfu_evicts_least_frequent() -> None:
    s = LfuStore(3)
    for k in "abc":
        s.put(k, e())
    for _ in range(3):
        s.get("a")
    s.get("c")
    assert [s.frequency(k) for k in "abcz"] == [4, 1, 2, 0]
    assert list(s.keys()) == ["b", "c", "a"]
    assert s.put("d", e()) == "b"  # count 1, the lowest
    assert s.put("e", e()) == "d"  # the newcomer is now the only count-1 key
    assert sorted(s.keys()) == ["a", "c", "e"]


def test_lfu_breaks_ties_by_least_recent() -> None:
    s = LfuStore(3)
    for k in "abc":
        s.put(k, e())
    for k in "cab":  # all tied at count 2; c was touched longest ago
        s.get(k)
    assert s.put("d", e()) == "c"  # eviction happens before d joins at count 1
    assert list(s.keys()) == ["d", "a", "b"]


def test_lfu_reput_keeps_count_but_refreshes_recency_within_it() -> None:
    s = LfuStore(3)
    for k in "abc":
        s.put(k, e(0))
    s.get("a")
    s.get("b")  # a and b at 2 (a older), c at 1
    assert s.put("a", e(7)) is None
    assert s.frequency("a") == 2  # not reset to 1, not bumped to 3
    assert list(s.keys()) == ["c", "b", "a"]  # a moved behind b among the count-2 keys
    assert s.get("a") == e(7)


def test_lfu_delete_of_lowest_bucket_keeps_eviction_correct() -> None:
    s = LfuStore(3)
    for k in "abc":
        s.put(k, e())
    s.get("b")
    s.get("b")
    s.get("c")  # a:1 b:3 c:2
    s.delete("a")  # the whole lowest bucket goes
    s.put("d", e())  # d:1
    s.get("d")
    s.get("d")
    s.get("d")  # d:4; now c (2) is the least frequent
    assert s.put("e", e()) == "c"


@pytest.mark.parametrize("policy", EVICTION_POLICIES)
def test_100k_operations_run_and_stay_bounded(policy: str) -> None:
    rng = random.Random(7)
    s = make_store(policy, 1000)
    keys = [f"k{i}" for i in range(5000)]
    entry = e()
    hits = 0
    for _ in range(100_000):
        k = keys[rng.randrange(500) if rng.random() < 0.7 else rng.randrange(5000)]
        if s.get(k) is None:
            s.put(k, entry)
        else:
            hits += 1
    assert len(s) == 1000
    assert s.evictions == 100_000 - hits - 1000
    assert 0 < hits < 100_000


def test_lfu_keeps_hot_keys_through_a_scan_where_lru_loses_them() -> None:
    hot = [f"h{i}" for i in range(8)]
    scan = [f"s{i}" for i in range(50)]
    stores = {p: make_store(p, 10) for p in EVICTION_POLICIES}
    for s in stores.values():
        for _ in range(5):
            for k in hot:
                if s.get(k) is None:
                    s.put(k, e())
        for k in scan:
            if s.get(k) is None:
                s.put(k, e())
    assert all(k in stores["lfu"] for k in hot)
    assert not any(k in stores["lru"] for k in hot)


# -- property: both stores against a reference model --------------------------------------------


class _Model:
    """A slow, obviously correct model: eviction = min over (count, last touch)."""

    def __init__(self, capacity: int, lfu: bool) -> None:
        self.capacity = capacity
        self.lfu = lfu
        self.items: dict[str, list] = {}  # key -> [entry, count, last_touch]
        self.tick = 0
        self.evictions = 0

    def _touch(self) -> int:
        self.tick += 1
        return self.tick

    def get(self, key: str) -> Entry | None:
        item = self.items.get(key)
        if item is None:
            return None
        item[1] += 1
        item[2] = self._touch()
        return item[0]

    def put(self, key: str, entry: Entry) -> str | None:
        item = self.items.get(key)
        if item is not None:
            item[0] = entry
            item[2] = self._touch()
            return None
        victim = None
        if len(self.items) >= self.capacity:
            victim = self.order()[0]
            del self.items[victim]
            self.evictions += 1
        self.items[key] = [entry, 1, self._touch()]
        return victim

    def order(self) -> list[str]:
        """Keys in eviction order, next victim first."""
        if self.lfu:
            return sorted(self.items, key=lambda k: (self.items[k][1], self.items[k][2]))
        return sorted(self.items, key=lambda k: self.items[k][2])

    def delete(self, key: str) -> bool:
        return self.items.pop(key, None) is not None


OPS = st.lists(
    st.tuples(
        st.sampled_from(["get", "put", "putget", "delete"]),
        st.sampled_from("abcdefgh"),
        st.integers(0, 5),
    ),
    max_size=120,
)


@pytest.mark.parametrize("policy", EVICTION_POLICIES)
@SETTINGS
@given(capacity=st.integers(1, 5), ops=OPS)
def test_store_matches_reference_model(policy: str, capacity: int, ops: list) -> None:
    store = make_store(policy, capacity)
    model = _Model(capacity, lfu=policy == "lfu")
    for op, key, version in ops:
        if op == "get":
            assert store.get(key) == model.get(key)
        elif op in ("put", "putget"):
            entry = Entry(version, float("inf"))
            evicted = store.put(key, entry)
            assert evicted == model.put(key, entry)
            assert evicted != key and key in store  # never its own victim
            if op == "putget":  # get right after put returns what was put
                assert store.get(key) is entry
                model.get(key)
        else:
            assert store.delete(key) == model.delete(key)
        assert len(store) <= capacity
        assert len(store) == len(model.items)
        assert list(store.keys()) == model.order()
        assert store.evictions == model.evictions
    if policy == "lfu":
        assert isinstance(store, LfuStore)
        assert {k: store.frequency(k) for k in model.items} == {
            k: v[1] for k, v in model.items.items()
        }
