"""The slice store's everyday behaviour: round trips, range reads, markers, free-slice reuse."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mydfs.common.checksum import crc32c
from mydfs.common.errors import (
    Conflict,
    DiskFull,
    NotFound,
    SliceDeleted,
    SliceMoved,
    StorageIOError,
)
from mydfs.common.location import Location
from mydfs.storage import volume as volume_mod
from mydfs.storage.format import (
    BLOCK_SIZE,
    HEADER_SIZE,
    PAYLOAD_CAPACITY,
    PAYLOAD_OFFSET,
    SLOT_SIZE,
    SliceOwner,
    SlotState,
    blocks_for,
    slot_offset,
)
from mydfs.storage.volume import Volume

Opener = Callable[..., Volume]


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def vol_path(tmp_path: Path) -> Path:
    return tmp_path / "vol" / "data.vol"


@pytest.fixture
def opener(vol_path: Path) -> Iterator[Opener]:
    """Open volumes (default: a fresh one at ``vol_path``); every one is closed at teardown."""
    opened: list[Volume] = []

    def open_(path: Path | None = None, **kwargs: object) -> Volume:
        kwargs.setdefault("create", True)
        kwargs.setdefault("max_slots", 32)
        v = Volume.open(path or vol_path, **kwargs)  # type: ignore[arg-type]
        opened.append(v)
        return v

    yield open_
    for v in opened:
        v.close()


def reopen(opener: Opener, v: Volume) -> Volume:
    v.close()
    return opener(v.path, create=False)


# --- creating and opening ----------------------------------------------------------------------


def test_create_new_volume(opener: Opener, vol_path: Path) -> None:
    v = opener(node_id="node-a", group_id=7, max_slots=16)
    assert vol_path.exists()
    assert not vol_path.with_name(vol_path.name + ".creating").exists()
    assert v.superblock.node_id == "node-a"
    assert v.superblock.group_id == 7
    assert v.superblock.max_slots == 16
    assert len(v.superblock.volume_id) == 16
    assert v.report.clean
    assert v.report.repaired_headers == []
    assert v.report.quarantined == []
    assert v.report.checkpoint_mismatch is None
    st = v.stats()
    assert (st.live, st.pending, st.moved, st.deleted, st.free, st.slot_end) == (0, 0, 0, 0, 0, 0)
    assert list(v.scan()) == []
    assert v.verify().ok
    # The file holds only the (sparse) superblock slot.
    assert os.path.getsize(vol_path) == SLOT_SIZE
    assert os.stat(vol_path).st_blocks * 512 < SLOT_SIZE


def test_reopen_keeps_identity_and_reports_clean(opener: Opener) -> None:
    v = opener(node_id="node-b", group_id=2)
    volume_id = v.superblock.volume_id
    v2 = reopen(opener, v)
    assert v2.superblock.volume_id == volume_id
    assert v2.superblock.node_id == "node-b"
    assert v2.report.clean
    assert v2.report.checkpoint_mismatch is None
    # Matching identity is accepted; create=True on an existing volume just opens it.
    v2.close()
    v3 = opener(v2.path, create=True, node_id="node-b", group_id=2)
    assert v3.superblock.volume_id == volume_id


def test_missing_volume_without_create(tmp_path: Path) -> None:
    with pytest.raises(NotFound) as exc:
        Volume.open(tmp_path / "nope.vol")
    assert "nope.vol" in str(exc.value)
    assert not (tmp_path / "nope.vol").exists()


# --- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        511,
        4095,
        4096,
        BLOCK_SIZE - 1,
        BLOCK_SIZE,
        BLOCK_SIZE + 1,
        3 * BLOCK_SIZE + 17,
        300_000,
    ],
)
def test_write_read_round_trip(opener: Opener, size: int) -> None:
    v = opener()
    data = payload(size, seed=size)
    owner = SliceOwner.new(index=5)
    slot = v.allocate()
    h = v.write(slot, data, owner=owner)
    assert h.slot == slot
    assert h.state == SlotState.LIVE
    assert h.length == size
    assert h.owner == owner
    assert h.payload_crc == crc32c(data)
    assert len(h.block_crcs) == blocks_for(size)
    got = v.read(slot)
    assert got.data == data
    assert got.offset == 0
    assert got.header == h
    assert v.header(slot) == h
    assert v.read(slot, expect_owner=owner).data == data
    assert v.verify().ok
    v2 = reopen(opener, v)
    assert v2.read(slot).data == data
    assert v2.header(slot) == h


def test_full_capacity_payloads(opener: Opener) -> None:
    v = opener()
    slices = {}
    for seed in (1, 2):
        data = payload(PAYLOAD_CAPACITY, seed=seed)
        slot = v.allocate()
        v.write(slot, data)
        slices[slot] = data
    for slot, data in slices.items():
        assert v.read(slot).data == data
        tail = v.read(slot, PAYLOAD_CAPACITY - 10)
        assert tail.data == data[-10:]
    v2 = reopen(opener, v)
    for slot, data in slices.items():
        assert sha(v2.read(slot).data) == sha(data)
        assert v2.header(slot).length == PAYLOAD_CAPACITY
    assert v2.verify().ok
    # A full slot's payload ends exactly at the next slot's start.
    last = max(slices)
    assert os.path.getsize(v2.path) == slot_offset(last + 1)


def test_range_reads_match_slicing(opener: Opener) -> None:
    v = opener()
    data = payload(5 * BLOCK_SIZE + 1234, seed=9)
    slot = v.allocate()
    v.write(slot, data)
    n = len(data)
    cases = [
        (0, None),
        (0, 0),
        (0, 1),
        (n, None),
        (n, 0),
        (n - 1, 1),
        (BLOCK_SIZE - 1, 2),
        (BLOCK_SIZE, BLOCK_SIZE),
        (BLOCK_SIZE, BLOCK_SIZE + 1),
        (2 * BLOCK_SIZE + 5, 100),
        (3 * BLOCK_SIZE - 1, BLOCK_SIZE + 2),
        (5 * BLOCK_SIZE, 1234),
        (17, n - 17),
    ]
    for offset, length in cases:
        got = v.read(slot, offset, length)
        end = n if length is None else offset + length
        assert got.data == data[offset:end], (offset, length)
        assert got.offset == offset


def test_range_read_reads_only_the_touched_blocks(
    opener: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    v = opener()
    data = payload(6 * BLOCK_SIZE, seed=3)
    slot = v.allocate()
    v.write(slot, data)
    base = slot_offset(slot) + PAYLOAD_OFFSET
    reads: list[tuple[int, int]] = []
    real = volume_mod._pread_exact

    def spy(fd: int, length: int, offset: int) -> bytes:
        if offset >= base:
            reads.append((offset - base, length))
        return real(fd, length, offset)

    monkeypatch.setattr(volume_mod, "_pread_exact", spy)
    assert v.read(slot, 2 * BLOCK_SIZE + 10, 50).data == data[2 * BLOCK_SIZE + 10 :][:50]
    assert reads == [(2 * BLOCK_SIZE, BLOCK_SIZE)]
    reads.clear()
    assert v.read(slot, 3 * BLOCK_SIZE - 1, 2).data == data[3 * BLOCK_SIZE - 1 : 3 * BLOCK_SIZE + 1]
    assert reads == [(2 * BLOCK_SIZE, 2 * BLOCK_SIZE)]


# --- state, header updates, markers ---------------------------------------------------------


def test_generations_increase_and_replicas_choose_theirs(opener: Opener) -> None:
    v = opener()
    h1 = v.write(v.allocate(), b"one")
    h2 = v.write(v.allocate(), b"two")
    assert h2.generation > h1.generation
    h3 = v.write(v.allocate(), b"three", generation=1000)
    assert h3.generation == 1000
    assert v.write(v.allocate(), b"four").generation == 1001
    # The highest generation survives a reopen.
    v2 = reopen(opener, v)
    assert v2.write(v2.allocate(), b"five").generation > 1001


def test_pending_then_commit(opener: Opener) -> None:
    v = opener()
    data = payload(70_000, seed=4)
    slot = v.allocate()
    h = v.write(slot, data, state=SlotState.PENDING)
    assert h.state == SlotState.PENDING
    with pytest.raises(NotFound) as exc:
        v.read(slot)
    assert not isinstance(exc.value, SliceDeleted)
    assert v.read(slot, allow_pending=True).data == data
    assert v.stats().pending == 1
    with pytest.raises(Conflict):
        v.mark_moved(slot, Location(1, 1))
    committed = v.commit(slot)
    assert committed.state == SlotState.LIVE
    assert committed.generation == h.generation
    assert committed.seq == h.seq + 1
    assert v.read(slot).data == data
    with pytest.raises(Conflict):
        v.commit(slot)
    v2 = reopen(opener, v)
    assert v2.header(slot).state == SlotState.LIVE
    assert v2.read(slot).data == data


def test_pending_survives_reopen(opener: Opener) -> None:
    v = opener()
    slot = v.allocate()
    v.write(slot, b"prepared", state=SlotState.PENDING)
    v2 = reopen(opener, v)
    assert v2.header(slot).state == SlotState.PENDING
    with pytest.raises(NotFound):
        v2.read(slot)
    assert v2.read(slot, allow_pending=True).data == b"prepared"


def test_relink_sets_and_clears_next(opener: Opener) -> None:
    v = opener()
    data = payload(10_000, seed=5)
    slot = v.allocate()
    h = v.write(slot, data, next=Location(1, 2))
    assert h.next == Location(1, 2)
    h2 = v.relink(slot, Location(4, 4_000_000_000))
    assert h2.next == Location(4, 4_000_000_000)
    assert h2.seq == h.seq + 1
    assert v.read(slot).header.next == Location(4, 4_000_000_000)
    v2 = reopen(opener, v)
    assert v2.header(slot).next == Location(4, 4_000_000_000)
    assert v2.read(slot).data == data
    assert v2.relink(slot, None).next is None
    v3 = reopen(opener, v2)
    assert v3.header(slot).next is None
    assert v3.read(slot).data == data


def test_mark_moved_is_a_301(opener: Opener) -> None:
    v = opener()
    slot = v.allocate()
    v.write(slot, b"going away")
    h = v.mark_moved(slot, Location(7, 42))
    assert h.state == SlotState.MOVED
    assert h.target == Location(7, 42)
    with pytest.raises(SliceMoved) as exc:
        v.read(slot)
    assert exc.value.status == 301
    assert exc.value.target == (7, 42)
    assert exc.value.context["target"] == "7:42"
    assert exc.value.context["slot"] == slot
    assert exc.value.context["volume"] == v.name
    assert slot not in v.free_slots()  # not reused until compaction
    assert v.stats().moved == 1
    with pytest.raises(Conflict):
        v.relink(slot, None)
    with pytest.raises(Conflict):
        v.write(slot, b"x")
    v2 = reopen(opener, v)
    with pytest.raises(SliceMoved) as exc:
        v2.read(slot)
    assert exc.value.target == (7, 42)
    assert slot not in v2.free_slots()


def test_mark_deleted_is_a_404_and_frees_the_slot(opener: Opener) -> None:
    v = opener()
    slots = [v.allocate() for _ in range(3)]
    for s in slots:
        v.write(s, payload(1000, seed=s))
    h = v.mark_deleted(slots[1])
    assert h.state == SlotState.DELETED
    with pytest.raises(SliceDeleted) as exc:
        v.read(slots[1])
    assert isinstance(exc.value, NotFound)
    assert exc.value.status == 404
    assert exc.value.context["slot"] == slots[1]
    assert v.free_slots() == [slots[1]]
    assert v.stats().deleted == 1
    with pytest.raises(Conflict):
        v.mark_deleted(slots[1])
    # A 301 can later become a 404.
    v.mark_moved(slots[2], Location(2, 3))
    v.mark_deleted(slots[2])
    assert v.free_slots() == [slots[1], slots[2]]
    v2 = reopen(opener, v)
    assert v2.free_slots() == [slots[1], slots[2]]
    with pytest.raises(SliceDeleted):
        v2.read(slots[2])
    assert v2.read(slots[0]).data == payload(1000, seed=slots[0])


def test_updates_of_free_slots_are_not_found(opener: Opener) -> None:
    v = opener()
    for op in (
        lambda: v.relink(3, None),
        lambda: v.commit(3),
        lambda: v.mark_deleted(3),
        lambda: v.mark_moved(3, Location(1, 1)),
        lambda: v.header(3),
        lambda: v.read(3),
    ):
        with pytest.raises(NotFound):
            op()


def test_expect_owner(opener: Opener) -> None:
    v = opener()
    owner = SliceOwner.new(3)
    slot = v.allocate()
    v.write(slot, b"mine", owner=owner)
    assert v.read(slot, expect_owner=owner).data == b"mine"
    with pytest.raises(NotFound):
        v.read(slot, expect_owner=SliceOwner(owner.file_id, 4))
    with pytest.raises(NotFound):
        v.read(slot, expect_owner=SliceOwner.new(3))


# --- write-once and free-slice reuse --------------------------------------------------------------


def test_slices_are_write_once(opener: Opener) -> None:
    v = opener()
    live, pending, moved = v.allocate(), v.allocate(), v.allocate()
    v.write(live, b"live")
    v.write(pending, b"pending", state=SlotState.PENDING)
    v.write(moved, b"moved")
    v.mark_moved(moved, Location(1, 1))
    size = os.path.getsize(v.path)
    for slot in (live, pending, moved):
        with pytest.raises(Conflict) as exc:
            v.write(slot, b"overwrite")
        assert exc.value.context["slot"] == slot
    assert os.path.getsize(v.path) == size
    assert v.read(live).data == b"live"
    assert v.read(pending, allow_pending=True).data == b"pending"
    assert v.verify().ok
    assert v.free_slots() == []


def test_deleted_slot_is_reused_lowest_first(opener: Opener) -> None:
    v = opener()
    old = {}
    for i in range(4):
        s = v.allocate()
        assert s == i
        old[s] = payload(20_000 + i, seed=i)
        v.write(s, old[s], owner=SliceOwner(bytes([i]) * 16, 0))
    v.mark_deleted(2)
    v.mark_deleted(1)
    assert v.free_slots() == [1, 2]
    assert v.allocate() == 1
    assert v.free_slots() == [2]
    new = payload(150_000, seed=99)  # longer than the old slice
    h = v.write(1, new, owner=SliceOwner(b"n" * 16, 0))
    assert h.generation > v.header(2).generation
    assert v.read(1).data == new
    with pytest.raises(NotFound):
        v.read(1, expect_owner=SliceOwner(bytes([1]) * 16, 0))
    # A replica may write a 404 slot directly, without allocate().
    v.write(2, b"short")
    assert v.read(2).data == b"short"
    assert v.free_slots() == []
    assert v.allocate() == 4
    v.release(4)
    assert v.verify().ok
    v2 = reopen(opener, v)
    assert v2.read(1).data == new
    assert v2.read(2).data == b"short"
    assert v2.read(0).data == old[0]
    assert v2.read(3).data == old[3]
    assert v2.report.checkpoint_mismatch is None


def test_reused_slot_needs_a_newer_generation(opener: Opener) -> None:
    v = opener()
    s = v.allocate()
    v.write(s, b"old", generation=50)
    v.mark_deleted(s)
    with pytest.raises(Conflict):
        v.write(s, b"stale", generation=49)
    # Nothing changed: the 404 marker is still there and the slot still free.
    with pytest.raises(SliceDeleted):
        v.read(s)
    assert v.free_slots() == [s]
    # The same generation again is a repair rewriting the slice that was dropped.
    assert v.write(s, b"repaired", generation=50).generation == 50
    assert v.read(s).data == b"repaired"
    v.mark_deleted(s)
    assert v.write(s, b"new", generation=51).generation == 51
    assert v.read(s).data == b"new"


def test_allocate_release_and_disk_full(opener: Opener) -> None:
    v = opener(max_slots=4)
    assert [v.allocate() for _ in range(4)] == [0, 1, 2, 3]
    with pytest.raises(DiskFull) as exc:
        v.allocate()
    assert exc.value.retryable
    v.release(2)
    v.release(2)  # twice is harmless
    assert v.allocate() == 2
    for s in range(4):
        v.write(s, bytes([s]) * 100)
    with pytest.raises(DiskFull):
        v.allocate()
    v.mark_deleted(3)
    assert v.allocate() == 3
    v.release(3)
    assert v.free_slots() == [3]


def test_unwritten_allocations_leave_no_trace(opener: Opener) -> None:
    v = opener()
    v.write(v.allocate(), b"a")
    v.allocate()
    v.allocate()
    v2 = reopen(opener, v)
    # Only the written slot is in the file; the checkpoint agrees with the scan.
    assert v2.stats().slot_end == 1
    assert v2.free_slots() == []
    assert v2.report.checkpoint_mismatch is None
    assert v2.allocate() == 1


def test_gap_slots_written_out_of_order_are_free(opener: Opener) -> None:
    v = opener()
    v.write(5, b"replica wrote slot five")
    assert v.free_slots() == [0, 1, 2, 3, 4]
    assert v.stats().slot_end == 6
    v2 = reopen(opener, v)
    assert v2.free_slots() == [0, 1, 2, 3, 4]
    assert v2.report.checkpoint_mismatch is None
    assert v2.read(5).data == b"replica wrote slot five"
    assert v2.allocate() == 0


def test_free_table_rebuilt_after_an_unclean_shutdown(opener: Opener, tmp_path: Path) -> None:
    v = opener()
    for i in range(5):
        v.write(v.allocate(), payload(3000, seed=i))
    v.mark_deleted(1)
    v.mark_deleted(3)
    # A snapshot of the open volume is what a power cut leaves (everything acked is synced).
    crashed = tmp_path / "crashed.vol"
    with open(v.path, "rb") as src, open(crashed, "wb") as dst:
        dst.write(src.read())
    v2 = opener(crashed, create=False)
    assert not v2.report.clean
    assert v2.free_slots() == [1, 3]
    assert v2.read(4).data == payload(3000, seed=4)
    assert v2.allocate() == 1


# --- listing, stats, verify, close ---------------------------------------------------------


def test_scan_stats_and_verify(opener: Opener) -> None:
    v = opener()
    sizes = [100, 70_000, 5000, 1, 200_000]
    for i, n in enumerate(sizes):
        state = SlotState.PENDING if i == 3 else SlotState.LIVE
        v.write(v.allocate(), payload(n, seed=i), state=state)
    v.mark_moved(2, Location(9, 9))
    v.mark_deleted(4)
    headers = list(v.scan())
    assert [h.slot for h in headers] == [0, 1, 2, 3, 4]
    assert [h.state for h in headers] == [
        SlotState.LIVE,
        SlotState.LIVE,
        SlotState.MOVED,
        SlotState.PENDING,
        SlotState.DELETED,
    ]
    st = v.stats()
    assert (st.live, st.pending, st.moved, st.deleted, st.free, st.quarantined) == (
        2,
        1,
        1,
        1,
        1,
        0,
    )
    assert st.slot_end == 5
    assert st.bytes_live == 100 + 70_000
    assert st.bytes_stored == sum(sizes)
    assert st.disk_bytes >= sum(sizes)
    assert st.syncs > 0
    report = v.verify()
    assert report.ok
    assert report.checked == 5
    v2 = reopen(opener, v)
    assert list(v2.scan()) == headers


def test_closed_volume_refuses_io(opener: Opener) -> None:
    v = opener()
    v.write(v.allocate(), b"x")
    v.close()
    v.close()  # idempotent
    for op in (
        lambda: v.read(0),
        lambda: v.write(1, b"y"),
        lambda: v.allocate(),
        lambda: v.mark_deleted(0),
        lambda: v.verify(),
    ):
        with pytest.raises(StorageIOError):
            op()


def test_header_copies_are_identical_on_disk(opener: Opener) -> None:
    v = opener()
    s = v.allocate()
    v.write(s, b"abc")
    v.relink(s, Location(1, 5))
    with open(v.path, "rb") as f:
        f.seek(slot_offset(s))
        raw = f.read(PAYLOAD_OFFSET)
    assert raw[:HEADER_SIZE] == raw[HEADER_SIZE : 2 * HEADER_SIZE]
    assert not any(raw[2 * HEADER_SIZE :])
