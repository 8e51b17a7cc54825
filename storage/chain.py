"""Walking a file's linked chain of slices through a group's table (pure, no I/O).

A file is a chain: each slice's record names the next slice (group, slot). A group can walk
the part of the chain it holds in one go, from its replicated table, without touching a disk;
the walk stops where the chain leaves the group, and the caller continues in the next group.
This is what lets a client (or a storage node streaming a whole file) learn every slice
location with one round trip per group run instead of one per slice.

301 records are followed to their target when it is in the same group (or handed back as
the continuation when it is not); each entry lists the 301 slots it was reached through
(``via``), which an edit locks and frees with the slice. A 404 (deleted) or pending slice
inside a chain is an error: a live file never silently reads short.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mydfs.common.errors import Corrupt
from mydfs.common.location import Location
from mydfs.storage.group_state import GroupState, SlotState

#: Hops allowed through 301 redirects for one slice before the chain counts as looping.
MAX_REDIRECTS = 16


@dataclass(frozen=True)
class ChainEntry:
    """One slice of a chain, as the walking group's table knows it."""

    group: int
    slot: int
    generation: int
    length: int
    crc32c: int
    file_id: str
    index: int
    holders: tuple[str, ...]
    via: tuple[tuple[int, int], ...] = ()
    """The 301 slots ``(slot, generation)`` passed through, in order, to reach this slice
    (empty when the pointer named the live slot itself)."""

    def to_dict(self, urls: dict[str, str]) -> dict[str, Any]:
        return {
            "group": self.group,
            "slot": self.slot,
            "generation": self.generation,
            "length": self.length,
            "crc32c": self.crc32c,
            "file_id": self.file_id,
            "index": self.index,
            "replicas": [urls[h] for h in self.holders if h in urls],
            "via": [[slot, generation] for slot, generation in self.via],
        }


def walk(state: GroupState, start: int, limit: int) -> tuple[list[ChainEntry], Location | None]:
    """Walk from ``start`` through this group's table for at most ``limit`` slices.

    Returns the entries and where the chain continues (a location in another group, or in
    this group when ``limit`` was reached), or None when the chain ended.
    """
    group = state.group
    entries: list[ChainEntry] = []
    current: Location | None = Location(group, start)
    while current is not None and current.group == group and len(entries) < limit:
        slot = current.slot
        info = state.get(slot)
        hops = 0
        via: list[tuple[int, int]] = []
        while info is not None and info.state is SlotState.MOVED:
            hops += 1
            via.append((slot, info.generation))
            target = info.target
            if target is None or hops > MAX_REDIRECTS:
                raise Corrupt("301 redirects loop or lack a target", group=group, slot=slot)
            if target.group != group:
                return entries, target
            slot = target.slot
            info = state.get(slot)
        if info is None:
            raise Corrupt("chain points at a slot that was never written", group=group, slot=slot)
        if info.state is not SlotState.LIVE:
            raise Corrupt(
                f"chain of a live file hits a {info.state.value} slice",
                group=group,
                slot=slot,
                state=info.state.value,
            )
        entries.append(
            ChainEntry(
                group=group,
                slot=slot,
                generation=info.generation,
                length=info.length,
                crc32c=info.crc32c,
                file_id=info.file_id,
                index=info.slice_index,
                holders=info.holders,
                via=tuple(via),
            )
        )
        current = info.next
    return entries, current
