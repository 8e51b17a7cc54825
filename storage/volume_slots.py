"""A volume's local free list and write claims: which of its own slots it may write (pure).

**This is not the group's free-slice table.** In a running cluster the group's replicated table
(:class:`~mydfs.storage.group_state.GroupState`) alone decides which slot a slice goes to and
which slots are free; a storage node never calls :meth:`LocalSlots.allocate`, it writes the slot
the group reserved (``Volume.write(slot, ..., generation=...)``). This local list serves:

* the **standalone slice store**: ``Volume.allocate``/``Volume.release`` hand out slots from it
  for ``mydfs-storage selfcheck``, the slice-store benchmark and the volume tests;
* the **write-once guard** of every write, replicated or not: a slot can be claimed for a write
  only while it is free here (no header, or a 404 marker), so a payload never changes under a
  reader;
* the **disk bookkeeping**: ``VolumeStats.free`` (which a node adds to the disk's spare room for
  the ``free_slots`` it reports to the tracker) and the free-table checkpoint of the
  superblock, which is compared with the scan at the next open.

It is rebuilt from a scan of the slot headers at every open (``docs/format.md``). The object is
not locked: :class:`~mydfs.storage.volume.Volume` calls it under its own lock.
"""

from __future__ import annotations

import heapq
from enum import Enum

__all__ = ["ClaimRefused", "LocalSlots"]


class ClaimRefused(Enum):
    """Why :meth:`LocalSlots.claim` refused a slot."""

    WRITING = "writing"
    """Another write of this slot is in progress."""
    TAKEN = "taken"
    """The slot is neither free nor claimed: it holds a slice, or it is quarantined."""


class LocalSlots:
    """The local free list of a volume of ``max_slots`` slots; see the module docstring."""

    def __init__(self, max_slots: int) -> None:
        self.max_slots = max_slots
        self.end = 0
        """Slots ``[0, end)`` lie inside the volume file or were handed out past its end."""
        self._free: set[int] = set()  # slots with no header or a 404 header, not quarantined
        self._heap: list[int] = []  # min-heap over _free; entries no longer free are skipped
        self._claimed: set[int] = set()  # allocated or being written, not yet holding a header
        self._writing: set[int] = set()  # a write is in progress (at most one per slot)

    # --- the free list -------------------------------------------------------------------

    def add_free(self, slot: int) -> None:
        """``slot`` is free: it holds no header, or a 404 marker."""
        if slot not in self._free:
            self._free.add(slot)
            heapq.heappush(self._heap, slot)

    def free(self) -> set[int]:
        """A copy of the free list."""
        return set(self._free)

    def free_count(self) -> int:
        return len(self._free)

    def free_on_disk(self, disk_end: int) -> tuple[int, ...]:
        """What a scan of a file of ``disk_end`` slots would find free, lowest first: the free
        list plus the claimed slots (free on disk until their header is written)."""
        return tuple(sorted(s for s in self._free | self._claimed if s < disk_end))

    # --- the standalone store's allocator -------------------------------------------------

    def allocate(self) -> int | None:
        """Claim the lowest free slot, else the next slot at the end; ``None`` when full."""
        while self._heap:
            slot = heapq.heappop(self._heap)
            if slot in self._free:
                self._free.discard(slot)
                self._claimed.add(slot)
                return slot
        if self.end >= self.max_slots:
            return None
        slot = self.end
        self.end += 1
        self._claimed.add(slot)
        return slot

    def release(self, slot: int) -> None:
        """Give back a slot from :meth:`allocate` that no write has started on."""
        if slot in self._claimed and slot not in self._writing:
            self._claimed.discard(slot)
            self.add_free(slot)

    # --- write claims ------------------------------------------------------------------------

    def claim(self, slot: int) -> ClaimRefused | None:
        """Claim ``slot`` for a write: it must be allocated (claimed, no write started), free,
        or past the end (the slots skipped in between become free). ``None`` on success."""
        if slot in self._writing:
            return ClaimRefused.WRITING
        if slot in self._claimed:
            self._writing.add(slot)
            return None
        if slot in self._free:
            self._free.discard(slot)
        elif slot >= self.end:
            for gap in range(self.end, slot):
                self.add_free(gap)
            self.end = slot + 1
        else:
            return ClaimRefused.TAKEN
        self._claimed.add(slot)
        self._writing.add(slot)
        return None

    def written(self, slot: int) -> None:
        """The write of a claimed slot completed: the slot holds a header now."""
        self._writing.discard(slot)
        self._claimed.discard(slot)

    def abandoned(self, slot: int) -> None:
        """The write of a claimed slot failed: the slot is free again."""
        self._writing.discard(slot)
        if slot in self._claimed:
            self._claimed.discard(slot)
            self.add_free(slot)
