"""The leader's registration table: freshly written slices kept in memory for the followers.

The seed design: the leader keeps each new slice (data + which followers confirmed) so that a
follower fetching it costs no disk read; an entry leaves when every follower has it (the
leader confirms a follower when its push succeeded), when it times out, or when the leadership
is lost, and a lagging follower then reads the slice from the leader's disk or another peer.
The table is bounded in bytes; a slice that does not fit is simply not cached. An entry may
carry a *hold* on the node's memory budget (:class:`~mydfs.storage.inflight.Lease`), released
when the entry leaves; the budget asks for the oldest entry to leave when it is full
(:meth:`RegistrationTable.evict_oldest`), and an entry kept only for a follower found lagging
leaves at once (:meth:`RegistrationTable.forget_for`). Pure: time is passed in, nothing here
does I/O or locking (the event loop owns it).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol


class Hold(Protocol):
    def release(self) -> None: ...


@dataclass
class Entry:
    generation: int
    data: bytes
    created: float
    confirmed: set[str] = field(default_factory=set)
    hold: Hold | None = None


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

    def put(
        self, slot: int, generation: int, data: bytes, now: float, hold: Hold | None = None
    ) -> bool:
        """Keep ``data`` (and ``hold``, released when the entry leaves); False when it does not
        fit (after dropping expired entries): then ``hold`` is not kept."""
        self.expire(now)
        self.drop(slot)
        if len(data) > self.max_bytes - self.bytes:
            return False
        self._entries[slot] = Entry(generation, data, now, hold=hold)
        self.bytes += len(data)
        return True

    def get(self, slot: int, generation: int) -> bytes | None:
        entry = self._entries.get(slot)
        if entry is None or entry.generation != generation:
            return None
        return entry.data

    def confirm(self, slot: int, generation: int, node: str, lagging: Collection[str] = ()) -> None:
        """A follower has the slice durably; drop the entry once all followers do, the
        ``lagging`` ones (which catch up from disk) aside."""
        entry = self._entries.get(slot)
        if entry is None or entry.generation != generation:
            return
        entry.confirmed.add(node)
        if len(entry.confirmed | set(lagging)) >= self.followers:
            self.drop(slot)

    def drop(self, slot: int) -> None:
        entry = self._entries.pop(slot, None)
        if entry is not None:
            self.bytes -= len(entry.data)
            if entry.hold is not None:
                entry.hold.release()

    def evict_oldest(self) -> bool:
        """Drop the oldest entry; False when the table is empty."""
        if not self._entries:
            return False
        self.drop(next(iter(self._entries)))
        return True

    def forget_for(self, node: str) -> int:
        """Drop the entries kept only for follower ``node`` (every other follower confirmed);
        returns how many."""
        slots = [
            slot
            for slot, entry in self._entries.items()
            if node not in entry.confirmed and len(entry.confirmed) >= self.followers - 1
        ]
        for slot in slots:
            self.drop(slot)
        return len(slots)

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
        for slot in list(self._entries):
            self.drop(slot)
