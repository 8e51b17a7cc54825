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
    56  4   version (1 at creation, +1 per overwrite or committed edit)
    60  ..  hash, ASCII, as given by the client (may be empty)

An entry of a file that was edited in place carries an **extension** after the hash (the hash
is printable ASCII, so the NUL byte cannot be part of it)::

    00          marker
    u32         layout (version of the last layout-changing commit, 0 none)
    u32 n       number of (group, version) pairs
    n x 8       u32 group, u32 version (the last commit that touched the group), groups ascending

An entry without edits has no extension: its bytes are those of format version 1. Trash records
carry the same ``00 | u32 n | n x (u32, u32)`` extension after their path (a path holds no NUL)
when the file was edited. Format 3 checkpoints carry trash records whole instead (``CK_TRASH3``:
state, time, reason, path and the packed entry, so an undelete can restore the file).
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import struct
from collections.abc import Iterable
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
TRASH3 = struct.Struct("<BdBH")  # state, time, reason, path length
COUNTS = struct.Struct("<QQQ")
COUNTS4 = struct.Struct("<QQQQ")
U32 = struct.Struct("<I")
PAIR = struct.Struct("<II")
EXT_HEAD = struct.Struct("<II")  # layout, n pairs
DECISION = struct.Struct("<16s16sBIdQI")
#: Most (group, version) pairs an entry or a decision may carry.
MAX_PAIRS = 65_536

Versions = tuple[tuple[int, int], ...]


class EditType(enum.IntEnum):
    """Record types of the edit log (1-15) and of the checkpoint (16-31)."""

    PUT_FILE = 1
    DELETE_FILE = 2
    ADD_INTENT = 3
    DROP_INTENT = 4
    DROP_TRASH = 5
    DECIDE = 6
    MARK_TRASH = 7
    PURGE_TRASH = 8
    UNDELETE = 9
    CK_FILE = 16
    CK_TRASH = 17
    CK_INTENT = 18
    CK_END = 19
    CK_DECISION = 20
    CK_TRASH3 = 21


class TrashState(enum.IntEnum):
    """Where a trash record stands (``docs/space.md``, Trash)."""

    HELD = 0  # kept for the retention; may be undeleted or purged
    PURGED = 1  # freed at the reclaimer's next pass; may still be undeleted until marked
    RECLAIMING = 2  # the reclaimer started freeing its slices: can never be undeleted


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


def parse_head(value: Any) -> Location | None:
    """A head from JSON: ``[group, slot]`` (a list or tuple of two ints, not bools) or null;
    anything else is :class:`InvalidArgument` naming the field ``head``."""
    if value is None:
        return None
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise InvalidArgument(f"head must be [group, slot] or null, got {value!r}", field="head")
    try:
        return Location.checked(value[0], value[1])
    except InvalidArgument as exc:
        raise InvalidArgument(f"head {value!r}: {exc.message}", field="head") from None


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
    #: (group, version of the last committed edit that touched the group), groups ascending.
    versions: Versions = ()
    #: The version of the last layout-changing edit (0: none).
    layout: int = 0

    def pack(self) -> bytes:
        group, slot = _loc_fields(self.head)
        packed = ENTRY.pack(
            bytes.fromhex(self.file_id),
            self.size,
            self.slices,
            group,
            slot,
            self.ctime,
            self.mtime,
            self.version,
        ) + self.hash.encode("ascii")
        if not self.versions and not self.layout:
            return packed
        return (
            packed
            + b"\x00"
            + EXT_HEAD.pack(self.layout, len(self.versions))
            + _pairs(self.versions)
        )

    @staticmethod
    def unpack(data: bytes) -> FileEntry:
        if len(data) < ENTRY.size:
            raise Corrupt(f"file entry of {len(data)} bytes, expected at least {ENTRY.size}")
        fid, size, slices, group, slot, ctime, mtime, version = ENTRY.unpack_from(data)
        cut = data.find(b"\x00", ENTRY.size)
        versions: Versions = ()
        layout = 0
        if cut >= 0:
            ext = data[cut + 1 :]
            if len(ext) < EXT_HEAD.size:
                raise Corrupt("file entry extension too short")
            layout, n = EXT_HEAD.unpack_from(ext)
            versions = _unpairs(ext[EXT_HEAD.size :], n, "file entry")
        else:
            cut = len(data)
        try:
            hash_text = data[ENTRY.size : cut].decode("ascii")
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
            versions,
            layout,
        )

    def version_of(self, group: int) -> int:
        """The version of the last committed edit that touched ``group`` (0: none)."""
        for g, v in self.versions:
            if g == group:
                return v
        return 0

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
            self.versions,
            self.layout,
        )

    def to_dict(self, path: str) -> dict[str, Any]:
        return self.record(path).to_dict()


