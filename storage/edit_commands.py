"""The edit commands of a storage group's slot table: ``prepare``, ``commit``, ``rollback``.

They are a participant's half of the two-phase commit of an in-place file edit
(``docs/group_state.md``, "Edits"). Like every group command (:mod:`mydfs.storage.group_commands`)
they travel through the Raft log as small dicts of JSON types and decode strictly: every key
present, no other key, exact types and ranges; a malformed command raises
:class:`~mydfs.common.errors.InvalidArgument` naming ``op`` and ``field``. Wire forms::

    {"op": "prepare", "txn": hex32, "file_id": hex32, "now_ms": int,
     "lock": [[slot, generation], ...], "move": [slot, generation, [group, slot]] | null,
     "new": [[slot, generation], ...], "keep": [[slot, generation, [group, slot] | null], ...]}
    {"op": "commit", "txn": hex32, "version": int >= 1, "prev": int >= 0}
    {"op": "rollback", "txn": hex32}

Checks made here (the command alone): ``lock`` and ``new`` hold at most :data:`MAX_EDIT_SLOTS`
entries each, no slot twice, no slot in both; not both empty; ``move``'s slot and generation are
an entry of ``lock``; every ``keep`` entry is an entry of ``lock`` other than ``move``'s, no slot
twice. ``keep`` (a compaction's, ``docs/space.md``) may be absent on the wire: old logs and
snapshots have none, and a prepare without one encodes without the key. A commit's
``version`` is above its ``prev``. Everything that needs the table (states, generations,
owners, locks, the target's group) is the state machine's (:mod:`mydfs.storage.group_edits`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from mydfs.common.errors import InvalidArgument
from mydfs.common.location import Location
from mydfs.storage.group_commands import (
    Command,
    SlotRef,
    check_distinct,
    check_entries,
    check_int,
    parse_location,
    parse_slot_ref,
    parse_slot_refs,
    register,
)

__all__ = [
    "MAX_EDIT_SLOTS",
    "MAX_VERSION",
    "Commit",
    "KeepSpec",
    "Prepare",
    "Rollback",
    "SlotRef",
    "check_txn",
    "drop_of",
    "keep_wire",
]

MAX_EDIT_SLOTS: Final = 4096
"""At most this many entries in a prepare's ``lock`` and in its ``new``."""
MAX_VERSION: Final = 2**63 - 1

_TXN_RE: Final = re.compile(r"[0-9a-f]{32}")


def check_txn(raw: object, *, op: str, field: str = "txn") -> str:
    """A transaction id: 32 lowercase hex digits."""
    if not isinstance(raw, str):
        raise InvalidArgument(
            f"{field} must be a string, not {type(raw).__name__}", op=op, field=field
        )
    if _TXN_RE.fullmatch(raw) is None:
        raise InvalidArgument(f"{field} must be 32 lowercase hex digits", op=op, field=field)
    return raw


def _slot_refs(raw: object, op: str, field: str) -> tuple[SlotRef, ...]:
    return parse_slot_refs(raw, op, field, MAX_EDIT_SLOTS)


MoveSpec = tuple[int, int, Location]
"""``(slot, generation, target)``: the entry point that becomes a 301 to ``target``."""


def _move(raw: object, op: str, field: str) -> MoveSpec:
    if not isinstance(raw, list | tuple) or len(raw) != 3:
        raise InvalidArgument(
            f"{field} must be [slot, generation, [group, slot]] or null", op=op, field=field
        )
    slot, gen = parse_slot_ref(raw[:2], op, field)
    return (slot, gen, parse_location(raw[2], op=op, field=f"{field}.target"))


KeepSpec = tuple[int, int, Location | None]
"""``(slot, generation, next)``: a locked slot the commit keeps, its next pointer then ``next``."""


def _keep(raw: object, op: str, field: str) -> tuple[KeepSpec, ...]:
    out: list[KeepSpec] = []
    for item in check_entries(raw, op, field, "[slot, generation, next]", MAX_EDIT_SLOTS):
        if not isinstance(item, list | tuple) or len(item) != 3:
            raise InvalidArgument(
                f"{field} entries are [slot, generation, [group, slot] | null]", op=op, field=field
            )
        slot, gen = parse_slot_ref(item[:2], op, field)
        nxt = None if item[2] is None else parse_location(item[2], op=op, field=f"{field}.next")
        out.append((slot, gen, nxt))
    check_distinct([slot for slot, _, _ in out], op, field)
    return tuple(out)


def _txn(raw: object, op: str, field: str) -> str:
    return check_txn(raw, op=op, field=field)


def _int(lo: int, hi: int) -> Any:
    def parse(raw: object, op: str, field: str) -> int:
        return check_int(raw, op=op, field=field, lo=lo, hi=hi)

    return parse


@dataclass(frozen=True, slots=True)
class Prepare(Command):
    """Record an edit's prepare and lock its slots (``lock``: old slots the edit changes;
    ``move``: the entry point that becomes a 301; ``new``: the slices written for it; ``keep``:
    slots of ``lock`` the commit keeps, with their next pointer after it, as a compaction
    relinks a chain around its 301s)."""

    OP: ClassVar[str] = "prepare"
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"move"})
    PARSERS: ClassVar[dict[str, Any]] = {
        "txn": _txn,
        "lock": _slot_refs,
        "new": _slot_refs,
        "move": _move,
        "keep": _keep,
    }

    txn: str
    file_id: str
    now_ms: int
    lock: tuple[SlotRef, ...]
    move: MoveSpec | None
    new: tuple[SlotRef, ...]
    keep: tuple[KeepSpec, ...] = ()

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
        kept = {(slot, gen) for slot, gen, _ in self.keep}
        if not kept <= set(self.lock):
            raise InvalidArgument("a kept slot must be one of lock", op=self.OP, field="keep")
        if self.move is not None and (self.move[0], self.move[1]) in kept:
            raise InvalidArgument("the moved slot cannot be kept", op=self.OP, field="keep")

    @property
    def drop(self) -> tuple[SlotRef, ...]:
        """The slots of ``lock`` that become 404 at commit: all but the moved and kept ones."""
        return drop_of(self.lock, self.move, self.keep)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Prepare:
        if isinstance(data, Mapping) and "keep" not in data:
            data = {**data, "keep": []}
        # (not super(): a slots dataclass is a new class, which breaks the zero-argument form)
        return Command.from_dict.__func__(cls, data)  # type: ignore[attr-defined,no-any-return]

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
            **({"keep": keep_wire(self.keep)} if self.keep else {}),
        }


def keep_wire(keep: tuple[KeepSpec, ...]) -> list[list[Any]]:
    """``keep`` on the wire: ``[[slot, generation, [group, slot] | null], ...]``."""
    return [[s, g, None if n is None else [n.group, n.slot]] for s, g, n in keep]


def drop_of(
    lock: tuple[SlotRef, ...], move: MoveSpec | None, keep: tuple[KeepSpec, ...]
) -> tuple[SlotRef, ...]:
    """The slots of ``lock`` a commit frees: all but ``move``'s and ``keep``'s."""
    stay = {(slot, gen) for slot, gen, _ in keep}
    if move is not None:
        stay.add((move[0], move[1]))
    return tuple(ref for ref in lock if ref not in stay)


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
