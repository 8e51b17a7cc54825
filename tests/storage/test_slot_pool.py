"""The leader's slots reserved ahead (:class:`~mydfs.storage.slot_pool.SlotPool`, pure)."""

from __future__ import annotations

from mydfs.storage.slot_pool import Ahead, SlotPool


def ahead(slot: int, at: float = 0.0) -> Ahead:
    return Ahead(slot, slot + 100, f"pool.n1.{slot}", at)


def test_takes_the_oldest_valid_slot_and_gives_up_the_rest_on_the_way() -> None:
    pool = SlotPool(target=4, low=2, ttl=30.0)
    for slot in range(4):
        pool.add(ahead(slot, at=float(slot)))
    got, dropped = pool.take(10.0, lambda a: a.slot != 0)  # slot 0 was settled away
    assert got == ahead(1, 1.0) and dropped == [ahead(0)]
    got, dropped = pool.take(32.5, lambda a: True)  # slot 2 (at 2.0) is past its TTL
    assert got == ahead(3, 3.0) and dropped == [ahead(2, 2.0)]
    assert pool.take(33.0, lambda a: True) == (None, [])


def test_asks_for_more_below_the_low_mark_counting_what_was_asked() -> None:
    pool = SlotPool(target=4, low=2)
    assert pool.wanted() == 4
    pool.requested = 4
    assert pool.wanted() == 0
    pool.requested = 0
    for slot in range(2):
        pool.add(ahead(slot))
    assert pool.wanted() == 0  # at the low mark
    pool.take(0.0, lambda a: True)
    assert pool.wanted() == 3
    assert pool.clear() == [ahead(1)] and len(pool) == 0
