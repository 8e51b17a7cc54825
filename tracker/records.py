"""The tracker's metadata records and their byte encodings (pure, no I/O).

One encoding serves three places: the namespace keeps every file entry in memory as its packed
``bytes`` (compact, immutable, so a checkpoint snapshot is a cheap shallow copy), the edit log
carries edits, and the checkpoint carries the whole state. ``docs/tracker.md`` documents every
byte; ``tests/tracker/test_formats_golden.py`` pins them. All integers are little-endian.

Packed file entry (``ENTRY``, 60 bytes + hash)::

    0   16  file id (raw bytes of the 32-hex-digit id)
    16  8   size, bytes
    24  4   slices
    28  4   head group   (ffffffff with head slot ff..ff = no head: an empty file)
    32  8   head slot
    40  8   ctime, f64 unix seconds
    48  8   mtime, f64 unix seconds
    56  4   version (1 at creation, +1 per overwrite)
    60  ..  hash, ASCII, as given by the client (may be empty)
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any

from mydfs.common.errors import Corrupt, InvalidArgument
from mydfs.common.file_record import FileRecord
from mydfs.common.location import MAX_GROUP, MAX_SLOT, Location

NONE32 = 0xFFFF_FFFF
NONE64 = 0xFFFF_FFFF_FFFF_FFFF

#: Longest accepted ``hash`` string (``sha256:`` + 64 hex digits is 71).
MAX_HASH_CHARS = 256
MAX_U32 = NONE32
MAX_SIZE = (1 << 63) - 1

ENTRY = struct.Struct("<16sQIIQddI")
TRASH = struct.Struct("<16sQIIQdB")
U16 = struct.Struct("<H")
F64 = struct.Struct("<d")
TIME_ID = struct.Struct("<16sd")
COUNTS = struct.Struct("<QQQ")


class EditType(enum.IntEnum):
    """Record types of the edit log (1-15) and of the checkpoint (16-31)."""

    PUT_FILE = 1
    DELETE_FILE = 2
    ADD_INTENT = 3
    DROP_INTENT = 4
    DROP_TRASH = 5
    CK_FILE = 16
    CK_TRASH = 17
    CK_INTENT = 18
    CK_END = 19


class TrashReason(enum.IntEnum):
    DELETED = 1
    REPLACED = 2


def check_file_id(value: Any, field: str = "file_id") -> str:
    """A file id is 32 lowercase hex digits (16 bytes), as in the slice headers."""
    if (
        not isinstance(value, str)
        or len(value) != 32
        or any(c not in "0123456789abcdef" for c in value)
    ):
        raise InvalidArgument(
            f"{field} must be 32 lowercase hex digits, got {value!r}", field=field
        )
    return value


def check_hash(value: Any) -> str:
    """The client's content hash: printable ASCII without spaces, e.g. ``crc32c:1a2b3c4d``."""
    if value is None:
        return ""
    if (
        not isinstance(value, str)
        or len(value) > MAX_HASH_CHARS
        or any(not ("!" <= c <= "~") for c in value)
    ):
        raise InvalidArgument(
            f"hash must be at most {MAX_HASH_CHARS} printable ASCII characters "
            f"(e.g. 'crc32c:1a2b3c4d'), got {value!r}",
            field="hash",
        )
    return value


def _loc_fields(head: Location | None) -> tuple[int, int]:
    return (NONE32, NONE64) if head is None else (head.group, head.slot)


