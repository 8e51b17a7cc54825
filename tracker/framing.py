"""Byte layout of the tracker's edit-log segments and checkpoint files (pure, no I/O).

Both files are a small fixed header followed by **frames** (LevelDB's log, simplified: one frame
per record, no blocks). ``docs/tracker.md`` has the byte tables; the constants live here only.

Frame (17 bytes + payload)::

    0   4  crc32c of bytes 4 .. end of payload
    4   4  payload length
    8   8  seq: edit sequence number (log) or record number (checkpoint), consecutive
    16  1  record type (:class:`~mydfs.tracker.records.EditType`)
    17  n  payload

Segment header (20 bytes): ``"MDEL" | u16 version | u16 0 | u64 first seq | u32 crc32c``.
Checkpoint header (28 bytes): ``"MDCK" | u16 version | u16 0 | u64 last seq covered |
f64 created | u32 crc32c``.

A frame that does not check (short, bad CRC, implausible length) ends the readable part of a file.
:func:`classify_damage` tells a torn tail (the last write, interrupted: it may be cut) from damage
inside acknowledged data (a later intact frame exists: refuse to guess).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from mydfs.common.checksum import Buffer, crc32c
from mydfs.common.errors import Corrupt

#: The version new segments and checkpoints are written with. Version 2 added the decision
#: records (log type 6, checkpoint type 20), the extension of packed entries and trash records
#: (per-group versions, layout) and a decision count in ``CK_END``; a version 1 file still
#: reads (it holds none of these), and a tracker of version 1 refuses a version 2 file.
#: Version 3 added the trash states and undelete (log types 7 ``MARK_TRASH``, 8
#: ``PURGE_TRASH``, 9 ``UNDELETE``; checkpoint type 21 ``CK_TRASH3``, a trash record with its
#: whole entry); versions 1 and 2 still read.
FORMAT_VERSION = 3
#: The versions this tracker reads.
READABLE_VERSIONS = (1, 2, 3)

FRAME = struct.Struct("<IIQB")
FRAME_BODY = struct.Struct("<IQB")  # the part of the header the CRC covers
FRAME_HEADER_SIZE = FRAME.size  # 17
#: Largest payload a frame may declare; anything bigger is damage, not data.
MAX_PAYLOAD = 1 << 20

SEGMENT_MAGIC = b"MDEL"
SEGMENT_HEADER = struct.Struct("<4sHHQ")
SEGMENT_HEADER_SIZE = SEGMENT_HEADER.size + 4  # 20

CHECKPOINT_MAGIC = b"MDCK"
CHECKPOINT_HEADER = struct.Struct("<4sHHQd")
CHECKPOINT_HEADER_SIZE = CHECKPOINT_HEADER.size + 4  # 28

#: How many sequence numbers past a damaged frame :func:`classify_damage` looks for.
RESYNC_SEQS = 16

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def encode_frame(seq: int, kind: int, payload: bytes) -> bytes:
    body = FRAME_BODY.pack(len(payload), seq, kind) + payload
    return _U32.pack(crc32c(body)) + body


def _readable() -> str:
    return " and ".join(str(v) for v in READABLE_VERSIONS)


def encode_segment_header(first_seq: int) -> bytes:
    head = SEGMENT_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION, 0, first_seq)
    return head + _U32.pack(crc32c(head))


def decode_segment_header(data: Buffer) -> int:
    """The first seq of a segment; :class:`Corrupt` if the header does not check."""
    view = memoryview(data)
    if len(view) < SEGMENT_HEADER_SIZE:
        raise Corrupt(f"segment header is {len(view)} bytes, expected {SEGMENT_HEADER_SIZE}")
    magic, version, _, first_seq = SEGMENT_HEADER.unpack_from(view)
    (crc,) = _U32.unpack_from(view, SEGMENT_HEADER.size)
    if magic != SEGMENT_MAGIC:
        raise Corrupt(f"not an edit-log segment (magic {bytes(magic)!r})")
    if crc != crc32c(view[: SEGMENT_HEADER.size]):
        raise Corrupt("segment header checksum mismatch")
    if version not in READABLE_VERSIONS:
        raise Corrupt(f"segment format version {version}, this tracker reads {_readable()}")
    return int(first_seq)


def encode_checkpoint_header(seq: int, created: float) -> bytes:
    head = CHECKPOINT_HEADER.pack(CHECKPOINT_MAGIC, FORMAT_VERSION, 0, seq, created)
    return head + _U32.pack(crc32c(head))


def decode_checkpoint_header(data: Buffer) -> tuple[int, float]:
    """``(last seq covered, created)``; :class:`Corrupt` if the header does not check."""
    view = memoryview(data)
    if len(view) < CHECKPOINT_HEADER_SIZE:
        raise Corrupt(f"checkpoint header is {len(view)} bytes, expected {CHECKPOINT_HEADER_SIZE}")
    magic, version, _, seq, created = CHECKPOINT_HEADER.unpack_from(view)
    (crc,) = _U32.unpack_from(view, CHECKPOINT_HEADER.size)
    if magic != CHECKPOINT_MAGIC:
        raise Corrupt(f"not a checkpoint (magic {bytes(magic)!r})")
    if crc != crc32c(view[: CHECKPOINT_HEADER.size]):
        raise Corrupt("checkpoint header checksum mismatch")
    if version not in READABLE_VERSIONS:
        raise Corrupt(f"checkpoint format version {version}, this tracker reads {_readable()}")
    return int(seq), float(created)


class Stop(enum.Enum):
    """Why a scan ended."""

    END = "end"  # the buffer ended exactly after a good frame
    SHORT = "short"  # a frame header or payload runs past the end of the buffer
    LENGTH = "length"  # a frame declares a payload larger than MAX_PAYLOAD
    CRC = "crc"  # a frame's checksum does not match
    SEQ = "seq"  # a good frame carries an unexpected sequence number


@dataclass(frozen=True, slots=True)
class Frame:
    seq: int
    kind: int
    payload: bytes
    offset: int


@dataclass(slots=True)
class Scan:
    """The good frames from ``start``, where they end, and why the scan stopped there."""

    frames: list[Frame] = field(default_factory=list)
    end: int = 0
    stop: Stop = Stop.END
    next_seq: int = 0  # the seq the next good frame would carry


def _frame_at(view: memoryview, pos: int) -> tuple[Stop | None, int, int, int]:
    """Check the frame at ``pos``: (problem or None, seq, kind, payload length)."""
    if len(view) - pos < FRAME_HEADER_SIZE:
        return Stop.SHORT, 0, 0, 0
    crc, length, seq, kind = FRAME.unpack_from(view, pos)
    if length > MAX_PAYLOAD:
        return Stop.LENGTH, seq, kind, length
    end = pos + FRAME_HEADER_SIZE + length
    if end > len(view):
        return Stop.SHORT, seq, kind, length
    if crc != crc32c(view[pos + 4 : end]):
        return Stop.CRC, seq, kind, length
    return None, seq, kind, length


def scan_frames(
    data: Buffer, start: int, first_seq: int, on_frame: Callable[[Frame], None] | None = None
) -> Scan:
    """Read consecutive good frames from ``start``; stop at the first one that does not check.

    Good frames are collected in ``Scan.frames``, or handed to ``on_frame`` (then not kept).
    """
    view = memoryview(data)
    out = Scan(end=start, next_seq=first_seq)
    pos = start
    expected = first_seq
    while pos < len(view):
        problem, seq, kind, length = _frame_at(view, pos)
        if problem is None and seq != expected:
            problem = Stop.SEQ
        if problem is not None:
            out.stop = problem
            break
        end = pos + FRAME_HEADER_SIZE + length
        frame = Frame(seq, kind, bytes(view[pos + FRAME_HEADER_SIZE : end]), pos)
        if on_frame is None:
            out.frames.append(frame)
        else:
            on_frame(frame)
        pos = end
        expected += 1
    out.end = pos
    out.next_seq = expected
    return out


class Damage(enum.Enum):
    NONE = "none"
    TORN_TAIL = "torn_tail"  # the interrupted last write: safe to cut at Scan.end
    CORRUPT = "corrupt"  # damage with intact frames after it: cutting would lose them


def classify_damage(data: Buffer, scan: Scan) -> Damage:
    """Decide whether the bytes after ``scan.end`` are a torn tail or real corruption.

    A torn tail is what an interrupted append leaves: a short frame, garbage or zeros running to
    the end of the file. It is **corruption** instead when a good frame with the next sequence
    numbers can still be found after the damage (a bit flip inside acknowledged records), or
    when a frame with a valid checksum carries the wrong sequence number.
    """
    if scan.stop is Stop.END:
        return Damage.NONE
    if scan.stop is Stop.SEQ:
        return Damage.CORRUPT
    view = memoryview(data)
    tail = view[scan.end :]
    if not any(tail):
        return Damage.TORN_TAIL
    raw = bytes(tail)
    for seq in range(scan.next_seq, scan.next_seq + RESYNC_SEQS):
        needle = _U64.pack(seq)
        at = raw.find(needle, 1)
        while at != -1:
            pos = scan.end + at - 8
            if pos > scan.end and _frame_at(view, pos)[0] is None:
                return Damage.CORRUPT
            at = raw.find(needle, at + 1)
    return Damage.TORN_TAIL
