"""The on-disk volume format: superblock, checkpoints and slot headers (pure, no I/O).

Every constant of the format lives here and nowhere else; ``docs/format.md`` documents the same
bytes in tables, and ``tests/storage/test_format_golden.py`` pins them with golden bytes.

Volume file::

    offset 0            superblock slot (SLOT_SIZE bytes): identity + 2 free-list checkpoints
    offset SLOT_SIZE    slot 0
    offset 2*SLOT_SIZE  slot 1 ...

Slot::

    +0     header copy A  (HEADER_SIZE bytes)
    +512   header copy B  (identical to A once an update has completed)
    +1024  zero padding up to PAYLOAD_OFFSET
    +4096  payload (up to PAYLOAD_CAPACITY bytes, only ``length`` of them written)
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field, replace

from mydfs.common.checksum import crc32c
from mydfs.common.errors import Corrupt, IncompatibleVolume, InvalidArgument
from mydfs.common.location import MAX_GROUP, MAX_SLOT, Location
from mydfs.common.slices import PAYLOAD_CAPACITY as PAYLOAD_CAPACITY

# The slot state (header byte at offset 6) is the enum shared with the group's table: its
# ``byte`` is what the header stores. FREE is never written: it is the absence of a header.
from mydfs.storage.slot_state import SlotState as SlotState

FORMAT_VERSION = 1

SLOT_SIZE = 4 * 1024 * 1024
HEADER_SIZE = 512
HEADER_COPIES = 2
PAYLOAD_OFFSET = 4096
assert PAYLOAD_CAPACITY == SLOT_SIZE - PAYLOAD_OFFSET  # 4_190_208 bytes, the protocol's
BLOCK_SIZE = 64 * 1024
MAX_BLOCKS = 64  # ceil(PAYLOAD_CAPACITY / BLOCK_SIZE)
assert (PAYLOAD_CAPACITY + BLOCK_SIZE - 1) // BLOCK_SIZE == MAX_BLOCKS

NONE32 = 0xFFFF_FFFF
NONE64 = 0xFFFF_FFFF_FFFF_FFFF

SLOT_MAGIC = b"MDSH"
VOLUME_MAGIC = b"MYDFSVOL"
CHECKPOINT_MAGIC = b"MDCK"

#: Offsets of the two free-list checkpoints inside the superblock slot, and their size.
CHECKPOINT_OFFSETS = (1 * 1024 * 1024, 2 * 1024 * 1024)
CHECKPOINT_SIZE = 1024 * 1024
CHECKPOINT_FIXED = 64
CHECKPOINT_MAX_FREE = (CHECKPOINT_SIZE - CHECKPOINT_FIXED) // 8

#: Default number of addressable slots (4 TiB of 4 MiB slots); stored in the superblock.
DEFAULT_MAX_SLOTS = 1 << 20


# --- slot header -------------------------------------------------------------------------------

_HEADER_FIXED = struct.Struct(
    "<4sHBB"  # 0  magic, version, state, reserved
    "QQI"  # 8  slot, generation, seq
    "I"  # 28 length
    "16sI"  # 32 owner file id, owner slice index
    "IQ"  # 52 next group, next slot
    "IIQ"  # 64 target group, reserved, target slot
    "QI"  # 80 mtime ns, payload crc32c
)
_HEADER_FIXED_SIZE = 128
_CRC_TABLE = struct.Struct(f"<{MAX_BLOCKS}I")  # at 128, 256 bytes
_CRC_TABLE_OFFSET = 128
_HEADER_CRC_OFFSET = HEADER_SIZE - 4
assert _HEADER_FIXED.size <= _HEADER_FIXED_SIZE
assert _CRC_TABLE_OFFSET + _CRC_TABLE.size <= _HEADER_CRC_OFFSET


@dataclass(frozen=True)
class SliceOwner:
    """Who a slice belongs to: a 16-byte file id and the slice's index in that file."""

    file_id: bytes = bytes(16)
    index: int = 0

    def __post_init__(self) -> None:
        if len(self.file_id) != 16:
            raise InvalidArgument(f"file id must be 16 bytes, got {len(self.file_id)}")
        if not 0 <= self.index < NONE32:
            raise InvalidArgument(f"slice index {self.index} out of range")

    @classmethod
    def new(cls, index: int = 0) -> SliceOwner:
        return cls(uuid.uuid4().bytes, index)

    def __str__(self) -> str:
        return f"{self.file_id.hex()}#{self.index}"


