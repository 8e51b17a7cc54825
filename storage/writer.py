"""The leader's write path: reserve a slot through the log, write the payload on 2 of 3 nodes
(locally and pushed to both followers at once), then seal it; a one-slice upload instead
travels inside one ``put`` command when it is small (an inline upload), else is written into a
slot reserved ahead and made live by one ``assign``; and the leader's edit commands.

``docs/replication.md`` ("An upload", "Inline uploads", "Slots reserved ahead", "Failure
cases") describes the protocol. The checks a fill makes against the slot's table record are the pure
:func:`check_fill`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from mydfs.common.checksum import crc32c
from mydfs.common.errors import (
    AlreadyExists,
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
from mydfs.storage.group_commands import (
    POOL_PREFIX,
    Abort,
    Assign,
    Put,
    Relink,
    Reserve,
    Seal,
)
from mydfs.storage.group_state import SlotInfo, SlotState
from mydfs.storage.inflight import Lease
from mydfs.storage.parallel_write import replicate
from mydfs.storage.slot_pool import Ahead, SlotPool

log = logging.getLogger(__name__)

#: Fault-injection points for crash tests, from MYDFS_FAULTS (comma-separated): the process
#: exits at once (as kill -9 would) when an upload reaches the named point.
FAULTS = frozenset(f for f in os.environ.get("MYDFS_FAULTS", "").split(",") if f)
#: The owner a slot reserved ahead names until ``assign`` gives it its slice.
NO_FILE = "0" * 32
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
        self._pool = SlotPool()  # slots reserved ahead for one-request uploads
        self._refill: asyncio.Task[None] | None = None

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
        carried, known = self._ctx.group.read(
            lambda g: (g.inline_bytes, g.upload(upload_id) is not None)
        )
        inline_max = self._ctx.config.inline_max
        stored = None
        if goes_inline(len(data), inline_max=inline_max, carried=carried, known=known):
            stored = await self._put_inline(
                data, upload_id=upload_id, owner=owner, next=next, crc=crc
            )
        elif not known and (ahead := self._take_ahead()) is not None:
            stored = await self._fill_ahead(
                data, ahead, upload_id=upload_id, owner=owner, next=next, crc=crc
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

    # --- slots reserved ahead (storage/slot_pool.py) --------------------------------------

    def _take_ahead(self) -> Ahead | None:
        """A slot reserved ahead that the table still holds for this leader (None: the pool
        is empty or this node no longer leads); asks for more when the pool runs low."""
        ctx, pool = self._ctx, self._pool
        if not ctx.is_leader():
            self._give_up(pool.clear())
            return None
        ahead, dropped = pool.take(time.monotonic(), self._still_ahead)
        self._give_up(dropped)
        if pool.wanted() and (self._refill is None or self._refill.done()):
            self._refill = asyncio.create_task(self._reserve_ahead(pool.wanted()))
        return ahead

    def _still_ahead(self, ahead: Ahead) -> bool:
        info = self._ctx.info(ahead.slot)
        return (
            info is not None
            and info.state == SlotState.PENDING
            and (info.upload_id, info.generation) == (ahead.pool_id, ahead.generation)
        )

    def _give_up(self, slots: list[Ahead]) -> None:
        """Stop guarding these slots: the settlement sweep aborts the ones still pending."""
        for ahead in slots:
            self.inflight.discard(ahead.slot)

    async def _reserve_ahead(self, count: int) -> None:
        """Reserve ``count`` slots ahead, all at once (one journal fsync for the lot)."""
        ctx, pool = self._ctx, self._pool
        reserves = [
            Reserve(
                upload_id=f"{POOL_PREFIX}{ctx.node_id}.{uuid.uuid4().hex[:16]}",
                file_id=NO_FILE,
                slice_index=0,
                length=0,
                crc32c=0,
                now_ms=time.time_ns() // 1_000_000,
                next=None,
            )
            for _ in range(count)
        ]
        pool.requested += count
        try:
            results = await asyncio.gather(
                *(ctx.submit(r.to_dict()) for r in reserves), return_exceptions=True
            )
        finally:
            pool.requested -= count
        for reserve, result in zip(reserves, results, strict=True):
            if isinstance(result, BaseException):
                log.info("reserving a slot ahead failed: %s", result)
                continue
            got = Reservation.from_result(result)
            self.inflight.add(got.slot)
            pool.add(Ahead(got.slot, got.generation, reserve.upload_id, time.monotonic()))

    async def _fill_ahead(
        self,
        data: bytes,
        ahead: Ahead,
        *,
        upload_id: str,
        owner: SliceOwner,
        next: Location | None,
        crc: int,
    ) -> Stored | None:
        """Write a one-slice upload into a slot reserved ahead on 2 of 3 nodes, then make it
        that slice with one ``assign``. None when the slot cannot be used after all (the
        upload id got a slot of its own meanwhile, or the slot was settled away): the two-round
        path then decides."""
        ctx = self._ctx
        slot, generation = ahead.slot, ahead.generation
        try:
            lease = await ctx.inflight.charge(
                len(data), timeout=ctx.config.replica_timeout, what=f"upload of slot {slot}"
            )
            try:
                holders = await replicate(
                    ctx, slot, generation, data, lease, owner=owner, next=next, crc=crc
                )
            finally:
                lease.release()
            if len(holders) < 2:
                await self._abort(slot, ahead.pool_id, generation)
                raise self._too_few(holders, slot, upload_id)
            _fault("crash_before_assign")
            assign = Assign(
                slot=slot,
                generation=generation,
                pool_id=ahead.pool_id,
                upload_id=upload_id,
                file_id=owner.file_id.hex(),
                slice_index=owner.index,
                length=len(data),
                crc32c=crc,
                next=next,
                holders=tuple(sorted(holders)),
            )
            try:
                result = await ctx.submit(assign.to_dict())
            except (AlreadyExists, Conflict, SliceDeleted) as exc:
                log.info("slot %d reserved ahead not used for %s: %s", slot, upload_id, exc)
                await self._abort(slot, ahead.pool_id, generation)
                return None
            except MydfsError:
                # Maybe committed, maybe not (no answer in time, leadership lost): an abort
                # after a committed assign is refused, and the retry finds the upload id.
                await self._abort(slot, ahead.pool_id, generation)
                raise
        finally:
            self.inflight.discard(slot)
        ctx.metrics.uploads.labels("ahead").inc()
        ctx.metrics.bytes_in.inc(len(data))
        got = Reservation.from_result(result)
        return self._stored(got, len(data), crc, got.holders, duplicate=False)

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
        holders = await replicate(
            ctx, slot, generation, data, lease, owner=owner, next=next, crc=crc
        )
        if len(holders) < 2:
            if not await self._abort(slot, upload_id, generation):
                # Late copies may still complete and a new leader may seal them.
                ctx.metrics.uploads.labels("failed").inc()
                raise OutcomeUnknown(
                    "too few copies and the abort did not commit; retry with the same upload id",
                    group=ctx.group_id,
                    slot=slot,
                    upload_id=upload_id,
                )
            raise self._too_few(holders, slot, upload_id)
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

    def _too_few(self, holders: set[str], slot: int, upload_id: str) -> Unavailable:
        """The error of a write durable on fewer than 2 nodes (counted as a failed upload)."""
        self._ctx.metrics.uploads.labels("failed").inc()
        return Unavailable(
            f"slice durable on {len(holders)} of 3 nodes, need 2; retry",
            group=self._ctx.group_id,
            slot=slot,
            upload_id=upload_id,
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


def new_upload_id() -> str:
    return uuid.uuid4().hex


def _fault(point: str) -> None:
    if point in FAULTS:
        log.critical("fault injection: exiting at %s", point)
        logging.shutdown()
        os._exit(137)