def _pairs(pairs: Versions) -> bytes:
    return b"".join(PAIR.pack(g, v) for g, v in pairs)


def _unpairs(data: bytes, n: int, what: str) -> Versions:
    """``n`` (u32, u32) pairs filling ``data`` exactly, strictly ascending by the first."""
    if n > MAX_PAIRS or len(data) != n * PAIR.size:
        raise Corrupt(f"{what}: {len(data)} bytes do not hold {n} (group, version) pairs")
    pairs = tuple(PAIR.unpack_from(data, i * PAIR.size) for i in range(n))
    if any(a[0] >= b[0] for a, b in itertools.pairwise(pairs)):
        raise Corrupt(f"{what}: (group, version) pairs not in ascending group order")
    return pairs


def merge_versions(versions: Versions, groups: Iterable[int], version: int) -> Versions:
    """``versions`` with ``(g, version)`` for every ``g`` of ``groups`` (sorted by group)."""
    merged = dict(versions)
    for g in groups:
        merged[g] = version
    return tuple(sorted(merged.items()))


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
    #: The file's per-group versions when it was edited in place (its chain then holds 301
    #: slots and slices whose indexes do not count: the reclaimer walks it by file id only).
    versions: Versions = ()
    #: The rest of the file's entry (format 3), what an undelete restores; ``version`` 0 = a
    #: record of format 2 or older that lacks them (it cannot be undeleted).
    hash: str = ""
    ctime: float = 0.0
    mtime: float = 0.0
    version: int = 0
    layout: int = 0
    state: TrashState = TrashState.HELD

    @property
    def edited(self) -> bool:
        return bool(self.versions)

    @staticmethod
    def of(path: str, entry: FileEntry, when: float, reason: TrashReason) -> TrashRecord:
        """The record of ``entry`` leaving ``path`` at ``when`` (held)."""
        return TrashRecord(
            entry.file_id,
            path,
            entry.size,
            entry.slices,
            entry.head,
            when,
            reason,
            entry.versions,
            entry.hash,
            entry.ctime,
            entry.mtime,
            entry.version,
            entry.layout,
        )

    def entry(self) -> FileEntry | None:
        """The file's entry as it was, for an undelete (None: an old record without it)."""
        return None if self.version == 0 else self._as_entry()

    def _as_entry(self) -> FileEntry:
        return FileEntry(
            self.file_id,
            self.size,
            self.slices,
            self.head,
            self.hash,
            self.ctime,
            self.mtime,
            self.version,
            self.versions,
            self.layout,
        )

    def pack3(self) -> bytes:
        """The payload of ``CK_TRASH3``: ``u8 state | f64 time | u8 reason | u16 path length |
        path | packed entry`` (entry version 0: a record from format 2 without the rest)."""
        entry = self._as_entry()
        raw = self.path.encode("utf-8")
        return (
            TRASH3.pack(int(self.state), self.time, int(self.reason), len(raw)) + raw + entry.pack()
        )

    @staticmethod
    def unpack3(data: bytes) -> TrashRecord:
        if len(data) < TRASH3.size:
            raise Corrupt(f"trash record of {len(data)} bytes, expected at least {TRASH3.size}")
        state, when, reason, n = TRASH3.unpack_from(data)
        try:
            why, where = TrashReason(reason), TrashState(state)
        except ValueError:
            raise Corrupt(f"trash record with unknown reason {reason} or state {state}") from None
        if len(data) < TRASH3.size + n + ENTRY.size:
            raise Corrupt("trash record too short for its path and entry")
        path = _decode_path(data[TRASH3.size : TRASH3.size + n])
        entry = FileEntry.unpack(bytes(data[TRASH3.size + n :]))
        return dataclasses.replace(TrashRecord.of(path, entry, when, why), state=where)

    def with_state(self, state: TrashState) -> TrashRecord:
        return dataclasses.replace(self, state=state)

    def pack(self) -> bytes:
        group, slot = _loc_fields(self.head)
        packed = TRASH.pack(
            bytes.fromhex(self.file_id),
            self.size,
            self.slices,
            group,
            slot,
            self.time,
            int(self.reason),
        ) + self.path.encode("utf-8")
        if not self.versions:
            return packed
        return packed + b"\x00" + U32.pack(len(self.versions)) + _pairs(self.versions)

    @staticmethod
    def unpack(data: bytes) -> TrashRecord:
        if len(data) < TRASH.size:
            raise Corrupt(f"trash record of {len(data)} bytes, expected at least {TRASH.size}")
        fid, size, slices, group, slot, when, reason = TRASH.unpack_from(data)
        try:
            why = TrashReason(reason)
        except ValueError:
            raise Corrupt(f"trash record with unknown reason {reason}") from None
        cut = data.find(b"\x00", TRASH.size)
        versions: Versions = ()
        if cut >= 0:
            ext = data[cut + 1 :]
            if len(ext) < U32.size:
                raise Corrupt("trash record extension too short")
            (n,) = U32.unpack_from(ext)
            versions = _unpairs(ext[U32.size :], n, "trash record")
        else:
            cut = len(data)
        return TrashRecord(
            fid.hex(),
            _decode_path(data[TRASH.size : cut]),
            size,
            slices,
            _loc(group, slot, "trash head"),
            when,
            why,
            versions,
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
            "versions": [list(p) for p in self.versions],
            "state": self.state.name.lower(),
            "restorable": self.version != 0 and self.state is not TrashState.RECLAIMING,
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


@dataclass(frozen=True, slots=True)
class MarkTrash:
    """The reclaimer is about to delete the record's first slice: it can never be undeleted."""

    file_id: str


@dataclass(frozen=True, slots=True)
class PurgeTrash:
    """Free the record at the reclaimer's next pass, whatever its age."""

    file_id: str


@dataclass(frozen=True, slots=True)
class Undelete:
    """Put the trashed file ``file_id`` back, at ``path``, and forget its record."""

    file_id: str
    path: str


class Outcome(enum.IntEnum):
    """What the tracker decided for an edit transaction."""

    COMMIT = 1
    ABORT = 2


@dataclass(frozen=True, slots=True)
class Decision:
    """The tracker's decision for edit transaction ``txn`` (first decision wins).

    A commit carries the file's new ``entry`` (at ``path``), its new ``version`` and, per
    participant group, the entry's version for that group before this commit (``prevs``, which
    the group checks to apply commits in order). An abort carries version 0, no prevs, no entry;
    its ``path`` may be empty (an abort recorded for a storage node that asked). ``offset`` is
    what the client passed (an append's offset), ``at`` the tracker's wall clock.

    Payload of ``DECIDE`` (log) and ``CK_DECISION`` (checkpoint)::

        0   16  txn              (the 32 hex digits as 16 bytes)
        16  16  file id
        32  1   outcome          1 commit, 2 abort
        33  4   version
        37  8   at               f64 unix seconds
        45  8   offset           ff..ff = none
        53  4   n prevs
        57  n*8 u32 group, u32 prev
        ..  2   path length, then the path (UTF-8)
        ..  ..  packed entry     (commit only)
    """

    txn: str
    file_id: str
    path: str
    outcome: Outcome
    version: int
    prevs: Versions
    offset: int | None
    at: float
    entry: FileEntry | None = None

    @property
    def committed(self) -> bool:
        return self.outcome is Outcome.COMMIT

    def pack(self) -> bytes:
        raw = self.path.encode("utf-8")
        return (
            DECISION.pack(
                bytes.fromhex(self.txn),
                bytes.fromhex(self.file_id),
                int(self.outcome),
                self.version,
                self.at,
                NONE64 if self.offset is None else self.offset,
                len(self.prevs),
            )
            + b"".join(PAIR.pack(g, p) for g, p in self.prevs)
            + U16.pack(len(raw))
            + raw
            + (b"" if self.entry is None else self.entry.pack())
        )

    @staticmethod
    def unpack(data: bytes) -> Decision:
        if len(data) < DECISION.size:
            raise Corrupt(f"decision of {len(data)} bytes, expected at least {DECISION.size}")
        txn, fid, outcome, version, at, offset, n = DECISION.unpack_from(data)
        try:
            kind = Outcome(outcome)
        except ValueError:
            raise Corrupt(f"decision with unknown outcome {outcome}") from None
        at_path = DECISION.size + n * PAIR.size
        if n > MAX_PAIRS or len(data) < at_path + U16.size:
            raise Corrupt("decision too short for its prevs")
        prevs = tuple(PAIR.unpack_from(data, DECISION.size + i * PAIR.size) for i in range(n))
        (length,) = U16.unpack_from(data, at_path)
        start = at_path + U16.size
        if len(data) < start + length:
            raise Corrupt("decision too short for its path")
        path = _decode_path(data[start : start + length])
        rest = bytes(data[start + length :])
        entry = FileEntry.unpack(rest) if rest else None
        if (entry is not None) != (kind is Outcome.COMMIT):
            raise Corrupt("a commit decision carries the new entry, an abort none")
        if entry is not None and entry.file_id != fid.hex():
            raise Corrupt("a commit decision's entry is for another file id")
        return Decision(
            txn.hex(),
            fid.hex(),
            path,
            kind,
            version,
            prevs,
            None if offset == NONE64 else offset,
            at,
            entry,
        )


@dataclass(frozen=True, slots=True)
class Decide:
    """Record ``decision``; a commit also replaces the entry at its path (same file id)."""

    decision: Decision


Edit = (
    PutFile
    | DeleteFile
    | AddIntent
    | DropIntent
    | DropTrash
    | Decide
    | MarkTrash
    | PurgeTrash
    | Undelete
)


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
    if isinstance(edit, Decide):
        return EditType.DECIDE, edit.decision.pack()
    if isinstance(edit, MarkTrash):
        return EditType.MARK_TRASH, bytes.fromhex(edit.file_id)
    if isinstance(edit, PurgeTrash):
        return EditType.PURGE_TRASH, bytes.fromhex(edit.file_id)
    if isinstance(edit, Undelete):
        return EditType.UNDELETE, bytes.fromhex(edit.file_id) + edit.path.encode("utf-8")
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
    if kind == EditType.DECIDE:
        return Decide(Decision.unpack(payload))
    if kind == EditType.UNDELETE:
        if len(payload) < 17:
            raise Corrupt(f"undelete payload of {len(payload)} bytes, expected at least 17")
        return Undelete(bytes(payload[:16]).hex(), _decode_path(payload[16:]))
    by_id: dict[int, type[DropIntent | DropTrash | MarkTrash | PurgeTrash]] = {
        EditType.DROP_INTENT: DropIntent,
        EditType.DROP_TRASH: DropTrash,
        EditType.MARK_TRASH: MarkTrash,
        EditType.PURGE_TRASH: PurgeTrash,
    }
    if kind in by_id:
        if len(payload) != 16:
            raise Corrupt(f"record type {kind}: payload of {len(payload)} bytes, expected 16")
        return by_id[kind](bytes(payload).hex())
    raise Corrupt(f"unknown edit record type {kind}")