@dataclass(frozen=True)
class SlotHeader:
    """One slot's metadata. ``block_crcs`` holds one CRC32C per 64 KiB block of the payload."""

    slot: int
    state: SlotState
    generation: int
    length: int
    owner: SliceOwner = field(default_factory=SliceOwner)
    next: Location | None = None
    target: Location | None = None
    seq: int = 0
    mtime_ns: int = 0
    payload_crc: int = 0
    block_crcs: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.slot <= MAX_SLOT:
            raise InvalidArgument(f"slot {self.slot} out of range", slot=self.slot)
        if not 0 <= self.length <= PAYLOAD_CAPACITY:
            raise InvalidArgument(
                f"length {self.length} exceeds capacity {PAYLOAD_CAPACITY}", slot=self.slot
            )
        if len(self.block_crcs) != blocks_for(self.length):
            raise InvalidArgument(
                f"{len(self.block_crcs)} block CRCs for a {self.length}-byte payload",
                slot=self.slot,
            )
        if self.state == SlotState.MOVED and self.target is None:
            raise InvalidArgument("a 301 (moved) header needs a target", slot=self.slot)
        if self.state == SlotState.FREE:
            raise InvalidArgument("FREE is the absence of a header", slot=self.slot)

    def with_changes(self, **changes: object) -> SlotHeader:
        """A copy with ``changes`` applied and ``seq`` bumped (a header-only update)."""
        return replace(self, seq=self.seq + 1, **changes)  # type: ignore[arg-type]


def blocks_for(length: int) -> int:
    """How many 64 KiB checksum blocks cover ``length`` payload bytes."""
    return (length + BLOCK_SIZE - 1) // BLOCK_SIZE


def _loc_fields(loc: Location | None) -> tuple[int, int]:
    if loc is None:
        return NONE32, NONE64
    if not (0 <= loc.group <= MAX_GROUP and 0 <= loc.slot <= MAX_SLOT):
        raise InvalidArgument(f"location {loc} out of range")
    return loc.group, loc.slot


def _loc_from(group: int, slot: int, *, what: str, at: int) -> Location | None:
    if group == NONE32 and slot == NONE64:
        return None
    if group == NONE32 or slot == NONE64:
        raise Corrupt(f"half-empty {what} location in header", slot=at)
    return Location(group, slot)


def encode_header(h: SlotHeader) -> bytes:
    """The 512 bytes of one header copy."""
    next_group, next_slot = _loc_fields(h.next)
    target_group, target_slot = _loc_fields(h.target)
    buf = bytearray(HEADER_SIZE)
    _HEADER_FIXED.pack_into(
        buf,
        0,
        SLOT_MAGIC,
        FORMAT_VERSION,
        h.state.byte,
        0,
        h.slot,
        h.generation,
        h.seq,
        h.length,
        h.owner.file_id,
        h.owner.index,
        next_group,
        next_slot,
        target_group,
        0,
        target_slot,
        h.mtime_ns,
        h.payload_crc,
    )
    crcs = list(h.block_crcs) + [0] * (MAX_BLOCKS - len(h.block_crcs))
    _CRC_TABLE.pack_into(buf, _CRC_TABLE_OFFSET, *crcs)
    struct.pack_into("<I", buf, _HEADER_CRC_OFFSET, crc32c(memoryview(buf)[:_HEADER_CRC_OFFSET]))
    return bytes(buf)


def header_is_blank(raw: bytes | memoryview) -> bool:
    """True when a header copy is all zeros: the slot was never written (or is being written)."""
    return not any(raw)


