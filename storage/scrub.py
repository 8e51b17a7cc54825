"""The background scrub (every node): re-read the live slots this node holds at a bounded rate,
check each one whole, and hand a bad copy to the one repair path.

The decisions are pure (:mod:`mydfs.storage.scrub_core`); this shell only reads the table and
the volume, runs the check on a disk thread (:meth:`Volume.check_slot`: header copies and CRC,
every 64 KiB block CRC, the payload CRC), sleeps as the pacer says, and on a bad copy calls
:func:`~mydfs.storage.replica.give_up_copy` (drop it, ``unconfirm``, wake the reconciler, which
refetches the slice from a good holder). ``docs/space.md`` ("Scrub") describes the behaviour.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mydfs.common.errors import MydfsError, Unavailable
from mydfs.storage.context import NodeContext
from mydfs.storage.format import SlotHeader
from mydfs.storage.group_records import SlotInfo
from mydfs.storage.replica import HELD, give_up_copy
from mydfs.storage.scrub_core import (
    HEADER_BYTES,
    BadCopies,
    Pacer,
    PassRecord,
    Schedule,
    Verdict,
    judge,
)
from mydfs.storage.slot_state import SlotState

log = logging.getLogger(__name__)

#: Bytes per MiB (``scrub_rate_mb`` is in MiB per second).
MIB = 1024 * 1024
#: Seconds to wait when the node is not ready (starting, no Raft yet) or a check failed.
IDLE = 1.0
#: Seconds a check waits for room in the memory budget before it is tried again later.
BUDGET_WAIT = 5.0


class Scrubber:
    """Runs scrub passes; :meth:`run` is the node's task, :meth:`step` one check (tests)."""

    def __init__(
        self,
        ctx: NodeContext,
        mark_dirty: Callable[[int | None], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._ctx = ctx
        self._mark_dirty = mark_dirty
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        cfg = ctx.config
        self.pacer = Pacer(cfg.scrub_rate_mb * MIB)
        self.schedule = Schedule(cfg.scrub_interval)
        self.bad = BadCopies()
        self.last_pass_end: float | None = None  # unix time
        self.slots_checked = 0
        self.bytes_checked = 0
        self.corrupt_found = 0
        self.repairs = 0
        self.unrepairable: list[int] = []

    @property
    def enabled(self) -> bool:
        return self.pacer.rate > 0

    async def run(self) -> None:
        if not self.enabled:
            log.info("scrub disabled (scrub_rate_mb = 0)")
            return
        while True:
            try:
                wait = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scrub step failed")
                wait = IDLE
            await self._sleep(max(0.0, wait))  # yields even when 0 (a run of skipped slots)

    async def step(self) -> float:
        """Check the next slot (or start or end a pass); the seconds to wait before the next
        step."""
        ctx = self._ctx
        if ctx.volume is None or ctx.raft is None or not ctx.raft.is_ready():
            return IDLE
        self._settle()
        now = self._clock()
        step = self.schedule.next(now)
        if step.new_pass:
            # Off the event loop: a big table takes a while to list.
            self.schedule.start(now, await ctx.disk(self._held_slots))
            return 0.0
        if step.ended is not None:
            self._pass_ended(step.ended)
        if step.slot is None:
            return step.wait
        return await self._check(step.slot)

    def _held_slots(self) -> list[int]:
        """The LIVE slots of the table this node holds at the table's generation."""
        records = self._ctx.group.read(lambda g: g.slots(SlotState.LIVE))
        volume = self._ctx.volume
        assert volume is not None
        held = []
        for record in records:
            try:
                header = volume.header(record.slot)
            except MydfsError:
                continue  # free, quarantined (the reconciler repairs those)
            if header.generation == record.generation and header.state is SlotState.LIVE:
                held.append(record.slot)
        return held

    async def _check(self, slot: int) -> float:
        ctx = self._ctx
        volume = ctx.volume
        assert volume is not None
        record = ctx.info(slot)
        try:
            before = volume.header(slot)
        except MydfsError:
            return 0.0  # dropped or freed since the pass started
        if (
            record is None
            or record.state is not SlotState.LIVE
            or before.generation != record.generation
            or before.state not in HELD
        ):
            return 0.0
        generation = record.generation
        nbytes = before.length + HEADER_BYTES
        try:
            lease = await ctx.inflight.charge(
                before.length, timeout=BUDGET_WAIT, what=f"scrub of slot {slot}"
            )
        except Unavailable:
            self.schedule.again()
            return IDLE
        started = self._clock()
        try:
            checked, problem = await ctx.disk(volume.check_slot, slot)
        finally:
            lease.release()
        try:
            current = volume.header(slot)
        except MydfsError:
            current = None
        verdict = judge(checked, problem, current, ctx.info(slot), ctx.node_id, generation)
        self.schedule.checked(nbytes)
        self.slots_checked += 1
        self.bytes_checked += nbytes
        ctx.metrics.scrub_slots.inc()
        ctx.metrics.scrub_bytes.inc(nbytes)
        if verdict in (Verdict.REPAIR, Verdict.UNREPAIRABLE):
            await self._bad(slot, generation, checked, problem or "?", verdict)
        return max(0.0, self.pacer.spend(started, nbytes) - self._clock())

    async def _bad(
        self,
        slot: int,
        generation: int,
        checked: SlotHeader | None,
        problem: str,
        verdict: Verdict,
    ) -> None:
        ctx = self._ctx
        volume = ctx.volume
        assert volume is not None
        self.corrupt_found += 1
        ctx.metrics.scrub_corrupt.inc()
        if verdict is Verdict.UNREPAIRABLE:
            log.error(
                "scrub: slot %d gen %d is bad here (%s) and no other node holds it: unrepairable",
                slot,
                generation,
                problem,
            )
        else:
            log.error(
                "scrub: slot %d gen %d is bad here (%s); repairing", slot, generation, problem
            )
        self.bad.add(slot, generation)
        await give_up_copy(ctx, volume, slot, generation, self._mark_dirty, checked=checked)
        self._settle()

    def _settle(self) -> None:
        """Count the bad copies repaired since, and refresh the unrepairable ones."""
        if not len(self.bad):
            self.unrepairable = []
            self._ctx.metrics.scrub_unrepairable.set(0)
            return
        ctx = self._ctx
        slots = self.bad.slots()
        records: dict[int, SlotInfo | None] = dict(
            zip(slots, ctx.group.read(lambda g: [g.get(s) for s in slots]), strict=True)
        )
        holds = {s: self._holds(s, records[s]) for s in slots}
        repaired, _gone = self.bad.settle(records, holds)
        for slot in repaired:
            log.info("scrub: slot %d repaired", slot)
        self.repairs += len(repaired)
        ctx.metrics.scrub_repairs.inc(len(repaired))
        self.unrepairable = self.bad.unrepairable(records, ctx.node_id)
        ctx.metrics.scrub_unrepairable.set(len(self.unrepairable))

    def _holds(self, slot: int, record: SlotInfo | None) -> bool:
        volume = self._ctx.volume
        if record is None or volume is None:
            return False
        try:
            header = volume.header(slot)
        except MydfsError:
            return False
        return header.generation == record.generation and header.state is SlotState.LIVE

    def _pass_ended(self, last: PassRecord) -> None:
        self.last_pass_end = self._wall()
        self._ctx.metrics.scrub_last_pass.set(self.last_pass_end)
        self._ctx.metrics.scrub_pass_duration.set(last.duration)
        log.info(
            "scrub pass %d: %d slots, %d bytes in %.1f s",
            self.schedule.passes,
            last.slots,
            last.bytes,
            last.duration,
        )

    def report(self) -> dict[str, Any]:
        """The ``scrub`` section of ``/status``."""
        done, total = self.schedule.progress
        last = self.schedule.last
        return {
            "enabled": self.enabled,
            "rate_mb": self._ctx.config.scrub_rate_mb,
            "interval": self.schedule.interval,
            "passes": self.schedule.passes,
            "pass_running": self.schedule.running,
            "pass_progress": {"done": done, "slots": total},
            "slots_checked": self.slots_checked,
            "bytes_checked": self.bytes_checked,
            "corrupt_found": self.corrupt_found,
            "repairs": self.repairs,
            "waiting_repair": self.bad.slots()[:100],
            "unrepairable": self.unrepairable[:100],
            "last_pass_end": self.last_pass_end,
            "last_pass_seconds": None if last is None else round(last.duration, 3),
        }
