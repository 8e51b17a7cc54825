"""The leader's registration table: freshly written slices kept in memory for the followers.

The seed design: the leader keeps each new slice (data + which followers confirmed) so that a
follower fetching it costs no disk read; an entry leaves when every follower has it (the
leader confirms a follower when its push succeeded), when it times out, or when the leadership
is lost, and a lagging follower then reads the slice from the leader's disk or another peer.
The table is bounded in bytes; a slice that does not fit is simply not cached. Pure: time is
passed in, nothing here does I/O or locking (the event loop owns it).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class Entry:
    generation: int
    data: bytes
    created: float
    confirmed: set[str] = field(default_factory=set)


class RegistrationTable:
    """slot → (generation, data, followers that confirmed), bounded by bytes and by age."""

    def __init__(self, max_bytes: int, ttl: float, followers: int = 2) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.followers = followers
        self._entries: OrderedDict[int, Entry] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, slot: int, generation: int, data: bytes, now: float) -> bool:
        """Keep ``data``; False when it does not fit (after dropping expired entries)."""
        self.expire(now)
        self.drop(slot)
        if len(data) > self.max_bytes - self.bytes:
            return False
        self._entries[slot] = Entry(generation, data, now)
        self.bytes += len(data)
        return True

    def get(self, slot: int, generation: int) -> bytes | None:
        entry = self._entries.get(slot)
        if entry is None or entry.generation != generation:
            return None
        return entry.data

    def confirm(self, slot: int, generation: int, node: str) -> None:
        """A follower has the slice durably; drop the entry once all followers do."""
        entry = self._entries.get(slot)
        if entry is None or entry.generation != generation:
            return
        entry.confirmed.add(node)
        if len(entry.confirmed) >= self.followers:
            self.drop(slot)

    def drop(self, slot: int) -> None:
        entry = self._entries.pop(slot, None)
        if entry is not None:
            self.bytes -= len(entry.data)

    def expire(self, now: float) -> int:
        """Drop entries older than the TTL; returns how many."""
        dropped = 0
        while self._entries:
            slot, entry = next(iter(self._entries.items()))
            if now - entry.created < self.ttl:
                break
            self.drop(slot)
            dropped += 1
        return dropped

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0
