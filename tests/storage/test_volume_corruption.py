"""Damage found while a volume is in use: checksums on reads, ``verify()``, quarantine."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mydfs.common.errors import Conflict, Corrupt, NotFound, SliceDeleted, error_from_dict
from mydfs.common.location import Location
from mydfs.storage.format import (
    BLOCK_SIZE,
    CHECKPOINT_OFFSETS,
    HEADER_SIZE,
    PAYLOAD_OFFSET,
    SlotState,
    slot_offset,
)
from mydfs.storage.volume import Volume


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def flip(path: Path, offset: int, bit: int = 0) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        old = os.pread(fd, 1, offset)
        assert len(old) == 1
        os.pwrite(fd, bytes([old[0] ^ (1 << bit)]), offset)
    finally:
        os.close(fd)


def pread(path: Path, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def pwrite(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def payload_at(slot: int, pos: int = 0) -> int:
    return slot_offset(slot) + PAYLOAD_OFFSET + pos


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "corrupt.vol"


@pytest.fixture
def vol(path: Path) -> Iterator[Volume]:
    v = Volume.open(path, create=True, node_id="n", group_id=1, max_slots=16)
    yield v
    v.close()


# --- payload blocks --------------------------------------------------------------------------


def test_range_reads_check_only_the_blocks_they_touch(vol: Volume, path: Path) -> None:
    data = payload(8 * BLOCK_SIZE, seed=1)
    vol.write(0, payload(1000, seed=0))
    slot = 1
    vol.write(slot, data)
    flip(path, payload_at(slot, 5 * BLOCK_SIZE + 1234), 6)  # block 5 goes bad

    # Ranges that do not touch block 5 read fine.
    for offset, length in [
        (2 * BLOCK_SIZE + 100, 500),
        (0, 5 * BLOCK_SIZE),
        (4 * BLOCK_SIZE, BLOCK_SIZE),
        (6 * BLOCK_SIZE, 2 * BLOCK_SIZE),
        (6 * BLOCK_SIZE, None),
        (5 * BLOCK_SIZE, 0),
    ]:
        got = vol.read(slot, offset, length)
        end = len(data) if length is None else offset + length
        assert got.data == data[offset:end]
    # Any range touching block 5 fails, naming volume, slot and block.
    for offset, length in [
        (5 * BLOCK_SIZE, 1),
        (5 * BLOCK_SIZE + 1234, 1),
        (6 * BLOCK_SIZE - 1, 1),
        (4 * BLOCK_SIZE, BLOCK_SIZE + 1),
        (2 * BLOCK_SIZE, 5 * BLOCK_SIZE),
        (0, None),
    ]:
        with pytest.raises(Corrupt) as exc:
            vol.read(slot, offset, length)
        err = exc.value
        assert err.context == {"volume": vol.name, "slot": slot, "block": 5}
        assert str(path) in str(err)
        assert "slot=1" in str(err)
        assert "block 5" in err.message
        # The wire form keeps the context.
        again = error_from_dict(err.to_dict())
        assert isinstance(again, Corrupt)
        assert again.context["slot"] == slot
    # Other slots are untouched, and verify() names the damaged slot and block.
    assert vol.read(0).data == payload(1000, seed=0)
    report = vol.verify()
    assert [p.slot for p in report.problems] == [slot]
    assert "block 5" in report.problems[0].reason
    # The damage is in the payload, not the header: a reopen does not hide it.
    vol.close()
    with Volume.open(path) as v2:
        assert v2.quarantined() == {}
        assert v2.read(slot, 2 * BLOCK_SIZE + 100, 500).data == data[2 * BLOCK_SIZE + 100 :][:500]
        with pytest.raises(Corrupt):
            v2.read(slot)
        assert [p.slot for p in v2.verify().problems] == [slot]


def test_any_payload_bit_flip_is_caught(vol: Volume, path: Path) -> None:
    data = payload(3 * BLOCK_SIZE + 777, seed=2)
    slot = 3
    vol.write(slot, data)
    vol.write(4, b"neighbour")

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(pos=st.integers(0, len(data) - 1), bit=st.integers(0, 7))
    def flipped(pos: int, bit: int) -> None:
        flip(path, payload_at(slot, pos), bit)
        try:
            block = pos // BLOCK_SIZE
            with pytest.raises(Corrupt) as exc:
                vol.read(slot, pos, 1)
            assert exc.value.context["block"] == block
            for other in range(4):
                if other != block:
                    start = other * BLOCK_SIZE
                    assert vol.read(slot, start, 10).data == data[start : start + 10]
            assert [p.slot for p in vol.verify().problems] == [slot]
            assert vol.read(4).data == b"neighbour"
        finally:
            flip(path, payload_at(slot, pos), bit)
        assert vol.read(slot).data == data

    flipped()
    assert vol.verify().ok


def test_damage_past_the_payload_is_harmless(vol: Volume, path: Path) -> None:
    data = payload(5000, seed=3)
    vol.write(0, data)
    vol.write(1, b"next")
    flip(path, slot_offset(0) + 2 * HEADER_SIZE + 10)  # padding between headers and payload
    flip(path, payload_at(0, len(data) + 10))  # slack after the payload
    assert vol.read(0).data == data
    assert vol.verify().ok


# --- header copies ------------------------------------------------------------------------------


@pytest.mark.parametrize("copy", ["A", "B"])
def test_one_damaged_header_copy_fails_reads_until_reopen_repairs_it(
    vol: Volume, path: Path, copy: str
) -> None:
    data = payload(70_000, seed=4)
    vol.write(2, data)
    vol.write(3, b"other")
    header = vol.header(2)
    flip(path, slot_offset(2) + (0 if copy == "A" else HEADER_SIZE) + 40, 2)
    # After open, copies that differ can only be damage: the read says which copy.
    with pytest.raises(Corrupt) as exc:
        vol.read(2)
    assert f"copy {copy}" in exc.value.message
    assert exc.value.context["slot"] == 2
    assert [p.slot for p in vol.verify().problems] == [2]
    assert vol.read(3).data == b"other"
    vol.close()
    with Volume.open(path) as v2:
        assert v2.report.repaired_headers == [2]
        assert v2.header(2) == header
        assert v2.read(2).data == data
        assert v2.verify().ok
        raw = pread(path, slot_offset(2), 2 * HEADER_SIZE)
        assert raw[:HEADER_SIZE] == raw[HEADER_SIZE:]


def test_both_copies_damaged_quarantine_then_reclaim(vol: Volume, path: Path) -> None:
    for s in range(4):
        vol.write(s, payload(3000, seed=s))
    vol.close()
    flip(path, slot_offset(2) + 20, 1)
    flip(path, slot_offset(2) + HEADER_SIZE + 300, 5)
    with Volume.open(path) as v:
        assert v.quarantined() == {2: "slot header checksum mismatch"}
        assert [(p.slot, p.reason) for p in v.report.quarantined] == [
            (2, "slot header checksum mismatch")
        ]
        assert v.stats().quarantined == 1
        assert v.stats().live == 3
        for op in (lambda: v.read(2), lambda: v.header(2)):
            with pytest.raises(Corrupt) as exc:
                op()
            assert exc.value.context == {"volume": v.name, "slot": 2}
        with pytest.raises(Conflict):
            v.write(2, b"no")
        assert 2 not in v.free_slots()
        assert v.allocate() == 4  # skips the quarantined slot
        v.release(4)
        assert [p.slot for p in v.verify().problems] == [2]
        for s in (0, 1, 3):
            assert v.read(s).data == payload(3000, seed=s)
        # Once its data is restored elsewhere, the slot is reclaimed and reused.
        v.reclaim(2)
        assert v.quarantined() == {}
        assert v.allocate() == 2
        v.write(2, b"restored")
        assert v.read(2).data == b"restored"
        assert v.verify().ok
    with Volume.open(path) as v:
        assert v.quarantined() == {}
        assert v.read(2).data == b"restored"


def test_wiped_header_of_a_live_slice_is_reported(vol: Volume, path: Path) -> None:
    vol.write(0, b"live")
    vol.write(1, b"doomed")
    vol.mark_deleted(1)
    pwrite(path, slot_offset(0), bytes(2 * HEADER_SIZE))
    with pytest.raises(NotFound):  # never the old bytes
        vol.read(0)
    report = vol.verify()
    assert [p.slot for p in report.problems] == [0]
    assert "missing" in report.problems[0].reason
    # The same for a 404 marker is not a problem: its slot is free anyway.
    pwrite(path, slot_offset(1), bytes(2 * HEADER_SIZE))
    assert [p.slot for p in vol.verify().problems] == [0]


def test_verify_reports_exactly_the_damaged_slots(vol: Volume, path: Path) -> None:
    rng = random.Random(5)
    sizes = [rng.choice([1, 4000, BLOCK_SIZE, 150_000]) for _ in range(12)]
    for s, n in enumerate(sizes):
        vol.write(s, payload(n, seed=s))
    vol.mark_moved(10, Location(3, 3))
    vol.mark_deleted(11)
    assert vol.verify().ok
    damaged = {
        1: payload_at(1, sizes[1] - 1),  # last payload byte
        4: slot_offset(4) + 100,  # copy A
        6: slot_offset(6) + HEADER_SIZE + 508,  # copy B's checksum
        8: payload_at(8, 0),
        10: payload_at(10, 0),  # a 301 keeps its payload until compaction: checked
    }
    for offset in damaged.values():
        flip(path, offset, 7)
    flip(path, payload_at(11, 0), 7)  # a 404's payload is never served: not a problem
    report = vol.verify()
    assert {p.slot for p in report.problems} == set(damaged)
    assert report.checked == 12 - 2  # slots whose header copies disagree are not checked
    for s in set(range(10)) - set(damaged):
        assert vol.read(s).data == payload(sizes[s], seed=s)
    with pytest.raises(SliceDeleted):
        vol.read(11)


# --- superblock and checkpoints -----------------------------------------------------------------


def test_every_superblock_bit_flip_is_refused(vol: Volume, path: Path) -> None:
    vol.write(0, b"data")
    vol.close()
    size = os.path.getsize(path)
    checkpoints = [pread(path, off, 4096) for off in CHECKPOINT_OFFSETS]
    for offset in range(512):
        for bit in range(8):
            flip(path, offset, bit)
            with pytest.raises(Corrupt):  # Corrupt or its IncompatibleVolume
                Volume.open(path)
            flip(path, offset, bit)
    # Refusing to open wrote nothing.
    assert os.path.getsize(path) == size
    assert [pread(path, off, 4096) for off in CHECKPOINT_OFFSETS] == checkpoints
    with Volume.open(path) as v:
        assert v.report.clean
        assert v.read(0).data == b"data"


@pytest.mark.parametrize("which", [[0], [1], [0, 1]])
def test_damaged_checkpoints_fall_back_to_the_scan(
    vol: Volume, path: Path, which: list[int]
) -> None:
    for s in range(5):
        vol.write(s, payload(2000, seed=s))
    vol.mark_deleted(1)
    vol.mark_deleted(3)
    vol.mark_moved(4, Location(1, 1))
    vol.close()
    for i in which:
        flip(path, CHECKPOINT_OFFSETS[i] + 20, 0)
    with Volume.open(path) as v:
        # The latest checkpoint (the clean one, written at close) lives in area 1.
        assert v.report.clean == (1 not in which)
        assert v.report.checkpoint_mismatch is None
        assert v.report.quarantined == []
        assert v.free_slots() == [1, 3]
        for s in (0, 2):
            assert v.read(s).data == payload(2000, seed=s)
        assert v.header(4).state == SlotState.MOVED
        assert v.allocate() == 1
        # New slices still get generations above every old one.
        assert v.write(1, b"x").generation > max(v.header(s).generation for s in (0, 2, 3, 4))
    with Volume.open(path) as v:
        assert v.report.clean
        assert v.read(1).data == b"x"
