"""Golden bytes: the on-disk format must not change by accident (docs/format.md)."""

from __future__ import annotations

import struct

from mydfs.common.checksum import crc32c
from mydfs.common.location import Location
from mydfs.storage import format as fmt
from mydfs.storage.format import (
    Checkpoint,
    SliceOwner,
    SlotHeader,
    SlotState,
    Superblock,
    decode_checkpoint,
    decode_header,
    decode_superblock,
    encode_checkpoint,
    encode_header,
    encode_superblock,
)

# The worked example of docs/format.md.
EXAMPLE = SlotHeader(
    slot=7,
    state=SlotState.LIVE,
    generation=42,
    length=70_000,
    owner=SliceOwner(bytes(range(16)), 3),
    next=Location(2, 9),
    target=None,
    seq=1,
    mtime_ns=1_700_000_000_000_000_000,
    payload_crc=0xDEADBEEF,
    block_crcs=(0x11111111, 0x22222222),
)

EXAMPLE_FIRST_128 = bytes.fromhex(
    "4d445348"
    "0100"
    "02"
    "00"  # magic, version 1, LIVE, reserved
    "0700000000000000"  # slot 7
    "2a00000000000000"  # generation 42
    "01000000"  # seq 1
    "70110100"  # length 70000
    "000102030405060708090a0b0c0d0e0f"  # owner file id
    "03000000"  # owner slice index 3
    "02000000"
    "0900000000000000"  # next = 2:9
    "ffffffff"
    "00000000"
    "ffffffffffffffff"  # no target
    "00002a36fe9c9717"  # mtime ns
    "efbeadde" + "00" * 36  # payload crc
)


def test_constants() -> None:
    assert fmt.SLOT_SIZE == 4 * 1024 * 1024
    assert fmt.HEADER_SIZE == 512
    assert fmt.PAYLOAD_OFFSET == 4096
    assert fmt.PAYLOAD_CAPACITY == 4_190_208
    assert fmt.BLOCK_SIZE == 65_536
    assert fmt.MAX_BLOCKS == 64
    assert fmt.slot_offset(0) == fmt.SLOT_SIZE
    assert fmt.slot_offset(9) == 10 * fmt.SLOT_SIZE


def test_header_golden_bytes() -> None:
    raw = encode_header(EXAMPLE)
    assert len(raw) == 512
    assert raw[:128] == EXAMPLE_FIRST_128
    crcs = struct.unpack_from("<64I", raw, 128)
    assert crcs[:2] == (0x11111111, 0x22222222)
    assert set(crcs[2:]) == {0}
    assert raw[384:508] == bytes(124)
    assert raw[508:] == bytes.fromhex("1eba4d0a")
    assert struct.unpack_from("<I", raw, 508)[0] == crc32c(raw[:508])
    assert decode_header(raw, slot=7) == EXAMPLE


def test_header_none_locations_are_all_ones() -> None:
    raw = encode_header(
        SlotHeader(slot=0, state=SlotState.PENDING, generation=1, length=0, block_crcs=())
    )
    assert raw[52:64] == b"\xff" * 12
    assert raw[64:68] == b"\xff" * 4 and raw[72:80] == b"\xff" * 8
    assert raw[6] == 1


def test_moved_header_carries_target() -> None:
    moved = EXAMPLE.with_changes(state=SlotState.MOVED, target=Location(4, 1))
    raw = encode_header(moved)
    assert raw[6] == 3
    assert raw[64:68] == bytes.fromhex("04000000")
    assert raw[72:80] == bytes.fromhex("0100000000000000")
    assert raw[24:28] == bytes.fromhex("02000000")  # seq bumped by the update


def test_superblock_golden_bytes() -> None:
    sb = Superblock(
        volume_id=bytes(range(16)),
        node_id="n1",
        group_id=5,
        max_slots=1024,
        created_ns=1_700_000_000_000_000_000,
    )
    raw = encode_superblock(sb)
    assert raw[:48] == bytes.fromhex(
        "4d59444653564f4c"  # MYDFSVOL
        "0100"
        "0002"  # version 1, header size 512
        "00004000"
        "00100000"
        "00000100"  # slot size, payload offset, block size
        "000102030405060708090a0b0c0d0e0f"  # volume id
        "05000000"
        "00000000"  # group 5, reserved
    )
    assert raw[48:112] == b"n1" + bytes(62)
    assert raw[112:128] == bytes.fromhex("000400000000000000002a36fe9c9717")
    assert raw[508:] == bytes.fromhex("b0655f58")
    assert decode_superblock(raw, volume="v") == sb


def test_checkpoint_golden_bytes() -> None:
    cp = Checkpoint(seq=3, clean=True, slot_end=10, max_generation=12, free=(2, 7))
    raw = encode_checkpoint(cp)
    assert (
        raw
        == bytes.fromhex(
            "4d44434b"
            "0100"
            "01"
            "00"  # MDCK, version 1, clean, reserved
            "0300000000000000"  # seq 3
            "0a00000000000000"  # slot end 10
            "0c00000000000000"  # max generation 12
            "02000000"
            "01000000"  # 2 free slots, complete
            "e3f2dd59"  # crc of the list
            + "00" * 16
            + "86c9c19d"  # crc of bytes 0..59
            + "0200000000000000"
            "0700000000000000"
        )
    )
    assert decode_checkpoint(raw) == cp
