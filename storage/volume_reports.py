"""What a volume hands out besides headers: read results, statistics, open and verify reports.

Plain immutable values (no I/O); :mod:`mydfs.storage.volume` re-exports them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from mydfs.storage.format import SlotHeader, SlotState

__all__ = ["OpenReport", "Problem", "SliceData", "VerifyReport", "VolumeStats"]


@dataclass(frozen=True)
class SliceData:
    """What a read returns: the slot's header and the requested payload bytes."""

    header: SlotHeader
    offset: int
    data: bytes


@dataclass(frozen=True)
class VolumeStats:
    live: int
    pending: int
    moved: int
    deleted: int
    free: int  # entries in the volume's local free list (404 slots and never-written slots)
    quarantined: int  # slots whose headers are damaged; never reused, never served
    slot_end: int  # slots [0, slot_end) are inside the file
    bytes_live: int  # payload bytes of LIVE slots
    bytes_stored: int  # payload bytes of every slot holding a header
    disk_bytes: int  # bytes the file really occupies on disk (it is sparse)
    syncs: int

    @classmethod
    def tally(
        cls,
        headers: Iterable[SlotHeader],
        *,
        free: int,
        quarantined: int,
        slot_end: int,
        disk_bytes: int,
        syncs: int,
    ) -> VolumeStats:
        """The statistics of a volume holding ``headers`` (the other figures as given)."""
        counts = dict.fromkeys(SlotState, 0)
        sizes = dict.fromkeys(SlotState, 0)
        for h in headers:
            counts[h.state] += 1
            sizes[h.state] += h.length
        return cls(
            live=counts[SlotState.LIVE],
            pending=counts[SlotState.PENDING],
            moved=counts[SlotState.MOVED],
            deleted=counts[SlotState.DELETED],
            free=free,
            quarantined=quarantined,
            slot_end=slot_end,
            bytes_live=sizes[SlotState.LIVE],
            bytes_stored=sum(sizes.values()),
            disk_bytes=disk_bytes,
            syncs=syncs,
        )


@dataclass(frozen=True)
class Problem:
    """One bad slot found by :meth:`Volume.verify` or by the open-time scan."""

    slot: int
    reason: str


@dataclass
class OpenReport:
    """What reopening found: an unclean shutdown, settled header copies, damaged slots."""

    clean: bool = True
    repaired_headers: list[int] = field(default_factory=list)
    quarantined: list[Problem] = field(default_factory=list)
    checkpoint_mismatch: str | None = None


@dataclass(frozen=True)
class VerifyReport:
    checked: int
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems
