"""Every bad input gets a clear, typed error and leaves what is stored untouched."""

from __future__ import annotations

import errno
import hashlib
import os
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mydfs.common.checksum import crc32c
from mydfs.common.errors import (
    Conflict,
    Corrupt,
    DiskFull,
    IncompatibleVolume,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    SlotOutOfRange,
    StorageIOError,
)
from mydfs.common.location import Location
from mydfs.storage import volume as volume_mod
from mydfs.storage.format import (
    HEADER_SIZE,
    PAYLOAD_CAPACITY,
    SLOT_SIZE,
    SliceOwner,
    SlotState,
    slot_offset,
)
from mydfs.storage.volume import Volume

MAX_SLOTS = 16


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


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


def patch_superblock(path: Path, fmt: str, offset: int, value: int) -> None:
    """Change one superblock field and re-seal its checksum (a well-formed but different file)."""
    raw = bytearray(pread(path, 0, 512))
    struct.pack_into(fmt, raw, offset, value)
    struct.pack_into("<I", raw, 508, crc32c(bytes(raw[:508])))
    pwrite(path, 0, bytes(raw))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "bad.vol"


@pytest.fixture
def vol(path: Path) -> Iterator[Volume]:
    v = Volume.open(path, create=True, node_id="node-1", group_id=4, max_slots=MAX_SLOTS)
    yield v
    v.close()


def fill(vol: Volume) -> dict[int, bytes]:
    """A few stored slices, to check they are untouched afterwards."""
    stored = {}
    for s in range(6):
        stored[s] = bytes([s + 1]) * (1000 * (s + 1))
        vol.write(s, stored[s], owner=SliceOwner(bytes([s]) * 16, s))
    return stored


def assert_untouched(vol: Volume, stored: dict[int, bytes]) -> None:
    for s, data in stored.items():
        assert vol.read(s).data == data
    assert vol.verify().ok


# --- payload, slot, range, state ----------------------------------------------------------------


def test_payload_over_capacity(vol: Volume, path: Path) -> None:
    stored = fill(vol)
    digest, free = file_digest(path), vol.free_slots()
    for size in (PAYLOAD_CAPACITY + 1, SLOT_SIZE):
        with pytest.raises(PayloadTooLarge) as exc:
            vol.write(vol.allocate(), bytes(size))
        assert exc.value.status == 413
        assert isinstance(exc.value, InvalidArgument)
        assert str(PAYLOAD_CAPACITY) in exc.value.message
    with pytest.raises(PayloadTooLarge):
        vol.write(7, memoryview(bytearray(PAYLOAD_CAPACITY + 1)))
    assert file_digest(path) == digest
    assert_untouched(vol, stored)
    assert vol.free_slots() == free
    assert vol.stats().slot_end == 8  # the two allocations above, still reserved
    h = vol.write(6, bytearray(PAYLOAD_CAPACITY))  # exactly the capacity is fine
    assert h.length == PAYLOAD_CAPACITY


BAD_SLOTS = [-1, MAX_SLOTS, MAX_SLOTS + 1, 2**64, -(2**70)]


def slot_ops(vol: Volume) -> dict[str, Callable[[int], object]]:
    return {
        "write": lambda s: vol.write(s, b"x"),
        "read": lambda s: vol.read(s),
        "header": lambda s: vol.header(s),
        "commit": lambda s: vol.commit(s),
        "relink": lambda s: vol.relink(s, None),
        "mark_moved": lambda s: vol.mark_moved(s, Location(1, 1)),
        "mark_deleted": lambda s: vol.mark_deleted(s),
        "reclaim": lambda s: vol.reclaim(s),
    }


def test_slot_out_of_range(vol: Volume, path: Path) -> None:
    stored = fill(vol)
    digest = file_digest(path)
    for name, op in slot_ops(vol).items():
        for slot in BAD_SLOTS:
            with pytest.raises(SlotOutOfRange) as exc:
                op(slot)
            assert exc.value.context["slot"] == slot, name
            assert str(MAX_SLOTS - 1) in exc.value.message
        not_ints: tuple[object, ...] = (True, 1.0, "1", None)
        for bad in not_ints:
            with pytest.raises(InvalidArgument):
                op(bad)  # type: ignore[arg-type]
    assert file_digest(path) == digest
    assert_untouched(vol, stored)
    assert vol.free_slots() == []