def _loc(group: int, slot: int, what: str) -> Location | None:
    if group == NONE32 and slot == NONE64:
        return None
    if group > MAX_GROUP or slot > MAX_SLOT:
        raise Corrupt(f"{what}: half-empty location {group:#x}:{slot:#x}")
    return Location(group, slot)


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A file of the namespace: where its chain starts and what the client said about it."""

    file_id: str
    size: int
    slices: int
    head: Location | None
    hash: str
    ctime: float
    mtime: float
    version: int

    def pack(self) -> bytes:
        group, slot = _loc_fields(self.head)
        return ENTRY.pack(
            bytes.fromhex(self.file_id),
            self.size,
            self.slices,
            group,
            slot,
            self.ctime,
            self.mtime,
            self.version,
        ) + self.hash.encode("ascii")

    @staticmethod
    def unpack(data: bytes) -> FileEntry:
        if len(data) < ENTRY.size:
            raise Corrupt(f"file entry of {len(data)} bytes, expected at least {ENTRY.size}")
        fid, size, slices, group, slot, ctime, mtime, version = ENTRY.unpack_from(data)
        try:
            hash_text = data[ENTRY.size :].decode("ascii")
        except UnicodeDecodeError:
            raise Corrupt("file entry hash is not ASCII") from None
        return FileEntry(
            fid.hex(),
            size,
            slices,
            _loc(group, slot, "file entry head"),
            hash_text,
            ctime,
            mtime,
            version,
        )

    def record(self, path: str) -> FileRecord:
        """The entry of the file at ``path`` in its wire form (the JSON the tracker answers)."""
        return FileRecord(
            path,
            self.file_id,
            self.size,
            self.slices,
            self.head,
            self.hash,
            self.ctime,
            self.mtime,
            self.version,
        )

    def to_dict(self, path: str) -> dict[str, Any]:
        return self.record(path).to_dict()


def entry_size(packed: bytes) -> int:
    """The ``size`` field of a packed entry, without decoding the rest."""
    return int.from_bytes(packed[16:24], "little")


@dataclass(frozen=True, slots=True)
class TrashRecord:
    """A file that left the namespace; its slices are for a future garbage collector."""

    file_id: str
    path: str
    size: int
    slices: int
    head: Location | None
    time: float
    reason: TrashReason

    def pack(self) -> bytes:
        group, slot = _loc_fields(self.head)
        return TRASH.pack(
            bytes.fromhex(self.file_id),
            self.size,
            self.slices,
            group,
            slot,
            self.time,
            int(self.reason),
        ) + self.path.encode("utf-8")

    @staticmethod
    def unpack(data: bytes) -> TrashRecord:
        if len(data) < TRASH.size:
            raise Corrupt(f"trash record of {len(data)} bytes, expected at least {TRASH.size}")
        fid, size, slices, group, slot, when, reason = TRASH.unpack_from(data)
        try:
            why = TrashReason(reason)
        except ValueError:
            raise Corrupt(f"trash record with unknown reason {reason}") from None
        return TrashRecord(
            fid.hex(),
            _decode_path(data[TRASH.size :]),
            size,
            slices,
            _loc(group, slot, "trash head"),
            when,
            why,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "file_id": self.file_id,
            "path": self.path,
            "size": self.size,
            "slices": self.slices,
            "head": None if self.head is None else [self.head.group, self.head.slot],
            "time": self.time,
            "reason": self.reason.name.lower(),
        }


@dataclass(frozen=True, slots=True)
class Intent:
    """An upload in progress: the client will register ``file_id`` at ``path``."""

    file_id: str
    path: str
    time: float

    def to_dict(self) -> dict[str, Any]:
        return {"file_id": self.file_id, "path": self.path, "time": self.time}


# --- edits -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PutFile:
    """Register (or overwrite) ``path``; ``entry`` is final (version and ctime included)."""

    path: str
    entry: FileEntry


@dataclass(frozen=True, slots=True)
class DeleteFile:
    path: str
    time: float


@dataclass(frozen=True, slots=True)
class AddIntent:
    intent: Intent


@dataclass(frozen=True, slots=True)
class DropIntent:
    file_id: str


@dataclass(frozen=True, slots=True)
class DropTrash:
    file_id: str


Edit = PutFile | DeleteFile | AddIntent | DropIntent | DropTrash


def _decode_path(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise Corrupt("a stored path is not UTF-8") from None


def encode_path_entry(path: str, packed_entry: bytes) -> bytes:
    """``u16 path length | path | packed entry``: the payload of PUT_FILE and CK_FILE."""
    raw = path.encode("utf-8")
    return U16.pack(len(raw)) + raw + packed_entry


def decode_path_entry(payload: bytes) -> tuple[str, bytes]:
    if len(payload) < 2:
        raise Corrupt("path+entry payload too short")
    (n,) = U16.unpack_from(payload)
    if len(payload) < 2 + n + ENTRY.size:
        raise Corrupt("path+entry payload too short")
    return _decode_path(payload[2 : 2 + n]), bytes(payload[2 + n :])


def encode_intent(intent: Intent) -> bytes:
    """``16 file id | f64 time | path``: the payload of ADD_INTENT and CK_INTENT."""
    return TIME_ID.pack(bytes.fromhex(intent.file_id), intent.time) + intent.path.encode("utf-8")


def decode_intent(payload: bytes) -> Intent:
    if len(payload) < TIME_ID.size:
        raise Corrupt("intent payload too short")
    fid, when = TIME_ID.unpack_from(payload)
    return Intent(fid.hex(), _decode_path(payload[TIME_ID.size :]), when)


def encode_edit(edit: Edit) -> tuple[EditType, bytes]:
    """The record type and payload bytes of one edit."""
    if isinstance(edit, PutFile):
        return EditType.PUT_FILE, encode_path_entry(edit.path, edit.entry.pack())
    if isinstance(edit, DeleteFile):
        return EditType.DELETE_FILE, F64.pack(edit.time) + edit.path.encode("utf-8")
    if isinstance(edit, AddIntent):
        return EditType.ADD_INTENT, encode_intent(edit.intent)
    if isinstance(edit, DropIntent):
        return EditType.DROP_INTENT, bytes.fromhex(edit.file_id)
    return EditType.DROP_TRASH, bytes.fromhex(edit.file_id)


def decode_edit(kind: int, payload: bytes) -> Edit:
    """Rebuild an edit from its log record; anything malformed raises :class:`Corrupt`."""
    if kind == EditType.PUT_FILE:
        path, packed = decode_path_entry(payload)
        return PutFile(path, FileEntry.unpack(packed))
    if kind == EditType.DELETE_FILE:
        if len(payload) < F64.size:
            raise Corrupt("delete payload too short")
        (when,) = F64.unpack_from(payload)
        return DeleteFile(_decode_path(payload[F64.size :]), when)
    if kind == EditType.ADD_INTENT:
        return AddIntent(decode_intent(payload))
    if kind in (EditType.DROP_INTENT, EditType.DROP_TRASH):
        if len(payload) != 16:
            raise Corrupt(f"record type {kind}: payload of {len(payload)} bytes, expected 16")
        fid = bytes(payload).hex()
        return DropIntent(fid) if kind == EditType.DROP_INTENT else DropTrash(fid)
    raise Corrupt(f"unknown edit record type {kind}")