def decode_header(raw: bytes | memoryview, *, slot: int) -> SlotHeader:
    """Decode one header copy read from ``slot``; raises :class:`Corrupt` on any damage.

    Raises :class:`IncompatibleVolume` for a header of a newer format version.
    """
    if len(raw) != HEADER_SIZE:
        raise Corrupt(f"header copy is {len(raw)} bytes, expected {HEADER_SIZE}", slot=slot)
    view = memoryview(raw)
    (stored_crc,) = struct.unpack_from("<I", view, _HEADER_CRC_OFFSET)
    if crc32c(view[:_HEADER_CRC_OFFSET]) != stored_crc:
        raise Corrupt("slot header checksum mismatch", slot=slot)
    (
        magic,
        version,
        state,
        _reserved,
        hslot,
        generation,
        seq,
        length,
        file_id,
        index,
        next_group,
        next_slot,
        target_group,
        _reserved2,
        target_slot,
        mtime_ns,
        payload_crc,
    ) = _HEADER_FIXED.unpack_from(view, 0)
    if magic != SLOT_MAGIC:
        raise Corrupt(f"bad slot header magic {magic!r}", slot=slot)
    if version > FORMAT_VERSION:
        raise IncompatibleVolume(
            f"slot header format version {version} is newer than {FORMAT_VERSION}", slot=slot
        )
    if hslot != slot:
        raise Corrupt(f"header belongs to slot {hslot}, found at slot {slot}", slot=slot)
    try:
        slot_state = SlotState.from_byte(state)
    except ValueError:
        raise Corrupt(f"unknown slot state {state}", slot=slot) from None
    if length > PAYLOAD_CAPACITY:
        raise Corrupt(f"length {length} exceeds capacity", slot=slot)
    crcs = _CRC_TABLE.unpack_from(view, _CRC_TABLE_OFFSET)
    try:
        return SlotHeader(
            slot=hslot,
            state=slot_state,
            generation=generation,
            length=length,
            owner=SliceOwner(bytes(file_id), index),
            next=_loc_from(next_group, next_slot, what="next", at=slot),
            target=_loc_from(target_group, target_slot, what="target", at=slot),
            seq=seq,
            mtime_ns=mtime_ns,
            payload_crc=payload_crc,
            block_crcs=tuple(crcs[: blocks_for(length)]),
        )
    except InvalidArgument as exc:
        raise Corrupt(f"inconsistent slot header: {exc.message}", slot=slot) from None


def slot_offset(slot: int) -> int:
    """Byte offset of ``slot`` in the volume file (slot 0 follows the superblock)."""
    return SLOT_SIZE * (slot + 1)


# --- superblock ----------------------------------------------------------------------------------

_SUPER = struct.Struct("<8sHHIII16sII64sQQ")
_SUPER_CRC_OFFSET = 508
NODE_ID_MAX = 64


@dataclass(frozen=True)
class Superblock:
    """The volume's identity and geometry, written once when the volume is created."""

    volume_id: bytes
    node_id: str
    group_id: int
    max_slots: int = DEFAULT_MAX_SLOTS
    created_ns: int = 0

    def __post_init__(self) -> None:
        if len(self.volume_id) != 16:
            raise InvalidArgument("volume id must be 16 bytes")
        if len(self.node_id.encode()) > NODE_ID_MAX or "\0" in self.node_id:
            raise InvalidArgument(f"node id {self.node_id!r} too long or has NUL")
        if not 0 <= self.group_id <= MAX_GROUP:
            raise InvalidArgument(f"group id {self.group_id} out of range")
        if not 1 <= self.max_slots <= MAX_SLOT:
            raise InvalidArgument(f"max_slots {self.max_slots} out of range")


def encode_superblock(sb: Superblock) -> bytes:
    buf = bytearray(512)
    _SUPER.pack_into(
        buf,
        0,
        VOLUME_MAGIC,
        FORMAT_VERSION,
        HEADER_SIZE,
        SLOT_SIZE,
        PAYLOAD_OFFSET,
        BLOCK_SIZE,
        sb.volume_id,
        sb.group_id,
        0,
        sb.node_id.encode(),
        sb.max_slots,
        sb.created_ns,
    )
    struct.pack_into("<I", buf, _SUPER_CRC_OFFSET, crc32c(memoryview(buf)[:_SUPER_CRC_OFFSET]))
    return bytes(buf)


