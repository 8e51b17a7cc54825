"""The replicated slot table of one storage group: a pure, deterministic state machine.

A storage group is 3 nodes replicating through Raft. The Raft log carries commands only (see
:mod:`mydfs.storage.group_commands`); payloads move over HTTP. Every node feeds the committed
commands, in log order, to its own :class:`GroupState` through :meth:`GroupState.apply`, and so
every node holds the same table: which slot holds which slice, in which state, who holds the
payload durably, and which slots are free. ``docs/group_state.md`` has the command table, the
slot state diagram and the settlement rule.

Purity. Nothing in here touches a disk, a socket, a thread, a clock or a random source. Time
enters only inside commands (``Reserve.now_ms``). The same commands in the same order produce
the same state (:meth:`GroupState.digest`) and the same results on every node.

Results. :meth:`GroupState.apply` never raises for a command it refuses: it returns
``{"ok": True, "op": ..., ...}`` on success and ``{"ok": False, "op": ..., "error": code,
"message": ..., "context": {...}}`` on refusal (the wire form of the typed error from
:mod:`mydfs.common.errors`, which :func:`raise_for_result` turns back into an exception). A
malformed command, one that :func:`~mydfs.storage.group_commands.decode_command` rejects with
:class:`~mydfs.common.errors.InvalidArgument`, is refused the same way with
``error == "invalid_argument"``. A refused command changes nothing. Raising inside a Raft apply
function would stall the log on every node, so only a broken internal invariant raises
(:class:`~mydfs.common.errors.InvariantViolation`); the node must then stop.

Threads. The object is not locked. The Raft layer applies commands on its own thread, so the
host must serialise reads with :meth:`GroupState.apply` (one lock around both), or read only
from the apply thread. Every value handed out (:class:`SlotInfo`, :class:`UploadRef`,
:class:`GroupStats`, lists) is immutable or a fresh copy, so it can be used after the lock is
released.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final

import orjson

from mydfs.common.errors import (
    AlreadyExists,
    Conflict,
    Corrupt,
    DiskFull,
    IncompatibleVolume,
    InvalidArgument,
    InvariantViolation,
    MydfsError,
    NotFound,
    SliceDeleted,
    SliceMoved,
    error_from_dict,
)
from mydfs.common.location import MAX_GROUP, MAX_SLOT, Location
from mydfs.storage.group_commands import (
    MAX_CRC32C,
    MAX_GENERATION,
    MAX_HOLDERS,
    MAX_SLICE_INDEX,
    MAX_TIME_MS,
    MAX_UPLOAD_WINDOW,
    Abort,
    Command,
    Configure,
    Confirm,
    Delete,
    Move,
    Noop,
    Release,
    Relink,
    Reserve,
    Seal,
    Unconfirm,
    check_file_id,
    check_holders,
    check_int,
    check_length,
    check_upload_id,
    decode_command,
    parse_location,
)

__all__ = [
    "DEFAULT_MIN_HOLDERS",
    "DEFAULT_UPLOAD_WINDOW",
    "SNAPSHOT_FORMAT",
    "SNAPSHOT_VERSION",
    "GroupConfig",
    "GroupState",
    "GroupStats",
    "SlotInfo",
    "SlotState",
    "UploadRef",
    "raise_for_result",
]

DEFAULT_UPLOAD_WINDOW: Final = 50_000
"""Sealed upload ids kept for retries. At 125 slices/s (500 MB/s of ingest into one group) that
is more than 6 minutes of uploads; it costs about 250 bytes of memory per id."""

DEFAULT_MIN_HOLDERS: Final = 2
"""A seal needs the payload durable on a majority of the 3 nodes of a group."""

SNAPSHOT_FORMAT: Final = "mydfs.group_state"
SNAPSHOT_VERSION: Final = 1

_SLOT_FIELDS: Final = (
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

Result = dict[str, Any]


class SlotState(StrEnum):
    """The state of an allocated slot. Slots at or past :attr:`GroupStats.end` were never
    allocated; they have no state and no record."""

    PENDING = "pending"
    """Reserved for an upload whose payload is not yet durable on a majority; not readable."""
    LIVE = "live"
    """Sealed: readable from any node in ``holders``."""
    MOVED = "moved"
    """301: the slice was edited and lives at ``target`` now. Not reusable until released."""
    DELETED = "deleted"
    """404: deleted, aborted or released. Exactly the slots of the free-slice table."""


@dataclass(frozen=True, slots=True)
class SlotInfo:
    """One slot's record. It stays after the slot is deleted (state ``DELETED``, no holders)
    until the slot is reused, so late retries of ``abort``/``delete`` can be recognised."""

    slot: int
    state: SlotState
    generation: int
    """Group-wide counter value of the reservation that last wrote this slot."""
    upload_id: str
    file_id: str
    slice_index: int
    length: int
    crc32c: int
    next: Location | None
    holders: tuple[str, ...]
    """Node ids holding the payload durably, sorted. Empty for PENDING and DELETED slots."""
    target: Location | None
    """Where a MOVED slot redirects to; ``None`` in every other state."""
    reserved_at_ms: int
    """The leader's clock when the reservation was committed (``Reserve.now_ms``)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (locations as ``[group, slot]``)."""
        return {
            "slot": self.slot,
            "state": self.state.value,
            "generation": self.generation,
            "upload_id": self.upload_id,
            "file_id": self.file_id,
            "slice_index": self.slice_index,
            "length": self.length,
            "crc32c": self.crc32c,
            "next": _wire(self.next),
            "holders": list(self.holders),
            "target": _wire(self.target),
            "reserved_at_ms": self.reserved_at_ms,
        }

    def _row(self) -> list[Any]:
        return [
            self.slot,
            self.state.value,
            self.generation,
            self.upload_id,
            self.file_id,
            self.slice_index,
            self.length,
            self.crc32c,
            _wire(self.next),
            list(self.holders),
            _wire(self.target),
            self.reserved_at_ms,
        ]


