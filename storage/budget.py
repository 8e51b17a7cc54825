"""The node's memory budget for payloads in flight: the accounting and the push rule. Pure.

Every payload buffer a node holds beyond the HTTP request that brought it (an upload being
replicated, a slice fetched by the reconciler, a read being served) is *charged* once against
``total`` bytes and released when its last holder lets it go (:class:`MemoryBudget` only counts;
:mod:`mydfs.storage.inflight` hands out the charges). Pushes of a charged buffer to a follower
add nothing to the total (it is the same buffer) but count against that follower's ``per_peer``
share: a follower whose unfinished pushes would pass its share is *lagging*. The leader then
stops pushing to it for a while (``backoff`` seconds, doubled at each new drop up to
``max_backoff``, reset by a push that succeeds) and drops what it held for it; the follower
catches up by fetching (its reconciler). A slow or stopped follower therefore costs at most
its share, and uploads go on at the speed of the two nodes that keep up.

A body being *received* (a push arriving at a follower, a slice fetched by the reconciler) is
charged :data:`RECEIVING` times its size: the HTTP reader collects its pieces, then joins them
into one buffer, so for a moment both exist.

Time is passed in; nothing here does I/O or locking (the event loop owns it).
"""

from __future__ import annotations

from enum import Enum

#: What a body being received costs, in multiples of its size (its pieces, then the whole).
RECEIVING = 2


class Admit(Enum):
    """What to do with a push to one follower (see :meth:`MemoryBudget.admit_push`)."""

    PUSH = "push"  # within the follower's share: push
    LAGGING = "lagging"  # the share is full: drop this push and what is held for the follower
    BACKING_OFF = "backing_off"  # the follower was found lagging a moment ago: skip it


class MemoryBudget:
    """Bytes charged in total, bytes of unfinished pushes per follower, and which followers
    the leader is not pushing to right now."""

    def __init__(
        self, total: int, per_peer: int, backoff: float = 2.0, max_backoff: float = 30.0
    ) -> None:
        if total <= 0 or per_peer <= 0:
            raise ValueError("memory budgets must be positive")
        self.total = total
        self.per_peer = per_peer
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.used = 0  # bytes charged (distinct buffers held)
        self.peak = 0  # the largest ``used`` seen
        self.peer_bytes: dict[str, int] = {}  # follower -> bytes of its unfinished pushes
        self.dropped: dict[str, int] = {}  # follower -> pushes not made or cancelled
        self._resume_at: dict[str, float] = {}  # follower -> when pushes to it may resume
        self._pause: dict[str, float] = {}  # follower -> the length of its current pause

    # --- charges ------------------------------------------------------------------------------

    def fits(self, size: int) -> bool:
        """Would charging ``size`` more bytes stay within the total? A single buffer larger
        than the whole budget fits an empty node (so a tiny budget slows a node, never stops
        it)."""
        return self.used + size <= self.total or self.used == 0

    def try_charge(self, size: int) -> bool:
        if not self.fits(size):
            return False
        self.used += size
        self.peak = max(self.peak, self.used)
        return True

    def release(self, size: int) -> None:
        self.used = max(0, self.used - size)

    # --- pushes -------------------------------------------------------------------------------

    def admit_push(self, peer: str, size: int, now: float, *, force: bool = False) -> Admit:
        """May the leader push ``size`` more bytes to ``peer`` now? On ``PUSH`` the bytes count
        against the peer's share until :meth:`push_finished`. ``force``: the upload needs this
        push for its majority (every follower lags), so it is made whatever the share (the
        upload waits for it, and its buffer is charged already)."""
        if force:
            self.peer_bytes[peer] = self.peer_bytes.get(peer, 0) + size
            return Admit.PUSH
        if now < self._resume_at.get(peer, 0.0):
            self.dropped[peer] = self.dropped.get(peer, 0) + 1
            return Admit.BACKING_OFF
        held = self.peer_bytes.get(peer, 0)
        if held and held + size > self.per_peer:
            pause = min(self.max_backoff, 2 * self._pause[peer]) if peer in self._pause else 0.0
            pause = pause or self.backoff
            self._pause[peer] = pause
            self._resume_at[peer] = now + pause
            self.dropped[peer] = self.dropped.get(peer, 0) + 1
            return Admit.LAGGING
        self.peer_bytes[peer] = held + size
        return Admit.PUSH

    def push_finished(self, peer: str, size: int, *, ok: bool) -> None:
        """A push admitted earlier ended (``ok``: the follower has the slice durably)."""
        self.peer_bytes[peer] = max(0, self.peer_bytes.get(peer, 0) - size)
        if ok:
            self._pause.pop(peer, None)  # it keeps up again: the next drop starts afresh

    def push_cancelled(self, peer: str) -> None:
        """Count a push the leader cancelled because ``peer`` was lagging."""
        self.dropped[peer] = self.dropped.get(peer, 0) + 1

    def lagging(self, now: float) -> set[str]:
        """Followers the leader is not pushing to right now."""
        return {peer for peer, at in self._resume_at.items() if now < at}
