"""The snapshot codec of a group's slot table: canonical JSON bytes <-> plain parts (no I/O).

The document (``docs/group_state.md``, "Snapshot")::

    {"format": "mydfs.group_state", "version": 1, "group": g, "config": {...},
     "generation": n, "slot_fields": [...], "slots": [[...], ...], "sealed": [[id, slot, gen]]}

written by orjson with sorted keys, so equal tables give equal bytes. Only the primary tables
travel (slot records in slot order, the sealed upload window in seal order); the derived ones
(free-slice table, pending index, counters) are rebuilt by
:class:`~mydfs.storage.group_table.GroupTable` when it loads the parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson

from mydfs.common.errors import Corrupt, IncompatibleVolume, InvalidArgument
from mydfs.common.location import MAX_SLOT
from mydfs.storage.group_commands import (
    MAX_CRC32C,
    MAX_GENERATION,
    MAX_SLICE_INDEX,
    MAX_TIME_MS,
    MAX_UPLOAD_WINDOW,
    Configure,
    check_file_id,
    check_holders,
    check_int,
    check_length,
    check_upload_id,
    parse_location,
)
from mydfs.storage.group_records import GroupConfig, SlotInfo, wire_location
from mydfs.storage.slot_state import RECORD_STATES, SlotState

__all__ = [
    "SLOT_FIELDS",
    "SNAPSHOT_FORMAT",
    "SNAPSHOT_VERSION",
    "SnapshotParts",
    "corrupt_snapshot",
    "decode",
    "encode",
]

SNAPSHOT_FORMAT: Final = "mydfs.group_state"
SNAPSHOT_VERSION: Final = 1

SLOT_FIELDS: Final = (
    "slot",
    "state",
    "generation",
    "upload_id",
    "file_id",
    "slice_index",
    "length",
    "crc32c",
    "next",
    "holders",
    "target",
    "reserved_at_ms",
)
"""The columns of one slot row, in order (stored in the snapshot as ``slot_fields``)."""

_KEYS: Final = frozenset(
    {"format", "version", "group", "config", "generation", "slot_fields", "slots", "sealed"}
)


@dataclass(frozen=True, slots=True)
class SnapshotParts:
    """The primary tables of a group's state, as a snapshot carries them."""

    config: GroupConfig
    generation: int
    slots: list[SlotInfo]
    """One record per allocated slot, index == slot number."""
    sealed: list[tuple[str, int, int]]
    """The sealed upload window, oldest first: ``(upload_id, slot, generation)``."""


def encode(group: int, parts: SnapshotParts) -> bytes:
    """The canonical snapshot bytes of ``parts``."""
    doc = {
        "format": SNAPSHOT_FORMAT,
        "version": SNAPSHOT_VERSION,
        "group": group,
        "config": parts.config.to_dict(),
        "generation": parts.generation,
        "slot_fields": list(SLOT_FIELDS),
        "slots": [_row(info) for info in parts.slots],
        "sealed": [list(entry) for entry in parts.sealed],
    }
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def decode(data: bytes, group: int) -> SnapshotParts:
    """Parse and check the structure of a snapshot of ``group``.

    Raises :class:`Corrupt` for bad bytes or structure and :class:`IncompatibleVolume` for a
    snapshot of another group or another format/version. Cross-table invariants are checked by
    the table that loads the parts."""

    def corrupt(message: str, **context: Any) -> Corrupt:
        return corrupt_snapshot(group, message, **context)

    if not isinstance(data, bytes | bytearray | memoryview):
        raise corrupt(f"expected bytes, not {type(data).__name__}")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise corrupt("not valid JSON") from exc
    if not isinstance(doc, dict):
        raise corrupt("not a JSON object")
    if doc.get("format") != SNAPSHOT_FORMAT:
        raise IncompatibleVolume("not a group state snapshot", group=group)
    version = doc.get("version")
    if version != SNAPSHOT_VERSION:
        raise IncompatibleVolume(
            f"snapshot version {_shown(version)} is not {SNAPSHOT_VERSION}", group=group
        )
    if set(doc) != _KEYS:
        raise corrupt(f"keys {sorted(doc)} are not {sorted(_KEYS)}")
    if type(doc["group"]) is not int or doc["group"] != group:
        raise IncompatibleVolume(f"snapshot belongs to group {_shown(doc['group'])}", group=group)
    if doc["slot_fields"] != list(SLOT_FIELDS):
        raise corrupt("unknown slot record layout")
    try:
        return _parts(doc)
    except InvalidArgument as exc:
        raise corrupt(exc.message, **exc.context) from exc