def test_bad_read_ranges(vol: Volume) -> None:
    vol.write(0, b"0123456789")
    for offset, length in [(-1, None), (11, None), (0, 11), (5, 6), (0, -1), (10, 1), (-5, 3)]:
        with pytest.raises(InvalidArgument) as exc:
            vol.read(0, offset, length)
        assert exc.value.context["slot"] == 0
    assert vol.read(0, 10).data == b""
    assert vol.read(0, 3, 4).data == b"3456"


def test_bad_write_arguments_change_nothing(vol: Volume, path: Path) -> None:
    stored = fill(vol)
    vol.write(6, b"old")
    vol.mark_deleted(6)
    digest, free, stats = file_digest(path), vol.free_slots(), vol.stats()
    bad_calls: list[Callable[[], object]] = [
        lambda: vol.write(6, b"x", state=SlotState.MOVED),
        lambda: vol.write(6, b"x", state=SlotState.DELETED),
        lambda: vol.write(6, b"x", generation=-1),
        lambda: vol.write(6, b"x", generation=2**64),
        lambda: vol.write(6, b"x", next=Location(2**40, 1)),
        lambda: vol.write(6, b"x", next=Location(1, 2**64)),
        lambda: vol.mark_moved(0, Location(2**33, 0)),
        lambda: vol.relink(1, Location(0, -5)),
        lambda: vol.mark_moved(0, None),  # type: ignore[arg-type]
    ]
    for call in bad_calls:
        with pytest.raises(InvalidArgument):
            call()
    assert file_digest(path) == digest
    assert vol.free_slots() == free
    assert vol.stats().live == stats.live
    with pytest.raises(NotFound):  # the 404 marker of slot 6 is still there
        vol.read(6)
    # Past the end of the file: the file does not grow.
    with pytest.raises(InvalidArgument):
        vol.write(9, b"x", next=Location(-1, 1))
    assert file_digest(path) == digest
    assert vol.header(6).state == SlotState.DELETED
    assert_untouched(vol, stored)
    # A bad generation did not poison the volume's counter: normal writes still work.
    h = vol.write(6, b"new")
    assert h.generation < 2**63
    assert vol.read(6).data == b"new"
    vol.close()
    with Volume.open(path) as v2:
        assert v2.read(6).data == b"new"
        assert v2.write(7, b"more").generation > h.generation


def test_bad_owner_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        SliceOwner(b"short", 0)
    with pytest.raises(InvalidArgument):
        SliceOwner(bytes(16), -1)
    with pytest.raises(InvalidArgument):
        SliceOwner(bytes(16), 2**32 - 1)


def test_write_once(vol: Volume, path: Path) -> None:
    stored = fill(vol)
    for s in stored:
        with pytest.raises(Conflict) as exc:
            vol.write(s, b"again")
        assert "write-once" in exc.value.message
    vol.mark_moved(0, Location(1, 1))
    with pytest.raises(Conflict):
        vol.write(0, b"again")
    assert_untouched(vol, {s: d for s, d in stored.items() if s != 0})


def test_disk_full_mid_write_damages_nothing(
    vol: Volume, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = fill(vol)
    real = os.pwritev

    def full(fd: int, buffers: list[memoryview], offset: int) -> int:
        if offset >= slot_offset(6):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "pwritev", full)
    slot = vol.allocate()
    with pytest.raises(DiskFull) as exc:
        vol.write(slot, b"does not fit")
    assert exc.value.retryable
    assert exc.value.status == 507
    monkeypatch.setattr(os, "pwritev", real)
    assert slot in vol.free_slots()  # given back
    assert_untouched(vol, stored)
    vol.write(slot, b"fits now")
    assert vol.read(slot).data == b"fits now"


def test_closed_volume(vol: Volume) -> None:
    vol.write(0, b"x")
    vol.close()
    with pytest.raises(StorageIOError) as exc:
        vol.read(0)
    assert "closed" in exc.value.message


