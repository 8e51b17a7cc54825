"""The edit commands of a storage group's slot table: ``prepare``, ``commit``, ``rollback``.

They are a participant's half of the two-phase commit of an in-place file edit
(``docs/group_state.md``, "Edits"). Like every group command (:mod:`mydfs.storage.group_commands`)
they travel through the Raft log as small dicts of JSON types and decode strictly: every key
present, no other key, exact types and ranges; a malformed command raises
:class:`~mydfs.common.errors.InvalidArgument` naming ``op`` and ``field``. Wire forms::

    {"op": "prepare", "txn": hex32, "file_id": hex32, "now_ms": int,
     "lock": [[slot, generation], ...], "move": [slot, generation, [group, slot]] | null,
     "new": [[slot, generation], ...]}
    {"op": "commit", "txn": hex32, "version": int >= 1, "prev": int >= 0}
    {"op": "rollback", "txn": hex32}

Checks made here (the command alone): ``lock`` and ``new`` hold at most :data:`MAX_EDIT_SLOTS`
entries each, no slot twice, no slot in both; not both empty; ``move``'s slot and generation are
an entry of ``lock``; a commit's ``version`` is above its
``prev``. Everything that needs the table (states, generations, owners, locks, the target's
group) is the state machine's (:mod:`mydfs.storage.group_edits`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from mydfs.common.errors import InvalidArgument, SlotOutOfRange
from mydfs.common.location import MAX_SLOT, Location
from mydfs.storage.group_commands import (
    MAX_GENERATION,
    Command,
    check_int,
    parse_location,
    register,
)

__all__ = [
    "MAX_EDIT_SLOTS",
    "MAX_VERSION",
    "Commit",
    "Prepare",
    "Rollback",
    "SlotRef",
    "check_txn",
]

MAX_EDIT_SLOTS: Final = 4096
"""At most this many entries in a prepare's ``lock`` and in its ``new``."""
MAX_VERSION: Final = 2**63 - 1

_TXN_RE: Final = re.compile(r"[0-9a-f]{32}")

SlotRef = tuple[int, int]
"""A slice identity in this group: ``(slot, generation)``."""


def check_txn(raw: object, *, op: str, field: str = "txn") -> str:
    """A transaction id: 32 lowercase hex digits."""
    if not isinstance(raw, str):
        raise InvalidArgument(
            f"{field} must be a string, not {type(raw).__name__}", op=op, field=field
        )
    if _TXN_RE.fullmatch(raw) is None:
        raise InvalidArgument(f"{field} must be 32 lowercase hex digits", op=op, field=field)
    return raw


def _slot_ref(raw: object, op: str, field: str) -> SlotRef:
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        raise InvalidArgument(f"{field} entries are [slot, generation] pairs", op=op, field=field)
    slot = check_int(raw[0], op=op, field=f"{field}.slot", lo=0, hi=MAX_SLOT, error=SlotOutOfRange)
    gen = check_int(raw[1], op=op, field=f"{field}.generation", lo=1, hi=MAX_GENERATION)
    return (slot, gen)


def _slot_refs(raw: object, op: str, field: str) -> tuple[SlotRef, ...]:
    if not isinstance(raw, list | tuple):
        raise InvalidArgument(
            f"{field} must be a list of [slot, generation], not {type(raw).__name__}",
            op=op,
            field=field,
        )
    if len(raw) > MAX_EDIT_SLOTS:
        raise InvalidArgument(
            f"{field} has {len(raw)} entries, at most {MAX_EDIT_SLOTS} allowed", op=op, field=field
        )
    refs = tuple(_slot_ref(item, op, field) for item in raw)
    if len({slot for slot, _ in refs}) != len(refs):
        raise InvalidArgument(f"{field} names a slot twice", op=op, field=field)
    return refs


MoveSpec = tuple[int, int, Location]
"""``(slot, generation, target)``: the entry point that becomes a 301 to ``target``."""


