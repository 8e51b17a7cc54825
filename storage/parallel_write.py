"""The leader's parallel write of one slice: its own copy and a push to each follower at once,
returning as soon as 2 nodes hold it durably (``docs/replication.md``, "An upload")."""

from __future__ import annotations

import asyncio
import logging
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Sequence

from mydfs.common.location import Location
from mydfs.storage.context import NodeContext
from mydfs.storage.format import SliceOwner
from mydfs.storage.inflight import Lease
from mydfs.storage.replica import store_copy

log = logging.getLogger(__name__)


async def replicate(
    ctx: NodeContext,
    slot: int,
    generation: int,
    data: bytes,
    lease: Lease,
    *,
    owner: SliceOwner,
    next: Location | None,
    crc: int,
) -> set[str]:
    """Write locally and push to both followers at once; return who has it durably.

    Returns as soon as 2 nodes have it (the third push goes on in the background and its
    node confirms through its reconciler), or when every attempt has finished or timed out.
    A push to a follower past its share of the memory budget is not made (see
    storage/budget.py): that follower fetches the slice later.
    """
    volume, _, peers = ctx.require()
    if not ctx.registration.put(slot, generation, data, time.monotonic(), lease.hold()):
        lease.release()  # not kept: give back the registration's hold
    timeout = ctx.config.replica_timeout

    async def local() -> str:
        # As a follower stores a push: an older copy left in a reused slot is dropped first.
        await store_copy(ctx, volume, slot, data, generation=generation, owner=owner, next=next)
        return ctx.node_id

    async def remote(peer_id: str) -> str:
        await peers.push(
            ctx.urls[peer_id],
            slot=slot,
            generation=generation,
            file_id=owner.file_id.hex(),
            index=owner.index,
            next=next,
            crc=crc,
            data=data,
            timeout=timeout,
        )
        # Durable there: once both followers are (or the other one lags and will read the
        # slice from a disk), nobody needs the in-memory copy.
        lagging = ctx.inflight.budget.lagging(time.monotonic())
        ctx.registration.confirm(slot, generation, peer_id, lagging)
        return peer_id

    def start(peer_id: str, force: bool = False) -> asyncio.Task[str] | None:
        return ctx.inflight.push(peer_id, lease, lambda: remote(peer_id), force=force)

    pushes = [start(p.node_id) for p in ctx.config.peers]
    if not any(pushes):  # every follower lags, but the majority needs one: push anyway
        pushes = [start(p.node_id, force=True) for p in ctx.config.peers]
    attempts: list[asyncio.Future[str]] = [asyncio.ensure_future(local())]
    attempts += [t for t in pushes if t is not None]
    pending: set[asyncio.Future[str]] = set(attempts)
    holders: set[str] = set()
    try:
        async with asyncio.timeout(timeout):
            while pending and len(holders) < 2:
                done, pending = await asyncio.wait(pending, return_when=FIRST_COMPLETED)
                for task in done:
                    if task.cancelled():  # a push cancelled: its follower was lagging
                        ctx.metrics.replication.labels("push", "dropped").inc()
                        continue
                    exc = task.exception()
                    if exc is None:
                        holders.add(task.result())
                        ctx.metrics.replication.labels("push", "ok").inc()
                    else:
                        ctx.metrics.replication.labels("push", "failed").inc()
                        log.warning("replica write of slot %d failed: %s", slot, exc)
    except TimeoutError:
        log.warning("slot %d: only %d replicas within %.1fs", slot, len(holders), timeout)
    finally:
        _watch_late(attempts)
    return holders


def _watch_late(attempts: Sequence[asyncio.Future[str]]) -> None:
    """Leave no attempt's error unretrieved, whichever way ``replicate`` ended (enough
    holders, its timeout, or its caller cancelled): one still running is logged when it ends;
    one already done was either seen by the loop or finished alongside the ones it saw."""
    for task in attempts:
        if not task.done():
            task.add_done_callback(_log_late_failure)
        elif not task.cancelled():
            task.exception()


def _log_late_failure(task: asyncio.Future[str]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.warning("late replica write failed: %s", exc)