def corrupt_snapshot(group: int, message: str, /, **context: Any) -> Corrupt:
    """The error for a snapshot that cannot be loaded (context names the group)."""
    return Corrupt(f"group state snapshot: {message}", **{"group": group, **context})


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _row(info: SlotInfo) -> list[Any]:
    return [
        info.slot,
        info.state.value,
        info.generation,
        info.upload_id,
        info.file_id,
        info.slice_index,
        info.length,
        info.crc32c,
        wire_location(info.next),
        list(info.holders),
        wire_location(info.target),
        info.reserved_at_ms,
    ]


def _parts(doc: dict[str, Any]) -> SnapshotParts:
    """The parts a snapshot document describes; raises InvalidArgument."""
    op = "restore"
    config = doc["config"]
    if not isinstance(config, dict) or set(config) != {"max_slots", "min_holders", "upload_window"}:
        raise InvalidArgument("bad config", op=op, field="config")
    conf = Configure.from_dict({"op": Configure.OP, **config})
    generation = check_int(doc["generation"], op=op, field="generation", lo=0, hi=MAX_GENERATION)
    rows = doc["slots"]
    if not isinstance(rows, list) or len(rows) > MAX_SLOT + 1:
        raise InvalidArgument("slots must be a list", op=op, field="slots")
    slots = [_parse_row(row, index) for index, row in enumerate(rows)]
    sealed = doc["sealed"]
    if not isinstance(sealed, list) or len(sealed) > MAX_UPLOAD_WINDOW:
        raise InvalidArgument("sealed must be a list", op=op, field="sealed")
    window: dict[str, tuple[str, int, int]] = {}
    for entry in sealed:
        if not isinstance(entry, list) or len(entry) != 3:
            raise InvalidArgument("sealed entries are [upload_id, slot, generation]", op=op)
        uid = check_upload_id(entry[0], op=op, field="sealed.upload_id")
        slot = check_int(entry[1], op=op, field="sealed.slot", lo=0, hi=MAX_SLOT)
        gen = check_int(entry[2], op=op, field="sealed.generation", lo=1, hi=MAX_GENERATION)
        if uid in window:
            raise InvalidArgument("an upload id is sealed twice", op=op, upload_id=uid)
        window[uid] = (uid, slot, gen)
    return SnapshotParts(
        config=GroupConfig(conf.max_slots, conf.min_holders, conf.upload_window),
        generation=generation,
        slots=slots,
        sealed=list(window.values()),
    )


def _parse_row(row: object, index: int) -> SlotInfo:
    op = "restore"
    if not isinstance(row, list) or len(row) != len(SLOT_FIELDS):
        raise InvalidArgument("a slot record has the wrong shape", op=op, slot=index)
    (
        slot,
        state,
        generation,
        upload_id,
        file_id,
        slice_index,
        length,
        crc,
        nxt,
        holders,
        target,
        at,
    ) = row
    if check_int(slot, op=op, field="slot", lo=0, hi=MAX_SLOT) != index:
        raise InvalidArgument("slot records are not in slot order", op=op, slot=index)
    try:
        parsed_state = SlotState(state)
    except ValueError as exc:
        raise InvalidArgument("unknown slot state", op=op, slot=index) from exc
    if parsed_state not in RECORD_STATES:  # FREE is a disk state only
        raise InvalidArgument("unknown slot state", op=op, slot=index)
    parsed_holders = check_holders(holders, op=op)
    if list(parsed_holders) != holders:
        raise InvalidArgument("holders are not sorted", op=op, slot=index)
    return SlotInfo(
        slot=index,
        state=parsed_state,
        generation=check_int(generation, op=op, field="generation", lo=1, hi=MAX_GENERATION),
        upload_id=check_upload_id(upload_id, op=op),
        file_id=check_file_id(file_id, op=op),
        slice_index=check_int(slice_index, op=op, field="slice_index", lo=0, hi=MAX_SLICE_INDEX),
        length=check_length(length, op=op),
        crc32c=check_int(crc, op=op, field="crc32c", lo=0, hi=MAX_CRC32C),
        next=None if nxt is None else parse_location(nxt, op=op, field="next"),
        holders=parsed_holders,
        target=None if target is None else parse_location(target, op=op, field="target"),
        reserved_at_ms=check_int(at, op=op, field="reserved_at_ms", lo=0, hi=MAX_TIME_MS),
    )
