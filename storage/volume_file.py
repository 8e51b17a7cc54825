"""The volume file below the :class:`~mydfs.storage.volume.Volume` API: positional I/O,
opening and identifying the file, the recovery scan at open, and the pure checks of header
copies, payload blocks and write arguments.

At every open the volume rebuilds its tables from the slot headers, the only source of truth
(``docs/format.md``, "Reopening"): :func:`scan_slots` reads both header copies of every slot
inside the file and settles them (:func:`settle_copies`); it only reads. The volume then
rewrites the copies that disagree, compares the scan with the checkpoint of its last clean
close (:func:`read_checkpoint`, :func:`checkpoint_mismatch`) and writes a new one.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path

from mydfs.common.checksum import crc32c
from mydfs.common.errors import (
    Conflict,
    Corrupt,
    IncompatibleVolume,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    SliceDeleted,
    SliceMoved,
    StorageIOError,
)
from mydfs.common.location import Location
from mydfs.storage.format import (
    BLOCK_SIZE,
    CHECKPOINT_FIXED,
    CHECKPOINT_OFFSETS,
    HEADER_SIZE,
    PAYLOAD_CAPACITY,
    PAYLOAD_OFFSET,
    SLOT_SIZE,
    Checkpoint,
    SliceOwner,
    SlotHeader,
    SlotState,
    Superblock,
    checkpoint_length,
    decode_checkpoint,
    decode_header,
    decode_superblock,
    encode_checkpoint,
    encode_superblock,
    header_is_blank,
    slot_offset,
)
from mydfs.storage.volume_reports import Problem

__all__ = [
    "HEADER_PAIR",
    "Scan",
    "bad_block",
    "check_location",
    "check_readable",
    "check_write",
    "checkpoint_mismatch",
    "copy_damaged",
    "create_file",
    "open_locked",
    "payload_problem",
    "pread_exact",
    "pwrite_all",
    "read_checkpoint",
    "scan_slots",
    "settle_copies",
    "slots_in_file",
]

HEADER_PAIR = 2 * HEADER_SIZE
"""Bytes of both header copies of a slot, read together."""


# --- positional I/O ---------------------------------------------------------------------------


def pread_exact(fd: int, length: int, offset: int) -> bytes:
    """pread that loops over short reads; returns fewer bytes only at end of file."""
    chunks: list[bytes] = []
    got = 0
    while got < length:
        chunk = os.pread(fd, length - got, offset + got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def pwrite_all(fd: int, buffers: list[bytes | memoryview], offset: int) -> None:
    """pwritev that loops over short writes."""
    views = [memoryview(b) for b in buffers if len(b)]
    while views:
        n = os.pwritev(fd, views, offset)
        offset += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]


# --- opening -------------------------------------------------------------------------------------


def create_file(path: Path, sb: Superblock) -> None:
    """Write a new, empty volume of identity ``sb`` at ``path``: written and fsynced under a
    temporary name, then renamed into place. The caller makes the rename durable (it syncs the
    folder)."""
    tmp = path.with_name(path.name + ".creating")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        pwrite_all(fd, [encode_superblock(sb)], 0)
        empty = Checkpoint(seq=1, clean=True, slot_end=0, max_generation=0)
        pwrite_all(fd, [encode_checkpoint(empty)], CHECKPOINT_OFFSETS[1])
        os.ftruncate(fd, SLOT_SIZE)  # the superblock slot; sparse
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def open_locked(path: Path, *, node_id: str | None, group_id: int | None) -> tuple[int, Superblock]:
    """Open the volume file at ``path``, lock it for this process and read its superblock.

    ``node_id``/``group_id``, when given, must match the volume's identity, else
    :class:`IncompatibleVolume`; a volume locked by another process raises :class:`Conflict`.
    On any error the file is closed again, untouched."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise StorageIOError(f"cannot open volume: {exc.strerror}", volume=str(path)) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict("volume is already open in another process", volume=str(path)) from None
        sb = decode_superblock(pread_exact(fd, 512, 0), volume=str(path))
        if node_id is not None and sb.node_id != node_id:
            raise IncompatibleVolume(
                f"volume belongs to node {sb.node_id!r}, not {node_id!r}", volume=str(path)
            )
        if group_id is not None and sb.group_id != group_id:
            raise IncompatibleVolume(
                f"volume belongs to group {sb.group_id}, not {group_id}", volume=str(path)
            )
    except BaseException:
        os.close(fd)
        raise
    return fd, sb


