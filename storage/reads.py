"""Read resolution: which node answers a read of a slot, and the local read itself.

The table in ``docs/replication.md`` ("Reads") is what :meth:`ReadResolver.resolve` carries out:
a live slice held here is served; one the table says lives elsewhere gets a 307 to a holder; a
replica behind its log waits up to :data:`CATCH_UP_WAIT` seconds, then sends the reader to the
leader; the leader, which has applied every acknowledged seal, answers 404 for what it lacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from mydfs.common.errors import Corrupt, MydfsError, NotFound, Redirect, Unavailable
from mydfs.storage.context import NodeContext
from mydfs.storage.group_state import SlotInfo, SlotState
from mydfs.storage.volume import SliceData

log = logging.getLogger(__name__)

#: How long a follower waits for its Raft state to catch up before redirecting a read.
CATCH_UP_WAIT = 2.0


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

    async def resolve(self, slot: int, generation: int | None = None) -> SlotInfo:
        """The record of a live slice this node can serve; raises Redirect when another node
        must answer, SliceMoved (301), SliceDeleted/NotFound (404)."""
        ctx = self._ctx
        ctx.require()
        info = await self._known(slot, generation)
        ctx.group.read(lambda g: g.require_live(slot, generation))  # 301 / 404 / pending
        if not self._holds(slot, info.generation):
            self._mark_dirty(slot)  # wake the reconciler: this node should fetch it
            holder = next((h for h in info.holders if h != ctx.node_id and h in ctx.urls), None)
            if holder is None:
                raise Unavailable("no replica of this slice is reachable", slot=slot)
            raise Redirect(ctx.urls[holder])
        return info

    async def read_local(
        self, info: SlotInfo, offset: int = 0, length: int | None = None
    ) -> SliceData:
        """Read a resolved slice (or a range) from this node's volume, checksums verified."""
        ctx = self._ctx
        volume, _, _ = ctx.require()
        try:
            data = await ctx.disk(volume.read, info.slot, offset, length)
        except Corrupt as exc:
            # Report, drop the bad copy, and let the reconciler fetch a good one from a holder.
            ctx.metrics.corrupt.inc()
            log.error("corrupt replica of slot %d: %s; dropping it for repair", info.slot, exc)
            with contextlib.suppress(MydfsError):
                await ctx.disk(volume.mark_deleted, info.slot)
            self._mark_dirty(info.slot)
            raise
        if data.header.generation != info.generation:
            raise Unavailable("slot is being rewritten; retry", slot=info.slot)
        ctx.metrics.bytes_out.inc(len(data.data))
        ctx.access.slice_read(info.file_id, info.slice_index, info.slot, len(data.data))
        return data

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
