"""A storage node: the volume, the group's Raft, and the replication protocol between them.

``docs/replication.md`` describes the protocol. This module only starts, wires and stops the
parts, one module per role; the HTTP handlers (:mod:`mydfs.storage.http_api`) call them:

* :mod:`~mydfs.storage.context` — the shared handles (table behind its lock, volume, Raft...);
* :mod:`~mydfs.storage.writer` — the leader's write path (reserve, fill, push, seal) and edits;
* :mod:`~mydfs.storage.replica` — the replica side (accept a push, serve a fetch, "holds");
* :mod:`~mydfs.storage.reads` — read resolution (serve, redirect, wait for the log);
* :mod:`~mydfs.storage.settle` — settlement of pending slots (leader);
* :mod:`~mydfs.storage.reconciler` — the reconciler loop (every node);
* :mod:`~mydfs.storage.status` — the heartbeat body and ``/status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from mydfs.common.checksum import crc32c
from mydfs.common.errors import Corrupt, MydfsError, Redirect, Unavailable, error_from_dict
from mydfs.common.location import Location
from mydfs.raft_ext.node import RaftNode
from mydfs.raft_ext.settings import RaftSettings
from mydfs.storage.chain import walk
from mydfs.storage.config import StorageConfig
from mydfs.storage.context import LockedGroup, NodeContext
from mydfs.storage.group_state import SlotInfo
from mydfs.storage.heartbeat import TrackerLink
from mydfs.storage.peers import PeerClient
from mydfs.storage.reads import ReadResolver
from mydfs.storage.reconciler import Reconciler
from mydfs.storage.replica import ReplicaSide
from mydfs.storage.settle import Settler
from mydfs.storage.status import LoadMeter, heartbeat_report, status_report
from mydfs.storage.volume import SliceData, Volume
from mydfs.storage.writer import LeaderWriter, Stored, new_upload_id

log = logging.getLogger(__name__)


class StorageNode:
    """One member of a storage group. Start with :meth:`start`, stop with :meth:`close`."""

    def __init__(self, config: StorageConfig) -> None:
        self.config = config
        self.ctx = ctx = NodeContext(config, self._applied_from_thread)
        self.group_id = config.group_id
        self.node_id = config.node_id
        self.urls = ctx.urls
        self.group = ctx.group
        self.metrics = ctx.metrics
        self.registration = ctx.registration
        self.tracker: TrackerLink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._leader_tasks: list[asyncio.Task[None]] = []
        self._load = LoadMeter(time.monotonic())
        # The parts, one per role.
        inflight: set[int] = set()  # slots this leader is uploading right now
        self.replica = ReplicaSide(ctx, self._mark_dirty)
        self.reconciler = Reconciler(ctx, self.replica)
        self.reads = ReadResolver(ctx, self.replica.holds, self._mark_dirty)
        self.settler = Settler(ctx, self.replica.holds, inflight)
        self.writer = LeaderWriter(ctx, self.settler.settle_one, inflight)

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        cfg, ctx = self.config, self.ctx
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        ctx.volume = await ctx.disk(
            Volume.open, cfg.volume_path, create=True, node_id=cfg.node_id, group_id=cfg.group_id
        )
        ctx.session = aiohttp.ClientSession()
        ctx.peers = PeerClient(cfg.secret, ctx.session, cfg.node_id)
        settings = RaftSettings(
            self_address=cfg.raft,
            peers=tuple(p.raft for p in cfg.peers),
            http_urls={p.raft: p.http for p in cfg.members},
            data_dir=cfg.data_dir / "raft",
            password=cfg.secret,
        )
        ctx.raft = RaftNode(
            settings,
            ctx.group,
            on_become_leader=self._became_leader,
            on_lose_leadership=self._lost_leadership,
            on_fatal=self._fatal,
        )
        await ctx.raft.start()
        self._tasks.append(asyncio.create_task(self.reconciler.run(), name="reconcile"))
        if cfg.tracker:
            self.tracker = TrackerLink(
                cfg.tracker, cfg.secret, ctx.session, self.heartbeat, cfg.heartbeat_interval
            )
            self._tasks.append(asyncio.create_task(self.tracker.run(), name="heartbeat"))
        log.info("node %s of group %d started", cfg.node_id, cfg.group_id)

    async def close(self) -> None:
        ctx = self.ctx
        for task in self._tasks + self._leader_tasks:
            task.cancel()
        for task in self._tasks + self._leader_tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await ctx.inflight.close()
        if ctx.raft is not None:
            await ctx.raft.close()
        if ctx.session is not None:
            await ctx.session.close()
        if ctx.volume is not None:
            await ctx.disk(ctx.volume.close)
        ctx.executor.shutdown(wait=True)

    def _fatal(self, exc: BaseException) -> None:
        log.critical("raft stopped: %s; exiting", exc)
        os._exit(70)

    def _applied_from_thread(self, slot: int | None) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._mark_dirty, slot)

    def _mark_dirty(self, slot: int | None) -> None:
        """Have the reconciler look at ``slot`` (None: at every slot) on its next pass."""
        self.reconciler.mark_dirty(slot)

    @property
    def volume(self) -> Volume | None:
        return self.ctx.volume

    @property
    def raft(self) -> RaftNode[LockedGroup] | None:
        return self.ctx.raft

    @property
    def _session(self) -> aiohttp.ClientSession | None:
        return self.ctx.session

    def _require(self) -> tuple[Volume, RaftNode[LockedGroup], PeerClient]:
        return self.ctx.require()

    # --- leadership ---------------------------------------------------------------------------

    def is_leader(self) -> bool:
        return self.ctx.is_leader()

    def leader_url(self) -> str | None:
        return self.ctx.leader_url()

    def not_leader_error(self) -> MydfsError:
        return self.ctx.not_leader_error()

    def _became_leader(self) -> None:
        log.info("node %s is now the leader of group %d", self.node_id, self.group_id)
        self._leader_tasks.append(asyncio.create_task(self.settler.run(), name="settle"))

    def _lost_leadership(self) -> None:
        log.info("node %s is no longer the leader", self.node_id)
        for task in self._leader_tasks:
            task.cancel()
        self._leader_tasks.clear()
        self.registration.clear()

    # --- what the chain walk and the cross-group reads use --------------------------------------

    def holds(self, slot: int, generation: int) -> bool:
        return self.replica.holds(slot, generation)

    def info(self, slot: int) -> SlotInfo | None:
        return self.ctx.info(slot)

    async def read_local(
        self, info: SlotInfo, offset: int = 0, length: int | None = None
    ) -> SliceData:
        return await self.reads.read_local(info, offset, length)

    # --- chains and cross-group reads ------------------------------------------------------------

    def chain_here(self, start: int, limit: int) -> tuple[list[dict[str, Any]], Location | None]:
        """Walk the chain from ``start`` through this group's table (see storage/chain.py)."""
        entries, cont = self.group.read(lambda g: walk(g, start, limit))
        return [e.to_dict(self.urls) for e in entries], cont

    def _urls_of(self, group: int) -> list[str]:
        if group == self.group_id:
            return list(self.urls.values())
        return list(self.tracker.replicas(group)) if self.tracker is not None else []

    async def chain(self, head: Location, limit: int) -> list[dict[str, Any]]:
        """Every slice of a chain from ``head`` (at most ``limit``), across groups: one walk
        per group run, the other groups asked over HTTP (``GET /chain/{slot}``)."""
        self._require()
        assert self._session is not None
        entries: list[dict[str, Any]] = []
        current: Location | None = head
        while current is not None and len(entries) < limit:
            want = limit - len(entries)
            start = current
            if start.group == self.group_id:
                try:
                    part, current = self.chain_here(start.slot, want)
                except Corrupt:
                    if self.is_leader():
                        raise
                    # This replica may be behind: the leader knows every sealed slice. Just
                    # restarted, it may not know the leader yet: then any other member will do.
                    others = [u for n, u in self.urls.items() if n != self.node_id]
                    urls = [self.leader_url() or "", *others]
                    part, current = await self._remote_chain(urls, start, want)
            else:
                part, current = await self._remote_chain(self._urls_of(start.group), start, want)
            if not part and current == start:
                raise Corrupt("chain makes no progress", group=current.group, slot=current.slot)
            entries += part
        return entries

    async def _remote_chain(
        self, urls: list[str], start: Location, limit: int
    ) -> tuple[list[dict[str, Any]], Location | None]:
        assert self._session is not None
        last: Exception | None = None
        for url in [u for u in urls if u]:
            try:
                async with self._session.get(
                    f"{url}/chain/{start.slot}?max={limit}",
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as resp:
                    body = await resp.json()
                    if resp.status != 200:
                        last = error_from_dict(body)
                        continue
                nxt = body.get("next")
                return list(body["entries"]), None if nxt is None else Location(nxt[0], nxt[1])
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                last = exc
        raise Unavailable(
            f"no node of group {start.group} answered the chain walk: {last}",
            group=start.group,
            slot=start.slot,
        )

    async def slice_bytes(self, entry: Mapping[str, Any], offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of a chain entry: from this disk if held, else from a
        replica of its group (which verifies the blocks it reads; whole slices are checked
        against the entry's CRC32C here too)."""
        group, slot, gen = int(entry["group"]), int(entry["slot"]), int(entry["generation"])
        if group == self.group_id and self.holds(slot, gen):
            info = self.info(slot)
            if info is not None and info.generation == gen:
                return (await self.read_local(info, offset, length)).data
        assert self._session is not None
        whole = offset == 0 and length == int(entry["length"])
        headers = {} if whole else {"Range": f"bytes={offset}-{offset + length - 1}"}
        last: Exception | None = None
        for url in list(entry.get("replicas") or []) or self._urls_of(group):
            try:
                async with self._session.get(
                    f"{url}/slices/{slot}?gen={gen}",
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=30),
                ) as resp:
                    if resp.status not in (200, 206):
                        last = Unavailable(f"replica answered HTTP {resp.status}", peer=url)
                        continue
                    data = await resp.read()
                if len(data) != length or (whole and crc32c(data) != int(entry["crc32c"])):
                    last = Corrupt("replica returned a wrong slice", peer=url, slot=slot)
                    continue
                return data
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = exc
        raise Unavailable(
            f"no replica of group {group} served slot {slot}: {last}", group=group, slot=slot
        )

    # --- heartbeat -------------------------------------------------------------------------------

    def count_request(self) -> None:
        self._load.count()

    def heartbeat(self) -> dict[str, Any]:
        """What this node tells the tracker every heartbeat."""
        return heartbeat_report(self.ctx, self._load.rate(time.monotonic()))

    def status(self) -> dict[str, Any]:
        return status_report(self.ctx, self.reconciler.disk_error)


__all__ = ["LockedGroup", "Redirect", "StorageNode", "Stored", "new_upload_id"]
