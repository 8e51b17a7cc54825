"""The reconciler's plan: what this node must do so its volume matches the group's table.

The replicated table (:mod:`mydfs.storage.group_state`) says which slots are live, moved or
deleted and at which generation; the local volume says what this node's disk holds. Apply
functions never touch the disk (a follower installing a snapshot skips them), so the node
brings its volume in line afterwards with the actions planned here. Pure: no I/O.

Rules, per slot the table knows:

* LIVE at generation G: fetch it if the volume lacks G (dropping an older local copy first);
  relink if the next pointer differs; confirm if this node is not yet among the holders.
* MOVED at G: leave a 301 in the local header if the local copy is G and still live, or
  re-target a local 301 of G the table re-targeted (an edit of an edited slice).
* DELETED at G: drop any local copy (live, pending or 301) of generation <= G.
* PENDING at G: drop a local copy older than G (the slot was freed and reserved again before
  this node dropped its old slice: a slot reserved ahead may stay pending a long time);
  nothing else (the upload is in flight; the leader settles it).
* A slot quarantined at open (damaged headers): fetched again if LIVE, freed if DELETED.

A local copy *newer* than the table's generation is an upload pushed to this node before its
reservation was applied here; it is never dropped. Slots beyond the table's end are left alone
for the same reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from mydfs.common.location import Location
from mydfs.storage.format import SlotHeader
from mydfs.storage.format import SlotState as DiskState
from mydfs.storage.group_state import SlotInfo, SlotState


class Kind(Enum):
    FETCH = "fetch"  # copy the payload from a holder, then confirm
    DROP = "drop"  # mark the local copy deleted (404)
    MOVE = "move"  # leave a 301 in the local header
    RELINK = "relink"  # rewrite the local next pointer
    CONFIRM = "confirm"  # tell the group this node holds the slice
    RECLAIM = "reclaim"  # a quarantined (damaged) slot the group no longer needs: free it


@dataclass(frozen=True)
class Action:
    kind: Kind
    slot: int
    generation: int
    next: Location | None = None
    target: Location | None = None


def plan(
    table: Iterable[SlotInfo],
    local: Mapping[int, SlotHeader],
    node_id: str,
    quarantined: Iterable[int] = (),
) -> list[Action]:
    """The actions that bring ``local`` (slot → header on this disk) in line with ``table``."""
    bad = set(quarantined)
    actions: list[Action] = []
    for info in table:
        slot, gen = info.slot, info.generation
        mine = local.get(slot)
        mine_live = mine is not None and mine.state in (DiskState.LIVE, DiskState.PENDING)
        if mine is not None and mine.generation > gen:
            continue  # pushed ahead of the reservation reaching this node
        if slot in bad:
            # Damaged at open: repair a live slice from a holder, free a deleted one.
            if info.state == SlotState.LIVE:
                actions.append(Action(Kind.FETCH, slot, gen))
            elif info.state == SlotState.DELETED:
                actions.append(Action(Kind.RECLAIM, slot, gen))
            continue
        if info.state == SlotState.LIVE:
            if mine is None or mine.generation < gen or not mine_live:
                if mine_live:
                    actions.append(Action(Kind.DROP, slot, mine.generation if mine else gen))
                actions.append(Action(Kind.FETCH, slot, gen))
                continue
            if mine is not None and mine.next != info.next:
                actions.append(Action(Kind.RELINK, slot, gen, next=info.next))
            if node_id not in info.holders:
                actions.append(Action(Kind.CONFIRM, slot, gen))
        elif info.state == SlotState.MOVED:
            retarget = mine is not None and mine.state == DiskState.MOVED
            retarget = retarget and mine is not None and mine.target != info.target
            if mine is not None and mine.generation == gen and (mine_live or retarget):
                actions.append(Action(Kind.MOVE, slot, gen, target=info.target))
        elif info.state == SlotState.PENDING:
            old = mine is not None and mine.generation < gen
            if old and mine is not None and (mine_live or mine.state == DiskState.MOVED):
                actions.append(Action(Kind.DROP, slot, mine.generation))
        elif info.state == SlotState.DELETED and (
            mine_live or (mine is not None and mine.state == DiskState.MOVED)
        ):
            actions.append(Action(Kind.DROP, slot, gen))
    return actions