# --- the recovery scan at open -------------------------------------------------------------------


@dataclass
class Scan:
    """What the headers on disk say, slot by slot."""

    slot_end: int
    """Slots ``[0, slot_end)`` lie inside the file."""
    headers: dict[int, SlotHeader] = field(default_factory=dict)
    """Every slot with a valid header (settled if its copies disagreed)."""
    free: list[int] = field(default_factory=list)
    """Slots without a header, and 404 markers: the volume's local free list."""
    quarantined: list[Problem] = field(default_factory=list)
    """Slots whose headers are damaged, misplaced, or whose payload the file cuts short."""
    repairs: list[SlotHeader] = field(default_factory=list)
    """Settled headers whose two copies disagree on disk and must be rewritten."""
    max_generation: int = 0


def slots_in_file(size: int) -> int:
    """How many slots a volume file of ``size`` bytes reaches into (a partial one counts)."""
    return max(0, -(-(size - SLOT_SIZE) // SLOT_SIZE))


def scan_slots(fd: int, *, volume: str, max_slots: int) -> Scan:
    """Read and settle the header copies of every slot inside the file (reads only).

    Raises :class:`Corrupt` if the file holds more than ``max_slots`` slots and
    :class:`IncompatibleVolume` for a header of a newer format."""
    size = os.fstat(fd).st_size
    scan = Scan(slot_end=slots_in_file(size))
    if scan.slot_end > max_slots:
        raise Corrupt(f"file holds {scan.slot_end} slots, more than max_slots", volume=volume)
    for slot in range(scan.slot_end):
        raw = pread_exact(fd, HEADER_PAIR, slot_offset(slot)).ljust(HEADER_PAIR, b"\0")
        try:
            header, settled = settle_copies(slot, raw)
        except IncompatibleVolume as exc:
            raise IncompatibleVolume(exc.message, volume=volume, slot=slot) from None
        except Corrupt as exc:
            scan.quarantined.append(Problem(slot, exc.message))
            continue
        if header is None:
            scan.free.append(slot)
            continue
        end = slot_offset(slot) + PAYLOAD_OFFSET + header.length
        if end > size:
            reason = f"payload cut short: file ends {end - size} bytes early"
            scan.quarantined.append(Problem(slot, reason))
            continue
        if not settled:
            scan.repairs.append(header)
        scan.headers[slot] = header
        scan.max_generation = max(scan.max_generation, header.generation)
        if header.state == SlotState.DELETED:
            scan.free.append(slot)
    return scan


def settle_copies(slot: int, raw: bytes) -> tuple[SlotHeader | None, bool]:
    """Pick the header of ``slot`` from its two copies (``raw``: both) at open time.

    Returns ``(header or None if blank, settled)``; settled is False when the copies
    disagree and must be rewritten. Raises Corrupt when no copy is usable but one is not
    blank (damage, or a header from another slot).
    """
    raw_a, raw_b = raw[:HEADER_SIZE], raw[HEADER_SIZE:]
    if raw_a == raw_b:
        if header_is_blank(raw_a):
            return None, True
        return decode_header(raw_a, slot=slot), True
    decoded: list[SlotHeader] = []
    errors: list[Corrupt] = []
    for copy in (raw_a, raw_b):
        if header_is_blank(copy):
            continue
        try:
            decoded.append(decode_header(copy, slot=slot))
        except IncompatibleVolume:
            raise
        except Corrupt as exc:
            errors.append(exc)
    if decoded:
        newest = max(decoded, key=lambda h: (h.generation, h.seq))
        return newest, False
    if errors:
        raise errors[0]
    return None, True


def read_checkpoint(fd: int) -> Checkpoint | None:
    """The newest valid free-table checkpoint of the superblock slot, if any."""
    found: list[Checkpoint] = []
    for off in CHECKPOINT_OFFSETS:
        length = checkpoint_length(pread_exact(fd, CHECKPOINT_FIXED, off))
        if not length:
            continue
        cp = decode_checkpoint(pread_exact(fd, length, off))
        if cp is not None:
            found.append(cp)
    return max(found, key=lambda c: c.seq) if found else None


def checkpoint_mismatch(cp: Checkpoint | None, slot_end: int, free: set[int]) -> str | None:
    """How the scan (``slot_end``, ``free``) differs from a clean close's checkpoint; ``None``
    if it does not, or if there is no clean checkpoint to compare with."""
    if cp is None or not cp.clean:
        return None
    problems = []
    if cp.slot_end != slot_end:
        problems.append(f"slot_end {cp.slot_end} != scanned {slot_end}")
    if cp.complete and set(cp.free) != free:
        problems.append(f"free table of {len(cp.free)} slots != scanned {len(free)} slots")
    return "; ".join(problems) or None


# --- pure checks -----------------------------------------------------------------------


def copy_damaged(slot: int, raw: bytes) -> bool:
    """True if the header copy ``raw`` of ``slot`` does not decode."""
    try:
        decode_header(raw, slot=slot)
    except Corrupt:
        return True
    return False


def bad_block(header: SlotHeader, data: bytes, first: int, expect: int) -> int | None:
    """The first payload block of ``data`` (``expect`` bytes read from block ``first`` on) whose
    CRC does not match ``header``; a short read counts as bad. ``None`` if all match."""
    if len(data) != expect:
        return first + len(data) // BLOCK_SIZE
    view = memoryview(data)
    for i in range(0, len(data), BLOCK_SIZE):
        block = first + i // BLOCK_SIZE
        if crc32c(view[i : i + BLOCK_SIZE]) != header.block_crcs[block]:
            return block
    return None


def check_readable(
    header: SlotHeader, *, volume: str, allow_pending: bool, expect_owner: SliceOwner | None
) -> None:
    """Raise what a read of the slot ``header`` describes must answer: SliceDeleted (404),
    SliceMoved (301, with the target), NotFound (pending, or another owner's slice)."""
    slot = header.slot
    if header.state == SlotState.DELETED:
        raise SliceDeleted("slice was deleted (404)", volume=volume, slot=slot)
    if header.state == SlotState.MOVED:
        assert header.target is not None
        raise SliceMoved(
            "slice moved (301)",
            target=(header.target.group, header.target.slot),
            volume=volume,
            slot=slot,
        )
    if header.state == SlotState.PENDING and not allow_pending:
        raise NotFound("slice is pending, not committed", volume=volume, slot=slot)
    if expect_owner is not None and header.owner != expect_owner:
        raise NotFound(
            f"slot holds slice {header.owner}, not {expect_owner}", volume=volume, slot=slot
        )


def payload_problem(header: SlotHeader, data: bytes) -> str | None:
    """What is wrong with ``data``, read as the whole payload of ``header``; ``None`` if it
    matches every block CRC and the payload CRC."""
    bad = bad_block(header, data, 0, header.length)
    if bad is not None:
        return f"payload block {bad} checksum mismatch"
    if crc32c(data) != header.payload_crc:
        return "payload checksum mismatch"
    return None


def check_location(loc: object, what: str, volume: str, slot: int) -> None:
    """Raise InvalidArgument unless ``loc`` (the ``what`` pointer of ``slot``) is a Location."""
    if not isinstance(loc, Location):
        raise InvalidArgument(
            f"{what} must be a Location(group, slot), got {loc!r}", volume=volume, slot=slot
        )


def check_write(
    volume: str,
    slot: int,
    length: int,
    state: SlotState,
    owner: object,
    next: object,
    generation: int | None,
) -> None:
    """Raise the typed error for bad arguments of ``Volume.write`` (before anything is claimed)."""
    if length > PAYLOAD_CAPACITY:
        raise PayloadTooLarge(
            f"payload of {length} bytes exceeds slice capacity {PAYLOAD_CAPACITY}",
            volume=volume,
            slot=slot,
        )
    if state not in (SlotState.LIVE, SlotState.PENDING):
        raise InvalidArgument(f"a write makes a LIVE or PENDING slice, not {state.name}")
    if owner is not None and not isinstance(owner, SliceOwner):
        raise InvalidArgument(f"owner must be a SliceOwner, got {owner!r}", slot=slot)
    if next is not None:
        check_location(next, "next", volume, slot)
    if generation is not None and not 0 <= generation < 1 << 64:
        raise InvalidArgument(f"generation {generation} out of range", slot=slot)
