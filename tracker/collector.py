"""The collector: frees orphan slices, the slices nothing references (the shell).

An orphan is a live or 301 slot that no live file, no trash record, no upload in progress and
no undecided edit references: what an upload killed halfway leaves, the new slices of an edit
attempt that failed before its prepare, a slice uploaded twice by a retry. Every
``collect_interval`` seconds one pass:

1. notes the intents (before the reports: an upload registered while the reports are taken
   was an intent then);
2. takes the slot report of every group from its leader (``GET /internal/report``, signed);
   while a group's leader does not answer, the pass frees nothing (a slot an edit holds
   locked there may lead anywhere; an upload may be writing there);
3. takes the roots: the heads of every live file and trash record (after the reports: a file
   registered meanwhile is a root);
4. decides (:func:`mydfs.tracker.orphans.decide`, pure);
5. forgets the intents that expired (``DropIntent`` edits), before any slice of their file is
   freed: a registration needs the intent, so that upload can no longer register a file whose
   slices are gone; an intent already gone (registered since step 1) spares its file's slices;
6. frees each orphan with the signed ``DELETE /internal/slices/{slot}?gen=G&file=F&fv=V``: the
   node deletes (or, for a 301, releases) the slot only if file F still owns it at generation G
   and F's version in the group is still V, the one of the report (no edit of F committed
   there since), and refuses a slot an edit holds locked; at most ``collect_rate`` slices per
   second;
7. hands the same reports to the compactor (:mod:`mydfs.tracker.compactor`), which rewrites
   idle files' chains around their 301s and frees them (``docs/space.md``, Compaction).

The rules and why they are safe are in ``docs/collector.md``. :meth:`Collector.survey` (steps
1-4 without freeing anything) also serves ``GET /space`` (``mydfs df``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from mydfs.common.auth import AUTH_HEADER, sign
from mydfs.common.errors import Conflict, MydfsError, NotFound, Unavailable
from mydfs.common.http_errors import error_of
from mydfs.common.tls import connector
from mydfs.tracker.compactor import Compactor
from mydfs.tracker.orphans import (
    Report,
    Roots,
    Rules,
    Slot,
    Verdict,
    decide,
    parse_report,
    space,
)
from mydfs.tracker.reclaim import RateLimit

log = logging.getLogger("mydfs.tracker.collector")

#: Seconds one call to a storage node may take (a report of a large group is large).
CALL_TIMEOUT = 30.0
REPORT_PATH = "/internal/report"


class Sources(NamedTuple):
    """What the collector needs from the tracker."""

    secret: str
    groups: Callable[[], list[int]]  # every group the tracker knows
    nodes_of: Callable[[int], list[str]]  # a group's up nodes, its leader first
    roots: Callable[[], Roots]  # heads of live files and trash records, intents
    intents: Callable[[], list[tuple[str, float]]]
    drop_intent: Callable[[str], Awaitable[Any]]


class Survey(NamedTuple):
    reports: dict[int, Report]
    verdict: Verdict
    groups: list[int]


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry
        self.found = Gauge(
            "mydfs_tracker_orphans_found", "orphan slices found by the last pass", registry=r
        )
        self.freed = Counter(
            "mydfs_tracker_orphans_freed", "orphan slices freed since start", registry=r
        )
        self.last_pass = Gauge(
            "mydfs_tracker_collector_last_pass_time",
            "unix time the last complete collector pass ended",
            registry=r,
        )


class Collector:
    """Runs collector passes until cancelled (see the module docstring)."""

    def __init__(
        self,
        sources: Sources,
        *,
        grace: float,
        intent_ttl: float,
        rate: float,
        interval: float,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        ca: str | os.PathLike[str] | None = None,
        compactor: Compactor | None = None,
    ) -> None:
        self._s = sources
        self.compactor = compactor
        self._rules = Rules(grace_ms=int(grace * 1000), intent_ttl=intent_ttl)
        self._interval = interval
        self._limit = RateLimit(rate, burst=max(1.0, rate / 10))
        self._clock = clock
        self._wall = wall
        self._ca = ca
        self._session: aiohttp.ClientSession | None = None
        self.metrics = CollectorMetrics(registry)
        self.freed = 0
        self.passes = 0

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=connector(self._ca), timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._interval)
                try:
                    await self.pass_once()
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug must not stop collecting for good
                    log.exception("collector pass failed")
        finally:
            await self.close()

    async def survey(self) -> Survey:
        """Reports, roots and the verdict, nothing freed (steps 1-4)."""
        intents = self._s.intents()
        groups = self._s.groups()
        reports: dict[int, Report] = {}
        for group in groups:
            try:
                reports[group] = await self._report(group)
            except (MydfsError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.info("collector: no report of group %d this pass: %s", group, exc)
        roots = self._s.roots()
        roots = Roots(roots.files, roots.trash, intents)
        verdict = decide(reports, roots, self._wall(), self._rules, groups)
        return Survey(reports, verdict, groups)

    async def space(self) -> dict[str, Any]:
        """``GET /space``: what ``mydfs df`` shows."""
        s = await self.survey()
        body = space(s.reports, s.verdict, s.groups)
        body["grace"] = self._rules.grace_ms / 1000
        return body

    async def pass_once(self) -> int:
        """One pass, then the compactions it calls for; the number of orphan slices freed."""
        s = await self.survey()
        freed = await self.collect(s)
        if self.compactor is not None:
            await self.compactor.compact(self._open(), s.reports)
        return freed

    async def collect(self, s: Survey) -> int:
        """Steps 5-6 of a pass on the survey ``s`` (which may be old: every delete is checked
        by its node against what ``s`` saw); the number of orphan slices freed."""
        verdict = s.verdict
        self.metrics.found.set(len(verdict.orphans))
        if not verdict.complete:
            missing = sorted(set(s.groups) - set(s.reports))
            log.info("collector: no report of groups %s: nothing freed this pass", missing)
        freed = 0
        if verdict.orphans:
            log.info(
                "collector: %d orphan slices (%d more inside the grace period)",
                len(verdict.orphans),
                verdict.young,
            )
        # Expired intents are forgotten before any slice of their file is freed: from then on
        # the upload cannot register its file (a registration needs the intent). One that is
        # gone already may have been registered since the survey: its slices are spared.
        spared: set[str] = set()
        for fid in verdict.expired_intents:
            try:
                await self._s.drop_intent(fid)
            except NotFound:
                spared.add(fid)
                continue
            log.info("collector: intent of %s expired; forgotten", fid)
        for rec in verdict.orphans:
            if rec.file_id in spared:
                continue
            pause = self._limit.wait(self._clock())
            if pause > 0:
                await asyncio.sleep(pause)
            try:
                if await self._free(rec):
                    freed += 1
            except (MydfsError, aiohttp.ClientError, TimeoutError) as exc:
                log.info("collector: slice %d:%d not freed this pass: %s", rec.group, rec.slot, exc)
        self.freed += freed
        self.passes += 1
        self.metrics.freed.inc(freed)
        self.metrics.last_pass.set(self._wall())
        if freed:
            log.info("collector: %d orphan slices freed", freed)
        return freed

    async def _report(self, group: int) -> Report:
        session = self._open()
        last: MydfsError = Unavailable(f"group {group} has no node up", group=group)
        for url in self._s.nodes_of(group):
            headers = {AUTH_HEADER: sign(self._s.secret, "GET", REPORT_PATH)}
            try:
                async with session.get(
                    url + REPORT_PATH, headers=headers, allow_redirects=False
                ) as resp:
                    if resp.status != 200:  # a follower (307), or trouble: the next node
                        last = await error_of(resp, group=group)
                        continue
                    body = await resp.json()
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = Unavailable(f"{url}: {exc or type(exc).__name__}", group=group)
                continue
            return parse_report(body, group)
        raise last

    async def _free(self, rec: Slot) -> bool:
        """Free one orphan if it is still what the report showed; True when this call did."""
        session = self._open()
        group, slot = rec.group, rec.slot
        path_qs = (
            f"/internal/slices/{slot}?gen={rec.generation}&file={rec.file_id}&fv={rec.file_version}"
        )
        last: MydfsError = Unavailable(f"group {group} has no node up", group=group)
        for url in self._s.nodes_of(group):
            headers = {AUTH_HEADER: sign(self._s.secret, "DELETE", path_qs)}
            try:
                async with session.delete(
                    url + path_qs, headers=headers, allow_redirects=False
                ) as resp:
                    if resp.status == 200:
                        body = await resp.json()
                        return not body.get("duplicate")
                    err = await error_of(resp, group=group, slot=slot)
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = Unavailable(f"{url}: {exc or type(exc).__name__}", group=group)
                continue
            if isinstance(err, NotFound | Conflict):  # gone, reused, locked, edited: left alone
                log.info("collector: slice %d:%d left alone: %s", group, slot, err)
                return False
            last = err
        raise last


__all__ = ["Collector", "CollectorMetrics", "Sources", "Survey"]
