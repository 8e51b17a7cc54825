"""A group's replicated slot table without its command handlers: the tables, the read API,
snapshots and the invariant checks.

:class:`GroupTable` holds the primary tables (one :class:`SlotInfo` per allocated slot, the
generation counter, the sealed upload window, the configuration) and the tables derived from
them (the free-slice table, the pending upload index, per-state counters). It answers every read
and owns the few mutation helpers that keep the derived tables in step. It applies no command:
:class:`~mydfs.storage.group_state.GroupState` adds the command handlers on top. Pure: no I/O.

This table, replicated through Raft, is the only authority on slots in a running cluster: which
slot a slice goes to, at which generation, and which slots are free. A node's volume keeps its
own local free list (``Volume.free_slots``) for the standalone slice store and its disk
bookkeeping; it never decides a replicated slot (``docs/group_state.md``).
"""

from __future__ import annotations

import hashlib
import heapq
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Self

from mydfs.common.errors import (
    Conflict,
    InvariantViolation,
    MydfsError,
    NotFound,
    SliceDeleted,
    SliceMoved,
)
from mydfs.common.location import MAX_GROUP
from mydfs.storage import group_snapshot
from mydfs.storage.group_commands import POOL_PREFIX, Configure, check_int
from mydfs.storage.group_records import (
    COMMITTED,
    DEFAULT_MIN_HOLDERS,
    DEFAULT_UPLOAD_WINDOW,
    EDIT_WINDOW,
    PREPARED,
    ROLLED_BACK,
    GroupConfig,
    GroupStats,
    SlotInfo,
    TxnInfo,
    UploadRef,
)
from mydfs.storage.group_snapshot import SnapshotParts
from mydfs.storage.slot_state import RECORD_STATES, SlotState

__all__ = ["GroupTable"]


