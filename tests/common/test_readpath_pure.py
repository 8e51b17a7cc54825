"""The pure parts of the read path and the shared wire records: cutting a byte range into slice
pieces, the chain's count/size check against the file entry, the file record's JSON round
trip (and the tracker's packed entry agreeing with it), the slice capacity constant."""

from __future__ import annotations

import pytest

from mydfs.common.errors import Corrupt
from mydfs.common.file_record import FileRecord
from mydfs.common.location import Location
from mydfs.common.readpath import Piece, SliceLoc, check_chain, cut_range
from mydfs.common.slices import PAYLOAD_CAPACITY
from mydfs.storage import format as fmt
from mydfs.tracker.records import FileEntry


def locs_of(*lengths: int) -> list[SliceLoc]:
    return [SliceLoc(1, i, 1, n, 0, ()) for i, n in enumerate(lengths)]


def test_cut_range_whole_file_and_pieces_inside_and_across_slices() -> None:
    locs = locs_of(10, 10, 5)
    assert cut_range(locs, 0, 25) == [
        Piece(locs[0], 0, 10),
        Piece(locs[1], 0, 10),
        Piece(locs[2], 0, 5),
    ]
    assert cut_range(locs, 3, 7) == [Piece(locs[0], 3, 4)]
    assert cut_range(locs, 8, 22) == [
        Piece(locs[0], 8, 2),
        Piece(locs[1], 0, 10),
        Piece(locs[2], 0, 2),
    ]
    assert cut_range(locs, 10, 20) == [Piece(locs[1], 0, 10)]  # exactly one slice
    assert cut_range(locs, 24, 25) == [Piece(locs[2], 4, 1)]  # the last byte
    assert cut_range(locs, 25, 25) == []
    assert cut_range(locs, 5, 5) == []
    assert cut_range([], 0, 0) == []


def test_cut_range_skips_empty_slices_and_covers_every_byte_once() -> None:
    locs = locs_of(4, 0, 3, 7)
    for offset in range(15):
        for end in range(offset, 15):
            pieces = cut_range(locs, offset, end)
            assert sum(p.length for p in pieces) == end - offset
            assert all(p.length > 0 and 0 <= p.offset < p.loc.length for p in pieces)
            assert all(p.offset + p.length <= p.loc.length for p in pieces)


def test_check_chain_compares_count_and_bytes_with_the_entry() -> None:
    check_chain(locs_of(10, 5), 2, 15, path="/a")
    check_chain([], 0, 0)
    with pytest.raises(Corrupt) as short:
        check_chain(locs_of(10), 2, 15, path="/a")
    assert "chain has 1 slices / 10 bytes; the file entry says 2 / 15" in short.value.message
    assert short.value.context["path"] == "/a"
    with pytest.raises(Corrupt, match="the file entry says 2 / 16"):
        check_chain(locs_of(10, 5), 2, 16)


def test_slice_loc_from_a_chain_entry() -> None:
    entry = {
        "group": 2,
        "slot": 9,
        "generation": 4,
        "length": 100,
        "crc32c": 77,
        "file_id": "ab" * 16,
        "index": 3,
        "replicas": ["http://a", "http://b"],
    }
    loc = SliceLoc.from_wire(entry)
    # Every slice a chain names carries its owner: a replica must answer with it.
    assert loc == SliceLoc(2, 9, 4, 100, 77, ("http://a", "http://b"), "ab" * 16, 3)
    assert SliceLoc.from_wire(dict(entry, replicas=None)).replicas == ()


RECORD = FileRecord(
    path="/docs/a b.bin",
    file_id="0f" * 16,
    size=5_000_000,
    slices=2,
    head=Location(1, 42),
    hash="crc32c:0badf00d",
    ctime=1700000000.25,
    mtime=1700000001.5,
    version=3,
)


def test_file_record_round_trip_and_wire_form() -> None:
    wire = RECORD.to_dict()
    assert wire == {
        "path": "/docs/a b.bin",
        "file_id": "0f" * 16,
        "size": 5_000_000,
        "slices": 2,
        "head": [1, 42],
        "hash": "crc32c:0badf00d",
        "ctime": 1700000000.25,
        "mtime": 1700000001.5,
        "version": 3,
    }
    assert FileRecord.from_dict(wire) == RECORD
    empty = FileRecord("/e", "00" * 16, 0, 0, None, "", 1.0, 1.0, 1)
    assert empty.to_dict()["head"] is None and empty.to_dict()["hash"] is None
    assert FileRecord.from_dict(empty.to_dict()) == empty
    # Fields a minimal answer may leave out take their defaults.
    short = FileRecord.from_dict({"path": "/s", "file_id": "1", "size": 1, "slices": 1})
    assert (short.head, short.hash, short.ctime, short.mtime, short.version) == (
        None,
        "",
        0.0,
        0.0,
        1,
    )


def test_tracker_entry_answers_the_shared_record() -> None:
    entry = FileEntry(
        "0f" * 16, 5_000_000, 2, Location(1, 42), "crc32c:0badf00d", 1700000000.25, 1700000001.5, 3
    )
    assert entry.record("/docs/a b.bin") == RECORD
    assert entry.to_dict("/docs/a b.bin") == RECORD.to_dict()
    assert FileEntry.unpack(entry.pack()).record("/x") == entry.record("/x")


def test_sdk_file_info_is_the_shared_record() -> None:
    from mydfs.client import FileInfo

    assert FileInfo is FileRecord


def test_slice_capacity_agrees_with_the_slot_layout() -> None:
    assert PAYLOAD_CAPACITY == 4_190_208
    assert fmt.PAYLOAD_CAPACITY == PAYLOAD_CAPACITY == fmt.SLOT_SIZE - fmt.PAYLOAD_OFFSET
