"""The replica side of replication: storing a payload pushed by the leader (or fetched by the
reconciler), serving one to a peer, and saying whether this node holds a slice durably.

:func:`store_decision` is the pure rule for a payload arriving at a slot, given what the local
header says: a retried push of the same copy is acknowledged again, a push older than the local
copy is refused (409), an older local copy is replaced, an empty slot is written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from enum import Enum

from mydfs.common.checksum import crc32c
from mydfs.common.errors import Conflict, InvalidArgument, MydfsError, NotFound
from mydfs.common.location import Location
from mydfs.storage.budget import RECEIVING
from mydfs.storage.context import RAFT_TIMEOUT, NodeContext
from mydfs.storage.format import PAYLOAD_CAPACITY, SliceOwner, SlotHeader
from mydfs.storage.format import SlotState as DiskState
from mydfs.storage.group_commands import Unconfirm
from mydfs.storage.inflight import Lease
from mydfs.storage.volume import Volume

log = logging.getLogger(__name__)

#: How many times :func:`store_copy` decides again after the volume refused a racing write.
STORE_ATTEMPTS = 12

#: Local states that make a copy servable (the slice is durably here).
HELD = (DiskState.LIVE, DiskState.PENDING)
#: Seconds a pushed payload waits for room in the memory budget before the push is refused.
RECEIVE_WAIT = 5.0

#: Local states a drop turns into a 404 marker.
DROPPABLE = (DiskState.LIVE, DiskState.PENDING, DiskState.MOVED)


class Store(Enum):
    """What to do with a payload arriving at a slot (see :func:`store_decision`)."""

    ALREADY_HERE = "already_here"  # the same copy is here: acknowledge again
    CONFLICT = "conflict"  # this node holds a newer generation: refuse (409)
    REPLACE = "replace"  # drop the older local copy (404), then write
    WRITE = "write"  # nothing to keep in the slot: write


def store_decision(current: SlotHeader | None, generation: int, payload_crc: int) -> Store:
    """The rule for storing generation ``generation`` (payload CRC32C ``payload_crc``) in a slot
    whose local header is ``current`` (None: free). Pure."""
    if current is None:
        return Store.WRITE
    if (
        current.generation == generation
        and current.state in HELD
        and current.payload_crc == payload_crc
    ):
        return Store.ALREADY_HERE
    if current.generation > generation:
        return Store.CONFLICT
    if current.state in DROPPABLE:
        return Store.REPLACE
    return Store.WRITE


async def store_copy(
    ctx: NodeContext,
    volume: Volume,
    slot: int,
    data: bytes,
    *,
    generation: int,
    owner: SliceOwner,
    next: Location | None,
) -> Store:
    """Write ``data`` at ``slot``/``generation`` on this node's disk as :func:`store_decision`
    says, and return the decision: the one way a copy lands on a disk, for a follower storing a
    push or a fetch and for the leader's own copy alike. An older copy still in the slot (the
    group freed and reused it before this node's reconciler dropped it) is dropped first.

    The reconciler may act on the same slot meanwhile (drop the old copy, or write the same
    slice fetched from a holder): the volume then refuses with :class:`Conflict`, and the
    decision is taken again on the fresh header, a bounded number of times."""
    disk = ctx.disk
    crc = crc32c(data)
    delay = 0.02
    for attempt in range(STORE_ATTEMPTS):
        if slot in volume.quarantined():
            await disk(volume.reclaim, slot)  # repair: the group has a good copy
        current = _header(volume, slot)
        decision = store_decision(current, generation, crc)
        if decision == Store.ALREADY_HERE:
            return decision  # a retried push, or the reconciler was quicker
        if decision == Store.CONFLICT:
            assert current is not None
            raise Conflict(
                f"slot holds newer generation {current.generation} than {generation}", slot=slot
            )
        try:
            if decision == Store.REPLACE:
                await disk(volume.mark_deleted, slot)
            await disk(volume.write, slot, data, owner=owner, next=next, generation=generation)
        except Conflict:
            if attempt + 1 == STORE_ATTEMPTS:
                raise
            await asyncio.sleep(delay)
            delay = min(2 * delay, 0.2)
            continue
        return decision
    raise AssertionError("unreachable")


def drop_copy(volume: Volume, slot: int, up_to: int) -> bool:
    """Drop (404) this disk's copy in ``slot`` if it is of generation ``up_to`` or older; a
    newer copy — stored since the drop was planned, the group having reused the slot — stays.
    For a disk thread. False when there was nothing to drop."""
    header = _header(volume, slot)
    if header is None or header.generation > up_to or header.state not in DROPPABLE:
        return False
    try:
        volume.mark_deleted(slot)
    except Conflict:  # dropped meanwhile (a store replacing the copy got there first)
        return False
    return True


async def give_up_copy(
    ctx: NodeContext,
    volume: Volume,
    slot: int,
    generation: int,
    mark_dirty: Callable[[int | None], None],
    *,
    checked: SlotHeader | None = None,
    wait: bool = True,
) -> bool:
    """The one repair path for a bad local copy of ``slot`` at ``generation`` (a read or the
    scrub found it corrupt): drop it (a 404 marker, so this node never serves it again, even
    after a restart), take this node out of the slot's holders (``unconfirm``, so nobody is sent
    here for it), and wake the reconciler, which fetches the slice from a good holder, stores it
    and confirms it again. ``checked``: the header the bad read saw; a copy whose header changed
    since (rewritten by a repair meanwhile) is left alone. A newer copy always stays. With
    ``wait=False`` the ``unconfirm`` is submitted in the background. Returns whether a copy was
    dropped."""
    dropped = await ctx.disk(_drop_bad, volume, slot, generation, checked)
    if dropped:
        unconfirm = _unconfirm(ctx, slot, generation)
        if wait:
            await unconfirm
        else:  # a reader is waiting for its answer: do not hold it up for a Raft round
            task = asyncio.create_task(unconfirm, name=f"unconfirm-{slot}")
            _UNCONFIRMS.add(task)
            task.add_done_callback(_UNCONFIRMS.discard)
    mark_dirty(slot)
    return dropped


#: The ``unconfirm`` submissions running in the background (kept referenced until done).
_UNCONFIRMS: set[asyncio.Task[None]] = set()


async def _unconfirm(ctx: NodeContext, slot: int, generation: int) -> None:
    command = Unconfirm(slot=slot, node=ctx.node_id, generation=generation)
    try:
        _, raft, _ = ctx.require()
        await raft.submit(command.to_dict(), timeout=RAFT_TIMEOUT)
    except MydfsError as exc:  # still dropped: the reconciler refetches it all the same
        log.warning("unconfirm of slot %d gen %d failed: %s", slot, generation, exc)


def _drop_bad(volume: Volume, slot: int, generation: int, checked: SlotHeader | None) -> bool:
    header = _header(volume, slot)
    if header is None or header.generation != generation:
        return False
    if checked is not None and header != checked:
        return False
    return drop_copy(volume, slot, generation)


def _header(volume: Volume | None, slot: int) -> SlotHeader | None:
    """The on-disk header of ``slot`` in ``volume``, if any (None: free, quarantined, closing)."""
    if volume is None:
        return None
    try:
        return volume.header(slot)
    except MydfsError:
        return None


class ReplicaSide:
    """Accepts pushed and fetched payloads, serves them to peers, answers "holds"."""

    def __init__(self, ctx: NodeContext, mark_dirty: Callable[[int | None], None]) -> None:
        self._ctx = ctx
        self._mark_dirty = mark_dirty

    async def charge(self, slot: int, size: int) -> Lease:
        """Room in the memory budget for a pushed payload, taken before its body is read (a
        full budget answers 503 after :data:`RECEIVE_WAIT` seconds; the leader then counts on
        the other follower, and this node fetches the slice later)."""
        return await self._ctx.inflight.charge(
            RECEIVING * min(size, PAYLOAD_CAPACITY),
            timeout=RECEIVE_WAIT,
            what=f"push of slot {slot}",
        )

    async def accept(
        self,
        slot: int,
        data: bytes,
        *,
        generation: int,
        owner: SliceOwner,
        next: Location | None,
        crc: int,
    ) -> None:
        """Store a payload pushed by the leader, durably, at the group's slot."""
        volume, _, _ = self._ctx.require()
        if crc32c(data) != crc:
            raise InvalidArgument("replica payload fails its checksum", slot=slot)
        await self.store(volume, slot, data, generation=generation, owner=owner, next=next)

    async def store(
        self,
        volume: Volume,
        slot: int,
        data: bytes,
        *,
        generation: int,
        owner: SliceOwner,
        next: Location | None,
    ) -> None:
        """Write ``data`` at ``slot``/``generation`` on this disk as :func:`store_decision` says."""
        await store_copy(
            self._ctx, volume, slot, data, generation=generation, owner=owner, next=next
        )
        self._mark_dirty(slot)

    def local_header(self, slot: int) -> SlotHeader | None:
        """This node's on-disk header of ``slot`` (from the volume's table), if any."""
        return _header(self._ctx.volume, slot)

    def holds(self, slot: int, generation: int) -> bool:
        """Does this disk hold ``slot`` at ``generation`` durably (live or pending)?"""
        header = self.local_header(slot)
        return header is not None and header.generation == generation and header.state in HELD

    async def read(self, slot: int, generation: int) -> bytes:
        """The payload of ``slot`` at ``generation`` for a peer: registration table, the group
        table's inline payload, else disk."""
        cached = self._ctx.registration.get(slot, generation)
        if cached is None:
            cached = self._ctx.group.read(lambda g: g.inline(slot, generation))
        if cached is not None:
            return cached
        volume, _, _ = self._ctx.require()
        if not self.holds(slot, generation):
            raise NotFound("this node does not hold that slice", slot=slot, generation=generation)
        got = await self._ctx.disk(volume.read, slot, allow_pending=True)
        if got.header.generation != generation:
            raise NotFound("slot was rewritten", slot=slot, generation=generation)
        return got.data