@dataclass(frozen=True, slots=True)
class UploadRef:
    """An entry of the upload-id index: where ``upload_id`` was stored and what became of it.

    ``state`` is the slot's state if the slot still carries this upload's generation, else
    ``DELETED`` (the slot was freed and reused since)."""

    upload_id: str
    slot: int
    generation: int
    sealed: bool
    state: SlotState


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """Replicated configuration; changed only by the ``configure`` command."""

    max_slots: int | None
    """Volume capacity in slots; ``None`` means unbounded."""
    min_holders: int
    upload_window: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_slots": self.max_slots,
            "min_holders": self.min_holders,
            "upload_window": self.upload_window,
        }


@dataclass(frozen=True, slots=True)
class GroupStats:
    group: int
    end: int
    """Slots ever allocated: the next slot at the end of the volume."""
    generation: int
    """The last generation number handed out (0 before the first reservation)."""
    pending: int
    live: int
    moved: int
    deleted: int
    """404 slots, which is also the size of the free-slice table."""
    bytes_live: int
    bytes_pending: int
    available: int | None
    """Slots a reservation can still get (free table + room at the end); ``None`` if
    unbounded."""
    uploads_pending: int
    uploads_sealed: int
    """Size of the bounded window of sealed upload ids."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "end": self.end,
            "generation": self.generation,
            "pending": self.pending,
            "live": self.live,
            "moved": self.moved,
            "deleted": self.deleted,
            "bytes_live": self.bytes_live,
            "bytes_pending": self.bytes_pending,
            "available": self.available,
            "uploads_pending": self.uploads_pending,
            "uploads_sealed": self.uploads_sealed,
        }


def _wire(location: Location | None) -> list[int] | None:
    return None if location is None else [location.group, location.slot]


def raise_for_result(result: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return ``result`` if it is a success, else raise the typed error it carries."""
    if result.get("ok") is True:
        return result
    raise error_from_dict(dict(result))


def _refusal(op: str | None, exc: MydfsError) -> Result:
    out: Result = {"ok": False, "op": op}
    out.update(exc.to_dict())
    return out