class GroupTable:
    """The slot table of storage group ``group`` without its command handlers; see the module
    docstring. :class:`~mydfs.storage.group_state.GroupState` is the class to use.

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
        self._free: list[int] = []  # the free-slice table: a min-heap of the DELETED slots
        self._generation = 0
        self._pending: dict[str, int] = {}  # upload id -> slot, for PENDING slots
        self._sealed: OrderedDict[str, tuple[int, int]] = OrderedDict()  # id -> (slot, gen)
        self._counts: dict[SlotState, int] = dict.fromkeys(RECORD_STATES, 0)
        self._bytes: dict[SlotState, int] = dict.fromkeys(RECORD_STATES, 0)
        # Edits (storage/group_edits.py): prepared txns in prepare order, the bounded window of
        # finished ones (oldest first), each edited file's version, and the slot locks (derived
        # from the prepared txns).
        self._prepared: dict[str, TxnInfo] = {}
        self._finished: OrderedDict[str, TxnInfo] = OrderedDict()
        self._file_versions: dict[str, int] = {}
        self._locks: dict[int, str] = {}  # slot -> txn holding it
        # Inline uploads (``put``): slot -> (generation, payload) of a LIVE slice whose payload
        # fewer than min_holders volumes hold yet; the log and snapshots carry it until then.
        self._inline: dict[int, tuple[int, bytes]] = {}
        self._inline_bytes = 0

    # ----------------------------------------------------------------------------------------
    # mutation helpers (with GroupState's handlers, the only code that writes the tables)

    def _account(self, info: SlotInfo, sign: int) -> None:
        self._counts[info.state] += sign
        self._bytes[info.state] += sign * info.length

    def _put(self, info: SlotInfo) -> SlotInfo:
        """Replace the record of ``info.slot`` (which must exist) and keep the counters."""
        self._account(self._slots[info.slot], -1)
        self._slots[info.slot] = info
        self._account(info, +1)
        held = self._inline.get(info.slot)
        if held is not None and not self._keeps_inline(info, held[0]):
            del self._inline[info.slot]
            self._inline_bytes -= len(held[1])
        return info

    def _keeps_inline(self, info: SlotInfo, generation: int) -> bool:
        """Is an inline payload of ``generation`` still needed by the record ``info``? Only
        while it is that LIVE slice and fewer than min_holders volumes hold it."""
        return (
            info.state is SlotState.LIVE
            and info.generation == generation
            and len(info.holders) < self._config.min_holders
        )

    def _prune_inline(self) -> None:
        """Drop every inline payload no longer needed (after min_holders changed)."""
        for slot, (generation, payload) in list(self._inline.items()):
            if not self._keeps_inline(self._slots[slot], generation):
                del self._inline[slot]
                self._inline_bytes -= len(payload)

    def _add_inline(self, info: SlotInfo, payload: bytes) -> None:
        self._inline[info.slot] = (info.generation, payload)
        self._inline_bytes += len(payload)

    def _take(self, info: SlotInfo) -> SlotInfo:
        """Record a new reservation in ``info.slot``, which must be the one :meth:`_next_slot`
        named: the lowest slot of the free table (taken out of it), else the slot at ``end``."""
        if info.slot < len(self._slots):
            heapq.heappop(self._free)
            return self._put(info)
        self._slots.append(info)
        self._account(info, +1)
        return info

    def _free_slot(self, info: SlotInfo) -> SlotInfo:
        """Any state -> DELETED, into the free table."""
        freed = self._put(replace(info, state=SlotState.DELETED, holders=(), target=None))
        heapq.heappush(self._free, freed.slot)
        return freed

    def _remember_sealed(self, info: SlotInfo) -> None:
        """Put ``info``'s upload id at the young end of the sealed window (then trimmed)."""
        self._sealed.pop(info.upload_id, None)
        self._sealed[info.upload_id] = (info.slot, info.generation)
        self._trim_window()

    def _trim_window(self) -> None:
        while len(self._sealed) > self._config.upload_window:
            self._sealed.popitem(last=False)

    def _finish(self, info: TxnInfo) -> None:
        """Remember a finished txn (slim: no slot lists) in the window, evicting the oldest."""
        self._finished.pop(info.txn, None)
        self._finished[info.txn] = info
        while len(self._finished) > self._edit_window:
            self._finished.popitem(last=False)

    #: How many finished txns :meth:`_finish` keeps (a constant of the replicated state).
    _edit_window = EDIT_WINDOW

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

    def _check_unlocked(self, slot: int, op: str) -> None:
        """:class:`Conflict` ``reason=locked`` when an edit txn holds ``slot``."""
        holder = self._locks.get(slot)
        if holder is not None:
            raise Conflict(
                f"slot {slot} is locked by edit {holder}",
                group=self._group,
                slot=slot,
                op=op,
                txn=holder,
                reason="locked",
            )

    def _next_slot(self) -> int | None:
        if self._free:
            return self._free[0]
        end = len(self._slots)
        if self._config.max_slots is not None and end >= self._config.max_slots:
            return None
        return end

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
        """The group's replicated free-slice table (its 404 slots), lowest first: the order
        reservations reuse them. (Not ``Volume.free_slots``, a node's local free list.)"""
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

    def inline(self, slot: int, generation: int) -> bytes | None:
        """The payload of an inline upload of ``slot`` at ``generation`` while the table still
        carries it (fewer than min_holders volumes hold it yet), else None."""
        held = self._inline.get(slot)
        return held[1] if held is not None and held[0] == generation else None

    @property
    def inline_bytes(self) -> int:
        """Bytes of inline payloads the table carries now (bounded by the leader)."""
        return self._inline_bytes

    def file_version(self, file_id: str) -> int:
        """The version of the last edit commit this group applied for ``file_id`` (0: never)."""
        return self._file_versions.get(file_id, 0)

    def txn(self, txn: str) -> TxnInfo | None:
        """What this group knows of edit ``txn``: prepared, or finished within the window."""
        return self._prepared.get(txn) or self._finished.get(txn)

    def prepared_txns(self) -> list[TxnInfo]:
        """Every prepared (undecided here) edit txn, oldest prepare first: the resolver's list."""
        return list(self._prepared.values())

    def lock_of(self, slot: int) -> str | None:
        """The txn holding ``slot`` locked, or None."""
        return self._locks.get(slot)

    def stats(self) -> GroupStats:
        ahead = sum(1 for uid in self._pending if uid.startswith(POOL_PREFIX))
        end = len(self._slots)
        room = None if self._config.max_slots is None else self._config.max_slots - end
        return GroupStats(
            group=self._group,
            end=end,
            generation=self._generation,
            pending=self._counts[SlotState.PENDING] - ahead,
            live=self._counts[SlotState.LIVE],
            moved=self._counts[SlotState.MOVED],
            deleted=self._counts[SlotState.DELETED],
            bytes_live=self._bytes[SlotState.LIVE],
            bytes_pending=self._bytes[SlotState.PENDING],
            available=None if room is None else room + len(self._free),
            uploads_pending=len(self._pending) - ahead,
            uploads_sealed=len(self._sealed),
            bytes_inline=self._inline_bytes,
            ahead=ahead,
        )

    # ----------------------------------------------------------------------------------------
    # snapshot, restore, digest, invariants

    def snapshot(self) -> bytes:
        """The whole state as canonical JSON (orjson, sorted keys): equal states give equal
        bytes. Derived tables (free table, pending index, counters) are rebuilt on restore."""
        sealed = [(uid, s, g) for uid, (s, g) in self._sealed.items()]
        parts = SnapshotParts(
            self._config,
            self._generation,
            self._slots,
            sealed,
            prepared=list(self._prepared.values()),
            finished=list(self._finished.values()),
            file_versions=sorted(self._file_versions.items()),
            inline=[(slot, gen, data) for slot, (gen, data) in sorted(self._inline.items())],
        )
        return group_snapshot.encode(self._group, parts)

    def digest(self) -> str:
        """SHA-256 (hex) of :meth:`snapshot`: equal on nodes that applied the same commands."""
        return hashlib.sha256(self.snapshot()).hexdigest()

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a :meth:`snapshot`. The snapshot is checked completely
        first; on :class:`Corrupt` (bad bytes or structure) or :class:`IncompatibleVolume`
        (another group, a newer format) nothing changes."""
        fresh = self._from_parts(group_snapshot.decode(data, self._group))
        self._config = fresh._config
        self._slots = fresh._slots
        self._free = fresh._free
        self._generation = fresh._generation
        self._pending = fresh._pending
        self._sealed = fresh._sealed
        self._counts = fresh._counts
        self._bytes = fresh._bytes
        self._prepared = fresh._prepared
        self._finished = fresh._finished
        self._file_versions = fresh._file_versions
        self._locks = fresh._locks
        self._inline = fresh._inline
        self._inline_bytes = fresh._inline_bytes

    def _from_parts(self, parts: SnapshotParts) -> Self:
        """A new table of this group holding ``parts``, derived tables rebuilt and every
        invariant checked; raises :class:`Corrupt` if they do not hold."""
        config = parts.config
        fresh = type(self)(
            self._group,
            max_slots=config.max_slots,
            min_holders=config.min_holders,
            upload_window=config.upload_window,
        )
        fresh._generation = parts.generation
        for index, info in enumerate(parts.slots):
            fresh._slots.append(info)
            fresh._account(info, +1)
            if info.state is SlotState.DELETED:
                fresh._free.append(index)
            elif info.state is SlotState.PENDING:
                fresh._pending.setdefault(info.upload_id, index)
        heapq.heapify(fresh._free)
        for uid, slot, generation in parts.sealed:
            fresh._sealed[uid] = (slot, generation)
        try:
            for txn in parts.prepared:
                if txn.txn in fresh._prepared:
                    raise InvariantViolation("a txn is prepared twice", txn=txn.txn)
                fresh._prepared[txn.txn] = txn
                for slot, _ in txn.slots():
                    if slot in fresh._locks:
                        raise InvariantViolation("a slot is locked twice", slot=slot)
                    fresh._locks[slot] = txn.txn
            for txn in parts.finished:
                if txn.txn in fresh._finished:
                    raise InvariantViolation("a txn is finished twice", txn=txn.txn)
                fresh._finished[txn.txn] = txn
            fresh._file_versions = dict(parts.file_versions)
            for slot, generation, payload in parts.inline:
                if slot in fresh._inline:
                    raise InvariantViolation("a slot carries two inline payloads", slot=slot)
                fresh._inline[slot] = (generation, payload)
                fresh._inline_bytes += len(payload)
            fresh.check_invariants()
        except InvariantViolation as exc:
            raise group_snapshot.corrupt_snapshot(self._group, exc.message, **exc.context) from exc
        return fresh

    def check_invariants(self) -> None:
        """Check every cross-table invariant (O(number of slots)); raise
        :class:`InvariantViolation` naming the first one broken."""

        def broken(message: str, **context: Any) -> InvariantViolation:
            return InvariantViolation(message, group=self._group, **context)

        end = len(self._slots)
        counts = dict.fromkeys(RECORD_STATES, 0)
        sizes = dict.fromkeys(RECORD_STATES, 0)
        generations: set[int] = set()
        pending: dict[str, int] = {}
        deleted: set[int] = set()
        for index, info in enumerate(self._slots):
            if info.slot != index:
                raise broken("slot record filed under another number", slot=index)
            if info.state not in counts:
                raise broken("a slot record in the FREE state", slot=index)
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
        for slot, (generation, payload) in self._inline.items():
            record = self.get(slot)
            if record is None or record.state is not SlotState.LIVE:
                raise broken("an inline payload of a slot that is not live", slot=slot)
            if record.generation != generation or record.length != len(payload):
                raise broken("an inline payload that is not the slot's slice", slot=slot)
        if self._inline_bytes != sum(len(p) for _, p in self._inline.values()):
            raise broken("inline byte count out of step with the inline payloads")
        self._check_edit_invariants(broken)

    def _check_edit_invariants(self, broken: Callable[..., InvariantViolation]) -> None:
        """The edit tables: a lock is exactly a slot of a prepared txn, and it holds a slice of
        that txn's file at the generation the prepare named, LIVE or MOVED (``lock``) or LIVE
        (``new``); finished txns are in the window only, and within its bound."""
        locks: dict[int, str] = {}
        for txn, info in self._prepared.items():
            if info.txn != txn or info.state != PREPARED:
                raise broken("a prepared txn filed wrongly", txn=txn)
            if txn in self._finished:
                raise broken("a txn both prepared and finished", txn=txn)
            for kind, refs in (("lock", info.lock), ("new", info.new)):
                allowed = (SlotState.LIVE, SlotState.MOVED) if kind == "lock" else (SlotState.LIVE,)
                for slot, generation in refs:
                    if slot in locks:
                        raise broken("a slot locked twice", slot=slot, txn=txn)
                    locks[slot] = txn
                    record = self.get(slot)
                    if (
                        record is None
                        or record.generation != generation
                        or record.state not in allowed
                        or record.file_id != info.file_id
                    ):
                        raise broken("a locked slot is not the slice its txn locked", slot=slot)
        if locks != self._locks:
            raise broken("lock table out of step with the prepared txns")
        if len(self._finished) > self._edit_window:
            raise broken("finished txn window over its bound")
        for txn, info in self._finished.items():
            if info.txn != txn or info.state not in (COMMITTED, ROLLED_BACK):
                raise broken("a finished txn filed wrongly", txn=txn)
        for file_id, version in self._file_versions.items():
            if version < 1:
                raise broken("a file version below 1", file_id=file_id)