def _move(raw: object, op: str, field: str) -> MoveSpec:
    if not isinstance(raw, list | tuple) or len(raw) != 3:
        raise InvalidArgument(
            f"{field} must be [slot, generation, [group, slot]] or null", op=op, field=field
        )
    slot, gen = _slot_ref(raw[:2], op, field)
    return (slot, gen, parse_location(raw[2], op=op, field=f"{field}.target"))


def _txn(raw: object, op: str, field: str) -> str:
    return check_txn(raw, op=op, field=field)


def _int(lo: int, hi: int) -> Any:
    def parse(raw: object, op: str, field: str) -> int:
        return check_int(raw, op=op, field=field, lo=lo, hi=hi)

    return parse


@dataclass(frozen=True, slots=True)
class Prepare(Command):
    """Record an edit's prepare and lock its slots (``lock``: old slots the edit changes;
    ``move``: the entry point that becomes a 301; ``new``: the slices written for it)."""

    OP: ClassVar[str] = "prepare"
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"move"})
    PARSERS: ClassVar[dict[str, Any]] = {
        "txn": _txn,
        "lock": _slot_refs,
        "new": _slot_refs,
        "move": _move,
    }

    txn: str
    file_id: str
    now_ms: int
    lock: tuple[SlotRef, ...]
    move: MoveSpec | None
    new: tuple[SlotRef, ...]

    def _check(self) -> None:
        if not self.lock and not self.new:
            raise InvalidArgument("a prepare locks or adds at least one slot", op=self.OP)
        # The same (slot, generation) cannot be both; the same slot at two generations can
        # (an edit planned on a stale chain locks a slot that a newer edit freed and this one
        # reserved again): the lock then fails as stale_generation, which the client retries.
        if set(self.lock) & set(self.new):
            raise InvalidArgument("a slice is both in lock and in new", op=self.OP, field="new")
        if self.move is not None and (self.move[0], self.move[1]) not in self.lock:
            raise InvalidArgument("the moved slot must be one of lock", op=self.OP, field="move")

    @property
    def drop(self) -> tuple[SlotRef, ...]:
        """The slots of ``lock`` that become 404 at commit: all but the moved one."""
        if self.move is None:
            return self.lock
        moved = (self.move[0], self.move[1])
        return tuple(ref for ref in self.lock if ref != moved)

    def to_dict(self) -> dict[str, Any]:
        move = None
        if self.move is not None:
            slot, gen, target = self.move
            move = [slot, gen, [target.group, target.slot]]
        return {
            "op": self.OP,
            "txn": self.txn,
            "file_id": self.file_id,
            "now_ms": self.now_ms,
            "lock": [list(ref) for ref in self.lock],
            "move": move,
            "new": [list(ref) for ref in self.new],
        }


@dataclass(frozen=True, slots=True)
class Commit(Command):
    """Apply a prepared edit: the move, the drops, ``file_version = version``; only when the
    file's version here is ``prev`` (commits of one file apply in the tracker's order)."""

    OP: ClassVar[str] = "commit"
    PARSERS: ClassVar[dict[str, Any]] = {
        "txn": _txn,
        "version": _int(1, MAX_VERSION),
        "prev": _int(0, MAX_VERSION),
    }

    txn: str
    version: int
    prev: int

    def _check(self) -> None:
        if self.version <= self.prev:
            raise InvalidArgument(
                f"version {self.version} must be above prev {self.prev}",
                op=self.OP,
                field="version",
            )


@dataclass(frozen=True, slots=True)
class Rollback(Command):
    """Undo a prepared edit: its new slices become 404, its locks go. For an unknown txn, only
    remembers it as rolled back (a late prepare of it is then refused)."""

    OP: ClassVar[str] = "rollback"
    PARSERS: ClassVar[dict[str, Any]] = {"txn": _txn}

    txn: str


register(Prepare, Commit, Rollback)