def decode_superblock(raw: bytes, *, volume: str) -> Superblock:
    """Decode and check the superblock; a foreign or newer file raises IncompatibleVolume."""
    if len(raw) < 512 or raw[:8] != VOLUME_MAGIC:
        raise IncompatibleVolume("not a mydfs volume (bad magic)", volume=volume)
    (
        _magic,
        version,
        header_size,
        slot_size,
        payload_offset,
        block_size,
        volume_id,
        group_id,
        _reserved,
        node_raw,
        max_slots,
        created_ns,
    ) = _SUPER.unpack_from(raw, 0)
    if version > FORMAT_VERSION:
        raise IncompatibleVolume(
            f"volume format version {version} is newer than this mydfs ({FORMAT_VERSION})",
            volume=volume,
        )
    (stored_crc,) = struct.unpack_from("<I", raw, _SUPER_CRC_OFFSET)
    if crc32c(memoryview(raw)[:_SUPER_CRC_OFFSET]) != stored_crc:
        raise Corrupt("superblock checksum mismatch", volume=volume)
    geometry = (header_size, slot_size, payload_offset, block_size)
    if geometry != (HEADER_SIZE, SLOT_SIZE, PAYLOAD_OFFSET, BLOCK_SIZE):
        raise IncompatibleVolume(f"unsupported volume geometry {geometry}", volume=volume)
    try:
        return Superblock(
            volume_id=bytes(volume_id),
            node_id=bytes(node_raw).rstrip(b"\0").decode(),
            group_id=group_id,
            max_slots=max_slots,
            created_ns=created_ns,
        )
    except (InvalidArgument, UnicodeDecodeError) as exc:
        raise Corrupt(f"bad superblock field: {exc}", volume=volume) from None


# --- free-list checkpoint -------------------------------------------------------------------------

_CKPT = struct.Struct("<4sHBBQQQIII")
_CKPT_CRC_OFFSET = 60


@dataclass(frozen=True)
class Checkpoint:
    """A snapshot of the volume's local free list, kept in the superblock slot (two copies).

    ``clean`` is 1 only when the volume was closed cleanly; ``free`` is the volume's local free
    list (``complete`` is False when it did not fit and was cut). It is not the group's
    free-slice table, which lives in the group's Raft snapshot.
    """

    seq: int
    clean: bool
    slot_end: int
    max_generation: int
    free: tuple[int, ...] = ()
    complete: bool = True


def encode_checkpoint(cp: Checkpoint) -> bytes:
    free = cp.free[:CHECKPOINT_MAX_FREE]
    complete = cp.complete and len(free) == len(cp.free)
    body = struct.pack(f"<{len(free)}Q", *free)
    buf = bytearray(CHECKPOINT_FIXED)
    _CKPT.pack_into(
        buf,
        0,
        CHECKPOINT_MAGIC,
        FORMAT_VERSION,
        1 if cp.clean else 0,
        0,
        cp.seq,
        cp.slot_end,
        cp.max_generation,
        len(free),
        1 if complete else 0,
        crc32c(body),
    )
    struct.pack_into("<I", buf, _CKPT_CRC_OFFSET, crc32c(memoryview(buf)[:_CKPT_CRC_OFFSET]))
    return bytes(buf) + body


def checkpoint_length(fixed: bytes) -> int:
    """Total length of a checkpoint given its first CHECKPOINT_FIXED bytes (0 if not one)."""
    if len(fixed) < CHECKPOINT_FIXED or fixed[:4] != CHECKPOINT_MAGIC:
        return 0
    count = struct.unpack_from("<I", fixed, 32)[0]
    if count > CHECKPOINT_MAX_FREE:
        return 0
    return int(CHECKPOINT_FIXED + 8 * count)


def decode_checkpoint(raw: bytes) -> Checkpoint | None:
    """Decode a checkpoint; None when absent or damaged (the volume then relies on its scan)."""
    if len(raw) < CHECKPOINT_FIXED or raw[:4] != CHECKPOINT_MAGIC:
        return None
    (stored_crc,) = struct.unpack_from("<I", raw, _CKPT_CRC_OFFSET)
    if crc32c(memoryview(raw)[:_CKPT_CRC_OFFSET]) != stored_crc:
        return None
    _magic, version, clean, _r, seq, slot_end, max_gen, count, complete, body_crc = (
        _CKPT.unpack_from(raw, 0)
    )
    if version > FORMAT_VERSION or count > CHECKPOINT_MAX_FREE:
        return None
    body = raw[CHECKPOINT_FIXED : CHECKPOINT_FIXED + 8 * count]
    if len(body) != 8 * count or crc32c(body) != body_crc:
        return None
    free = struct.unpack(f"<{count}Q", body)
    return Checkpoint(
        seq=seq,
        clean=bool(clean),
        slot_end=slot_end,
        max_generation=max_gen,
        free=tuple(free),
        complete=bool(complete),
    )
