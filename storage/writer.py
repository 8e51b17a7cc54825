"""The leader's write path: reserve a slot through the log, write the payload on 2 of 3 nodes
(locally and pushed to both followers at once), then seal it; a small one-slice upload instead
travels inside one ``put`` command (an inline upload); and the leader's edit commands.

``docs/replication.md`` ("An upload", "Inline uploads", "Failure cases") describes the
protocol. The checks a fill makes against the slot's table record are the pure
:func:`check_fill`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from mydfs.common.checksum import crc32c
from mydfs.common.errors import (
    Conflict,
    InvalidArgument,
    MydfsError,
    OutcomeUnknown,
    PayloadTooLarge,
    SliceDeleted,
    Unavailable,
)
from mydfs.common.location import Location
from mydfs.storage.context import NodeContext
from mydfs.storage.format import PAYLOAD_CAPACITY, SliceOwner
from mydfs.storage.group_commands import Abort, Put, Relink, Reserve, Seal
from mydfs.storage.group_state import SlotInfo, SlotState
from mydfs.storage.inflight import Lease
from mydfs.storage.replica import store_copy

log = logging.getLogger(__name__)

#: Fault-injection points for crash tests, from MYDFS_FAULTS (comma-separated): the process
#: exits at once (as kill -9 would) when an upload reaches the named point.
FAULTS = frozenset(f for f in os.environ.get("MYDFS_FAULTS", "").split(",") if f)
#: Bytes of inline payloads the group table may carry (not yet in min_holders volumes) before
#: the leader sends small uploads the two-round way again: bounds every node's memory when
#: volumes cannot keep up (a full disk).
INLINE_BUDGET = 8 << 20


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
    #: Stored inline (a ``put`` command): durable in the Raft journals of a majority, and
    #: copied into the volumes (``holders``) after the answer.
    inline: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "inline": self.inline,
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


#: ``reason`` of a :class:`SliceDeleted` that means "your reservation is gone: reserve again".
STALE = "stale_reservation"


class FillStep(Enum):
    DUPLICATE = "duplicate"  # the slice is already live: answer with it
    WRITE = "write"  # write it on 2 of 3 nodes and seal it


def check_fill(
    info: SlotInfo | None,
    *,
    slot: int,
    upload_id: str,
    generation: int,
    length: int,
    crc: int,
    in_progress: bool,
) -> FillStep:
    """What a fill of a reserved slot does, given the slot's table record (``info``) and whether
    this leader is already writing it; raises when the fill must be refused. Pure."""
    if info is None or info.upload_id != upload_id or info.generation != generation:
        raise SliceDeleted(
            "no such reservation (settled, or never made); reserve again",
            slot=slot,
            upload_id=upload_id,
            reason=STALE,
        )
    if info.state == SlotState.LIVE:
        return FillStep.DUPLICATE
    if info.state != SlotState.PENDING:
        raise SliceDeleted("the reservation was dropped; reserve again", slot=slot)
    if (info.length, info.crc32c) != (length, crc):
        raise InvalidArgument(
            "payload does not match its reservation (length or checksum)",
            slot=slot,
            upload_id=upload_id,
        )
    if in_progress:
        raise Conflict("this upload is still in progress", slot=slot, upload_id=upload_id)
    return FillStep.WRITE


def check_payload(data: bytes, expect_crc: int | None, upload_id: str) -> int:
    """The CRC32C of an upload's payload, refusing one too large or not matching its claim."""
    if len(data) > PAYLOAD_CAPACITY:
        raise PayloadTooLarge(f"slice of {len(data)} bytes exceeds {PAYLOAD_CAPACITY}")
    crc = crc32c(data)
    if expect_crc is not None and crc != expect_crc:
        raise InvalidArgument(
            f"payload checksum {crc} does not match the declared {expect_crc}",
            upload_id=upload_id,
        )
    return crc


def goes_inline(length: int, *, inline_max: int, carried: int, known: bool) -> bool:
    """Does an upload of ``length`` bytes travel inside one ``put`` command? Only a small one
    (at most ``inline_max``), while the table carries less than :data:`INLINE_BUDGET` bytes of
    inline payloads, and with a new upload id (``known``: a retry of a two-round upload, which
    goes on that way). Pure."""
    return length <= inline_max and carried < INLINE_BUDGET and not known


