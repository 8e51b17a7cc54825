"""A storage node: the volume, the group's Raft, and the replication protocol between them.

``docs/replication.md`` describes the protocol; this module carries it out. The pieces:

* :class:`LockedGroup` hosts the pure :class:`~mydfs.storage.group_state.GroupState` under one
  lock, so Raft applies it on its thread while HTTP handlers read it on the event loop.
* :class:`StorageNode` owns the volume (disk I/O in worker threads), the Raft node, the leader's
  registration table, the reconciler loop (every node) and the settlement loop (leader only).
  Its methods are what the HTTP handlers in :mod:`mydfs.storage.http_api` call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import aiohttp

from mydfs.common.checksum import crc32c
from mydfs.common.errors import (
    Conflict,
    Corrupt,
    InvalidArgument,
    MydfsError,
    NotFound,
    NotLeader,
    OutcomeUnknown,
    PayloadTooLarge,
    SliceDeleted,
    Unavailable,
)
from mydfs.common.location import Location
from mydfs.raft_ext.node import RaftNode
from mydfs.raft_ext.settings import RaftSettings
from mydfs.storage.chain import walk
from mydfs.storage.config import StorageConfig
from mydfs.storage.file_reader import FileReader
from mydfs.storage.format import PAYLOAD_CAPACITY, SLOT_SIZE, SliceOwner, SlotHeader
from mydfs.storage.format import SlotState as DiskState
from mydfs.storage.group_commands import Abort, Confirm, Relink, Reserve, Seal
from mydfs.storage.group_state import GroupState, SlotInfo, SlotState, raise_for_result
from mydfs.storage.heartbeat import TrackerLink
from mydfs.storage.metrics import StorageMetrics
from mydfs.storage.peers import PeerClient
from mydfs.storage.reconcile import Kind, plan
from mydfs.storage.registration import RegistrationTable
from mydfs.storage.volume import SliceData, Volume

log = logging.getLogger(__name__)
_T = TypeVar("_T")

RAFT_TIMEOUT = 5.0
#: Fault-injection points for crash tests, from MYDFS_FAULTS (comma-separated): the process
#: exits at once (as kill -9 would) when an upload reaches the named point.
FAULTS = frozenset(f for f in os.environ.get("MYDFS_FAULTS", "").split(",") if f)
#: Seconds between reconciler passes over every slot (other passes look at changed slots).
FULL_PASS_INTERVAL = 30.0
#: Seconds before a failed reconciler action (a fetch from an unreachable holder...) is retried.
RETRY_DELAY = 2.0
#: How long a pending slot may wait for silent nodes (maybe holders) before it is aborted.
SETTLE_PATIENCE = 30.0
#: How long a follower waits for its Raft state to catch up before redirecting a read.
CATCH_UP_WAIT = 2.0


class LockedGroup:
    """The group state machine behind one lock (Raft thread applies, event loop reads)."""

    def __init__(self, state: GroupState, on_applied: Callable[[int | None], None]) -> None:
        self._state = state
        self._lock = threading.Lock()
        self._on_applied = on_applied

    def apply(self, command: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            result = self._state.apply(command)
        slot = result.get("slot", command.get("slot"))
        self._on_applied(slot if isinstance(slot, int) else None)
        return result

    def snapshot(self) -> bytes:
        with self._lock:
            return self._state.snapshot()

    def restore(self, data: bytes) -> None:
        with self._lock:
            self._state.restore(data)
        self._on_applied(None)  # a whole new table: every slot may have changed

    def read(self, fn: Callable[[GroupState], _T]) -> _T:
        with self._lock:
            return fn(self._state)


@dataclass(frozen=True)
class Stored:
    """What an upload returns: where the slice lives and what it is."""

    group: int
    slot: int
    generation: int
    length: int
    crc32c: int
    holders: tuple[str, ...]
    duplicate: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "slot": self.slot,
            "generation": self.generation,
            "length": self.length,
            "crc32c": self.crc32c,
            "holders": list(self.holders),
            "duplicate": self.duplicate,
        }


@dataclass(frozen=True)
class Reservation:
    """A slot picked for an upload by ``reserve``."""

    slot: int
    generation: int
    state: SlotState
    duplicate: bool
    holders: tuple[str, ...]

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> Reservation:
        return cls(
            slot=int(result["slot"]),
            generation=int(result["generation"]),
            state=SlotState(result["state"]),
            duplicate=bool(result.get("duplicate")),
            holders=tuple(result.get("holders") or ()),
        )

    def to_dict(self, group: int) -> dict[str, Any]:
        return {
            "group": group,
            "slot": self.slot,
            "generation": self.generation,
            "state": self.state.value,
            "duplicate": self.duplicate,
            "holders": list(self.holders),
        }


class Redirect(Exception):
    """Not an error: the request should go to ``url`` (307)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


