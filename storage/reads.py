"""Read resolution: which node answers a read of a slot or a chain walk, and the local read.

The table in ``docs/replication.md`` ("Reads") is what :meth:`ReadResolver.resolve` carries out:
a live slice held here is served; one the table says lives elsewhere gets a 307 to a holder; a
replica behind its log waits up to :data:`CATCH_UP_WAIT` seconds, then sends the reader to the
leader; the leader, which has applied every acknowledged seal, answers 404 for what it lacks.

A reader may say which owner it expects (file id and slice index, the ``X-Mydfs-File`` and
``X-Mydfs-Index`` request headers). When this node's table disagrees, its answer may come from
a stale table (a follower behind, a leader cut off from its group that does not know it yet),
so it answers only once it is proven current (:meth:`ReadResolver.confirm_current`): a
follower sends the reader to its leader (307, or 503 when it knows none); the leader commits a
no-op through the log (a read barrier: it is still the leader and has applied everything
committed) and looks again; what still disagrees is the reader's stale entry: 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from mydfs.common.checksum import block_crcs
from mydfs.common.errors import (
    Corrupt,
    InvalidArgument,
    MydfsError,
    NotFound,
    NotLeader,
    Redirect,
    Unavailable,
)
from mydfs.common.location import Location
from mydfs.common.readpath import owner_mismatch
from mydfs.storage.chain import ChainEntry, walk
from mydfs.storage.context import NodeContext
from mydfs.storage.format import BLOCK_SIZE, SliceOwner, SlotHeader
from mydfs.storage.format import SlotState as DiskState
from mydfs.storage.group_state import GroupState, SlotInfo, SlotState
from mydfs.storage.replica import give_up_copy
from mydfs.storage.volume import SliceData, Volume

log = logging.getLogger(__name__)

#: How long a follower waits for its Raft state to catch up before redirecting a read.
CATCH_UP_WAIT = 2.0
#: How long a read waits for room in the node's memory budget before answering 503.
READ_BUDGET_WAIT = 10.0


class ReadResolver:
    """Resolves reads against the group table and serves them from the local volume."""

    def __init__(
        self,
        ctx: NodeContext,
        holds: Callable[[int, int], bool],
        mark_dirty: Callable[[int | None], None],
    ) -> None:
        self._ctx = ctx
        self._holds = holds
        self._mark_dirty = mark_dirty

    async def resolve(
        self,
        slot: int,
        generation: int | None = None,
        owner: tuple[str, int | None] | None = None,
    ) -> SlotInfo:
        """The record of a live slice this node can serve (of ``owner``, file id and slice
        index — None: any index of that file — when given); raises Redirect when another node
        must answer, SliceMoved (301), SliceDeleted/NotFound (404)."""
        ctx = self._ctx
        ctx.require()
        info = await self._known(slot, generation)
        if owner is not None and not _owned_by(info, owner):
            held = f"{info.file_id}#{info.slice_index}"
            why = f"slot {slot} holds {held}, not {owner[0]}#{owner[1]}"
            await self.confirm_current(why, slot=slot)
            info = await self._known(slot, generation)
            if not _owned_by(info, owner):
                raise NotFound(
                    f"the slot holds another file now ({why})",
                    group=ctx.group_id,
                    slot=slot,
                    reason="another_owner",
                )
        ctx.group.read(lambda g: g.require_live(slot, generation))  # 301 / 404 / pending
        if not self.serves(slot, info.generation):
            self._mark_dirty(slot)  # wake the reconciler: this node should fetch it
            holder = next((h for h in info.holders if h != ctx.node_id and h in ctx.urls), None)
            if holder is None:
                raise Unavailable("no replica of this slice is reachable", slot=slot)
            raise Redirect(ctx.urls[holder])
        return info

    def serves(self, slot: int, generation: int) -> bool:
        """Can this node serve ``slot`` at ``generation`` itself: its volume holds it, or the
        table still carries it as an inline upload."""
        if self._holds(slot, generation):
            return True
        return self._ctx.group.read(lambda g: g.inline(slot, generation)) is not None

    async def walk(
        self, start: int, limit: int, owner: tuple[str, int | None] | None = None
    ) -> tuple[list[ChainEntry], Location | None]:
        """This group's run of a chain from ``start``; :meth:`walk_versioned` without the
        version."""
        entries, nxt, _ = await self.walk_versioned(start, limit, owner)
        return entries, nxt

    async def walk_versioned(
        self,
        start: int,
        limit: int,
        owner: tuple[str, int | None] | None = None,
        expected_version: int | None = None,
    ) -> tuple[list[ChainEntry], Location | None, int]:
        """This group's run of a chain from ``start`` (``storage/chain.py``) and the version
        of the owner's file here (``GroupState.file_version``, 0 without an owner), both from
        one read of the table, answered only when this node can stand by them: when the walk
        fails (a deleted or unknown slice inside the chain), names another owner than
        ``owner`` (file id, index of the first slice or None: every entry of that file,
        whatever its index), or the version is not ``expected_version`` (the reader's, when
        given), this node must first be proven current (:meth:`confirm_current`); then a
        chain that still names another owner is :class:`NotFound`, and a version that still
        differs is answered as it is (the reader decides what it means)."""
        ctx = self._ctx
        ctx.require()
        file_id = None if owner is None else owner[0]
        entries, nxt, version, why = ctx.group.read(
            lambda g: _walk_read(g, start, limit, file_id, owner)
        )
        if why is None and expected_version is not None and version != expected_version:
            why = f"file version {version} here, the reader expects {expected_version}"
        if why is None:
            return entries, nxt, version
        await self.confirm_current(why, slot=start)
        first = ctx.group.read(lambda g: g.get(start))
        if first is None or first.state not in (SlotState.LIVE, SlotState.MOVED):
            # No chain starts here: a client's question, not a broken file (404, not 500).
            state = "never written" if first is None else first.state.value
            raise NotFound(f"no chain starts at slot {start} ({state})", slot=start)
        entries, nxt, version, why = ctx.group.read(
            lambda g: _walk_read(g, start, limit, file_id, owner, strict=True)
        )
        if why is not None:
            raise NotFound(why, group=ctx.group_id, slot=start, reason="another_owner")
        return entries, nxt, version

    async def confirm_current(self, why: str, **context: object) -> None:
        """Return only when this node's table is proven current: it leads and a no-op
        committed through the log (a read barrier) has been applied. A follower raises
        Redirect to its leader (or Unavailable when it knows none); a leader that cannot
        commit the barrier (cut off from its group) raises Unavailable, retryable."""
        ctx = self._ctx
        _, raft, _ = ctx.require()
        if not ctx.is_leader():
            url = ctx.leader_url()
            if url is None:
                raise Unavailable(
                    f"{why}; this replica may be behind and knows no leader yet",
                    group=ctx.group_id,
                    **context,
                )
            raise Redirect(url)
        try:
            await raft.barrier(timeout=CATCH_UP_WAIT)
        except NotLeader:
            raise  # deposed meanwhile: 307 to the new leader (503 when none is known)
        except Unavailable as exc:
            raise Unavailable(
                f"{why}; this node cannot prove its table current: {exc.message}",
                group=ctx.group_id,
                **context,
            ) from None

    async def read_local(
        self, info: SlotInfo, offset: int = 0, length: int | None = None
    ) -> SliceData:
        """Read a resolved slice (or a range) from this node's hot cache or its volume,
        checksums verified. The disk read is charged to the memory budget (the reply it
        becomes is not). Every local read of a slice's bytes goes through here."""
        ctx = self._ctx
        volume, _, _ = ctx.require()
        data = self._from_cache(volume, info, offset, length)
        if data is None:
            data = self._from_table(info, offset, length)
        if data is None:
            data = await self._from_disk(volume, info, offset, length)
        ctx.metrics.bytes_out.inc(len(data.data))
        ctx.access.slice_read(info.file_id, info.slice_index, info.slot, len(data.data))
        return data

    def forget(self, slot: int | None) -> None:
        """The table changed ``slot`` (None: maybe every slot): drop its cached bytes."""
        hot = self._ctx.hot
        hot.drop(slot)
        self._ctx.metrics.hot_bytes.set(hot.bytes)

    def _from_cache(
        self, volume: Volume, info: SlotInfo, offset: int, length: int | None
    ) -> SliceData | None:
        """The piece from the hot cache, only while the slice is still the table's live slice
        at that generation and the volume's header says the same; None otherwise."""
        ctx, hot = self._ctx, self._ctx.hot
        if not hot.enabled:
            return None
        payload = hot.get(info.slot, info.generation)
        if payload is None:
            ctx.metrics.hot_misses.inc()
            return None
        header = _current_header(volume, info.slot)
        if header is None and self._inline(info) is not None:
            header = _table_header(info, payload)  # an inline upload not in the volume yet
        now = ctx.info(info.slot)
        if (
            header is None
            or not _is_live(header.state, header.generation, info.generation)
            or now is None
            or not _is_live(now.state, now.generation, info.generation)
            or len(payload) != header.length
        ):
            self.forget(info.slot)
            ctx.metrics.hot_misses.inc()
            return None
        want = header.length - offset if length is None else length
        if offset < 0 or want < 0 or offset + want > header.length:
            return None  # the disk path answers bad ranges with its error
        ctx.metrics.hot_hits.inc()
        if offset == 0 and want == len(payload):
            return SliceData(header, 0, payload)
        return SliceData(header, offset, payload[offset : offset + want])

    def _inline(self, info: SlotInfo) -> bytes | None:
        return self._ctx.group.read(lambda g: g.inline(info.slot, info.generation))

    def _from_table(self, info: SlotInfo, offset: int, length: int | None) -> SliceData | None:
        """The piece of an inline upload the table still carries (before this node's volume
        has it: the volume copy, once written, is read like any other), or None. Counted like
        a disk read for the hot cache, which it may fill (the bytes were checked against their
        CRC32C when the command was decoded)."""
        ctx = self._ctx
        payload = self._inline(info)
        if payload is None:
            return None
        want = len(payload) - offset if length is None else length
        if offset < 0 or want < 0 or offset + want > len(payload):
            raise InvalidArgument(
                f"range {offset}+{want} outside slice of {len(payload)} bytes", slot=info.slot
            )
        if ctx.hot.note_read(info.slot, info.generation, len(payload)):
            ctx.metrics.hot_evictions.inc(ctx.hot.put(info.slot, info.generation, payload))
            ctx.metrics.hot_bytes.set(ctx.hot.bytes)
        header = _table_header(info, payload)
        return SliceData(header, offset, payload[offset : offset + want])

    async def _from_disk(
        self, volume: Volume, info: SlotInfo, offset: int, length: int | None
    ) -> SliceData:
        """The piece from the volume; the read that makes the slice hot reads all of it, and
        its verified bytes fill the cache."""
        ctx = self._ctx
        admit = ctx.hot.note_read(info.slot, info.generation, info.length)
        whole = (0, None) if admit else (offset, length)
        size = info.length - whole[0] if whole[1] is None else whole[1]
        lease = await ctx.inflight.charge(
            max(0, size), timeout=READ_BUDGET_WAIT, what=f"read of slot {info.slot}"
        )
        try:
            data = await ctx.disk(volume.read, info.slot, *whole)
        except Corrupt as exc:
            # Report, give up the bad copy; the reconciler fetches a good one from a holder.
            ctx.metrics.corrupt.inc()
            log.error("corrupt replica of slot %d: %s; dropping it for repair", info.slot, exc)
            self.forget(info.slot)
            with contextlib.suppress(MydfsError):
                await give_up_copy(
                    ctx, volume, info.slot, info.generation, self._mark_dirty, wait=False
                )
            self._mark_dirty(info.slot)
            raise
        finally:
            lease.release()
        if data.header.generation != info.generation:
            raise Unavailable("slot is being rewritten; retry", slot=info.slot)
        if not admit:
            return data
        now = ctx.info(info.slot)
        if now is not None and _is_live(now.state, now.generation, info.generation):
            ctx.metrics.hot_evictions.inc(ctx.hot.put(info.slot, info.generation, data.data))
            ctx.metrics.hot_bytes.set(ctx.hot.bytes)
        want = info.length - offset if length is None else length
        if offset == 0 and want == len(data.data):
            return data
        if offset < 0 or want < 0 or offset + want > len(data.data):
            raise InvalidArgument(
                f"range {offset}+{want} outside slice of {len(data.data)} bytes", slot=info.slot
            )
        return SliceData(data.header, offset, data.data[offset : offset + want])

    async def _known(self, slot: int, generation: int | None) -> SlotInfo:
        """The table's record of ``slot``, waiting briefly for Raft to catch up on a follower."""
        ctx = self._ctx
        deadline = time.monotonic() + CATCH_UP_WAIT
        while True:
            info = ctx.info(slot)
            fresh = info is not None and info.state != SlotState.PENDING
            if fresh and (
                generation is None or (info is not None and info.generation >= generation)
            ):
                assert info is not None
                return info
            if ctx.is_leader():
                if info is None:
                    raise NotFound("no such slice", group=ctx.group_id, slot=slot)
                ctx.group.read(lambda g: g.require_live(slot, generation))
                return info
            if time.monotonic() >= deadline:
                url = ctx.leader_url()
                if url is None:
                    raise Unavailable("group has no leader to ask", slot=slot)
                raise Redirect(url)
            ctx.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.changed.wait(), timeout=0.05)


