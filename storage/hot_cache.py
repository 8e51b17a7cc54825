"""The hot-slice cache of a storage node (pure: no I/O, no clock, no lock).

A node keeps a slice's payload in memory once it was read ``threshold`` times since the node
started, within ``max_bytes`` (least recently used out first; 0 disables the cache). Entries are
keyed by slice identity, ``(slot, generation)``: a reused slot has a new generation, so its old
bytes can never be found under the new key. The shell (:mod:`mydfs.storage.reads`) adds the
rest of the rule that no stale byte is served: only bytes whose block checksums were verified
on the way in are admitted, an entry is dropped whenever the group table changes its slot
(:meth:`HotCache.drop`), and before serving an entry the shell checks the slot's current state
and generation in the table and in the volume's header.

Read counts are kept per slot, for the generation last read (a new generation starts at 0), so
they cost one small record per slot read since start, bounded by the volume's slots. All
methods run on the event loop thread.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

#: Default reads of a slice (since start) after which it is kept in memory.
DEFAULT_THRESHOLD = 20
#: Default bound of the cache, MiB.
DEFAULT_MB = 64

Key = tuple[int, int]  # (slot, generation)


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class HotCache:
    """Admission by read count, LRU eviction by bytes. At most one entry per slot."""

    def __init__(self, threshold: int = DEFAULT_THRESHOLD, max_bytes: int = DEFAULT_MB << 20):
        if threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {threshold}")
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.threshold = threshold
        self.max_bytes = max_bytes
        self.bytes = 0
        self.stats = CacheStats()
        self._entries: OrderedDict[int, tuple[int, bytes]] = OrderedDict()  # oldest use first
        self._reads: dict[int, tuple[int, int]] = {}  # slot -> (generation, reads)

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Key) -> bool:
        entry = self._entries.get(key[0])
        return entry is not None and entry[0] == key[1]

    def keys(self) -> list[Key]:
        """The cached slices, least recently used first."""
        return [(slot, gen) for slot, (gen, _) in self._entries.items()]

    def get(self, slot: int, generation: int) -> bytes | None:
        """The cached payload of the slice (now the most recently used), or None (a miss)."""
        if not self.enabled:
            return None
        entry = self._entries.get(slot)
        if entry is None or entry[0] != generation:
            self.stats.misses += 1
            return None
        self._entries.move_to_end(slot)
        self.stats.hits += 1
        return entry[1]

    def note_read(self, slot: int, generation: int, size: int) -> bool:
        """Count one read of the slice from disk; True when this read should fill the cache:
        the slice has now been read ``threshold`` times or more since start (a new generation
        of the slot counts from 0), is not cached, and fits in the whole cache."""
        if not self.enabled:
            return False
        gen, count = self._reads.get(slot, (generation, 0))
        if generation < gen:
            return False  # a late read of an older slice of this slot: not counted
        count = count + 1 if gen == generation else 1
        self._reads[slot] = (generation, count)
        return count >= self.threshold and size <= self.max_bytes and (slot, generation) not in self

    def put(self, slot: int, generation: int, data: bytes) -> int:
        """Keep ``data`` as the slice's payload (verified by the caller), evicting the least
        recently used entries to make room; returns how many were evicted. A slice larger than
        the cache, or older than the generation cached for its slot, is not kept."""
        if not self.enabled or len(data) > self.max_bytes:
            return 0
        old = self._entries.get(slot)
        if old is not None:
            if old[0] > generation:
                return 0
            self._remove(slot)
        evicted = 0
        while self.bytes + len(data) > self.max_bytes:
            self._remove(next(iter(self._entries)))
            evicted += 1
        self._entries[slot] = (generation, data)
        self.bytes += len(data)
        self.stats.evictions += evicted
        return evicted

    def drop(self, slot: int | None) -> None:
        """Forget ``slot`` (its entry, whatever the generation, and its read count); None:
        every slot."""
        if slot is None:
            self._entries.clear()
            self._reads.clear()
            self.bytes = 0
            return
        self._reads.pop(slot, None)
        if slot in self._entries:
            self._remove(slot)

    def _remove(self, slot: int) -> None:
        self.bytes -= len(self._entries.pop(slot)[1])
