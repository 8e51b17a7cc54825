"""The snapshot codec of a group's slot table: canonical JSON bytes <-> plain parts (no I/O).

The document (``docs/group_state.md``, "Snapshot")::

    {"format": "mydfs.group_state", "version": 2, "group": g, "config": {...},
     "generation": n, "slot_fields": [...], "slots": [[...], ...], "sealed": [[id, slot, gen]],
     "prepared": [[txn, file_id, prepared_at_ms, lock, move, new(, keep)], ...],
     "finished": [[txn, state, file_id, version], ...],
     "file_versions": [[file_id, version], ...], "inline": [[slot, gen, base64], ...]}

written by orjson with sorted keys, so equal tables give equal bytes. Only the primary tables
travel (slot records in slot order, the sealed upload window in seal order, prepared txns in
prepare order, the finished txn window oldest first, file versions by file id); the derived
ones (free-slice table, pending index, counters, slot locks) are rebuilt by
:class:`~mydfs.storage.group_table.GroupTable` when it loads the parts. A version 1 snapshot
(before edits) has no ``prepared``, ``finished`` or ``file_versions`` and loads with those
tables empty; a version 2 snapshot (before inline uploads) has no ``inline``. ``inline`` holds
the payloads of inline uploads (``put``) that fewer than ``min_holders`` volumes hold yet, in
slot order.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from mydfs.common.errors import Corrupt, IncompatibleVolume, InvalidArgument
from mydfs.common.location import MAX_SLOT
from mydfs.storage.edit_commands import MAX_VERSION, Prepare, check_txn, keep_wire
from mydfs.storage.group_commands import (
    MAX_CRC32C,
    MAX_GENERATION,
    MAX_INLINE,
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
from mydfs.storage.group_records import (
    COMMITTED,
    EDIT_WINDOW,
    PREPARED,
    ROLLED_BACK,
    GroupConfig,
    SlotInfo,
    TxnInfo,
    wire_location,
)
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
SNAPSHOT_VERSION: Final = 3
#: Versions :func:`decode` reads (1: before edits; 2: before inline uploads).
READABLE_VERSIONS: Final = (1, 2, 3)

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

_KEYS_V1: Final = frozenset(
    {"format", "version", "group", "config", "generation", "slot_fields", "slots", "sealed"}
)
_KEYS_V2: Final = _KEYS_V1 | {"prepared", "finished", "file_versions"}
_KEYS: Final = _KEYS_V2 | {"inline"}
_KEYS_OF: Final = {1: _KEYS_V1, 2: _KEYS_V2, 3: _KEYS}


@dataclass(frozen=True, slots=True)
class SnapshotParts:
    """The primary tables of a group's state, as a snapshot carries them."""

    config: GroupConfig
    generation: int
    slots: list[SlotInfo]
    """One record per allocated slot, index == slot number."""
    sealed: list[tuple[str, int, int]]
    """The sealed upload window, oldest first: ``(upload_id, slot, generation)``."""
    prepared: list[TxnInfo] = field(default_factory=list)
    """Prepared edit txns, in prepare order."""
    finished: list[TxnInfo] = field(default_factory=list)
    """The finished edit txn window, oldest first (slim records: no slot lists)."""
    file_versions: list[tuple[str, int]] = field(default_factory=list)
    """``(file_id, version)`` of every file this group applied an edit commit of."""
    inline: list[tuple[int, int, bytes]] = field(default_factory=list)
    """``(slot, generation, payload)`` of every inline upload the table still carries."""


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
        "prepared": [_prepared_row(info) for info in parts.prepared],
        "finished": [[i.txn, i.state, i.file_id, i.version] for i in parts.finished],
        "file_versions": [[f, v] for f, v in sorted(parts.file_versions)],
        "inline": [[s, g, base64.b64encode(p).decode("ascii")] for s, g, p in parts.inline],
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
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise IncompatibleVolume(
            f"snapshot version {_shown(version)} is not one of {list(READABLE_VERSIONS)}",
            group=group,
        )
    keys = _KEYS_OF[version]
    if set(doc) != keys:
        raise corrupt(f"keys {sorted(doc)} are not {sorted(keys)}")
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
        prepared=[_parse_prepared(row) for row in _list(doc.get("prepared", []), "prepared")],
        finished=_parse_finished(_list(doc.get("finished", []), "finished")),
        file_versions=_parse_versions(_list(doc.get("file_versions", []), "file_versions")),
        inline=_parse_inline(_list(doc.get("inline", []), "inline")),
    )


def _parse_inline(rows: list[Any]) -> list[tuple[int, int, bytes]]:
    op = "restore"
    out: list[tuple[int, int, bytes]] = []
    for row in rows:
        if not isinstance(row, list) or len(row) != 3 or not isinstance(row[2], str):
            raise InvalidArgument("an inline payload has the wrong shape", op=op, field="inline")
        slot = check_int(row[0], op=op, field="inline.slot", lo=0, hi=MAX_SLOT)
        gen = check_int(row[1], op=op, field="inline.generation", lo=1, hi=MAX_GENERATION)
        try:
            payload = base64.b64decode(row[2], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidArgument("an inline payload is not base64", op=op, slot=slot) from exc
        if len(payload) > MAX_INLINE:
            raise InvalidArgument("an inline payload over its bound", op=op, slot=slot)
        out.append((slot, gen, payload))
    if [s for s, _, _ in out] != sorted({s for s, _, _ in out}):
        raise InvalidArgument("inline payloads are not in slot order, once each", op=op)
    return out


def _list(raw: object, name: str) -> list[Any]:
    if not isinstance(raw, list):
        raise InvalidArgument(f"{name} must be a list", op="restore", field=name)
    return raw


def _prepared_row(info: TxnInfo) -> list[Any]:
    move = None
    if info.move is not None:
        move = [info.move[0], info.move[1], wire_location(info.move[2])]
    return [
        info.txn,
        info.file_id,
        info.prepared_at_ms,
        [list(r) for r in info.lock],
        move,
        [list(r) for r in info.new],
        *([keep_wire(info.keep)] if info.keep else []),
    ]


def _parse_prepared(row: object) -> TxnInfo:
    op = "restore"
    if not isinstance(row, list) or len(row) not in (6, 7):
        raise InvalidArgument("a prepared txn has the wrong shape", op=op, field="prepared")
    txn, file_id, at, lock, move, new = row[:6]
    keep = row[6] if len(row) == 7 else []
    # The command's own decoding checks every field and the cross-field rules.
    prepare = Prepare.from_dict(
        {
            "op": Prepare.OP,
            "txn": txn,
            "file_id": file_id,
            "now_ms": at,
            "lock": lock,
            "move": move,
            "new": new,
            "keep": keep,
        }
    )
    return TxnInfo(
        txn=prepare.txn,
        state=PREPARED,
        file_id=prepare.file_id,
        prepared_at_ms=prepare.now_ms,
        lock=prepare.lock,
        move=prepare.move,
        new=prepare.new,
        keep=prepare.keep,
    )


def _parse_finished(rows: list[Any]) -> list[TxnInfo]:
    op = "restore"
    if len(rows) > EDIT_WINDOW:
        raise InvalidArgument("finished txn window over its bound", op=op, field="finished")
    out = []
    for row in rows:
        if not isinstance(row, list) or len(row) != 4:
            raise InvalidArgument("a finished txn has the wrong shape", op=op, field="finished")
        txn, state, file_id, version = row
        if state not in (COMMITTED, ROLLED_BACK):
            raise InvalidArgument("unknown txn state", op=op, field="finished.state")
        if file_id != "" or state == COMMITTED:
            check_file_id(file_id, op=op, field="finished.file_id")
        lo = 1 if state == COMMITTED else 0
        hi = MAX_VERSION if state == COMMITTED else 0
        out.append(
            TxnInfo(
                txn=check_txn(txn, op=op, field="finished.txn"),
                state=state,
                file_id=file_id,
                prepared_at_ms=0,
                version=check_int(version, op=op, field="finished.version", lo=lo, hi=hi),
            )
        )
    return out


def _parse_versions(rows: list[Any]) -> list[tuple[str, int]]:
    op = "restore"
    out: list[tuple[str, int]] = []
    for row in rows:
        if not isinstance(row, list) or len(row) != 2:
            raise InvalidArgument("a file version has the wrong shape", op=op)
        file_id = check_file_id(row[0], op=op, field="file_versions.file_id")
        version = check_int(row[1], op=op, field="file_versions.version", lo=1, hi=MAX_VERSION)
        out.append((file_id, version))
    if [f for f, _ in out] != sorted({f for f, _ in out}):
        raise InvalidArgument("file versions are not sorted by file id, once each", op=op)
    return out


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