class LeaderWriter:
    """Uploads (reserve, fill) and edit commands, on the group leader."""

    def __init__(
        self,
        ctx: NodeContext,
        settle: Callable[[SlotInfo], Awaitable[SlotState]],
        inflight: set[int],
    ) -> None:
        self._ctx = ctx
        self._settle = settle
        self.inflight = inflight  # slots this leader is uploading right now
        self._fills: dict[int, asyncio.Future[Stored]] = {}  # slot -> outcome of its fill

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
        crc = check_payload(data, expect_crc, upload_id)
        if self._inlinable(len(data), upload_id):
            stored = await self._put_inline(
                data, upload_id=upload_id, owner=owner, next=next, crc=crc
            )
            if stored is not None:
                return stored
        for _ in range(3):
            reserved = await self.reserve(
                upload_id=upload_id, owner=owner, length=len(data), crc=crc, next=next
            )
            if reserved.duplicate and reserved.state == SlotState.LIVE:
                self._ctx.metrics.uploads.labels("duplicate").inc()
                return self._stored(reserved, len(data), crc, reserved.holders, duplicate=True)
            try:
                return await self.fill(
                    data,
                    upload_id=upload_id,
                    slot=reserved.slot,
                    generation=reserved.generation,
                    next=next,
                    expect_crc=crc,
                )
            except SliceDeleted as exc:
                if exc.context.get("reason") != STALE:
                    raise
                # Settled away (aborted) while this request ran: the next reserve picks afresh.
        raise Unavailable("the reservation kept being settled away; retry", upload_id=upload_id)

    def _inlinable(self, length: int, upload_id: str) -> bool:
        """Does this upload go inline: small enough, the table's inline payloads within their
        budget, and its upload id new (a retry of a two-round upload goes on that way)."""
        carried, known = self._ctx.group.read(
            lambda g: (g.inline_bytes, g.upload(upload_id) is not None)
        )
        return goes_inline(
            length, inline_max=self._ctx.config.inline_max, carried=carried, known=known
        )

    async def _put_inline(
        self, data: bytes, *, upload_id: str, owner: SliceOwner, next: Location | None, crc: int
    ) -> Stored | None:
        """Store a small slice with one ``put`` command: once it commits, the payload is in
        the journals of a majority, and every node copies it into its volume from its table.
        None when the upload id turned out to be a two-round upload's (that path decides)."""
        ctx = self._ctx
        if not ctx.is_leader():
            raise ctx.not_leader_error()
        put = Put.of(
            data,
            upload_id=upload_id,
            file_id=owner.file_id.hex(),
            slice_index=owner.index,
            length=len(data),
            crc32c=crc,
            now_ms=time.time_ns() // 1_000_000,
            next=next,
        )
        got = Reservation.from_result(await ctx.submit(put.to_dict()))
        if got.state != SlotState.LIVE:
            return None
        ctx.metrics.uploads.labels("duplicate" if got.duplicate else "inline").inc()
        if not got.duplicate:
            ctx.metrics.bytes_in.inc(len(data))
        stored = self._stored(got, len(data), crc, got.holders, duplicate=got.duplicate)
        return replace(stored, inline=True)

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
        ctx = self._ctx
        _, raft, _ = ctx.require()
        if not raft.is_leader():
            raise ctx.not_leader_error()
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
            result = await ctx.submit(reserve.to_dict())
            got = Reservation.from_result(result)
            if not got.duplicate or got.state == SlotState.LIVE:
                return got
            if got.state != SlotState.PENDING:
                raise SliceDeleted("this upload was stored, then deleted", upload_id=upload_id)
            if got.slot in self.inflight:
                return got  # the client's retry of a fill still running: let fill decide
            info = ctx.info(got.slot)
            if info is None or await self._settle(info) != SlotState.LIVE:
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
        ctx = self._ctx
        _, raft, _ = ctx.require()
        if not raft.is_leader():
            raise ctx.not_leader_error()
        crc = check_payload(data, expect_crc, upload_id)
        info = ctx.info(slot)
        running = self._fills.get(slot)  # a fill of this slot under way here: join it
        step = check_fill(
            info,
            slot=slot,
            upload_id=upload_id,
            generation=generation,
            length=len(data),
            crc=crc,
            in_progress=slot in self.inflight and running is None,
        )
        if running is not None and step == FillStep.WRITE:
            return await self._join(running)
        assert info is not None
        reserved = Reservation(slot, generation, info.state, True, info.holders)
        if step == FillStep.DUPLICATE:
            return self._stored(reserved, info.length, info.crc32c, info.holders, duplicate=True)
        lease = await ctx.inflight.charge(
            len(data), timeout=ctx.config.replica_timeout, what=f"upload of slot {slot}"
        )
        self.inflight.add(slot)
        done: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._fills[slot] = done
        try:
            stored = await self._write(data, info, reserved, lease, next=next, crc=crc)
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else Unavailable("the write was cut short")
            done.set_exception(failure)
            done.exception()  # retrieved: only a joined retry needs it
            raise
        else:
            done.set_result(stored)
        finally:
            self.inflight.discard(slot)
            del self._fills[slot]
            lease.release()  # pushes still running and the registration entry hold their own
        return stored

    async def _join(self, running: asyncio.Future[Stored]) -> Stored:
        """The outcome of a fill of the same reservation already under way here (the client's
        retry after its request timed out, or after a leader change): wait for it rather than
        refuse a transient conflict."""
        stored = await asyncio.shield(running)
        return replace(stored, duplicate=True)

    async def _write(
        self,
        data: bytes,
        info: SlotInfo,
        reserved: Reservation,
        lease: Lease,
        *,
        next: Location | None,
        crc: int,
    ) -> Stored:
        """Relink if needed, write on 2 of 3 nodes, seal (the body of a fill)."""
        ctx = self._ctx
        slot, generation, upload_id = reserved.slot, reserved.generation, info.upload_id
        _fault("crash_after_reserve")
        if info.next != next:
            relink = Relink(slot=slot, next=next, generation=generation)
            await self._submit_reserved(relink.to_dict(), slot, upload_id, generation)
        owner = SliceOwner(bytes.fromhex(info.file_id), info.slice_index)
        holders = await self._replicate(
            slot, generation, data, lease, owner=owner, next=next, crc=crc
        )
        if len(holders) < 2:
            aborted = await self._abort(slot, upload_id, generation)
            ctx.metrics.uploads.labels("failed").inc()
            if not aborted:
                # Late copies may still complete and a new leader may seal them.
                raise OutcomeUnknown(
                    "too few copies and the abort did not commit; retry with the same upload id",
                    group=ctx.group_id,
                    slot=slot,
                    upload_id=upload_id,
                )
            raise Unavailable(
                f"slice durable on {len(holders)} of 3 nodes, need 2; retry",
                group=ctx.group_id,
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
        sealed = await self._submit_reserved(seal.to_dict(), slot, upload_id, generation)
        ctx.metrics.uploads.labels("ok").inc()
        ctx.metrics.bytes_in.inc(len(data))
        return self._stored(
            reserved, len(data), crc, tuple(sealed.get("holders") or ()), duplicate=False
        )

    async def _submit_reserved(
        self, command: dict[str, Any], slot: int, upload_id: str, generation: int
    ) -> Mapping[str, Any]:
        """Submit a command about an upload's own reservation. A refusal because the slot
        changed hands meanwhile (a new leader's settlement aborted it, and maybe another upload
        took the slot) is :class:`SliceDeleted` with reason :data:`STALE` — reserve again — not
        a 409 or a bare 404 the client cannot act on."""
        try:
            return await self._ctx.submit(command)
        except (Conflict, SliceDeleted) as exc:
            info = self._ctx.info(slot)
            mine = info is not None and (info.upload_id, info.generation) == (upload_id, generation)
            if mine and info is not None and info.state in (SlotState.PENDING, SlotState.LIVE):
                raise
            raise SliceDeleted(
                "the reservation was settled away while it was being written; reserve again",
                slot=slot,
                upload_id=upload_id,
                reason=STALE,
            ) from exc

    async def command(self, command: dict[str, Any]) -> Mapping[str, Any]:
        """Submit an edit command (delete, move, relink) on the leader."""
        if not self._ctx.is_leader():
            raise self._ctx.not_leader_error()
        return await self._ctx.submit(command)

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
            self._ctx.group_id, reserved.slot, reserved.generation, length, crc, holders, duplicate
        )

    async def _abort(self, slot: int, upload_id: str, generation: int) -> bool:
        """Abort a pending upload; False when the abort itself could not be committed."""
        try:
            await self._ctx.submit(
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
        ctx = self._ctx
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


def new_upload_id() -> str:
    return uuid.uuid4().hex


def _fault(point: str) -> None:
    if point in FAULTS:
        log.critical("fault injection: exiting at %s", point)
        logging.shutdown()
        os._exit(137)


def _watch_late(attempts: Sequence[asyncio.Future[str]]) -> None:
    """Leave no attempt's error unretrieved, whichever way ``_replicate`` ended (enough
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
