"""The edit command handlers of a group's slot table: ``prepare``, ``commit``, ``rollback``.

This group's half of the two-phase commit of an in-place file edit (``docs/group_state.md``,
"Edits"; the commands are in :mod:`mydfs.storage.edit_commands`). A txn goes::

    (unknown) --prepare--> prepared --commit--> committed
        |                     |
        +-----rollback--------+--rollback--> rolled_back

* ``prepare`` locks the old slots the edit changes (``lock``) and the new slices written for it
  (``new``) by slice identity ``(slot, generation)``; a locked slot refuses ``delete``, ``move``,
  ``release``, ``relink`` and ``abort`` (``conflict reason=locked``).
* ``commit`` turns ``move``'s slot into a 301 to the first new slice, sets the next pointer of
  every ``keep`` slot (a compaction relinks a chain around its 301s: ``docs/space.md``), makes
  every other slot of ``lock`` a 404 (into the free table), unlocks, and sets the file's
  version here, but only when the file's version here is the commit's ``prev`` (commits of one
  file apply in the tracker's order).
* ``rollback`` makes every ``new`` slot a 404 and unlocks; for a txn never prepared here it only
  remembers the txn as rolled back, so a prepare arriving late never locks anything.

Finished txns are remembered in a window of :data:`~mydfs.storage.group_records.EDIT_WINDOW`
for duplicates. Like every handler, each checks all its preconditions before it changes anything
and raises a typed error (the refusal) otherwise. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mydfs.common.errors import Conflict, InvalidArgument, NotFound
from mydfs.common.location import Location
from mydfs.storage.edit_commands import Commit, KeepSpec, Prepare, Rollback, SlotRef, drop_of
from mydfs.storage.group_records import (
    COMMITTED,
    PREPARED,
    ROLLED_BACK,
    Result,
    SlotInfo,
    TxnInfo,
)
from mydfs.storage.group_table import GroupTable
from mydfs.storage.slot_state import SlotState

__all__ = ["EditHandlers"]


def _slot_of(spec: KeepSpec) -> int:
    return spec[0]


class EditHandlers(GroupTable):
    """The ``prepare`` / ``commit`` / ``rollback`` handlers, mixed into
    :class:`~mydfs.storage.group_state.GroupState`."""

    def _prepare(self, c: Prepare) -> Result:
        known = self.txn(c.txn)
        if known is not None:
            return self._prepare_again(c, known)
        # The slots first: a prepare planned on a stale chain may name, in ``new``, a slot its
        # ``lock`` or ``move`` names at an older generation (a newer edit freed it and this one
        # reserved it again); that is a stale plan (``stale_generation``, retried by the
        # client), not a malformed one.
        for ref in c.lock:
            self._check_edit_slot(c, ref, (SlotState.LIVE, SlotState.MOVED))
        for ref in c.new:
            self._check_edit_slot(c, ref, (SlotState.LIVE,))
        self._check_redirects_planned(c)
        if c.move is not None:
            slot, _, target = c.move
            if target.group != self._group:
                raise InvalidArgument(
                    f"a 301 never leaves its group: target {target} is not in group {self._group}",
                    group=self._group,
                    field="move",
                    reason="cross_group",
                )
            if target.slot == slot:
                raise InvalidArgument(
                    "a slot cannot redirect to itself",
                    group=self._group,
                    slot=slot,
                    field="move",
                    reason="self_redirect",
                )
            if any(target.slot == s for s, _ in c.drop):
                raise InvalidArgument(
                    "the 301 target is a slot this edit drops",
                    group=self._group,
                    slot=target.slot,
                    field="move",
                    reason="target_dropped",
                )
        self._check_keep(c)
        # -- mutation starts here
        info = TxnInfo(
            txn=c.txn,
            state=PREPARED,
            file_id=c.file_id,
            prepared_at_ms=c.now_ms,
            lock=c.lock,
            move=c.move,
            new=c.new,
            keep=c.keep,
        )
        self._prepared[c.txn] = info
        for slot, _ in info.slots():
            self._locks[slot] = c.txn
        return self._txn_ok(c.OP, info, duplicate=False)

    def _prepare_again(self, c: Prepare, known: TxnInfo) -> Result:
        if known.state == COMMITTED:
            return self._txn_ok(c.OP, known, duplicate=True)
        if known.state == ROLLED_BACK:
            raise self._rolled_back(c.OP, c.txn)
        same = (
            known.file_id == c.file_id
            and sorted(known.lock) == sorted(c.lock)
            and sorted(known.new) == sorted(c.new)
            and known.move == c.move
            and sorted(known.keep, key=_slot_of) == sorted(c.keep, key=_slot_of)
        )
        if not same:
            raise Conflict(
                f"edit {c.txn} was prepared with other slots",
                group=self._group,
                txn=c.txn,
                reason="txn_mismatch",
            )
        return self._txn_ok(c.OP, known, duplicate=True)

    def _check_edit_slot(self, c: Prepare, ref: SlotRef, allowed: tuple[SlotState, ...]) -> None:
        slot, generation = ref
        info = self._get(slot)
        if info.generation != generation:
            raise Conflict(
                f"slot {slot} is at generation {info.generation}, not {generation}",
                group=self._group,
                slot=slot,
                generation=info.generation,
                expected_generation=generation,
                reason="stale_generation",
            )
        if info.state not in allowed:
            raise self._wrong_state(info, c.OP, "|".join(s.value for s in allowed))
        if info.file_id != c.file_id:
            raise Conflict(
                f"slot {slot} holds file {info.file_id}, not {c.file_id}",
                group=self._group,
                slot=slot,
                reason="another_owner",
            )
        self._check_unlocked(slot, c.OP)

    def _check_redirects_planned(self, c: Prepare) -> None:
        """A 301 in ``lock`` must come with the slot it leads to: the plan read the bytes from
        that slot. A slot that was live when the edit was planned and became a 301 since (a
        concurrent edit of the same slice committed) keeps its generation, so only this
        catches the stale plan; its bytes are no longer the file's (``stale_chain``, the client
        plans again)."""
        locked = {slot for slot, _ in c.lock}
        for slot, _ in c.lock:
            target = self._get(slot).target
            if target is not None and target.slot not in locked:
                raise Conflict(
                    f"slot {slot} became a 301 to slot {target.slot} since the edit was planned",
                    group=self._group,
                    slot=slot,
                    txn=c.txn,
                    reason="stale_chain",
                )

    def _check_keep(self, c: Prepare) -> None:
        """A kept slot is a live slice (a 301 has no next pointer to keep), never its own next,
        and never pointing at a slot this edit frees."""
        dropped = {slot for slot, _ in c.drop}
        for slot, _, nxt in c.keep:
            info = self._get(slot)
            if info.state is not SlotState.LIVE:
                raise self._wrong_state(info, c.OP, "live")
            if nxt is not None and nxt.group == self._group and nxt.slot in (slot, *dropped):
                raise InvalidArgument(
                    f"kept slot {slot} would point at slot {nxt.slot}, "
                    + ("itself" if nxt.slot == slot else "which this edit frees"),
                    group=self._group,
                    slot=slot,
                    field="keep",
                    reason="self_link" if nxt.slot == slot else "next_dropped",
                )

    def _commit(self, c: Commit) -> Result:
        known = self.txn(c.txn)
        if known is None:
            raise NotFound(
                f"no edit {c.txn} is known here",
                group=self._group,
                txn=c.txn,
                reason="unknown_txn",
            )
        if known.state == COMMITTED:
            return self._txn_ok(c.OP, known, duplicate=True)
        if known.state == ROLLED_BACK:
            raise self._rolled_back(c.OP, c.txn)
        current = self.file_version(known.file_id)
        if current != c.prev:
            reason = "out_of_order" if current < c.prev else "version_mismatch"
            raise Conflict(
                f"file {known.file_id} is at version {current} here, the commit expects {c.prev}",
                group=self._group,
                txn=c.txn,
                file_id=known.file_id,
                version=current,
                prev=c.prev,
                reason=reason,
            )
        # -- mutation starts here
        touched: list[int] = []
        if known.move is not None:
            slot, _, target = known.move
            self._redirect(self._slots[slot], target)
            touched.append(slot)
        for slot, _, nxt in known.keep:
            info = self._slots[slot]
            if info.next != nxt:
                self._put(replace(info, next=nxt))
                touched.append(slot)
        for slot, _ in drop_of(known.lock, known.move, known.keep):
            self._free_slot(self._slots[slot])
            touched.append(slot)
        self._unlock(known)
        self._file_versions[known.file_id] = c.version
        done = TxnInfo(c.txn, COMMITTED, known.file_id, 0, version=c.version)
        self._finish(done)
        return self._txn_ok(c.OP, done, duplicate=False, slots=touched)

    def _rollback(self, c: Rollback) -> Result:
        known = self.txn(c.txn)
        if known is not None and known.state == ROLLED_BACK:
            return self._txn_ok(c.OP, known, duplicate=True)
        if known is not None and known.state == COMMITTED:
            raise Conflict(
                f"edit {c.txn} is committed; it cannot be rolled back",
                group=self._group,
                txn=c.txn,
                reason="committed",
            )
        # -- mutation starts here
        touched: list[int] = []
        if known is None:
            done = TxnInfo(c.txn, ROLLED_BACK, "", 0)
        else:
            for slot, _ in known.new:
                self._free_slot(self._slots[slot])
                touched.append(slot)
            self._unlock(known)
            done = TxnInfo(c.txn, ROLLED_BACK, known.file_id, 0)
        self._finish(done)
        return self._txn_ok(c.OP, done, duplicate=False, slots=touched)

    # ----------------------------------------------------------------------------------------
    # helpers

    def _redirect(self, info: SlotInfo, target: Location) -> None:
        """LIVE -> MOVED to ``target``, or a MOVED slot re-targeted."""
        self._put(replace(info, state=SlotState.MOVED, target=target))

    def _unlock(self, info: TxnInfo) -> None:
        for slot, _ in info.slots():
            del self._locks[slot]
        del self._prepared[info.txn]

    def _rolled_back(self, op: str, txn: str) -> Conflict:
        return Conflict(
            f"edit {txn} was rolled back", group=self._group, txn=txn, op=op, reason="rolled_back"
        )

    def _txn_ok(
        self, op: str, info: TxnInfo, *, duplicate: bool, slots: list[int] | None = None
    ) -> Result:
        out: dict[str, Any] = {
            "ok": True,
            "op": op,
            "txn": info.txn,
            "state": info.state,
            "duplicate": duplicate,
            "file_id": info.file_id,
            "slots": slots or [],
        }
        if info.state == COMMITTED:
            out["version"] = info.version
        return out
