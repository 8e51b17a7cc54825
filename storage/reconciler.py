"""The reconciler loop (every node): bring the local volume in line with the group's table.

Apply functions never touch the disk, so each node runs passes that carry out the actions
planned by the pure :func:`~mydfs.storage.reconcile.plan` (fetch, drop, move, relink, confirm,
reclaim). Which slots a pass looks at is decided by :class:`PassSelector`, also pure: the slots
whose records changed since the last pass (the apply hook marks them) and failed actions whose
retry time came; every :data:`FULL_PASS_INTERVAL` seconds, after start and after a snapshot
install, every slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

import aiohttp

from mydfs.common.errors import Corrupt, MydfsError
from mydfs.storage.budget import RECEIVING
from mydfs.storage.context import RAFT_TIMEOUT, NodeContext
from mydfs.storage.format import SliceOwner, SlotHeader
from mydfs.storage.group_commands import MAX_CONFIRMS, ConfirmMany
from mydfs.storage.group_state import SlotInfo
from mydfs.storage.peers import PeerClient
from mydfs.storage.reconcile import Kind, plan
from mydfs.storage.replica import ReplicaSide, drop_copy
from mydfs.storage.volume import Volume

log = logging.getLogger(__name__)

#: Seconds between reconciler passes over every slot (other passes look at changed slots).
FULL_PASS_INTERVAL = 30.0
#: Seconds before a failed reconciler action (a fetch from an unreachable holder...) is retried.
RETRY_DELAY = 2.0
#: Seconds one fetch of a slice from a peer may take.
FETCH_TIMEOUT = 30.0
#: Seconds the loop gathers the confirms its passes found before it submits them, all in one
#: ``confirm_many`` (a Raft entry, fsync'ed in three journals, for many copies instead of each).
CONFIRM_DELAY = 0.1


@dataclass(frozen=True)
class Selection:
    """The slots a pass looks at: every slot (``full``), or just ``slots``."""

    full: bool
    slots: frozenset[int] = frozenset()

    def __bool__(self) -> bool:
        return self.full or bool(self.slots)


class PassSelector:
    """Which slots the next reconciler pass looks at, and when failed actions run again.
    Pure: the time is passed in."""

    def __init__(
        self, full_interval: float = FULL_PASS_INTERVAL, retry_delay: float = RETRY_DELAY
    ) -> None:
        self.full_interval = full_interval
        self.retry_delay = retry_delay
        self._dirty: set[int] = set()  # slots whose table record changed since the last pass
        self._retry_at: dict[int, float] = {}  # slot -> when a failed action may run again
        self._full_due = True
        self._last_full: float | None = None

    def mark(self, slot: int | None) -> None:
        """Look at ``slot`` next pass (None: at every slot)."""
        if slot is None:
            self._full_due = True
        else:
            self._dirty.add(slot)

    def select(self, now: float) -> Selection:
        """The next pass's slots; marked slots and due retries are handed out once."""
        full_due = self._last_full is None or now - self._last_full > self.full_interval
        if self._full_due or full_due:
            self._full_due = False
            self._last_full = now
            self._dirty.clear()
            return Selection(full=True)
        due = {slot for slot, at in self._retry_at.items() if at <= now}
        slots, self._dirty = self._dirty | due, set()
        return Selection(full=False, slots=frozenset(slots))

    def may_run(self, slot: int, now: float) -> bool:
        """False while a failed action on ``slot`` waits for its retry time."""
        return self._retry_at.get(slot, 0.0) <= now

    def failed(self, slot: int, now: float) -> None:
        self._retry_at[slot] = now + self.retry_delay

    def succeeded(self, slot: int) -> None:
        self._retry_at.pop(slot, None)

    def settled(self, looked_at: Collection[int], acted: Collection[int]) -> None:
        """Forget the retries of slots a pass looked at and found nothing to do on."""
        for slot in [s for s in self._retry_at if s in looked_at and s not in acted]:
            del self._retry_at[slot]

    @property
    def waiting(self) -> int:
        """Slots with a failed action waiting for a retry."""
        return len(self._retry_at)