class GroupState:
    """The slot table of storage group ``group``; see the module docstring and
    ``docs/group_state.md``.

    ``max_slots``, ``min_holders`` and ``upload_window`` are the genesis configuration: every
    node of the group must construct its machine with the same values. Afterwards they change
    only through ``configure`` commands, and :meth:`restore` takes them from the snapshot."""

    def __init__(
        self,
        group: int,
        *,
        max_slots: int | None = None,
        min_holders: int = DEFAULT_MIN_HOLDERS,
        upload_window: int = DEFAULT_UPLOAD_WINDOW,
    ) -> None:
        self._group = check_int(group, op="init", field="group", lo=0, hi=MAX_GROUP)
        conf = Configure(max_slots=max_slots, min_holders=min_holders, upload_window=upload_window)
        self._config = GroupConfig(conf.max_slots, conf.min_holders, conf.upload_window)
        self._slots: list[SlotInfo] = []  # index == slot number; len == end
        self._free: list[int] = []  # min-heap of the DELETED slots
        self._generation = 0
        self._pending: dict[str, int] = {}  # upload id -> slot, for PENDING slots
        self._sealed: OrderedDict[str, tuple[int, int]] = OrderedDict()  # id -> (slot, gen)
        self._counts: dict[SlotState, int] = dict.fromkeys(SlotState, 0)
        self._bytes: dict[SlotState, int] = dict.fromkeys(SlotState, 0)

    # ----------------------------------------------------------------------------------------
    # applying commands

    def apply(self, command: Mapping[str, Any] | Command) -> Result:
        """Apply one committed command (its wire dict, or a typed command) and return the result.

        Never raises for a malformed or refused command (see the module docstring); raises
        :class:`InvariantViolation` only if the table itself is found broken."""
        if isinstance(command, Command):
            return self.apply_command(command)
        try:
            decoded = decode_command(command)
        except InvalidArgument as exc:
            exc.context.setdefault("group", self._group)
            return _refusal(_op_name(command), exc)
        return self.apply_command(decoded)

    def apply_command(self, command: Command) -> Result:
        """Apply a typed command; see :meth:`apply`."""
        try:
            match command:
                case Reserve():
                    return self._reserve(command)
                case Seal():
                    return self._seal(command)
                case Abort():
                    return self._abort(command)
                case Delete():
                    return self._delete(command)
                case Move():
                    return self._move(command)
                case Relink():
                    return self._relink(command)
                case Confirm():
                    return self._confirm(command)
                case Unconfirm():
                    return self._unconfirm(command)
                case Release():
                    return self._release(command)
                case Configure():
                    return self._configure(command)
                case Noop():
                    return {"ok": True, "op": command.OP}
                case _:
                    raise InvalidArgument(
                        f"unsupported command {type(command).__name__}", group=self._group
                    )
        except InvariantViolation:
            raise
        except MydfsError as exc:
            return _refusal(command.OP, exc)

    # Each handler checks every precondition first and raises a typed error (turned into a
    # refusal result by apply_command) before it changes anything.

    def _reserve(self, c: Reserve) -> Result:
        ref = self.upload(c.upload_id)
        if ref is not None:
            return self._reserve_again(c, ref)
        slot = self._next_slot()
        if slot is None:
            raise DiskFull(
                "the group has no free slot",
                group=self._group,
                max_slots=self._config.max_slots,
                upload_id=c.upload_id,
            )
        if c.next == Location(self._group, slot):
            raise InvalidArgument(
                "a slice cannot be its own next slice",
                group=self._group,
                slot=slot,
                field="next",
                reason="self_link",
            )
        reuse = slot < len(self._slots)
        if reuse and self._slots[slot].state is not SlotState.DELETED:
            raise InvariantViolation(
                "the free table holds a slot that is not deleted",
                group=self._group,
                slot=slot,
                state=self._slots[slot].state.value,
            )
        if self._generation >= MAX_GENERATION:
            raise InvariantViolation("generation counter exhausted", group=self._group)
        generation = self._generation + 1
        info = SlotInfo(
            slot=slot,
            state=SlotState.PENDING,
            generation=generation,
            upload_id=c.upload_id,
            file_id=c.file_id,
            slice_index=c.slice_index,
            length=c.length,
            crc32c=c.crc32c,
            next=c.next,
            holders=(),
            target=None,
            reserved_at_ms=c.now_ms,
        )
        # -- mutation starts here
        if reuse:
            heapq.heappop(self._free)
            self._put(info)
        else:
            self._slots.append(info)
            self._account(info, +1)
        self._generation = generation
        self._pending[c.upload_id] = slot
        return self._ok(c, info, duplicate=False)

    def _reserve_again(self, c: Reserve, ref: UploadRef) -> Result:
        info = self._slots[ref.slot]
        if info.generation != ref.generation:
            # Sealed long ago, then freed and reused: the upload's outcome was a 404.
            return {
                "ok": True,
                "op": c.OP,
                "slot": ref.slot,
                "generation": ref.generation,
                "state": SlotState.DELETED.value,
                "duplicate": True,
                "holders": [],
            }
        same = (info.file_id, info.slice_index, info.length, info.crc32c) == (
            c.file_id,
            c.slice_index,
            c.length,
            c.crc32c,
        )
        if not same:
            raise AlreadyExists(
                "upload id already names a different slice",
                group=self._group,
                slot=info.slot,
                upload_id=c.upload_id,
            )
        return self._ok(c, info, duplicate=True)

    def _seal(self, c: Seal) -> Result:
        info = self._get(c.slot)
        self._check_upload(info, c.upload_id, c.generation)
        if info.state is SlotState.LIVE:
            merged = tuple(sorted(set(info.holders) | set(c.holders)))
            if len(merged) > MAX_HOLDERS:
                raise InvalidArgument(
                    f"a slot can have at most {MAX_HOLDERS} holders",
                    group=self._group,
                    slot=info.slot,
                    field="holders",
                )
            if merged != info.holders:
                info = self._put(replace(info, holders=merged))
            return self._ok(c, info, duplicate=True)
        if info.state is not SlotState.PENDING:
            raise self._wrong_state(info, c.OP, "pending")
        if len(c.holders) < self._config.min_holders:
            raise InvalidArgument(
                f"seal needs {self._config.min_holders} holders, got {len(c.holders)}",
                group=self._group,
                slot=info.slot,
                field="holders",
                reason="too_few_holders",
            )
        # -- mutation starts here
        info = self._put(replace(info, state=SlotState.LIVE, holders=c.holders))
        del self._pending[info.upload_id]
        self._sealed.pop(info.upload_id, None)
        self._sealed[info.upload_id] = (info.slot, info.generation)
        self._trim_window()
        return self._ok(c, info, duplicate=False)

    def _abort(self, c: Abort) -> Result:
        info = self._get(c.slot)
        self._check_upload(info, c.upload_id, c.generation)
        if info.state is SlotState.DELETED:
            return self._ok(c, info, duplicate=True)
        if info.state is not SlotState.PENDING:
            raise self._wrong_state(info, c.OP, "pending")
        del self._pending[info.upload_id]
        info = self._free_slot(info)
        return self._ok(c, info, duplicate=False)

    def _delete(self, c: Delete) -> Result:
        info = self._get(c.slot)
        self._check_generation(info, c.generation)
        if info.state is SlotState.DELETED:
            return self._ok(c, info, duplicate=True)
        if info.state is not SlotState.LIVE:
            raise self._wrong_state(info, c.OP, "live")
        info = self._free_slot(info)
        return self._ok(c, info, duplicate=False)

    def _move(self, c: Move) -> Result:
        info = self._get(c.slot)
        self._check_generation(info, c.generation)
        if c.target == Location(self._group, info.slot):
            raise InvalidArgument(
                "a slot cannot redirect to itself",
                group=self._group,
                slot=info.slot,
                field="target",
                reason="self_redirect",
            )
        if info.state is SlotState.MOVED and info.target == c.target:
            return self._ok(c, info, duplicate=True)
        if info.state is not SlotState.LIVE:
            raise self._wrong_state(info, c.OP, "live")
        info = self._put(replace(info, state=SlotState.MOVED, target=c.target))
        return self._ok(c, info, duplicate=False)

    def _relink(self, c: Relink) -> Result:
        info = self._get(c.slot)
        self._check_generation(info, c.generation)
        if c.next == Location(self._group, info.slot):
            raise InvalidArgument(
                "a slice cannot be its own next slice",
                group=self._group,
                slot=info.slot,
                field="next",
                reason="self_link",
            )
        if info.state not in (SlotState.PENDING, SlotState.LIVE):
            raise self._wrong_state(info, c.OP, "pending|live")
        if info.next == c.next:
            return self._ok(c, info, duplicate=True)
        info = self._put(replace(info, next=c.next))
        return self._ok(c, info, duplicate=False)

    def _confirm(self, c: Confirm) -> Result:
        info = self._get(c.slot)
        self._check_generation(info, c.generation)
        if info.state is not SlotState.LIVE:
            raise self._wrong_state(info, c.OP, "live")
        if c.node in info.holders:
            return self._ok(c, info, duplicate=True)
        if len(info.holders) >= MAX_HOLDERS:
            raise InvalidArgument(
                f"a slot can have at most {MAX_HOLDERS} holders",
                group=self._group,
                slot=info.slot,
                field="node",
            )
        info = self._put(replace(info, holders=tuple(sorted((*info.holders, c.node)))))
        return self._ok(c, info, duplicate=False)

    def _unconfirm(self, c: Unconfirm) -> Result:
        info = self._get(c.slot)
        self._check_generation(info, c.generation)
        if info.state is not SlotState.LIVE:
            raise self._wrong_state(info, c.OP, "live")
        if c.node not in info.holders:
            return self._ok(c, info, duplicate=True)
        info = self._put(replace(info, holders=tuple(h for h in info.holders if h != c.node)))
        return self._ok(c, info, duplicate=False)

    def _release(self, c: Release) -> Result:
        info = self._get(c.slot)
        self._check_generation(info, c.generation)
        if info.state is SlotState.DELETED:
            return self._ok(c, info, duplicate=True)
        if info.state is not SlotState.MOVED:
            raise self._wrong_state(info, c.OP, "moved")
        info = self._free_slot(info)
        return self._ok(c, info, duplicate=False)

    def _configure(self, c: Configure) -> Result:
        end = len(self._slots)
        if c.max_slots is not None and c.max_slots < end:
            raise Conflict(
                f"max_slots {c.max_slots} is below the {end} slots already allocated",
                group=self._group,
                reason="below_end",
            )
        new = GroupConfig(c.max_slots, c.min_holders, c.upload_window)
        unchanged = new == self._config
        self._config = new
        self._trim_window()
        return {"ok": True, "op": c.OP, "duplicate": unchanged, "config": new.to_dict()}

    # ----------------------------------------------------------------------------------------
    # mutation helpers (the only code that writes the tables)

    def _account(self, info: SlotInfo, sign: int) -> None:
        self._counts[info.state] += sign
        self._bytes[info.state] += sign * info.length

    def _put(self, info: SlotInfo) -> SlotInfo:
        """Replace the record of ``info.slot`` (which must exist) and keep the counters."""
        self._account(self._slots[info.slot], -1)
        self._slots[info.slot] = info
        self._account(info, +1)
        return info

    def _free_slot(self, info: SlotInfo) -> SlotInfo:
        """Any state -> DELETED, into the free table."""
        freed = self._put(replace(info, state=SlotState.DELETED, holders=(), target=None))
        heapq.heappush(self._free, freed.slot)
        return freed

    def _trim_window(self) -> None:
        while len(self._sealed) > self._config.upload_window:
            self._sealed.popitem(last=False)

    # ----------------------------------------------------------------------------------------
    # precondition helpers (raise, never mutate)

    def _get(self, slot: int) -> SlotInfo:
        if not 0 <= slot < len(self._slots):
            raise NotFound(
                f"slot {slot} was never allocated",
                group=self._group,
                slot=slot,
                reason="unallocated",
            )
        return self._slots[slot]

    def _check_upload(self, info: SlotInfo, upload_id: str, generation: int) -> None:
        if info.upload_id != upload_id:
            raise Conflict(
                f"slot {info.slot} belongs to another upload",
                group=self._group,
                slot=info.slot,
                generation=info.generation,
                upload_id=upload_id,
                reason="upload_mismatch",
            )
        self._check_generation(info, generation)

    def _check_generation(self, info: SlotInfo, generation: int | None) -> None:
        if generation is not None and generation != info.generation:
            raise Conflict(
                f"slot {info.slot} is at generation {info.generation}, not {generation}",
                group=self._group,
                slot=info.slot,
                generation=info.generation,
                expected_generation=generation,
                reason="stale_generation",
            )

    def _wrong_state(self, info: SlotInfo, op: str, expected: str) -> MydfsError:
        ctx: dict[str, Any] = {
            "group": self._group,
            "slot": info.slot,
            "generation": info.generation,
            "state": info.state.value,
            "expected": expected,
        }
        if info.state is SlotState.DELETED:
            return SliceDeleted(f"slot {info.slot} is deleted (404)", **ctx)
        if info.state is SlotState.MOVED and info.target is not None:
            return SliceMoved(
                f"slot {info.slot} moved to {info.target} (301)",
                target=(info.target.group, info.target.slot),
                **ctx,
            )
        return Conflict(
            f"{op} needs a {expected} slot; slot {info.slot} is {info.state.value}",
            reason="wrong_state",
            **ctx,
        )

    def _next_slot(self) -> int | None:
        if self._free:
            return self._free[0]
        end = len(self._slots)
        if self._config.max_slots is not None and end >= self._config.max_slots:
            return None
        return end

    def _ok(self, c: Command, info: SlotInfo, *, duplicate: bool) -> Result:
        out: Result = {
            "ok": True,
            "op": c.OP,
            "slot": info.slot,
            "generation": info.generation,
            "state": info.state.value,
            "duplicate": duplicate,
            "holders": list(info.holders),
        }
        if info.target is not None:
            out["target"] = _wire(info.target)
        return out

    # ----------------------------------------------------------------------------------------
    # read API

    @property
    def group(self) -> int:
        return self._group

    @property
    def config(self) -> GroupConfig:
        return self._config

    def get(self, slot: int) -> SlotInfo | None:
        """The record of ``slot``, or ``None`` if it was never allocated."""
        if 0 <= slot < len(self._slots):
            return self._slots[slot]
        return None

    def require_live(self, slot: int, generation: int | None = None) -> SlotInfo:
        """The record of a readable slot, else the typed error a reader should see:
        :class:`NotFound` (never allocated, or still pending), :class:`SliceDeleted` (404, or
        reused since ``generation``) or :class:`SliceMoved` (301, with the target)."""
        info = self.get(slot)
        if info is None:
            raise NotFound(f"slot {slot} was never allocated", group=self._group, slot=slot)
        if generation is not None and generation != info.generation:
            raise SliceDeleted(
                f"slot {slot} was reused since generation {generation}",
                group=self._group,
                slot=slot,
                generation=info.generation,
                reason="reused",
            )
        if info.state is SlotState.LIVE:
            return info
        if info.state is SlotState.PENDING:
            raise NotFound(
                f"slot {slot} is not sealed yet", group=self._group, slot=slot, reason="pending"
            )
        raise self._wrong_state(info, "read", "live")

    def slots(self, state: SlotState | None = None) -> list[SlotInfo]:
        """Every allocated slot's record (of one ``state`` if given), by slot number."""
        records = list(self._slots)
        if state is None:
            return records
        return [r for r in records if r.state is state]

    def free_slots(self) -> list[int]:
        """The free-slice table (404 slots), lowest first: the order reservations reuse them."""
        return sorted(self._free)

    def next_slot(self) -> int | None:
        """The slot the next new reservation would get; ``None`` if the group is full."""
        return self._next_slot()

    def holders(self, slot: int) -> tuple[str, ...]:
        """Node ids holding ``slot``'s payload durably (empty unless LIVE or MOVED)."""
        return self._get(slot).holders

    def pending(self, reserved_before_ms: int | None = None) -> list[SlotInfo]:
        """PENDING slots, oldest reservation first; with ``reserved_before_ms``, only those
        reserved earlier than that (leader clock) time. The settlement worklist."""
        records = [self._slots[s] for s in list(self._pending.values())]
        if reserved_before_ms is not None:
            records = [r for r in records if r.reserved_at_ms < reserved_before_ms]
        return sorted(records, key=lambda r: r.generation)

    def missing_on(self, node: str) -> list[SlotInfo]:
        """LIVE slots whose payload ``node`` does not hold: the reconciler's fetch list."""
        return [r for r in list(self._slots) if r.state is SlotState.LIVE and node not in r.holders]

    def upload(self, upload_id: str) -> UploadRef | None:
        """The upload-id index: what became of ``upload_id``, or ``None`` if unknown (never
        reserved, aborted, or sealed so long ago that it left the window)."""
        slot = self._pending.get(upload_id)
        if slot is not None:
            info = self._slots[slot]
            return UploadRef(upload_id, slot, info.generation, False, SlotState.PENDING)
        entry = self._sealed.get(upload_id)
        if entry is None:
            return None
        slot, generation = entry
        info = self._slots[slot]
        state = info.state if info.generation == generation else SlotState.DELETED
        return UploadRef(upload_id, slot, generation, True, state)

    def uploads(self) -> list[UploadRef]:
        """The whole upload-id index: pending uploads (oldest first), then the sealed window
        (oldest first, which is the eviction order)."""
        refs = [self.upload(r.upload_id) for r in self.pending()]
        refs += [self.upload(uid) for uid in list(self._sealed)]
        return [r for r in refs if r is not None]

    def stats(self) -> GroupStats:
        end = len(self._slots)
        room = None if self._config.max_slots is None else self._config.max_slots - end
        return GroupStats(
            group=self._group,
            end=end,
            generation=self._generation,
            pending=self._counts[SlotState.PENDING],
            live=self._counts[SlotState.LIVE],
            moved=self._counts[SlotState.MOVED],
            deleted=self._counts[SlotState.DELETED],
            bytes_live=self._bytes[SlotState.LIVE],
            bytes_pending=self._bytes[SlotState.PENDING],
            available=None if room is None else room + len(self._free),
            uploads_pending=len(self._pending),
            uploads_sealed=len(self._sealed),
        )

    # ----------------------------------------------------------------------------------------
    # snapshot, restore, digest, invariants

    def snapshot(self) -> bytes:
        """The whole state as canonical JSON (orjson, sorted keys): equal states give equal
        bytes. Derived tables (free table, pending index, counters) are rebuilt on restore."""
        doc = {
            "format": SNAPSHOT_FORMAT,
            "version": SNAPSHOT_VERSION,
            "group": self._group,
            "config": self._config.to_dict(),
            "generation": self._generation,
            "slot_fields": list(_SLOT_FIELDS),
            "slots": [info._row() for info in self._slots],
            "sealed": [[uid, s, g] for uid, (s, g) in self._sealed.items()],
        }
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)

    def digest(self) -> str:
        """SHA-256 (hex) of :meth:`snapshot`: equal on nodes that applied the same commands."""
        return hashlib.sha256(self.snapshot()).hexdigest()

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a :meth:`snapshot`. The snapshot is checked completely
        first; on :class:`Corrupt` (bad bytes or structure) or :class:`IncompatibleVolume`
        (another group, a newer format) nothing changes."""
        fresh = _load_snapshot(data, self._group)
        self._config = fresh._config
        self._slots = fresh._slots
        self._free = fresh._free
        self._generation = fresh._generation
        self._pending = fresh._pending
        self._sealed = fresh._sealed
        self._counts = fresh._counts
        self._bytes = fresh._bytes

    def check_invariants(self) -> None:
        """Check every cross-table invariant (O(number of slots)); raise
        :class:`InvariantViolation` naming the first one broken."""

        def broken(message: str, **context: Any) -> InvariantViolation:
            return InvariantViolation(message, group=self._group, **context)

        end = len(self._slots)
        counts = dict.fromkeys(SlotState, 0)
        sizes = dict.fromkeys(SlotState, 0)
        generations: set[int] = set()
        pending: dict[str, int] = {}
        deleted: set[int] = set()
        for index, info in enumerate(self._slots):
            if info.slot != index:
                raise broken("slot record filed under another number", slot=index)
            counts[info.state] += 1
            sizes[info.state] += info.length
            if not 1 <= info.generation <= self._generation or info.generation in generations:
                raise broken("bad or repeated generation", slot=index, generation=info.generation)
            generations.add(info.generation)
            if (info.target is not None) != (info.state is SlotState.MOVED):
                raise broken("a redirect target outside the MOVED state", slot=index)
            if info.holders and info.state in (SlotState.PENDING, SlotState.DELETED):
                raise broken("holders on a pending or deleted slot", slot=index)
            if info.state is SlotState.PENDING:
                if info.upload_id in pending:
                    raise broken("two pending slots share an upload id", slot=index)
                pending[info.upload_id] = index
            elif info.state is SlotState.DELETED:
                deleted.add(index)
        if counts != self._counts or sizes != self._bytes:
            raise broken("state counters out of step with the slot records")
        if len(self._free) != len(deleted) or set(self._free) != deleted:
            raise broken("free table is not exactly the set of deleted slots")
        if pending != self._pending:
            raise broken("pending upload index out of step with the slot records")
        if len(self._sealed) > self._config.upload_window:
            raise broken("sealed upload window over its bound")
        for uid, (slot, generation) in self._sealed.items():
            if uid in self._pending:
                raise broken("upload id both pending and sealed", upload_id=uid)
            if not 0 <= slot < end or not 1 <= generation <= self._generation:
                raise broken("sealed upload points outside the table", upload_id=uid)
        if self._config.max_slots is not None and self._config.max_slots < end:
            raise broken("more slots allocated than max_slots")


def _op_name(command: object) -> str | None:
    if isinstance(command, Mapping):
        op = command.get("op")
        if isinstance(op, str) and len(op) <= 32 and op.isidentifier():
            return op
    return None


def _load_snapshot(data: bytes, group: int) -> GroupState:
    """Parse and fully check a snapshot into a new machine for ``group``."""

    def corrupt(message: str, **context: Any) -> Corrupt:
        return Corrupt(f"group state snapshot: {message}", **{"group": group, **context})

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
    keys = {"format", "version", "group", "config", "generation", "slot_fields", "slots", "sealed"}
    if set(doc) != keys:
        raise corrupt(f"keys {sorted(doc)} are not {sorted(keys)}")
    if type(doc["group"]) is not int or doc["group"] != group:
        raise IncompatibleVolume(f"snapshot belongs to group {_shown(doc['group'])}", group=group)
    if doc["slot_fields"] != list(_SLOT_FIELDS):
        raise corrupt("unknown slot record layout")
    try:
        return _build(doc, group)
    except (InvalidArgument, InvariantViolation) as exc:
        raise corrupt(exc.message, **exc.context) from exc


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _build(doc: dict[str, Any], group: int) -> GroupState:
    """The machine described by a snapshot document; raises InvalidArgument/InvariantViolation."""
    op = "restore"
    config = doc["config"]
    if not isinstance(config, dict) or set(config) != {"max_slots", "min_holders", "upload_window"}:
        raise InvalidArgument("bad config", op=op, field="config")
    conf = Configure.from_dict({"op": Configure.OP, **config})
    machine = GroupState(
        group,
        max_slots=conf.max_slots,
        min_holders=conf.min_holders,
        upload_window=conf.upload_window,
    )
    machine._generation = check_int(
        doc["generation"], op=op, field="generation", lo=0, hi=MAX_GENERATION
    )
    rows = doc["slots"]
    if not isinstance(rows, list) or len(rows) > MAX_SLOT + 1:
        raise InvalidArgument("slots must be a list", op=op, field="slots")
    for index, row in enumerate(rows):
        info = _parse_row(row, index)
        machine._slots.append(info)
        machine._account(info, +1)
        if info.state is SlotState.DELETED:
            machine._free.append(index)
        elif info.state is SlotState.PENDING:
            machine._pending.setdefault(info.upload_id, index)
    heapq.heapify(machine._free)
    sealed = doc["sealed"]
    if not isinstance(sealed, list) or len(sealed) > MAX_UPLOAD_WINDOW:
        raise InvalidArgument("sealed must be a list", op=op, field="sealed")
    for entry in sealed:
        if not isinstance(entry, list) or len(entry) != 3:
            raise InvalidArgument("sealed entries are [upload_id, slot, generation]", op=op)
        uid = check_upload_id(entry[0], op=op, field="sealed.upload_id")
        slot = check_int(entry[1], op=op, field="sealed.slot", lo=0, hi=MAX_SLOT)
        generation = check_int(entry[2], op=op, field="sealed.generation", lo=1, hi=MAX_GENERATION)
        if uid in machine._sealed:
            raise InvalidArgument("an upload id is sealed twice", op=op, upload_id=uid)
        machine._sealed[uid] = (slot, generation)
    machine.check_invariants()
    return machine


def _parse_row(row: object, index: int) -> SlotInfo:
    op = "restore"
    if not isinstance(row, list) or len(row) != len(_SLOT_FIELDS):
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