# --- files that are not this node's volume ------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"hello, I am a text file\n",
        b"\0" * 4096,
        bytes(range(256)) * 64,
        b"MYDFSVOL" + b"\0" * 100,  # right magic, too short
        b"MYDFSVOL" + b"\x01" * 600,  # right magic, garbage
    ],
    ids=["empty", "text", "zeros", "binary", "short", "garbage"],
)
def test_foreign_file_is_refused_and_left_alone(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "foreign.vol"
    path.write_bytes(content)
    with pytest.raises(Corrupt) as exc:  # IncompatibleVolume is a Corrupt
        Volume.open(path, create=True)
    assert exc.value.context["volume"] == str(path)
    assert path.read_bytes() == content


def test_directory_is_not_a_volume(tmp_path: Path) -> None:
    with pytest.raises(StorageIOError):
        Volume.open(tmp_path)


def test_newer_format_version_is_refused(vol: Volume, path: Path) -> None:
    fill(vol)
    vol.close()
    patch_superblock(path, "<H", 8, 2)
    digest = file_digest(path)
    with pytest.raises(IncompatibleVolume) as exc:
        Volume.open(path)
    assert "newer" in exc.value.message
    assert file_digest(path) == digest


def test_other_geometry_is_refused(vol: Volume, path: Path) -> None:
    vol.close()
    patch_superblock(path, "<I", 20, 128 * 1024)  # block size
    digest = file_digest(path)
    with pytest.raises(IncompatibleVolume) as exc:
        Volume.open(path)
    assert "geometry" in exc.value.message
    assert file_digest(path) == digest


def test_volume_of_another_node_or_group_is_refused(vol: Volume, path: Path) -> None:
    stored = fill(vol)
    vol.close()
    digest = file_digest(path)
    for kwargs in (
        {"node_id": "node-2"},
        {"group_id": 5},
        {"node_id": "node-1", "group_id": 0},
        {"node_id": "node-2", "group_id": 4, "create": True},
    ):
        with pytest.raises(IncompatibleVolume) as exc:
            Volume.open(path, **kwargs)
        assert exc.value.context["volume"] == str(path)
    assert file_digest(path) == digest
    with Volume.open(path, node_id="node-1", group_id=4) as v:
        assert_untouched(v, stored)


def test_slot_header_of_a_newer_version_is_refused(vol: Volume, path: Path) -> None:
    fill(vol)
    vol.close()
    raw = bytearray(pread(path, slot_offset(3), HEADER_SIZE))
    struct.pack_into("<H", raw, 4, 2)
    struct.pack_into("<I", raw, HEADER_SIZE - 4, crc32c(bytes(raw[: HEADER_SIZE - 4])))
    pwrite(path, slot_offset(3), bytes(raw) * 2)
    digest = file_digest(path)
    with pytest.raises(IncompatibleVolume) as exc:
        Volume.open(path)
    assert exc.value.context["slot"] == 3
    assert exc.value.context["volume"] == str(path)
    assert file_digest(path) == digest


def test_file_larger_than_max_slots_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "small.vol"
    with Volume.open(path, create=True, max_slots=2) as v:
        v.write(1, b"x")
    os.truncate(path, slot_offset(3) + 10)
    with pytest.raises(Corrupt) as exc:
        Volume.open(path)
    assert "max_slots" in exc.value.message


def test_bad_identity_at_create(tmp_path: Path) -> None:
    for kwargs in (
        {"node_id": "x" * 65},
        {"node_id": "a\0b"},
        {"group_id": -1},
        {"group_id": 2**32},
        {"max_slots": 0},
        {"max_slots": -3},
    ):
        path = tmp_path / "new.vol"
        with pytest.raises(InvalidArgument):
            Volume.open(path, create=True, **kwargs)
        assert not path.exists()
        assert not (tmp_path / "new.vol.creating").exists()


# --- a header from another slot -------------------------------------------------------------------


def test_header_copied_from_another_slot_while_closed(vol: Volume, path: Path) -> None:
    stored = fill(vol)
    vol.close()
    raw3 = pread(path, slot_offset(3), 2 * HEADER_SIZE)
    pwrite(path, slot_offset(5), raw3)
    with Volume.open(path) as v:
        assert set(v.quarantined()) == {5}
        reason = v.quarantined()[5]
        assert "belongs to slot 3" in reason
        with pytest.raises(Corrupt) as exc:
            v.read(5)
        assert exc.value.context == {"volume": v.name, "slot": 5}
        assert "slot 3" in str(exc.value)
        # Nothing already stored was touched: slot 3 and every other slot read identical.
        assert_untouched_except(v, stored, 5)
        assert pread(path, slot_offset(3), 2 * HEADER_SIZE) == raw3
        with pytest.raises(Conflict):
            v.write(5, b"x")
        assert [p.slot for p in v.verify().problems] == [5]


def test_header_copied_from_another_slot_into_copy_a_only(vol: Volume, path: Path) -> None:
    stored = fill(vol)
    vol.close()
    pwrite(path, slot_offset(5), pread(path, slot_offset(3), HEADER_SIZE))
    with Volume.open(path) as v:
        assert v.report.repaired_headers == [5]  # copy B was intact
        assert v.quarantined() == {}
        assert_untouched(v, stored)


def test_header_copied_from_another_slot_while_open(vol: Volume, path: Path) -> None:
    stored = fill(vol)
    pwrite(path, slot_offset(5), pread(path, slot_offset(3), 2 * HEADER_SIZE))
    with pytest.raises(Corrupt) as exc:
        vol.read(5)
    assert "belongs to slot 3" in exc.value.message
    assert exc.value.context == {"volume": vol.name, "slot": 5}
    assert_untouched_except(vol, stored, 5)
    assert [p.slot for p in vol.verify().problems] == [5]
    # A free slot that suddenly holds a foreign header is refused too.
    vol.write(8, b"eight")
    assert 7 in vol.free_slots()
    pwrite(path, slot_offset(7), pread(path, slot_offset(1), 2 * HEADER_SIZE))
    with pytest.raises(Corrupt) as exc:
        vol.read(7)
    assert "belongs to slot 1" in exc.value.message
    assert vol.read(8).data == b"eight"


def assert_untouched_except(vol: Volume, stored: dict[int, bytes], bad: int) -> None:
    for s, data in stored.items():
        if s != bad:
            assert vol.read(s).data == data


# --- one volume, one process ------------------------------------------------------------------

OPENER = textwrap.dedent(
    """
    import sys
    from mydfs.common.errors import MydfsError
    from mydfs.storage.volume import Volume
    try:
        with Volume.open(sys.argv[1]) as v:
            print("opened", v.read(0).data.decode())
    except MydfsError as exc:
        print(exc.code, exc.message)
    """
)


def open_in_child(path: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-c", OPENER, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


def test_second_process_cannot_open_an_open_volume(vol: Volume, path: Path) -> None:
    vol.write(0, b"mine")
    digest = file_digest(path)
    answer = open_in_child(path)
    assert answer.startswith("conflict ")
    assert "already open" in answer
    assert file_digest(path) == digest
    assert vol.read(0).data == b"mine"  # the owner carries on
    vol.write(1, b"still mine")
    vol.close()
    assert open_in_child(path) == "opened mine"


def test_second_open_in_the_same_process_is_refused(vol: Volume, path: Path) -> None:
    vol.write(0, b"mine")
    with pytest.raises(Conflict):
        Volume.open(path)
    assert vol.read(0).data == b"mine"
    vol.close()
    with Volume.open(path) as again:
        assert again.read(0).data == b"mine"


def test_failed_open_releases_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "other.vol"
    with Volume.open(path, create=True, node_id="a") as v:
        v.write(0, b"a")
    with pytest.raises(IncompatibleVolume):
        Volume.open(path, node_id="b")
    with Volume.open(path, node_id="a") as v:
        assert v.read(0).data == b"a"


def test_pwrite_helper_handles_short_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.pwritev

    def short(fd: int, buffers: list[memoryview], offset: int) -> int:
        return real(fd, [buffers[0][:3]], offset)  # at most 3 bytes per call

    monkeypatch.setattr(os, "pwritev", short)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        volume_mod._pwrite_all(fd, [b"hello ", b"", b"world"], 10)
        assert os.pread(fd, 100, 0) == b"\0" * 10 + b"hello world"
    finally:
        os.close(fd)