class Reconciler:
    """Runs reconciler passes whenever the table or the local volume changed."""

    def __init__(
        self,
        ctx: NodeContext,
        replica: ReplicaSide,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ctx = ctx
        self._replica = replica
        self._clock = clock
        self.selector = PassSelector()
        self.disk_error: str | None = None  # the last disk failure an action met
        self._confirms: dict[int, int] = {}  # slot -> generation: copies to confirm
        self._confirms_since: float | None = None  # when the oldest of them was found

    def mark_dirty(self, slot: int | None) -> None:
        """Have the reconciler look at ``slot`` (None: at every slot) on its next pass."""
        self.selector.mark(slot)
        self._ctx.changed.set()

    async def run(self) -> None:
        changed = self._ctx.changed
        while True:
            changed.clear()
            try:
                await self.reconcile_once(confirm_delay=CONFIRM_DELAY)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconcile pass failed")
            wait = 1.0
            if self._confirms_since is not None:
                wait = min(wait, max(0.0, self._confirms_since + CONFIRM_DELAY - self._clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=wait)
            await asyncio.sleep(0.02)  # let a burst of applies coalesce

    async def reconcile_once(self, confirm_delay: float = 0.0) -> int:
        """One pass: bring the local volume in line with the table. Returns actions taken.
        The confirms it finds are submitted once the oldest waited ``confirm_delay`` seconds
        (at once by default), together."""
        ctx = self._ctx
        _, raft, _ = ctx.require()
        if not raft.is_ready():
            return 0
        done = await self._pass()
        return done + await self._flush_confirms(confirm_delay)

    async def _pass(self) -> int:
        ctx, selector = self._ctx, self.selector
        volume, _, peers = ctx.require()
        now = self._clock()
        selection = selector.select(now)
        if selection.full:
            table = ctx.group.read(lambda g: g.slots())
            local = {h.slot: h for h in volume.scan()}
        elif selection.slots:
            slots = sorted(selection.slots)
            records = ctx.group.read(lambda g: [g.get(slot) for slot in slots])
            table = [info for info in records if info is not None]
            local = self._headers(slots)
        else:
            return 0
        actions = plan(table, local, ctx.node_id, volume.quarantined())
        by_slot = {info.slot: info for info in table}
        selector.settled(by_slot, {action.slot for action in actions})
        done = 0
        fetches: list[SlotInfo] = []
        for action in actions:
            info = by_slot[action.slot]
            if not selector.may_run(action.slot, now):
                continue
            if action.kind == Kind.FETCH:
                fetches.append(info)
                continue
            try:
                if action.kind == Kind.DROP:
                    await ctx.disk(drop_copy, volume, action.slot, action.generation)
                elif action.kind == Kind.MOVE:
                    assert action.target is not None
                    await ctx.disk(volume.mark_moved, action.slot, action.target)
                elif action.kind == Kind.RECLAIM:
                    await ctx.disk(volume.reclaim, action.slot)
                elif action.kind == Kind.RELINK:
                    await ctx.disk(volume.relink, action.slot, action.next)
                elif action.kind == Kind.CONFIRM:
                    self._confirms[action.slot] = action.generation
                    if self._confirms_since is None:
                        self._confirms_since = now
                    continue
                selector.succeeded(action.slot)
                done += 1
            except MydfsError as exc:
                self._failed(action.kind, action.slot, exc, now)
        done += await self._fetch_all(volume, peers, fetches, now)
        ctx.metrics.missing.set(selector.waiting)
        return done

    async def _flush_confirms(self, delay: float) -> int:
        """Submit the gathered confirms (``confirm_many``, :data:`MAX_CONFIRMS` per entry) once
        the oldest waited ``delay`` seconds; returns how many the table took."""
        since, now = self._confirms_since, self._clock()
        if since is None or now - since < delay:
            return 0
        ctx, selector = self._ctx, self.selector
        _, raft, _ = ctx.require()
        pending = sorted(self._confirms.items())
        self._confirms.clear()
        self._confirms_since = None
        done = 0
        for start in range(0, len(pending), MAX_CONFIRMS):
            chunk = pending[start : start + MAX_CONFIRMS]
            command = ConfirmMany(node=ctx.node_id, slices=tuple(chunk))
            try:
                result = await raft.submit(command.to_dict(), timeout=RAFT_TIMEOUT)
            except MydfsError as exc:
                log.warning("reconcile: confirming %d copies failed: %s", len(chunk), exc)
                for slot, _ in chunk:
                    selector.failed(slot, now)
                continue
            for slot in result.get("slots") or ():
                selector.succeeded(slot)
                done += 1
            for refused in result.get("refused") or ():
                log.info("reconcile confirm slot %s refused: %s", refused.get("slot"), refused)
                selector.failed(int(refused["slot"]), now)
        return done

    def _failed(self, kind: Kind, slot: int, exc: MydfsError, now: float) -> None:
        log.warning("reconcile %s slot %d: %s", kind.value, slot, exc)
        self.selector.failed(slot, now)
        if isinstance(exc, Corrupt | OSError):
            self.disk_error = str(exc)

    async def _fetch_all(
        self, volume: Volume, peers: PeerClient, infos: list[SlotInfo], now: float
    ) -> int:
        """Fetch the slices of ``infos``, ``fetch_concurrency`` at a time; returns how many
        arrived. Each one is charged to the memory budget while it is held."""
        ctx, selector = self._ctx, self.selector
        gate = asyncio.Semaphore(ctx.config.fetch_concurrency)

        async def one(info: SlotInfo) -> bool:
            async with gate:
                try:
                    lease = await ctx.inflight.charge(
                        RECEIVING * info.length,
                        timeout=RETRY_DELAY,
                        what=f"fetch of slot {info.slot}",
                    )
                    try:
                        fetched = await self._fetch(volume, peers, info)
                    finally:
                        lease.release()
                except MydfsError as exc:
                    self._failed(Kind.FETCH, info.slot, exc, now)
                    return False
            if not fetched:
                selector.failed(info.slot, now)
                return False
            selector.succeeded(info.slot)
            return True

        results = await asyncio.gather(*(one(info) for info in infos))
        return sum(results)

    def _headers(self, slots: Collection[int]) -> dict[int, SlotHeader]:
        local = {}
        for slot in slots:
            header = self._replica.local_header(slot)
            if header is not None:
                local[slot] = header
        return local

    async def _fetch(self, volume: Volume, peers: PeerClient, info: SlotInfo) -> bool:
        """Copy ``info``'s payload from the table (an inline upload it still carries), else
        from a holder (else the leader); False if none served it."""
        ctx = self._ctx
        owner = SliceOwner(bytes.fromhex(info.file_id), info.slice_index)
        inline = ctx.group.read(lambda g: g.inline(info.slot, info.generation))
        if inline is not None:
            await self._replica.store(
                volume, info.slot, inline, generation=info.generation, owner=owner, next=info.next
            )
            ctx.metrics.replication.labels("inline", "ok").inc()
            self.mark_dirty(info.slot)  # the next pass confirms the copy
            return True
        sources = [h for h in info.holders if h != ctx.node_id and h in ctx.urls]
        leader = ctx.leader_url()
        urls = [ctx.urls[h] for h in sources]
        if leader and leader not in urls and leader != ctx.config.advertise:
            urls.append(leader)
        for url in urls:
            try:
                data = await peers.fetch(
                    url,
                    slot=info.slot,
                    generation=info.generation,
                    crc=info.crc32c,
                    timeout=FETCH_TIMEOUT,
                )
                await self._replica.store(
                    volume, info.slot, data, generation=info.generation, owner=owner, next=info.next
                )
                ctx.metrics.replication.labels("fetch", "ok").inc()
                log.info("fetched slot %d gen %d from %s", info.slot, info.generation, url)
                return True
            except (MydfsError, aiohttp.ClientError, TimeoutError) as exc:
                ctx.metrics.replication.labels("fetch", "failed").inc()
                log.warning("fetch of slot %d from %s failed: %s", info.slot, url, exc)
        return False
