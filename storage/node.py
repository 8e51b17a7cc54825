"""A storage node: the volume, the group's Raft, and the replication protocol between them.

``docs/replication.md`` describes the protocol. This module only starts, wires and stops the
parts, one module per role; the HTTP handlers (:mod:`mydfs.storage.http_api`) call them:

* :mod:`~mydfs.storage.context` — the shared handles (table behind its lock, volume, Raft...);
* :mod:`~mydfs.storage.writer` — the leader's write path (reserve, fill, push, seal) and edits;
* :mod:`~mydfs.storage.replica` — the replica side (accept a push, serve a fetch, "holds");
* :mod:`~mydfs.storage.reads` — read resolution (serve, redirect, wait for the log);
* :mod:`~mydfs.storage.settle` — settlement of pending slots (leader);
* :mod:`~mydfs.storage.edits` — edit prepare/commit/rollback and the edit resolver (leader);
* :mod:`~mydfs.storage.reconciler` — the reconciler loop (every node);
* :mod:`~mydfs.storage.scrub` — the background scrub of the local copies (every node);
* :mod:`~mydfs.storage.status` — the heartbeat body and ``/status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

import aiohttp

from mydfs.common.errors import MydfsError, Redirect
from mydfs.common.fsio import restrict_tree
from mydfs.common.location import Location
from mydfs.common.tls import connector as tls_connector
from mydfs.raft_ext.node import RaftNode
from mydfs.raft_ext.settings import RaftSettings
from mydfs.storage.chain import walk
from mydfs.storage.config import StorageConfig
from mydfs.storage.context import LockedGroup, NodeContext
from mydfs.storage.edits import EditParticipant
from mydfs.storage.file_reader import FileReader
from mydfs.storage.group_state import SlotInfo
from mydfs.storage.heartbeat import TrackerLink
from mydfs.storage.monitoring import AccessCollector, flush_loop, flush_totals, load_totals
from mydfs.storage.peers import PeerClient
from mydfs.storage.reads import ReadResolver
from mydfs.storage.reconciler import Reconciler
from mydfs.storage.replica import ReplicaSide
from mydfs.storage.scrub import Scrubber
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
        self.edits = EditParticipant(ctx)
        self.scrubber = Scrubber(ctx, self._mark_dirty)
        ctx.metrics.registry.register(AccessCollector(ctx))

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        cfg, ctx = self.config, self.ctx
        cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Volume, Raft journal and snapshots, access totals: owner-only (0600, folders 0700).
        refused = restrict_tree(cfg.data_dir)
        if refused:
            log.warning("cannot make owner-only (not ours): %s", ", ".join(refused[:5]))
        if cfg.volume_path.exists():  # it may live outside data_dir
            os.chmod(cfg.volume_path, 0o600)
        load_totals(ctx)
        ctx.volume = await ctx.disk(
            Volume.open, cfg.volume_path, create=True, node_id=cfg.node_id, group_id=cfg.group_id
        )
        # Every outgoing call (peers, fetches, reads, heartbeats) trusts tls_ca if set.
        ctx.session = aiohttp.ClientSession(connector=tls_connector(cfg.tls_ca))
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
        self._tasks.append(asyncio.create_task(flush_loop(ctx), name="access-totals"))
        self._tasks.append(asyncio.create_task(self.scrubber.run(), name="scrub"))
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
        await flush_totals(ctx)
        if ctx.volume is not None:
            await ctx.disk(ctx.volume.close)
        ctx.executor.shutdown(wait=True)

    def _fatal(self, exc: BaseException) -> None:
        log.critical("raft stopped: %s; exiting", exc)
        os._exit(70)

    def _applied_from_thread(self, slot: int | None, bytes_changed: bool) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._table_changed, slot, bytes_changed)

    def _table_changed(self, slot: int | None, bytes_changed: bool) -> None:
        """Raft applied a command changing ``slot`` (None: maybe every slot); a cached copy
        goes unless only the slot's holders changed."""
        if bytes_changed:
            self.reads.forget(slot)
        self._mark_dirty(slot)

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
        self._leader_tasks.append(asyncio.create_task(self.edits.run(), name="edit-resolver"))

    def _lost_leadership(self) -> None:
        log.info("node %s is no longer the leader", self.node_id)
        for task in self._leader_tasks:
            task.cancel()
        self._leader_tasks.clear()
        self.registration.clear()

    # --- what the chain walk and the cross-group reads use --------------------------------------

    def holds(self, slot: int, generation: int) -> bool:
        """Can this node serve the slice from its volume or its table (an inline upload)?"""
        return self.reads.serves(slot, generation)

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

    def file_reader(self) -> FileReader:
        """What walks chains across groups and streams files (storage/file_reader.py)."""
        self._require()
        assert self._session is not None
        return FileReader(self, self._session)

    # --- heartbeat -------------------------------------------------------------------------------

    def count_request(self) -> None:
        self._load.count()

    def heartbeat(self) -> dict[str, Any]:
        """What this node tells the tracker every heartbeat."""
        load = self._load.rate(time.monotonic())
        return heartbeat_report(self.ctx, load, self.scrubber.unrepairable)

    def status(self) -> dict[str, Any]:
        return status_report(self.ctx, self.reconciler.disk_error, self.scrubber.report())


__all__ = ["LockedGroup", "Redirect", "StorageNode", "Stored", "new_upload_id"]
