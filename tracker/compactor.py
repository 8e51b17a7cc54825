"""The compactor: rewrites chains around their 301 redirects and frees them (the shell).

After each collector pass (``tracker/collector.py``), on the same survey of the groups' slot
reports, :func:`mydfs.tracker.compaction.plan` picks the files to compact (idle, over a
threshold of redirects, chain settled: ``docs/space.md``, Compaction). Each one runs as an edit
with the tracker as its coordinator, through the same participant routes and decision table as
a client's edit (``docs/transactions.md``):

1. ``POST /edits/{txn}/prepare`` at every group the compaction touches (a write grant for the
   file): ``lock`` the predecessors, the 301s and their targets; ``keep`` the predecessors with
   their next pointer set past the 301s, and the targets. A lock held by an edit refuses it
   (``locked``): the compaction is aborted and planned again by a later pass.
2. The decision: a ``DECIDE`` edit-log record (fsynced), only if the file is still at the
   version the plan was made on (:func:`mydfs.tracker.compaction.decide`); it bumps the
   version and the layout (an edit planned on the old chain is refused ``layout_changed``) and
   moves the head when the head was a 301. Otherwise an abort is recorded.
3. ``POST /edits/{txn}/commit`` (or ``rollback``) with the decision token at every group,
   retried for a few seconds; a group that did not get it asks the tracker itself after
   ``edit_timeout`` (its resolver), as for any edit.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, NamedTuple

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from mydfs.common.deliver import deliver
from mydfs.common.errors import MydfsError, Unavailable
from mydfs.common.grants import GRANT_HEADER
from mydfs.common.http_errors import error_of
from mydfs.tracker import compaction
from mydfs.tracker.compaction import Part, Plan, Rules
from mydfs.tracker.decisions import abort_of
from mydfs.tracker.orphans import MOVED, Report
from mydfs.tracker.reclaim import RateLimit
from mydfs.tracker.records import Decision, FileEntry

log = logging.getLogger("mydfs.tracker.compactor")

#: Seconds the compactor keeps bringing a decision to a group before leaving it to the
#: group's resolver.
COMMIT_PATIENCE = 5.0
#: At most this many compactions per pass (the rest wait for the next pass).
MAX_PER_PASS = 1000


class Sources(NamedTuple):
    """What the compactor needs from the tracker."""

    nodes_of: Callable[[int], list[str]]  # a group's up nodes, its leader first
    files: Callable[[set[str]], Iterable[tuple[str, FileEntry]]]  # live files of these ids
    get: Callable[[str], FileEntry | None]  # the entry at a path now
    decided: Callable[[str], Decision | None]  # the decision recorded for a txn, if any
    record: Callable[[Decision], Awaitable[Any]]  # log a decision (durable on return)
    token: Callable[[Decision], str]  # its decision token
    grant: Callable[[str], str]  # a write grant for a file id


class CompactorMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry
        self.compactions = Counter(
            "mydfs_tracker_compactions",
            "compactions by outcome: committed, aborted (a group refused), stale (the file "
            "changed since the plan)",
            ["outcome"],
            registry=r,
        )
        self.released = Counter(
            "mydfs_tracker_redirects_released",
            "301 slots freed by compaction since start",
            registry=r,
        )
        self.redirects = Gauge(
            "mydfs_tracker_redirects", "301 slots in the groups at the last survey", registry=r
        )


class Compactor:
    """Runs the compactions of one survey (see the module docstring)."""

    def __init__(
        self,
        sources: Sources,
        rules: Rules,
        *,
        rate: float,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._s = sources
        self.rules = rules
        self._limit = RateLimit(rate, burst=max(1.0, rate / 10))
        self._clock = clock
        self._wall = wall
        self.metrics = CompactorMetrics(registry)
        self.released = 0

    async def compact(self, session: aiohttp.ClientSession, reports: Mapping[int, Report]) -> int:
        """Compact what the reports call for; the number of 301 slots freed."""
        counts = compaction.redirect_counts(reports)
        self.metrics.redirects.set(sum(counts.values()))
        owners = {
            rec.file_id
            for report in reports.values()
            for rec in report.slots.values()
            if rec.state == MOVED
        }
        if not owners:
            return 0
        plans = compaction.plan(reports, self._s.files(owners), self._wall(), self.rules, counts)
        released = 0
        for p in plans[:MAX_PER_PASS]:
            pause = self._limit.wait(self._clock())
            if pause > 0:
                await asyncio.sleep(pause)
            if await self.run(session, p):
                released += len(p.redirects)
        self.released += released
        self.metrics.released.inc(released)
        if released:
            log.info("compactor: %d redirects freed in %d files", released, len(plans))
        return released

    async def run(self, session: aiohttp.ClientSession, p: Plan) -> bool:
        """One compaction; True when it committed."""
        txn = uuid.uuid4().hex
        headers = {GRANT_HEADER: self._s.grant(p.file_id)}
        try:
            for part in p.parts:
                await self._call(
                    session, part.group, f"/edits/{txn}/prepare", part.body(p.file_id), headers
                )
        except (MydfsError, aiohttp.ClientError, TimeoutError) as exc:
            log.info("compaction of %s not prepared: %s", p.path, exc)
            await self._abort(session, p, txn, "aborted")
            return False
        # A group's resolver may have had an abort recorded meanwhile (a prepare slower than
        # edit_timeout): then that decision stands. From this check to the decision's record
        # nothing yields to the event loop, so no other decision can come in between.
        if self._s.decided(txn) is not None:
            await self._abort(session, p, txn, "aborted")
            return False
        decision = compaction.decide(self._s.get(p.path), p, txn, self._wall())
        if decision is None:  # changed since the plan: nothing to commit
            await self._abort(session, p, txn, "stale")
            return False
        await self._s.record(decision)
        token = self._s.token(decision)
        await asyncio.gather(
            *(self._finish(session, txn, "commit", token, part) for part in p.parts)
        )
        self.metrics.compactions.labels("committed").inc()
        log.info(
            "compacted %s: %d redirects freed, version %d",
            p.path,
            len(p.redirects),
            decision.version,
        )
        return True

    async def _abort(self, session: aiohttp.ClientSession, p: Plan, txn: str, outcome: str) -> None:
        decision = self._s.decided(txn)
        if decision is None:
            decision = abort_of(txn, p.file_id, p.path, self._wall())
            await self._s.record(decision)
        token = self._s.token(decision)
        await asyncio.gather(
            *(self._finish(session, txn, "rollback", token, part) for part in p.parts)
        )
        self.metrics.compactions.labels(outcome).inc()

    async def _finish(
        self, session: aiohttp.ClientSession, txn: str, step: str, token: str, part: Part
    ) -> None:
        """Bring a decision to one group, retried on ``out_of_order`` and unavailability for
        :data:`COMMIT_PATIENCE` seconds; then it is the group's resolver's (never raised)."""
        await deliver(
            lambda: self._call(
                session, part.group, f"/edits/{txn}/{step}", {"decision": token}, {}
            ),
            f"compaction {txn} {step} at group {part.group}",
            COMMIT_PATIENCE,
            log,
            self._clock,
        )

    async def _call(
        self,
        session: aiohttp.ClientSession,
        group: int,
        path: str,
        body: dict[str, Any],
        headers: dict[str, str],
    ) -> Any:
        """POST to the group's leader: its nodes in turn, leader first, until one answers
        200 (a follower's 307 or an unreachable node: the next); a refusal is raised typed,
        no leader answering (an election) as :class:`Unavailable`."""
        last: Exception = Unavailable(f"group {group} has no node up", group=group)
        for url in self._s.nodes_of(group):
            try:
                async with session.post(
                    url + path, json=body, headers=headers, allow_redirects=False
                ) as resp:
                    if resp.status == 200:
                        return await resp.json()
                    err = await error_of(resp, group=group)
                    if resp.status not in (307, 503):
                        raise err
                    last = err
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = Unavailable(f"{url}: {exc or type(exc).__name__}", group=group)
        raise Unavailable(f"group {group}: no leader answered ({last})", group=group)


__all__ = ["Compactor", "CompactorMetrics", "Sources"]
