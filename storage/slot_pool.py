"""The slots a group leader reserves ahead for one-request uploads (pure bookkeeping).

A one-slice upload that does not go inline costs two Raft rounds: ``reserve`` (which slot, at
which generation) before the payload can be written, ``seal`` after. The leader takes the
first round off the upload's path by reserving a few slots before any upload needs them (as
SeaweedFS's ``assign?count=`` hands out file ids ahead): ordinary ``reserve`` commands whose
upload id starts with ``pool.`` and that name no content. An upload takes one, writes its
payload there on 2 of 3 nodes, and one ``assign`` command makes the slot its slice and seals it
(``docs/replication.md``, "Slots reserved ahead").

:class:`SlotPool` is the leader's list of such slots, oldest first; the writer keeps it filled
and checks each one against the table when it takes it. A slot kept longer than
:data:`POOL_TTL` is dropped (the settlement sweep then aborts it), so a pool left by a quiet
leader does not hold reservations for ever.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

#: Slots the leader keeps reserved ahead, and the count below which it reserves more.
POOL_TARGET = 16
POOL_LOW = 8
#: Seconds a slot stays in the pool unused before it is given up.
POOL_TTL = 30.0


@dataclass(frozen=True)
class Ahead:
    """One slot reserved ahead: where, at which generation, under which pool id, and when."""

    slot: int
    generation: int
    pool_id: str
    at: float


class SlotPool:
    """The leader's slots reserved ahead, oldest first. Pure: the time is passed in."""

    def __init__(
        self, target: int = POOL_TARGET, low: int = POOL_LOW, ttl: float = POOL_TTL
    ) -> None:
        self.target, self.low, self.ttl = target, low, ttl
        self._slots: deque[Ahead] = deque()
        self.requested = 0  # reservations asked for and not answered yet

    def __len__(self) -> int:
        return len(self._slots)

    def add(self, ahead: Ahead) -> None:
        self._slots.append(ahead)

    def take(self, now: float, valid: Callable[[Ahead], bool]) -> tuple[Ahead | None, list[Ahead]]:
        """The oldest slot still ``valid`` and younger than the TTL, and the ones given up on
        the way (expired, or no longer reserved as the pool thought)."""
        dropped: list[Ahead] = []
        while self._slots:
            ahead = self._slots.popleft()
            if now - ahead.at <= self.ttl and valid(ahead):
                return ahead, dropped
            dropped.append(ahead)
        return None, dropped

    def wanted(self) -> int:
        """How many more slots to reserve now: up to the target once the pool (with what was
        asked for) ran below the low mark, else none."""
        have = len(self._slots) + self.requested
        return self.target - have if have < self.low else 0

    def clear(self) -> list[Ahead]:
        """Give up every slot (the node is no longer the leader)."""
        gone = list(self._slots)
        self._slots.clear()
        return gone
