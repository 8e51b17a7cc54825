"""What every part of a storage node shares: the group table behind its lock, and the node's
handles (volume, Raft, peers, disk threads) with the few helpers each part needs.

* :class:`LockedGroup` hosts the pure :class:`~mydfs.storage.group_state.GroupState` under one
  lock, so Raft applies it on its thread while HTTP handlers read it on the event loop.
* :class:`NodeContext` is handed to the writer, the replica side, the reads, the settler and the
  reconciler (:mod:`mydfs.storage.node` wires them). The volume, Raft node and peer client exist
  only once :meth:`StorageNode.start` ran; :meth:`NodeContext.require` says so with a 503.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import aiohttp

from mydfs.common.errors import MydfsError, NotLeader, Unavailable
from mydfs.raft_ext.node import RaftNode
from mydfs.storage.access_stats import AccessStats
from mydfs.storage.budget import MemoryBudget
from mydfs.storage.config import StorageConfig
from mydfs.storage.group_state import GroupState, SlotInfo, raise_for_result
from mydfs.storage.hot_cache import HotCache
from mydfs.storage.inflight import InFlight
from mydfs.storage.metrics import StorageMetrics
from mydfs.storage.peers import PeerClient
from mydfs.storage.registration import RegistrationTable
from mydfs.storage.volume import Volume

_T = TypeVar("_T")

#: The edit commands (storage/edit_commands.py): their results list the slots they changed.
EDIT_OPS = frozenset({"prepare", "commit", "rollback"})

#: Commands that change only slots' holders, never their bytes.
HOLDER_OPS = frozenset({"confirm", "confirm_many", "unconfirm"})
#: Commands whose results list the slots they changed (``slots``; none when refused).
MULTI_SLOT_OPS = EDIT_OPS | {"confirm_many"}
#: Told of every applied command: the slot it changed (None: maybe every slot), and whether
#: the slice's bytes there may have changed (False: only its holders did).
Applied = Callable[[int | None, bool], None]

#: Seconds a command may take to commit through Raft.
RAFT_TIMEOUT = 5.0


class LockedGroup:
    """The group state machine behind one lock (Raft thread applies, event loop reads)."""

    def __init__(self, state: GroupState, on_applied: Applied) -> None:
        self._state = state
        self._lock = threading.Lock()
        self._on_applied = on_applied

    def apply(self, command: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            result = self._state.apply(command)
        op = command.get("op")
        # A holder more or less changes no byte of the slice: its cached copy stays good.
        bytes_changed = op not in HOLDER_OPS
        if op in MULTI_SLOT_OPS:
            for changed in result.get("slots") or ():
                self._on_applied(changed, bytes_changed)
            return result
        slot = result.get("slot", command.get("slot"))
        self._on_applied(slot if isinstance(slot, int) else None, bytes_changed)
        return result

    def snapshot(self) -> bytes:
        with self._lock:
            return self._state.snapshot()

    def restore(self, data: bytes) -> None:
        with self._lock:
            self._state.restore(data)
        self._on_applied(None, True)  # a whole new table: every slot may have changed

    def read(self, fn: Callable[[GroupState], _T]) -> _T:
        with self._lock:
            return fn(self._state)


class NodeContext:
    """A storage node's shared handles: config, table, metrics, registration table, and once
    started the volume, the Raft node, the peer client and the HTTP session."""

    def __init__(self, config: StorageConfig, on_applied: Applied) -> None:
        self.config = config
        self.group_id = config.group_id
        self.node_id = config.node_id
        self.urls = {p.node_id: p.http for p in config.members}
        self.metrics = StorageMetrics()
        self.group = LockedGroup(GroupState(config.group_id), on_applied)
        self.registration = RegistrationTable(config.registration_bytes, config.registration_ttl)
        #: Payload bytes in flight, held to the node's memory budget (see storage/budget.py).
        self.inflight = InFlight(
            MemoryBudget(config.memory_budget_bytes, config.peer_budget_bytes),
            self.metrics,
            evict=self.registration.evict_oldest,
            on_lagging=self.registration.forget_for,
        )
        #: Set whenever Raft applied a command or a local copy changed (reads and the
        #: reconciler wait on it).
        self.changed = asyncio.Event()
        self.executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="disk")
        self.volume: Volume | None = None
        self.raft: RaftNode[LockedGroup] | None = None
        self.peers: PeerClient | None = None
        self.session: aiohttp.ClientSession | None = None
        #: Live counters: requests, bytes, per-slice reads (see storage/monitoring.py).
        self.access = AccessStats(time.monotonic())
        #: Slices read often, kept in memory (storage/hot_cache.py; event loop only).
        self.hot = HotCache(config.hot_cache_reads, config.hot_cache_bytes)

    async def disk(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run a (blocking) volume call on the disk threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    def require(self) -> tuple[Volume, RaftNode[LockedGroup], PeerClient]:
        if self.volume is None or self.raft is None or self.peers is None:
            raise Unavailable("node is starting", node=self.node_id)
        return self.volume, self.raft, self.peers

    def info(self, slot: int) -> SlotInfo | None:
        """The table's record of ``slot``, if any."""
        return self.group.read(lambda g: g.get(slot))

    def is_leader(self) -> bool:
        return self.raft is not None and self.raft.is_leader()

    def leader_url(self) -> str | None:
        return None if self.raft is None else self.raft.leader_url()

    def not_leader_error(self) -> MydfsError:
        """The error for a write sent here while another node leads (307 with its URL)."""
        url = self.leader_url()
        if url:
            return NotLeader("writes go to the group leader", leader=url, group=self.group_id)
        return Unavailable("the group has no leader right now", group=self.group_id)

    async def submit(self, command: dict[str, Any]) -> Mapping[str, Any]:
        """Commit a group command through Raft on the leader; its result, or its typed error."""
        _, raft, _ = self.require()
        try:
            result = await raft.submit_if_leader(command, timeout=RAFT_TIMEOUT)
        except NotLeader:
            raise self.not_leader_error() from None
        return raise_for_result(result)
