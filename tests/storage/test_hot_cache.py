"""The hot-slice cache's pure core (storage/hot_cache.py): admission after N reads, LRU by
bytes, one entry per slot keyed by generation, drops; checked against a simple model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mydfs.storage.hot_cache import HotCache


def test_a_slice_is_admitted_on_its_nth_read_and_then_hits() -> None:
    cache = HotCache(threshold=3, max_bytes=100)
    assert [cache.note_read(7, 1, 10) for _ in range(2)] == [False, False]
    assert cache.get(7, 1) is None
    assert cache.note_read(7, 1, 10) is True
    cache.put(7, 1, b"x" * 10)
    assert cache.get(7, 1) == b"x" * 10
    assert cache.note_read(7, 1, 10) is False  # cached already
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)
    assert cache.bytes == 10


def test_another_generation_is_a_miss_and_counts_from_zero() -> None:
    cache = HotCache(threshold=2, max_bytes=100)
    cache.note_read(7, 1, 4)
    assert cache.note_read(7, 1, 4)
    cache.put(7, 1, b"old!")
    assert cache.get(7, 2) is None  # the slot was reused: never the old bytes
    assert not cache.note_read(7, 2, 4)  # first read of generation 2
    assert not cache.note_read(7, 1, 4)  # a late read of generation 1 is not counted
    assert cache.note_read(7, 2, 4)
    cache.put(7, 2, b"new!")
    assert (7, 1) not in cache and cache.get(7, 2) == b"new!" and cache.bytes == 4
    cache.put(7, 1, b"old!")  # a late fill of the older slice is refused
    assert cache.get(7, 2) == b"new!" and len(cache) == 1


def test_lru_eviction_by_bytes_and_drop() -> None:
    cache = HotCache(threshold=1, max_bytes=10)
    cache.put(1, 1, b"aaaa")
    cache.put(2, 1, b"bbbb")
    assert cache.get(1, 1) == b"aaaa"  # 2 is now the least recently used
    assert cache.put(3, 1, b"cccc") == 1
    assert cache.keys() == [(1, 1), (3, 1)] and cache.stats.evictions == 1
    assert cache.put(4, 1, b"z" * 11) == 0 and (4, 1) not in cache  # larger than the cache
    assert not cache.note_read(4, 1, 11)
    cache.drop(1)
    assert cache.keys() == [(3, 1)] and cache.bytes == 4
    cache.drop(None)
    assert len(cache) == 0 and cache.bytes == 0


def test_zero_bytes_disables_it() -> None:
    cache = HotCache(threshold=1, max_bytes=0)
    assert not cache.enabled
    assert not cache.note_read(1, 1, 1)
    cache.put(1, 1, b"a")
    assert cache.get(1, 1) is None and len(cache) == 0 and cache.stats.misses == 0


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        HotCache(threshold=0)
    with pytest.raises(ValueError):
        HotCache(max_bytes=-1)


class Model:
    """The obvious implementation: a list in use order, counts per (slot, generation)."""

    def __init__(self, threshold: int, max_bytes: int) -> None:
        self.threshold, self.max_bytes = threshold, max_bytes
        self.order: list[tuple[int, int, bytes]] = []
        self.reads: dict[int, tuple[int, int]] = {}
        self.evictions = 0

    def find(self, slot: int) -> int | None:
        return next((i for i, e in enumerate(self.order) if e[0] == slot), None)

    def get(self, slot: int, gen: int) -> bytes | None:
        i = self.find(slot)
        if i is None or self.order[i][1] != gen:
            return None
        entry = self.order.pop(i)
        self.order.append(entry)
        return entry[2]

    def note_read(self, slot: int, gen: int, size: int) -> bool:
        g, n = self.reads.get(slot, (gen, 0))
        if gen < g:
            return False
        n = n + 1 if g == gen else 1
        self.reads[slot] = (gen, n)
        i = self.find(slot)
        cached = i is not None and self.order[i][1] == gen
        return n >= self.threshold and size <= self.max_bytes and not cached

    def put(self, slot: int, gen: int, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        i = self.find(slot)
        if i is not None:
            if self.order[i][1] > gen:
                return
            self.order.pop(i)
        while sum(len(e[2]) for e in self.order) + len(data) > self.max_bytes:
            self.order.pop(0)
            self.evictions += 1
        self.order.append((slot, gen, data))

    def drop(self, slot: int | None) -> None:
        if slot is None:
            self.order, self.reads = [], {}
            return
        self.reads.pop(slot, None)
        self.order = [e for e in self.order if e[0] != slot]


ops = st.lists(
    st.tuples(
        st.sampled_from(["get", "read", "put", "drop", "drop_all"]),
        st.integers(0, 5),  # slot
        st.integers(1, 3),  # generation
        st.integers(0, 12),  # size
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(threshold=st.integers(1, 4), max_bytes=st.integers(1, 30), steps=ops)
def test_the_cache_behaves_like_the_model(
    threshold: int, max_bytes: int, steps: list[tuple[str, int, int, int]]
) -> None:
    cache, model = HotCache(threshold, max_bytes), Model(threshold, max_bytes)
    for op, slot, gen, size in steps:
        data = bytes([slot * 16 + gen]) * size
        if op == "get":
            assert cache.get(slot, gen) == model.get(slot, gen)
        elif op == "read":
            assert cache.note_read(slot, gen, size) == model.note_read(slot, gen, size)
        elif op == "put":
            cache.put(slot, gen, data)
            model.put(slot, gen, data)
        elif op == "drop":
            cache.drop(slot)
            model.drop(slot)
        else:
            cache.drop(None)
            model.drop(None)
        assert cache.keys() == [(s, g) for s, g, _ in model.order]
        assert cache.bytes == sum(len(e[2]) for e in model.order) <= max_bytes
        assert cache.stats.evictions == model.evictions