class StorageNode:
    """One member of a storage group. Start with :meth:`start`, stop with :meth:`close`."""

    def __init__(self, config: StorageConfig) -> None:
        self.config = config
        self.group_id = config.group_id
        self.node_id = config.node_id
        self.metrics = StorageMetrics()
        self.urls = {p.node_id: p.http for p in config.members}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self.group = LockedGroup(GroupState(config.group_id), self._applied_from_thread)
        self.registration = RegistrationTable(config.registration_bytes, config.registration_ttl)
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="disk")
        self.volume: Volume | None = None
        self.raft: RaftNode[LockedGroup] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.peers: PeerClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._leader_tasks: list[asyncio.Task[None]] = []
        self._inflight: set[int] = set()  # slots this leader is uploading right now
        self._retry_at: dict[int, float] = {}  # slot -> when a failed action may run again
        self._dirty: set[int] = set()  # slots whose table record changed since the last pass
        self._full_pass_due = True
        self._last_full_pass = 0.0
        self.disk_error: str | None = None
        self.tracker: TrackerLink | None = None
        self._served = 0  # requests served, for the load figure in heartbeats
        self._load_mark = (time.monotonic(), 0)

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.volume = await self._disk(
            Volume.open, cfg.volume_path, create=True, node_id=cfg.node_id, group_id=cfg.group_id
        )
        self._session = aiohttp.ClientSession()
        self.peers = PeerClient(cfg.secret, self._session, cfg.node_id)
        settings = RaftSettings(
            self_address=cfg.raft,
            peers=tuple(p.raft for p in cfg.peers),
            http_urls={p.raft: p.http for p in cfg.members},
            data_dir=cfg.data_dir / "raft",
            password=cfg.secret,
        )
        self.raft = RaftNode(
            settings,
            self.group,
            on_become_leader=self._became_leader,
            on_lose_leadership=self._lost_leadership,
            on_fatal=self._fatal,
        )
        await self.raft.start()
        self._tasks.append(asyncio.create_task(self._reconcile_loop(), name="reconcile"))
        if cfg.tracker:
            self.tracker = TrackerLink(
                cfg.tracker, cfg.secret, self._session, self.heartbeat, cfg.heartbeat_interval
            )
            self._tasks.append(asyncio.create_task(self.tracker.run(), name="heartbeat"))
        log.info("node %s of group %d started", cfg.node_id, cfg.group_id)

    async def close(self) -> None:
        for task in self._tasks + self._leader_tasks:
            task.cancel()
        for task in self._tasks + self._leader_tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.raft is not None:
            await self.raft.close()
        if self._session is not None:
            await self._session.close()
        if self.volume is not None:
            await self._disk(self.volume.close)
        self._executor.shutdown(wait=True)

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
        if slot is None:
            self._full_pass_due = True
        else:
            self._dirty.add(slot)
        self._changed.set()

    async def _disk(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def _require(self) -> tuple[Volume, RaftNode[LockedGroup], PeerClient]:
        if self.volume is None or self.raft is None or self.peers is None:
            raise Unavailable("node is starting", node=self.node_id)
        return self.volume, self.raft, self.peers

    # --- leadership ---------------------------------------------------------------------------

    def is_leader(self) -> bool:
        return self.raft is not None and self.raft.is_leader()

    def leader_url(self) -> str | None:
        return None if self.raft is None else self.raft.leader_url()

    def _became_leader(self) -> None:
        log.info("node %s is now the leader of group %d", self.node_id, self.group_id)
        self._leader_tasks.append(asyncio.create_task(self._settle_loop(), name="settle"))

    def _lost_leadership(self) -> None:
        log.info("node %s is no longer the leader", self.node_id)
        for task in self._leader_tasks:
            task.cancel()
        self._leader_tasks.clear()
        self.registration.clear()

    def not_leader_error(self) -> MydfsError:
        """The error for a write sent here while another node leads (307 with its URL)."""
        url = self.leader_url()
        if url:
            return NotLeader("writes go to the group leader", leader=url, group=self.group_id)
        return Unavailable("the group has no leader right now", group=self.group_id)

    # --- upload (leader) ----------------------------------------------------------------------

    async def upload(
        self,
        data: bytes,
        *,
        upload_id: str,
        owner: SliceOwner,
        next: Location | None,
        expect_crc: int | None,
    ) -> Stored:
        """Store one slice on the group: durable on 2 of 3 nodes and sealed, or an error."""
        crc = self._check_payload(data, expect_crc, upload_id)
        reserved = await self.reserve(
            upload_id=upload_id, owner=owner, length=len(data), crc=crc, next=next
        )
        if reserved.duplicate and reserved.state == SlotState.LIVE:
            self.metrics.uploads.labels("duplicate").inc()
            return self._stored(reserved, len(data), crc, reserved.holders, duplicate=True)
        return await self.fill(
            data,
            upload_id=upload_id,
            slot=reserved.slot,
            generation=reserved.generation,
            next=next,
            expect_crc=crc,
        )

    def _check_payload(self, data: bytes, expect_crc: int | None, upload_id: str) -> int:
        if len(data) > PAYLOAD_CAPACITY:
            raise PayloadTooLarge(f"slice of {len(data)} bytes exceeds {PAYLOAD_CAPACITY}")
        crc = crc32c(data)
        if expect_crc is not None and crc != expect_crc:
            raise InvalidArgument(
                f"payload checksum {crc} does not match the declared {expect_crc}",
                upload_id=upload_id,
            )
        return crc

    async def reserve(
        self,
        *,
        upload_id: str,
        owner: SliceOwner,
        length: int,
        crc: int,
        next: Location | None,
    ) -> Reservation:
        """Pick the slot of a slice through the log (step 1 of an upload; leader only).

        A retry of an upload id already sealed answers with that slot (``duplicate``); one
        still pending and not being written by this leader is settled first.
        """
        _, raft, _ = self._require()
        if not raft.is_leader():
            raise self.not_leader_error()
        if length > PAYLOAD_CAPACITY:
            raise PayloadTooLarge(f"slice of {length} bytes exceeds {PAYLOAD_CAPACITY}")
        reserve = Reserve(
            upload_id=upload_id,
            file_id=owner.file_id.hex(),
            slice_index=owner.index,
            length=length,
            crc32c=crc,
            now_ms=time.time_ns() // 1_000_000,
            next=next,
        )
        for _ in range(3):
            result = await self._submit(reserve.to_dict())
            got = Reservation.from_result(result)
            if not got.duplicate or got.state == SlotState.LIVE:
                return got
            if got.state != SlotState.PENDING:
                raise SliceDeleted("this upload was stored, then deleted", upload_id=upload_id)
            if got.slot in self._inflight:
                return got  # the client's retry of a fill still running: let fill decide
            info = self.info(got.slot)
            if info is None or await self._settle_one(info) != SlotState.LIVE:
                continue  # aborted: the next reserve allocates afresh
            return Reservation(got.slot, got.generation, SlotState.LIVE, True, info.holders)
        raise Unavailable("could not reserve a slot; retry", upload_id=upload_id)

    async def fill(
        self,
        data: bytes,
        *,
        upload_id: str,
        slot: int,
        generation: int,
        next: Location | None,
        expect_crc: int | None,
    ) -> Stored:
        """Write a reserved slice on 2 of 3 nodes and seal it (step 2 of an upload)."""
        _, raft, _ = self._require()
        if not raft.is_leader():
            raise self.not_leader_error()
        crc = self._check_payload(data, expect_crc, upload_id)
        info = self.group.read(lambda g: g.get(slot))
        if info is None or info.upload_id != upload_id or info.generation != generation:
            raise SliceDeleted(
                "no such reservation (settled, or never made); reserve again",
                slot=slot,
                upload_id=upload_id,
                reason="stale_reservation",
            )
        reserved = Reservation(slot, generation, info.state, True, info.holders)
        if info.state == SlotState.LIVE:
            return self._stored(reserved, info.length, info.crc32c, info.holders, duplicate=True)
        if info.state != SlotState.PENDING:
            raise SliceDeleted("the reservation was dropped; reserve again", slot=slot)
        if (info.length, info.crc32c) != (len(data), crc):
            raise InvalidArgument(
                "payload does not match its reservation (length or checksum)",
                slot=slot,
                upload_id=upload_id,
            )
        if slot in self._inflight:
            raise Conflict("this upload is still in progress", slot=slot, upload_id=upload_id)
        self._inflight.add(slot)
        _fault("crash_after_reserve")
        try:
            if info.next != next:
                relink = Relink(slot=slot, next=next, generation=generation)
                await self._submit(relink.to_dict())
            owner = SliceOwner(bytes.fromhex(info.file_id), info.slice_index)
            holders = await self._replicate(slot, generation, data, owner=owner, next=next, crc=crc)
            if len(holders) < 2:
                aborted = await self._abort(slot, upload_id, generation)
                self.metrics.uploads.labels("failed").inc()
                if not aborted:
                    # Late copies may still complete and a new leader may seal them.
                    raise OutcomeUnknown(
                        "too few copies and the abort did not commit; retry with the same "
                        "upload id",
                        group=self.group_id,
                        slot=slot,
                        upload_id=upload_id,
                    )
                raise Unavailable(
                    f"slice durable on {len(holders)} of 3 nodes, need 2; retry",
                    group=self.group_id,
                    slot=slot,
                    upload_id=upload_id,
                )
            _fault("crash_before_seal")
            seal = Seal(
                slot=slot,
                upload_id=upload_id,
                generation=generation,
                holders=tuple(sorted(holders)),
            )
            sealed = await self._submit(seal.to_dict())
        finally:
            self._inflight.discard(slot)
        self.metrics.uploads.labels("ok").inc()
        self.metrics.bytes_in.inc(len(data))
        return self._stored(
            reserved, len(data), crc, tuple(sealed.get("holders") or ()), duplicate=False
        )

    def _stored(
        self,
        reserved: Reservation,
        length: int,
        crc: int,
        holders: tuple[str, ...],
        *,
        duplicate: bool,
    ) -> Stored:
        return Stored(
            self.group_id, reserved.slot, reserved.generation, length, crc, holders, duplicate
        )

    async def _submit(self, command: dict[str, Any]) -> Mapping[str, Any]:
        _, raft, _ = self._require()
        try:
            result = await raft.submit_if_leader(command, timeout=RAFT_TIMEOUT)
        except NotLeader:
            raise self.not_leader_error() from None
        return raise_for_result(result)

    async def _abort(self, slot: int, upload_id: str, generation: int) -> bool:
        """Abort a pending upload; False when the abort itself could not be committed."""
        try:
            await self._submit(
                Abort(slot=slot, upload_id=upload_id, generation=generation).to_dict()
            )
        except MydfsError as exc:
            log.warning("abort of slot %d failed: %s", slot, exc)
            return False
        return True

    async def _replicate(
        self,
        slot: int,
        generation: int,
        data: bytes,
        *,
        owner: SliceOwner,
        next: Location | None,
        crc: int,
    ) -> set[str]:
        """Write locally and push to both followers at once; return who has it durably.

        Returns as soon as 2 nodes have it (the third push goes on in the background and its
        node confirms through its reconciler), or when every attempt has finished or timed out.
        """
        volume, _, peers = self._require()
        self.registration.put(slot, generation, data, time.monotonic())
        timeout = self.config.replica_timeout

        async def local() -> str:
            await self._disk(
                volume.write, slot, data, owner=owner, next=next, generation=generation
            )
            return self.node_id

        async def remote(peer_id: str) -> str:
            await peers.push(
                self.urls[peer_id],
                slot=slot,
                generation=generation,
                file_id=owner.file_id.hex(),
                index=owner.index,
                next=next,
                crc=crc,
                data=data,
                timeout=timeout,
            )
            return peer_id

        attempts = [asyncio.ensure_future(local())]
        attempts += [asyncio.ensure_future(remote(p.node_id)) for p in self.config.peers]
        holders: set[str] = set()
        try:
            async with asyncio.timeout(timeout):
                for next_done in asyncio.as_completed(attempts):
                    try:
                        holders.add(await next_done)
                        self.metrics.replication.labels("push", "ok").inc()
                    except (MydfsError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                        self.metrics.replication.labels("push", "failed").inc()
                        log.warning("replica write of slot %d failed: %s", slot, exc)
                    if len(holders) >= 2:
                        break
        except TimeoutError:
            log.warning("slot %d: only %d replicas within %.1fs", slot, len(holders), timeout)
        for task in attempts:
            if not task.done():
                task.add_done_callback(_log_late_failure)
        return holders

    # --- follower side of replication ------------------------------------------------------------

    async def accept_replica(
        self,
        slot: int,
        data: bytes,
        *,
        generation: int,
        owner: SliceOwner,
        next: Location | None,
        crc: int,
    ) -> None:
        """Store a payload pushed by the leader (or fetched), durably, at the group's slot."""
        volume, _, _ = self._require()
        if crc32c(data) != crc:
            raise InvalidArgument("replica payload fails its checksum", slot=slot)
        await self._store_local(volume, slot, data, generation=generation, owner=owner, next=next)

    async def _store_local(
        self,
        volume: Volume,
        slot: int,
        data: bytes,
        *,
        generation: int,
        owner: SliceOwner,
        next: Location | None,
    ) -> None:
        if slot in volume.quarantined():
            await self._disk(volume.reclaim, slot)  # repair: the group has a good copy
        current = self._local_header(slot)
        live = (DiskState.LIVE, DiskState.PENDING)
        if (
            current is not None
            and current.generation == generation
            and current.state in live
            and current.payload_crc == crc32c(data)
        ):
            return  # already here: a retried push
        if current is not None and current.generation > generation:
            raise Conflict(
                f"slot holds newer generation {current.generation} than {generation}", slot=slot
            )
        if current is not None and current.state in (
            DiskState.LIVE,
            DiskState.PENDING,
            DiskState.MOVED,
        ):
            await self._disk(volume.mark_deleted, slot)
        await self._disk(volume.write, slot, data, owner=owner, next=next, generation=generation)
        self._mark_dirty(slot)

    def _local_header(self, slot: int) -> SlotHeader | None:
        """This node's on-disk header of ``slot`` (from the volume's table), if any."""
        if self.volume is None:
            return None
        try:
            return self.volume.header(slot)
        except MydfsError:  # free, quarantined, or the volume is closing
            return None

    def holds(self, slot: int, generation: int) -> bool:
        header = self._local_header(slot)
        return (
            header is not None
            and header.generation == generation
            and header.state in (DiskState.LIVE, DiskState.PENDING)
        )

    async def read_replica(self, slot: int, generation: int) -> bytes:
        """The payload of ``slot`` at ``generation`` for a peer: registration table, else disk."""
        cached = self.registration.get(slot, generation)
        if cached is not None:
            return cached
        volume, _, _ = self._require()
        if not self.holds(slot, generation):
            raise NotFound("this node does not hold that slice", slot=slot, generation=generation)
        got = await self._disk(volume.read, slot, allow_pending=True)
        if got.header.generation != generation:
            raise NotFound("slot was rewritten", slot=slot, generation=generation)
        return got.data

    # --- reads ----------------------------------------------------------------------------------

    async def resolve(self, slot: int, generation: int | None = None) -> SlotInfo:
        """The record of a live slice this node can serve; raises Redirect when another node
        must answer, SliceMoved (301), SliceDeleted/NotFound (404)."""
        self._require()
        info = await self._known(slot, generation)
        self.group.read(lambda g: g.require_live(slot, generation))  # 301 / 404 / pending
        if not self.holds(slot, info.generation):
            self._mark_dirty(slot)  # wake the reconciler: this node should fetch it
            holder = next((h for h in info.holders if h != self.node_id and h in self.urls), None)
            if holder is None:
                raise Unavailable("no replica of this slice is reachable", slot=slot)
            raise Redirect(self.urls[holder])
        return info

    async def read_local(
        self, info: SlotInfo, offset: int = 0, length: int | None = None
    ) -> SliceData:
        """Read a resolved slice (or a range) from this node's volume, checksums verified."""
        volume, _, _ = self._require()
        try:
            data = await self._disk(volume.read, info.slot, offset, length)
        except Corrupt as exc:
            # Report, drop the bad copy, and let the reconciler fetch a good one from a holder.
            self.metrics.corrupt.inc()
            log.error("corrupt replica of slot %d: %s; dropping it for repair", info.slot, exc)
            with contextlib.suppress(MydfsError):
                await self._disk(volume.mark_deleted, info.slot)
            self._mark_dirty(info.slot)
            raise
        if data.header.generation != info.generation:
            raise Unavailable("slot is being rewritten; retry", slot=info.slot)
        self.metrics.bytes_out.inc(len(data.data))
        return data

    async def _known(self, slot: int, generation: int | None) -> SlotInfo:
        """The table's record of ``slot``, waiting briefly for Raft to catch up on a follower."""
        deadline = time.monotonic() + CATCH_UP_WAIT
        while True:
            info = self.group.read(lambda g: g.get(slot))
            fresh = info is not None and info.state != SlotState.PENDING
            if fresh and (
                generation is None or (info is not None and info.generation >= generation)
            ):
                assert info is not None
                return info
            if self.is_leader():
                if info is None:
                    raise NotFound("no such slice", group=self.group_id, slot=slot)
                self.group.read(lambda g: g.require_live(slot, generation))
                return info
            if time.monotonic() >= deadline:
                url = self.leader_url()
                if url is None:
                    raise Unavailable("group has no leader to ask", slot=slot)
                raise Redirect(url)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=0.05)

    def info(self, slot: int) -> SlotInfo | None:
        return self.group.read(lambda g: g.get(slot))

    # --- edits (leader) ------------------------------------------------------------------------

    async def command(self, command: dict[str, Any]) -> Mapping[str, Any]:
        """Submit an edit command (delete, move, relink) on the leader."""
        if not self.is_leader():
            raise self.not_leader_error()
        return await self._submit(command)

    # --- settlement (leader) ---------------------------------------------------------------------

    async def _settle_loop(self) -> None:
        _, raft, _ = self._require()
        try:
            await raft.barrier(timeout=RAFT_TIMEOUT)  # apply everything earlier leaders committed
        except MydfsError as exc:
            log.warning("leader barrier failed: %s", exc)
        first = True
        while True:
            now_ms = time.time_ns() // 1_000_000
            grace_ms = int(1000 * max(60.0, 2 * self.config.replica_timeout))
            cutoff = None if first else now_ms - grace_ms
            pending = self.group.read(
                functools.partial(GroupState.pending, reserved_before_ms=cutoff)
            )
            for info in pending:
                if info.slot not in self._inflight:
                    with contextlib.suppress(MydfsError):
                        await self._settle_one(info)
            first = False
            self.registration.expire(time.monotonic())
            await asyncio.sleep(1.0)

    async def _settle_one(self, info: SlotInfo) -> SlotState:
        """Seal a pending slot that 2 nodes hold durably; abort it (404, reusable) when 2
        cannot. A node that does not answer may be a holder coming back: while that could
        still make a majority, the slot waits (PENDING is returned) up to SETTLE_PATIENCE."""
        _, _, peers = self._require()
        holders = []
        if self.holds(info.slot, info.generation):
            holders.append(self.node_id)
        answers = await asyncio.gather(
            *(
                peers.holds(
                    self.urls[p.node_id], slot=info.slot, generation=info.generation, timeout=2.0
                )
                for p in self.config.peers
            )
        )
        holders += [p.node_id for p, yes in zip(self.config.peers, answers, strict=True) if yes]
        unknown = sum(1 for yes in answers if yes is None)
        if len(holders) >= 2:
            seal = Seal(
                slot=info.slot,
                upload_id=info.upload_id,
                generation=info.generation,
                holders=tuple(sorted(holders)),
            )
            await self._submit(seal.to_dict())
            self.metrics.settled.labels("sealed").inc()
            log.info("settled slot %d: live on %s", info.slot, holders)
            return SlotState.LIVE
        age = time.time() - info.reserved_at_ms / 1000
        if len(holders) + unknown >= 2 and age < SETTLE_PATIENCE:
            log.info(
                "slot %d: %d holder(s), %d node(s) silent; settling later",
                info.slot,
                len(holders),
                unknown,
            )
            return SlotState.PENDING
        abort = Abort(slot=info.slot, upload_id=info.upload_id, generation=info.generation)
        await self._submit(abort.to_dict())
        self.metrics.settled.labels("aborted").inc()
        log.info("settled slot %d: aborted (held by %s)", info.slot, holders)
        return SlotState.DELETED

    # --- reconciler (every node) -----------------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        while True:
            self._changed.clear()
            try:
                await self.reconcile_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconcile pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=1.0)
            await asyncio.sleep(0.02)  # let a burst of applies coalesce

    async def reconcile_once(self) -> int:
        """One pass: bring the local volume in line with the table. Returns actions taken.

        A pass looks only at the slots whose records changed since the last one (the apply
        hook marks them) and at failed actions whose retry time came; every FULL_PASS_INTERVAL
        seconds, after start and after a snapshot install, it looks at every slot.
        """
        volume, raft, peers = self._require()
        if not raft.is_ready():
            return 0
        now = time.monotonic()
        if self._full_pass_due or now - self._last_full_pass > FULL_PASS_INTERVAL:
            self._full_pass_due = False
            self._last_full_pass = now
            self._dirty.clear()
            table = self.group.read(lambda g: g.slots())
            local = {h.slot: h for h in volume.scan()}
        else:
            due = {slot for slot, at in self._retry_at.items() if at <= now}
            slots, self._dirty = self._dirty | due, set()
            if not slots:
                return 0
            records = self.group.read(lambda g: [g.get(slot) for slot in sorted(slots)])
            table = [info for info in records if info is not None]
            local = {}
            for slot in slots:
                header = self._local_header(slot)
                if header is not None:
                    local[slot] = header
        actions = plan(table, local, self.node_id, volume.quarantined())
        by_slot = {info.slot: info for info in table}
        acted = {action.slot for action in actions}
        for slot in [s for s in self._retry_at if s in by_slot and s not in acted]:
            del self._retry_at[slot]  # nothing left to do there
        done = 0
        for action in actions:
            info = by_slot[action.slot]
            if self._retry_at.get(action.slot, 0.0) > now:
                continue
            try:
                if action.kind == Kind.DROP:
                    await self._disk(volume.mark_deleted, action.slot)
                elif action.kind == Kind.MOVE:
                    assert action.target is not None
                    await self._disk(volume.mark_moved, action.slot, action.target)
                elif action.kind == Kind.RECLAIM:
                    await self._disk(volume.reclaim, action.slot)
                elif action.kind == Kind.RELINK:
                    await self._disk(volume.relink, action.slot, action.next)
                elif action.kind == Kind.CONFIRM:
                    await raft.submit(
                        Confirm(
                            slot=action.slot, node=self.node_id, generation=action.generation
                        ).to_dict(),
                        timeout=RAFT_TIMEOUT,
                    )
                elif action.kind == Kind.FETCH and not await self._fetch(volume, peers, info):
                    self._retry_at[action.slot] = now + RETRY_DELAY
                    continue
                self._retry_at.pop(action.slot, None)
                done += 1
            except MydfsError as exc:
                log.warning("reconcile %s slot %d: %s", action.kind.value, action.slot, exc)
                self._retry_at[action.slot] = now + RETRY_DELAY
                if isinstance(exc, Corrupt | OSError):
                    self.disk_error = str(exc)
        self.metrics.missing.set(len(self._retry_at))
        return done

    async def _fetch(self, volume: Volume, peers: PeerClient, info: SlotInfo) -> bool:
        sources = [h for h in info.holders if h != self.node_id and h in self.urls]
        leader = self.leader_url()
        urls = [self.urls[h] for h in sources]
        if leader and leader not in urls and leader != self.config.advertise:
            urls.append(leader)
        for url in urls:
            try:
                data = await peers.fetch(
                    url, slot=info.slot, generation=info.generation, crc=info.crc32c, timeout=30.0
                )
                owner = SliceOwner(bytes.fromhex(info.file_id), info.slice_index)
                await self._store_local(
                    volume, info.slot, data, generation=info.generation, owner=owner, next=info.next
                )
                self.metrics.replication.labels("fetch", "ok").inc()
                log.info("fetched slot %d gen %d from %s", info.slot, info.generation, url)
                return True
            except (MydfsError, aiohttp.ClientError, TimeoutError) as exc:
                self.metrics.replication.labels("fetch", "failed").inc()
                log.warning("fetch of slot %d from %s failed: %s", info.slot, url, exc)
        return False

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
        self._served += 1

    def heartbeat(self) -> dict[str, Any]:
        """What this node tells the tracker every heartbeat."""
        now = time.monotonic()
        mark_time, mark_count = self._load_mark
        load = (self._served - mark_count) / max(1e-3, now - mark_time)
        self._load_mark = (now, self._served)
        stats = self.group.read(lambda g: g.stats())
        free_slots: int | None = None
        if self.volume is not None:
            vstats = self.volume.stats()
            disk = os.statvfs(self.config.volume_path.parent)
            free_slots = vstats.free + disk.f_bavail * disk.f_frsize // SLOT_SIZE
        return {
            "node_id": self.node_id,
            "group_id": self.group_id,
            "url": self.config.advertise,
            "role": self.raft.role if self.raft is not None else "follower",
            "term": self.raft.term if self.raft is not None else 0,
            "free_slots": free_slots,
            "used_slots": stats.live,
            "bytes_live": stats.bytes_live,
            "load": round(load, 2),
        }

    # --- status ---------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        raft_status = self.raft.status() if self.raft is not None else {}
        group_stats = self.group.read(lambda g: g.stats().to_dict())
        vstats = self.volume.stats() if self.volume is not None else None
        return {
            "node_id": self.node_id,
            "group_id": self.group_id,
            "advertise": self.config.advertise,
            "role": self.raft.role if self.raft is not None else "starting",
            "leader": self.leader_url(),
            "raft": raft_status,
            "group": group_stats,
            "volume": None if vstats is None else asdict(vstats),
            "registration": {"entries": len(self.registration), "bytes": self.registration.bytes},
            "disk_error": self.disk_error,
        }


def _fault(point: str) -> None:
    if point in FAULTS:
        log.critical("fault injection: exiting at %s", point)
        logging.shutdown()
        os._exit(137)


def _log_late_failure(task: asyncio.Future[str]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.warning("late replica write failed: %s", exc)


def new_upload_id() -> str:
    return uuid.uuid4().hex


__all__ = ["LockedGroup", "Redirect", "StorageNode", "Stored", "new_upload_id"]
