"""The replica side's rule for a payload arriving at a slot (pure): acknowledge the same copy
again, refuse an older generation, replace an older copy, write a free slot; and the
reconciler's drop, which never removes a copy newer than the one it planned to drop."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mydfs.common.location import Location
from mydfs.storage.format import SliceOwner, SlotHeader
from mydfs.storage.format import SlotState as Disk
from mydfs.storage.replica import Store, drop_copy, store_decision
from mydfs.storage.volume import Volume

CRC = 0xABCD


def header(state: Disk, gen: int, crc: int = CRC) -> SlotHeader:
    return SlotHeader(
        slot=3,
        state=state,
        generation=gen,
        length=10,
        owner=SliceOwner(),
        next=None,
        payload_crc=crc,
        block_crcs=(0,),
        target=Location(1, 9) if state == Disk.MOVED else None,
    )


def test_a_free_slot_is_written() -> None:
    assert store_decision(None, 5, CRC) == Store.WRITE


@pytest.mark.parametrize("state", [Disk.LIVE, Disk.PENDING])
def test_a_retried_push_of_the_same_copy_is_acknowledged(state: Disk) -> None:
    assert store_decision(header(state, 5), 5, CRC) == Store.ALREADY_HERE


@pytest.mark.parametrize("state", [Disk.LIVE, Disk.PENDING])
def test_same_generation_other_bytes_replace_the_copy(state: Disk) -> None:
    assert store_decision(header(state, 5), 5, CRC + 1) == Store.REPLACE


@pytest.mark.parametrize("state", [Disk.LIVE, Disk.PENDING, Disk.MOVED, Disk.DELETED])
def test_a_push_older_than_the_local_copy_is_refused(state: Disk) -> None:
    assert store_decision(header(state, 6), 5, CRC) == Store.CONFLICT


@pytest.mark.parametrize("state", [Disk.LIVE, Disk.PENDING, Disk.MOVED])
def test_an_older_copy_is_dropped_before_the_write(state: Disk) -> None:
    assert store_decision(header(state, 4), 5, CRC) == Store.REPLACE


def test_a_deleted_or_moved_copy_of_the_same_generation_is_not_acknowledged() -> None:
    assert store_decision(header(Disk.DELETED, 5), 5, CRC) == Store.WRITE
    assert store_decision(header(Disk.MOVED, 5), 5, CRC) == Store.REPLACE


@given(
    state=st.sampled_from([Disk.LIVE, Disk.PENDING, Disk.MOVED, Disk.DELETED]),
    local_gen=st.integers(0, 5),
    gen=st.integers(0, 5),
    same_bytes=st.booleans(),
)
def test_never_overwrites_a_newer_copy(
    state: Disk, local_gen: int, gen: int, same_bytes: bool
) -> None:
    got = store_decision(header(state, local_gen), gen, CRC if same_bytes else CRC + 1)
    if local_gen > gen:
        assert got == Store.CONFLICT
    else:
        assert got != Store.CONFLICT
    if got == Store.ALREADY_HERE:
        assert local_gen == gen and same_bytes and state in (Disk.LIVE, Disk.PENDING)


def test_a_drop_planned_for_an_older_copy_leaves_a_newer_one(tmp_path: Path) -> None:
    with Volume.open(tmp_path / "v.dat", create=True, max_slots=8) as volume:
        volume.write(3, b"old", generation=4)
        assert drop_copy(volume, 3, up_to=4)  # the planned copy: dropped
        assert volume.header(3).state == Disk.DELETED
        assert not drop_copy(volume, 3, up_to=4)  # nothing left to drop
        volume.write(3, b"new", generation=7)  # the group reused the slot meanwhile
        assert not drop_copy(volume, 3, up_to=4)
        assert (volume.header(3).state, volume.header(3).generation) == (Disk.LIVE, 7)
        assert not drop_copy(volume, 5, up_to=9)  # a free slot
