"""The background scrub's decisions, without I/O: which slot to check next, how long to wait
so the disk is read at no more than the configured rate, what a check result means, and which
bad copies are still waiting for their repair.

The scrub (:mod:`mydfs.storage.scrub`, the thin async shell) re-reads every live slot this node
holds, one pass after another, and checks its header CRC, every 64 KiB block CRC and the payload
CRC (``docs/space.md``, "Scrub"). Everything here is deterministic: the time is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from mydfs.storage.format import HEADER_SIZE, SlotHeader
from mydfs.storage.group_records import SlotInfo
from mydfs.storage.slot_state import SlotState

#: Bytes a check reads besides the payload: the two header copies.
HEADER_BYTES = 2 * HEADER_SIZE


class Verdict(Enum):
    """What one check of a slot means."""

    OK = "ok"  # the copy is intact
    REPAIR = "repair"  # the copy is bad; another holder can serve the slice: refetch it
    UNREPAIRABLE = "unrepairable"  # the copy is bad and no other holder is listed
    STALE = "stale"  # the slot changed while it was read (deleted, reused, rewritten): ignore


def judge(
    checked: SlotHeader | None,
    problem: str | None,
    current: SlotHeader | None,
    record: SlotInfo | None,
    node_id: str,
    generation: int,
) -> Verdict:
    """The meaning of a check of a slot the pass chose at ``generation``: ``checked`` and
    ``problem`` are what the disk read found (header, what is wrong), ``current`` the volume's
    header and ``record`` the group table's record, both looked up again after the read. A
    result about a slot that is no longer live at ``generation`` on both is stale: a concurrent
    delete or reuse must not be mistaken for corruption (or repaired)."""
    if record is None or record.state is not SlotState.LIVE or record.generation != generation:
        return Verdict.STALE
    if current is None or current.generation != generation or current.state is not SlotState.LIVE:
        return Verdict.STALE
    if checked is not None and checked != current:
        return Verdict.STALE  # rewritten meanwhile (a repair, a header update): look next pass
    if problem is None:
        return Verdict.OK
    if any(h != node_id for h in record.holders):
        return Verdict.REPAIR
    return Verdict.UNREPAIRABLE


class Pacer:
    """A rate limit on bytes read: after reading ``n`` bytes the scrub waits so that, over any
    stretch of time, it read at most ``rate`` bytes per second (plus the one read in flight).
    ``rate`` <= 0 disables the scrub."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._ready = float("-inf")  # when the next read may start

    def spend(self, start: float, nbytes: int) -> float:
        """Account a read of ``nbytes`` that started at ``start``; returns when the next read
        may start."""
        if self.rate <= 0:
            raise ValueError("the scrub is disabled (rate 0)")
        self._ready = max(self._ready, start) + nbytes / self.rate
        return self._ready


@dataclass(frozen=True)
class PassRecord:
    started: float
    ended: float
    slots: int
    bytes: int

    @property
    def duration(self) -> float:
        return self.ended - self.started


@dataclass(frozen=True)
class Step:
    """The schedule's answer: check ``slot`` now, or (``slot`` None) wait ``wait`` seconds."""

    slot: int | None
    wait: float = 0.0
    new_pass: bool = False  # a pass must start: hand :meth:`Schedule.start` its slots
    ended: PassRecord | None = None  # the pass that just ended


class Schedule:
    """Passes over the slots this node holds: a pass takes the list of slots at its start and
    visits them in slot order (slots written later wait for the next pass); a new pass starts
    ``interval`` seconds after the previous one started, or as soon as it ends if it took
    longer."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._slots: tuple[int, ...] = ()
        self._index = 0
        self._started: float | None = None  # start of the running (or last) pass
        self._running = False
        self._slots_done = 0
        self._bytes_done = 0
        self.passes = 0  # passes completed
        self.last: PassRecord | None = None

    @property
    def running(self) -> bool:
        return self._running

    @property
    def progress(self) -> tuple[int, int]:
        """(slots looked at, slots) of the running pass; (0, 0) between passes."""
        return (self._index, len(self._slots)) if self._running else (0, 0)

    def next(self, now: float) -> Step:
        """What to do at ``now``."""
        if not self._running:
            if self._started is not None and now < self._started + self.interval:
                return Step(None, wait=self._started + self.interval - now)
            return Step(None, new_pass=True)
        if self._index < len(self._slots):
            slot = self._slots[self._index]
            self._index += 1
            return Step(slot)
        assert self._started is not None
        self.last = PassRecord(self._started, now, self._slots_done, self._bytes_done)
        self.passes += 1
        self._running = False
        self._slots = ()
        return Step(None, wait=max(0.0, self._started + self.interval - now), ended=self.last)

    def start(self, now: float, slots: Iterable[int]) -> None:
        """Begin a pass at ``now`` over ``slots`` (any order, duplicates ignored)."""
        self._slots = tuple(sorted(set(slots)))
        self._index = 0
        self._started = now
        self._running = True
        self._slots_done = 0
        self._bytes_done = 0

    def again(self) -> None:
        """The slot :meth:`next` just handed out could not be checked: hand it out again."""
        if self._running and self._index > 0:
            self._index -= 1

    def checked(self, nbytes: int) -> None:
        """A slot of the running pass was read (``nbytes`` bytes)."""
        self._slots_done += 1
        self._bytes_done += nbytes


class BadCopies:
    """The copies the scrub found bad and dropped, until they are repaired (this node holds the
    slice intact again) or the slot is no longer live at that generation (deleted or reused:
    nothing left to repair)."""

    def __init__(self) -> None:
        self._bad: dict[int, int] = {}  # slot -> generation found bad

    def add(self, slot: int, generation: int) -> None:
        self._bad[slot] = generation

    def __contains__(self, slot: int) -> bool:
        return slot in self._bad

    def __len__(self) -> int:
        return len(self._bad)

    def settle(
        self, records: Mapping[int, SlotInfo | None], holds: Mapping[int, bool]
    ) -> tuple[list[int], list[int]]:
        """Forget the copies repaired (``holds[slot]``: this node holds the slice again) and
        those whose slot changed in ``records``; returns (repaired, gone)."""
        repaired, gone = [], []
        for slot, generation in list(self._bad.items()):
            record = records.get(slot)
            if (
                record is None
                or record.state is not SlotState.LIVE
                or record.generation != generation
            ):
                gone.append(slot)
            elif holds.get(slot, False):
                repaired.append(slot)
            else:
                continue
            del self._bad[slot]
        return repaired, gone

    def unrepairable(self, records: Mapping[int, SlotInfo | None], node_id: str) -> list[int]:
        """The bad copies no other node is listed as holding: nobody can serve the slice."""
        return sorted(
            slot
            for slot in self._bad
            if (record := records.get(slot)) is not None
            and not any(h != node_id for h in record.holders)
        )

    def slots(self) -> list[int]:
        return sorted(self._bad)
