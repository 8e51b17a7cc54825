"""Placement of a new file's slices onto storage groups (pure).

A file of ``n`` slices is cut into **runs** of at most ``k`` consecutive slices; each run goes
to one group, so a chain crosses groups rarely (a cross-group next pointer costs a hop) but a
big file is still spread out. Rules, in order:

1. Only the groups given (the writable ones) are used, and never more slices than a group's
   ``free_slots`` (``None`` = unbounded).
2. Two adjacent runs go to different groups whenever another group still has room.
3. Among the allowed groups the one with the **most free space** wins, counting the space this
   very plan has already taken (so two equal groups alternate: 7 slices → 3+3+1 as a, b, a).
   Unbounded groups rank above every bounded one and among themselves by the fewest slices
   planned so far (``planned`` carries reservations of earlier plans). Ties go to the lowest
   group id, so the plan is deterministic.

With a single group every run goes to it. Not enough free space in all groups together raises
:class:`DiskFull`; no group at all raises :class:`Unavailable`.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from mydfs.common.errors import DiskFull, InvalidArgument, Unavailable

#: Largest number of slices one placement request may ask for (4 TiB of 4 MiB slices).
MAX_SLICES = 1_000_000


@dataclass(frozen=True, slots=True)
class GroupSpace:
    """A writable group as the scheduler sees it."""

    group_id: int
    free_slots: int | None  # None: unbounded
    planned: int = 0  # slices already promised to earlier plans (tie-break for unbounded)


@dataclass(frozen=True, slots=True)
class Run:
    group_id: int
    count: int


def _key(g: int, free: int | None, used: int) -> tuple[int, int, int]:
    # Smallest key first: unbounded before bounded; then least used / most free; then lowest id.
    return (0, used, g) if free is None else (1, -free, g)


def plan_runs(n: int, k: int, groups: Sequence[GroupSpace]) -> list[Run]:
    """Cut ``n`` slices into runs of at most ``k`` over ``groups`` (see the module rules)."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SLICES:
        raise InvalidArgument(f"slices must be an integer 1..{MAX_SLICES}, got {n!r}")
    if k < 1:
        raise InvalidArgument(f"max_consecutive must be >= 1, got {k}")
    if not groups:
        raise Unavailable("no storage group is writable")
    ids = [g.group_id for g in groups]
    if len(set(ids)) != len(ids):
        raise InvalidArgument(f"group ids repeat: {ids}")
    free: dict[int, int | None] = {g.group_id: g.free_slots for g in groups}
    used: dict[int, int] = {g.group_id: g.planned for g in groups}
    if all(f is not None for f in free.values()):
        room = sum(f or 0 for f in free.values())
        if room < n:
            raise DiskFull(
                f"the writable groups have {room} free slices, the file needs {n}",
                free=room,
                slices=n,
            )
    heap = [_key(g, f, used[g]) for g, f in free.items() if f is None or f > 0]
    heapq.heapify(heap)
    runs: list[Run] = []
    left = n
    prev: int | None = None
    while left > 0:
        if not heap:  # unreachable after the room check; kept as a guard
            raise DiskFull("the writable groups ran out of free slices", slices=n)
        best = heapq.heappop(heap)
        held = None
        if best[2] == prev and heap:
            held, best = best, heapq.heappop(heap)
        g = best[2]
        f = free[g]
        count = min(k, left) if f is None else min(k, left, f)
        runs.append(Run(g, count))
        left -= count
        used[g] += count
        if f is not None:
            free[g] = f - count
        nf = free[g]
        if nf is None or nf > 0:
            heapq.heappush(heap, _key(g, nf, used[g]))
        if held is not None:
            heapq.heappush(heap, held)
        prev = g
    return runs
