"""The replicated slot table of one storage group: a pure, deterministic state machine.

A storage group is 3 nodes replicating through Raft. The Raft log carries commands only (see
:mod:`mydfs.storage.group_commands`); payloads move over HTTP. Every node feeds the committed
commands, in log order, to its own :class:`GroupState` through :meth:`GroupState.apply`, and so
every node holds the same table: which slot holds which slice, in which state, who holds the
payload durably, and which slots are free. ``docs/group_state.md`` has the command table, the
slot state diagram and the settlement rule.

Authority. In a running cluster this table alone decides slots: which slot a slice goes to, at
which generation, and which slots are free (its free-slice table, the ``DELETED`` slots). A
node's volume keeps a local free list of its own (``Volume.free_slots``) for the standalone
slice store and its disk bookkeeping; a node never allocates a replicated slot from it.

Layout. This module holds the command handlers (:class:`GroupState`); the tables, the read API,
snapshots and the invariant checks are in :mod:`mydfs.storage.group_table`, the values handed
out in :mod:`mydfs.storage.group_records`, the snapshot codec in
:mod:`mydfs.storage.group_snapshot`, and the slot state (shared with the on-disk header) in
:mod:`mydfs.storage.slot_state`. Every public name stays importable from here.

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

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from mydfs.common.errors import (
    AlreadyExists,
    Conflict,
    DiskFull,
    InvalidArgument,
    InvariantViolation,
    MydfsError,
)
from mydfs.common.location import Location
from mydfs.storage.edit_commands import Commit, Prepare, Rollback
from mydfs.storage.group_commands import (
    MAX_GENERATION,
    MAX_HOLDERS,
    Abort,
    Assign,
    Command,
    Configure,
    Confirm,
    ConfirmMany,
    Delete,
    Move,
    Noop,
    Put,
    Release,
    Relink,
    Reserve,
    Seal,
    Unconfirm,
    decode_command,
)
from mydfs.storage.group_edits import EditHandlers
from mydfs.storage.group_records import (
    DEFAULT_MIN_HOLDERS,
    DEFAULT_UPLOAD_WINDOW,
    GroupConfig,
    GroupStats,
    Result,
    SlotInfo,
    TxnInfo,
    UploadRef,
    raise_for_result,
    refusal,
    wire_location,
)
from mydfs.storage.group_snapshot import SNAPSHOT_FORMAT, SNAPSHOT_VERSION
from mydfs.storage.slot_state import SlotState

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
    "TxnInfo",
    "UploadRef",
    "raise_for_result",
]


class GroupState(EditHandlers):
    """The replicated slot table of storage group ``group`` with its command handlers; see the
    module docstring and ``docs/group_state.md``. The constructor (the genesis configuration),
    the tables, the read API, snapshots and the invariant checks come from
    :class:`~mydfs.storage.group_table.GroupTable`; the edit handlers (``prepare``, ``commit``,
    ``rollback``) from :class:`~mydfs.storage.group_edits.EditHandlers`."""

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
            return refusal(_op_name(command), exc)
        return self.apply_command(decoded)

    def apply_command(self, command: Command) -> Result:
        """Apply a typed command; see :meth:`apply`."""
        try:
            match command:
                case Reserve():
                    return self._reserve(command)
                case Put():
                    return self._put_inline(command)
                case Assign():
                    return self._assign(command)
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
                case ConfirmMany():
                    return self._confirm_many(command)
                case Unconfirm():
                    return self._unconfirm(command)
                case Release():
                    return self._release(command)
                case Configure():
                    return self._configure(command)
                case Prepare():
                    return self._prepare(command)
                case Commit():
                    return self._commit(command)
                case Rollback():
                    return self._rollback(command)
                case Noop():
                    return {"ok": True, "op": command.OP}
                case _:
                    raise InvalidArgument(
                        f"unsupported command {type(command).__name__}", group=self._group
                    )
        except InvariantViolation:
            raise
        except MydfsError as exc:
            return refusal(command.OP, exc)

    # Each handler checks every precondition first and raises a typed error (turned into a
    # refusal result by apply_command) before it changes anything.

    def _reserve(self, c: Reserve) -> Result:
        ref = self.upload(c.upload_id)
        if ref is not None:
            return self._reserve_again(c, ref)
        info = self._allocate(c, SlotState.PENDING)
        self._pending[c.upload_id] = info.slot
        return self._ok(c, info, duplicate=False)

    def _put_inline(self, c: Put) -> Result:
        """``reserve`` and ``seal`` in one: the slice is LIVE at once, with no holder yet; the
        table carries its payload until min_holders volumes confirm a copy."""
        ref = self.upload(c.upload_id)
        if ref is not None:
            return self._reserve_again(c, ref)
        payload = c.payload()
        info = self._allocate(c, SlotState.LIVE)
        self._remember_sealed(info)
        self._add_inline(info, payload)
        return self._ok(c, info, duplicate=False)

    def _assign(self, c: Assign) -> Result:
        """A slot reserved ahead becomes the slice written into it, sealed (checks first)."""
        info = self._get(c.slot)
        self._check_upload(info, c.pool_id, c.generation)
        if info.state is not SlotState.PENDING:
            raise self._wrong_state(info, c.OP, "pending")
        if self.upload(c.upload_id) is not None:
            raise AlreadyExists(
                "the upload id is already known: it has its own slot",
                group=self._group,
                slot=info.slot,
                upload_id=c.upload_id,
            )
        self._check_next(c.next, c.slot)
        self._check_holders(c.OP, c.holders, info.slot)
        # -- mutation starts here
        del self._pending[c.pool_id]
        info = self._put(
            replace(
                info,
                state=SlotState.LIVE,
                upload_id=c.upload_id,
                file_id=c.file_id,
                slice_index=c.slice_index,
                length=c.length,
                crc32c=c.crc32c,
                next=c.next,
                holders=c.holders,
            )
        )
        self._remember_sealed(info)
        return self._ok(c, info, duplicate=False)

    def _allocate(self, c: Reserve | Put, state: SlotState) -> SlotInfo:
        """Take the next slot for the slice ``c`` describes, in ``state``, at a new generation
        (checks first; raises before any change)."""
        slot = self._next_slot()
        if slot is None:
            raise DiskFull(
                "the group has no free slot",
                group=self._group,
                max_slots=self._config.max_slots,
                upload_id=c.upload_id,
            )
        self._check_next(c.next, slot)
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
            state=state,
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
        self._take(info)
        self._generation = generation
        return info

    def _reserve_again(self, c: Reserve | Put, ref: UploadRef) -> Result:
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
        self._check_holders(c.OP, c.holders, info.slot)
        # -- mutation starts here
        info = self._put(replace(info, state=SlotState.LIVE, holders=c.holders))
        del self._pending[info.upload_id]
        self._remember_sealed(info)
        return self._ok(c, info, duplicate=False)

    def _abort(self, c: Abort) -> Result:
        info = self._get(c.slot)
        self._check_upload(info, c.upload_id, c.generation)
        self._check_unlocked(info.slot, c.OP)
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
        self._check_unlocked(info.slot, c.OP)
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
        self._check_unlocked(info.slot, c.OP)
        if info.state is SlotState.MOVED and info.target == c.target:
            return self._ok(c, info, duplicate=True)
        if info.state is not SlotState.LIVE:
            raise self._wrong_state(info, c.OP, "live")
        info = self._put(replace(info, state=SlotState.MOVED, target=c.target))
        return self._ok(c, info, duplicate=False)

    def _relink(self, c: Relink) -> Result:
        info = self._get(c.slot)
        self._check_generation(info, c.generation)
        self._check_unlocked(info.slot, c.OP)
        self._check_next(c.next, info.slot)
        if info.state not in (SlotState.PENDING, SlotState.LIVE):
            raise self._wrong_state(info, c.OP, "pending|live")
        if info.next == c.next:
            return self._ok(c, info, duplicate=True)
        info = self._put(replace(info, next=c.next))
        return self._ok(c, info, duplicate=False)

    def _confirm(self, c: Confirm) -> Result:
        info, duplicate = self._add_holder(c.slot, c.generation, c.node, c.OP)
        return self._ok(c, info, duplicate=duplicate)

    def _confirm_many(self, c: ConfirmMany) -> Result:
        """A ``confirm`` of each slice, each applied or refused on its own: ``slots`` lists
        the slots now held by the node (newly or already), ``refused`` the others with the
        error each ``confirm`` would have met."""
        slots: list[int] = []
        refused: list[Result] = []
        for slot, generation in c.slices:
            try:
                self._add_holder(slot, generation, c.node, c.OP)
            except InvariantViolation:
                raise
            except MydfsError as exc:
                refused.append({"slot": slot, **exc.to_dict()})
                continue
            slots.append(slot)
        return {"ok": True, "op": c.OP, "slots": slots, "refused": refused}

    def _add_holder(self, slot: int, generation: int, node: str, op: str) -> tuple[SlotInfo, bool]:
        """Add ``node`` to the holders of the live slice ``(slot, generation)``: its record,
        and whether the node held it already. Raises (nothing changed) when it cannot."""
        info = self._get(slot)
        self._check_generation(info, generation)
        if info.state is not SlotState.LIVE:
            raise self._wrong_state(info, op, "live")
        if node in info.holders:
            return info, True
        if len(info.holders) >= MAX_HOLDERS:
            raise InvalidArgument(
                f"a slot can have at most {MAX_HOLDERS} holders",
                group=self._group,
                slot=info.slot,
                field="node",
            )
        return self._put(replace(info, holders=tuple(sorted((*info.holders, node))))), False

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
        self._check_unlocked(info.slot, c.OP)
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
        self._prune_inline()
        return {"ok": True, "op": c.OP, "duplicate": unchanged, "config": new.to_dict()}

    # ----------------------------------------------------------------------------------------
    # precondition helpers of the handlers (raise, never mutate); more in GroupTable

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

    def _check_next(self, next: Location | None, slot: int) -> None:
        if next == Location(self._group, slot):
            raise InvalidArgument(
                "a slice cannot be its own next slice",
                group=self._group,
                slot=slot,
                field="next",
                reason="self_link",
            )

    def _check_holders(self, op: str, holders: tuple[str, ...], slot: int) -> None:
        if len(holders) < self._config.min_holders:
            raise InvalidArgument(
                f"{op} needs {self._config.min_holders} holders, got {len(holders)}",
                group=self._group,
                slot=slot,
                field="holders",
                reason="too_few_holders",
            )

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
            out["target"] = wire_location(info.target)
        return out


def _op_name(command: object) -> str | None:
    if isinstance(command, Mapping):
        op = command.get("op")
        if isinstance(op, str) and len(op) <= 32 and op.isidentifier():
            return op
    return None