def _table_header(info: SlotInfo, payload: bytes) -> SlotHeader:
    """The header an inline upload's copy will have in a volume, from the table's record."""
    return SlotHeader(
        slot=info.slot,
        state=DiskState.LIVE,
        generation=info.generation,
        length=len(payload),
        owner=SliceOwner(bytes.fromhex(info.file_id), info.slice_index),
        next=info.next,
        payload_crc=info.crc32c,
        block_crcs=tuple(block_crcs(payload, BLOCK_SIZE)),
    )


def _walk_read(
    g: GroupState,
    start: int,
    limit: int,
    file_id: str | None,
    owner: tuple[str, int | None] | None,
    *,
    strict: bool = False,
) -> tuple[list[ChainEntry], Location | None, int, str | None]:
    """One read of the table: the walk, the file's version, and why the run cannot be
    answered as it is (None when it can). ``strict``: a broken chain raises (Corrupt)."""
    version = 0 if file_id is None else g.file_version(file_id)
    try:
        entries, nxt = walk(g, start, limit)
    except Corrupt as exc:
        if strict:
            raise
        return [], None, version, exc.message
    return entries, nxt, version, _run_mismatch(entries, owner)


def _run_mismatch(entries: list[ChainEntry], owner: tuple[str, int | None] | None) -> str | None:
    """Why a run is not ``owner``'s (None when it is, or when no owner is expected)."""
    if owner is None:
        return None
    file_id, first = owner
    if first is not None:
        return owner_mismatch(entries, file_id, first)
    for entry in entries:
        if entry.file_id != file_id:
            return f"the chain names slice {entry.file_id}#{entry.index}, not of {file_id}"
    return None


def _owned_by(info: SlotInfo, owner: tuple[str, int | None]) -> bool:
    """Does the slot's record name ``owner`` (file id, slice index or None for any)?"""
    file_id, index = owner
    return info.file_id == file_id and (index is None or info.slice_index == index)


def _is_live(state: SlotState, generation: int, expected: int) -> bool:
    return state == SlotState.LIVE and generation == expected


def _current_header(volume: Volume, slot: int) -> SlotHeader | None:
    """The volume's header of ``slot`` (from memory), None when it holds none or it is
    quarantined."""
    try:
        return volume.header(slot)
    except MydfsError:
        return None
