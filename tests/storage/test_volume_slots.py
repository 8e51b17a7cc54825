"""The volume's local free list and write claims (pure; the Volume tests cover it through I/O)."""

from __future__ import annotations

from mydfs.storage.volume_slots import ClaimRefused, LocalSlots


def test_allocate_hands_out_the_lowest_free_slot_then_the_end() -> None:
    local = LocalSlots(max_slots=4)
    assert [local.allocate() for _ in range(4)] == [0, 1, 2, 3]
    assert local.allocate() is None  # full
    local.release(2)
    local.release(1)
    assert local.free() == {1, 2}
    assert local.allocate() == 1
    assert local.free_count() == 1


def test_claims_are_exclusive_and_write_once() -> None:
    local = LocalSlots(max_slots=10)
    assert local.claim(3) is None  # past the end: the slots skipped become free
    assert local.free() == {0, 1, 2}
    assert local.end == 4
    assert local.claim(3) is ClaimRefused.WRITING
    local.release(3)  # a write has started: release does nothing
    assert 3 not in local.free()
    local.written(3)
    assert local.claim(3) is ClaimRefused.TAKEN  # holds a slice now
    local.add_free(3)  # it became a 404 marker
    assert local.claim(3) is None
    local.abandoned(3)  # the write failed
    assert 3 in local.free()


def test_free_on_disk_counts_claimed_slots_as_free() -> None:
    local = LocalSlots(max_slots=10)
    slot = local.allocate()
    assert slot == 0
    assert local.claim(5) is None
    assert local.free_on_disk(disk_end=6) == (0, 1, 2, 3, 4, 5)
    assert local.free_on_disk(disk_end=2) == (0, 1)
    local.written(5)
    assert local.free_on_disk(disk_end=6) == (0, 1, 2, 3, 4)
