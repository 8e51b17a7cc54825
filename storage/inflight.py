"""The node's payloads in flight, held to the memory budget (the shell of :mod:`.budget`).

* :meth:`InFlight.charge` gives a :class:`Lease` on ``size`` bytes, waiting (up to a deadline)
  while the budget is full; the registration table is asked to let go of its oldest entry
  first. A lease is released when its last holder (the upload, a push, a registration entry)
  lets go.
* :meth:`InFlight.push` starts a push to a follower if its share allows, and tracks the task;
  when the follower is lagging, every push still running towards it is cancelled (its buffer
  freed) and ``on_lagging`` drops what else is held only for it.
* The gauges and counters of ``/metrics`` (bytes in flight in total and per follower, pushes
  dropped because a follower was slow) are kept up to date here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from mydfs.common.errors import Unavailable
from mydfs.storage.allocator import release_free_memory
from mydfs.storage.budget import Admit, MemoryBudget
from mydfs.storage.metrics import StorageMetrics

log = logging.getLogger(__name__)

#: Give freed memory back to the system once this many bytes were released since the last time.
TRIM_EVERY = 64 * 1024 * 1024


class Lease:
    """``size`` charged bytes, released when the last holder lets go."""

    def __init__(self, owner: InFlight, size: int) -> None:
        self._owner = owner
        self.size = size
        self._holders = 1

    def hold(self) -> Lease:
        """One more holder (a push, a registration entry)."""
        self._holders += 1
        return self

    def release(self) -> None:
        if self._holders <= 0:
            return
        self._holders -= 1
        if self._holders == 0:
            self._owner.released(self.size)


class InFlight:
    """Charges, waits and pushes under one :class:`MemoryBudget` (event loop only)."""

    def __init__(
        self,
        budget: MemoryBudget,
        metrics: StorageMetrics,
        *,
        evict: Callable[[], bool] = lambda: False,
        on_lagging: Callable[[str], object] = lambda peer: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget = budget
        self._metrics = metrics
        self._evict = evict
        self._on_lagging = on_lagging
        self._clock = clock
        self._freed = asyncio.Event()
        self._pushes: dict[str, set[asyncio.Task[Any]]] = {}
        self._since_trim = 0
        metrics.memory_budget.set(budget.total)

    # --- charges ------------------------------------------------------------------------------

    async def charge(self, size: int, *, timeout: float, what: str) -> Lease:
        """A lease on ``size`` bytes; waits up to ``timeout`` seconds for room (Unavailable,
        retryable, after that)."""
        budget = self.budget
        deadline = self._clock() + timeout
        while not budget.try_charge(size):
            if self._evict():
                continue
            left = deadline - self._clock()
            if left <= 0:
                raise Unavailable(
                    f"memory budget full ({budget.used} of {budget.total} bytes in flight); retry",
                    what=what,
                )
            self._freed.clear()
            try:
                async with asyncio.timeout(min(left, 0.5)):
                    await self._freed.wait()
            except TimeoutError:
                pass
        self._gauges()
        return Lease(self, size)

    def released(self, size: int) -> None:
        self.budget.release(size)
        self._freed.set()
        self._gauges()
        self._since_trim += size
        if self.budget.used == 0 and self._since_trim >= TRIM_EVERY:
            self._since_trim = 0
            release_free_memory()

    # --- pushes -------------------------------------------------------------------------------

    def push(
        self,
        peer: str,
        lease: Lease,
        coro: Callable[[], Coroutine[Any, Any, str]],
        *,
        force: bool = False,
    ) -> asyncio.Task[str] | None:
        """Start the push ``coro()`` to ``peer`` if its share allows (or ``force``: see
        :meth:`MemoryBudget.admit_push`); None when it was dropped (the follower catches up by
        fetching). The push holds ``lease`` while it runs."""
        size = lease.size
        verdict = self.budget.admit_push(peer, size, self._clock(), force=force)
        if verdict != Admit.PUSH:
            self._metrics.pushes_dropped.labels(peer).inc()
            if verdict == Admit.LAGGING:
                self._drop_peer(peer)
            return None
        lease.hold()
        task = asyncio.ensure_future(coro())
        tasks = self._pushes.setdefault(peer, set())
        tasks.add(task)
        self._gauges()

        def finished(done: asyncio.Task[str]) -> None:
            tasks.discard(done)
            ok = not done.cancelled() and done.exception() is None
            self.budget.push_finished(peer, size, ok=ok)
            lease.release()
            self._gauges()

        task.add_done_callback(finished)
        return task

    def _drop_peer(self, peer: str) -> None:
        """``peer`` is lagging: cancel the pushes still running towards it, drop the rest."""
        running = [t for t in self._pushes.get(peer, ()) if not t.done()]
        for task in running:
            task.cancel()
            self.budget.push_cancelled(peer)
            self._metrics.pushes_dropped.labels(peer).inc()
        log.warning(
            "follower %s is lagging (%d pushes unfinished): pushes to it stop for a while; "
            "it catches up by fetching",
            peer,
            len(running),
        )
        self._on_lagging(peer)

    async def close(self) -> None:
        """Cancel every push still running and wait for them to end."""
        tasks = [t for ts in self._pushes.values() for t in ts if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- metrics ------------------------------------------------------------------------------

    def _gauges(self) -> None:
        m, budget = self._metrics, self.budget
        m.inflight_bytes.set(budget.used)
        m.inflight_peak.set(budget.peak)
        for peer, held in budget.peer_bytes.items():
            m.peer_inflight_bytes.labels(peer).set(held)
