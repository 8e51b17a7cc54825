"""The reclaimer: frees the slices of removed and replaced files, then forgets them.

Removing a file (``DELETE /meta/files``) or replacing it (an overwrite) puts its entry in the
tracker's trash (file id, head, slice count). Clients never delete slices themselves: a
storage node deletes a slice only for a call signed with the cluster secret
(``DELETE /internal/slices/{slot}?gen=G&file=F``) and only when the slot's owner is file F at
generation G (else 409). This task makes those calls, so an entry forged to point at another
file's slices can never free them: the slices it names are not its file's.

The reclaimer only sees records that are **due** (:mod:`mydfs.tracker.trash`): held longer
than ``trash_retention``, purged, or already marked. For each, oldest first:

1. **Walk** the file's chain one slice at a time from its head (``GET /chain/{slot}?max=1``
   on the group's leader, with a read grant the tracker mints for the file and the owner it
   expects: file id and slice index 0, 1, 2...). The walk stops, without error, at the first
   slot that is not the file's next slice: deleted (an earlier pass got there), reused by
   another file, or another file's altogether (a forged entry). What was walked is the part of
   the file still there.
2. **Mark** the record ``RECLAIMING`` (a durable ``MARK_TRASH`` edit) unless it already is:
   from then on it can never be undeleted, so no undeleted file ever misses a slice. A record
   undeleted since the pass began is left alone (the mark is refused).
3. **Delete** those slices last first, each with its generation and the file id (the owner
   check), at most ``reclaim_rate`` slices per second over the whole tracker.
4. **Forget** the trash record (a ``DROP_TRASH`` edit).

A file that was **edited in place** (its record carries per-group versions) is walked by file
id only (its slices' indexes no longer count: ``X-Mydfs-Index`` is not sent), and its chain may
pass through 301 slots: each walked entry names them (``via``, the ``(slot, generation)`` of
every 301 passed to reach it, in its own group). Those are deleted too, after the live slot
they lead to, the one nearest to it first; the storage node releases a 301 slot of the file at
that generation (301 → 404). A pass interrupted between a slice's live slot and its 301 slots
leaves those 301 slots behind (the next walk stops at them).

Deleting from the tail keeps the walkable prefix intact: a tracker killed in the middle
(kill -9) finds the record in its trash after restart, walks what is left from the head and
finishes. A record whose group is down or whose leader does not answer waits for the next
pass (every ``reclaim_interval`` seconds); nothing is forgotten before it is freed.

The decisions (:func:`walk_outcome`, :func:`delete_outcome`, :func:`deletion_order`,
:class:`RateLimit`) are pure and tested without I/O; :class:`Reclaimer` is the shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import aiohttp

from mydfs.common import grants
from mydfs.common.auth import AUTH_HEADER, sign
from mydfs.common.errors import (
    Conflict,
    Corrupt,
    MydfsError,
    NotFound,
    Unavailable,
)
from mydfs.common.http_errors import error_of
from mydfs.common.location import Location
from mydfs.common.tls import connector
from mydfs.tracker.records import TrashRecord

log = logging.getLogger("mydfs.tracker.reclaim")

#: Seconds one call to a storage node may take.
CALL_TIMEOUT = 10.0
#: Seconds a walk's read grant stays valid (it only serves this pass).
WALK_GRANT_TTL = 300.0


class Found(NamedTuple):
    """One slice of a trashed file, as its group's leader walked it; ``via`` are the 301 slots
    ``(slot, generation)`` of the same group passed through to reach it (edited files)."""

    group: int
    slot: int
    generation: int
    via: tuple[tuple[int, int], ...] = ()


class Walk(enum.Enum):
    """What one step of a walk means for the reclaimer."""

    STOP = "stop"  # the file's chain ends here for the reclaimer: delete what was walked
    RETRY = "retry"  # try the whole record again on a later pass


class Delete(enum.Enum):
    DONE = "done"  # deleted now, or before (a retried pass)
    NOT_OURS = "not_ours"  # the slot holds something else: left alone
    RETRY = "retry"


# --- pure parts -------------------------------------------------------------------------------


def walk_outcome(error: MydfsError) -> Walk:
    """A failed walk step. The table's definitive word that the slot is not the file's next
    slice — deleted or never written (``Corrupt`` from a chain walk, ``NotFound``), another
    owner (``NotFound``, reason ``another_owner``), a state that does not fit (``Conflict``) —
    ends the walk there: nothing from it on is the file's to free. Anything else (no leader, a
    node down, a timeout, a refused grant, an unexpected error) is tried again on a later
    pass: a record is never dropped on a doubtful answer."""
    return Walk.STOP if isinstance(error, NotFound | Corrupt | Conflict) else Walk.RETRY


def delete_outcome(status: int, error: MydfsError | None) -> Delete:
    """A storage node's answer to an internal delete."""
    if status == 200:
        return Delete.DONE
    if isinstance(error, Conflict | NotFound):
        return Delete.NOT_OURS if isinstance(error, Conflict) else Delete.DONE
    return Delete.RETRY


def deletion_order(found: Sequence[Found]) -> list[Found]:
    """Last slice first: an interrupted pass leaves the file's head and a walkable prefix.
    Each slice's 301 slots (``via``) follow its live slot, the one nearest to it first."""
    out: list[Found] = []
    for item in reversed(found):
        out.append(Found(item.group, item.slot, item.generation))
        out.extend(Found(item.group, slot, gen) for slot, gen in reversed(item.via))
    return out


def step_headers(secret: str, file_id: str, index: int | None, now: float) -> dict[str, str]:
    """The headers of one walk step: the owner expected (the file id, and the slice index
    unless ``index`` is None: an edited file) and a read grant for the file."""
    headers = {
        "X-Mydfs-File": file_id,
        grants.GRANT_HEADER: grants.issue_for(
            secret, "read", WALK_GRANT_TTL, file_id=file_id, now=now
        ),
    }
    if index is not None:
        headers["X-Mydfs-Index"] = str(index)
    return headers


def parse_via(value: Any) -> tuple[tuple[int, int], ...]:
    """A chain entry's ``via`` (``[[slot, generation], ...]``; absent from older nodes)."""
    if not value:
        return ()
    return tuple((int(slot), int(gen)) for slot, gen in value)


@dataclass
class RateLimit:
    """At most ``rate`` events per second on average, bursts of at most ``burst``. Pure:
    :meth:`wait` says how long to sleep before the next event, given the clock."""

    rate: float
    burst: float = 1.0
    tokens: float = 1.0
    last: float | None = None

    def wait(self, now: float) -> float:
        """Seconds until the next event may happen, and take it (it happens then)."""
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= 1.0
        if self.tokens >= 0:
            return 0.0
        return -self.tokens / self.rate


# --- the shell --------------------------------------------------------------------------------


class Cluster(NamedTuple):
    """What the reclaimer needs from the tracker: its secret, where a group's nodes are, the
    trash, and how to forget a record."""

    secret: str
    nodes_of: Callable[[int], list[str]]  # the group's leader first, then its other up nodes
    trash: Callable[[], Awaitable[list[TrashRecord]]]  # only records whose edit is durable
    drop: Callable[[str], Any]  # async: forget the trash record of this file id
    #: async: durably mark the record as being reclaimed (raises if it was undeleted)
    mark: Callable[[TrashRecord], Awaitable[None]] | None = None


class Reclaimer:
    """Runs passes over the trash until cancelled (see the module docstring)."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        rate: float,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        ca: str | os.PathLike[str] | None = None,
        on_freed: Callable[[], None] | None = None,
    ) -> None:
        self._c = cluster
        self._on_freed = on_freed  # called once per slice freed (a metric)
        self._ca = ca  # trusted for https:// nodes (the tracker's ``tls_ca``)
        self._interval = interval
        self._limit = RateLimit(rate, burst=max(1.0, rate / 10))
        self._clock = clock
        self._wall = wall
        self._session: aiohttp.ClientSession | None = None
        self.freed = 0  # slices deleted since start (for logs and tests)
        self._postponed: set[str] = set()  # records already logged as postponed

    async def run(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=connector(self._ca), timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT)
        )
        try:
            while True:
                try:
                    await self.pass_once()
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug must not stop reclaiming for good
                    log.exception("reclaim pass failed")
                await asyncio.sleep(self._interval)
        finally:
            await self._session.close()

    async def pass_once(self) -> int:
        """One pass over the trash; the number of records freed and forgotten."""
        done = 0
        for record in sorted(await self._c.trash(), key=lambda r: r.time):
            try:
                freed = await self.reclaim(record)
            except (MydfsError, aiohttp.ClientError, TimeoutError) as exc:
                first = record.file_id not in self._postponed
                self._postponed.add(record.file_id)
                log.log(
                    logging.INFO if first else logging.DEBUG,
                    "reclaim of %s (%s) postponed: %s",
                    record.file_id,
                    record.path,
                    exc,
                )
                continue
            self._postponed.discard(record.file_id)
            with contextlib.suppress(NotFound):  # dropped meanwhile (DELETE /meta/trash)
                await self._c.drop(record.file_id)
            log.info(
                "reclaimed %s (%s, %s): %d of %d slices freed",
                record.file_id,
                record.path,
                record.reason.name.lower(),
                freed,
                record.slices,
            )
            done += 1
        return done

    async def reclaim(self, record: TrashRecord) -> int:
        """Free what is left of one trashed file; the number of slices deleted. Raises a
        retryable error when the pass must be tried again later."""
        found = await self.walk(record)
        if self._c.mark is not None:
            await self._c.mark(record)  # before the first delete: no undelete from here on
        freed = 0
        for item in deletion_order(found):
            pause = self._limit.wait(self._clock())
            if pause > 0:
                await asyncio.sleep(pause)
            if await self.delete(record.file_id, item):
                freed += 1
        return freed

    async def walk(self, record: TrashRecord) -> list[Found]:
        """The slices of the file still there, from its head (see the module docstring)."""
        found: list[Found] = []
        current = record.head
        while current is not None and len(found) < record.slices:
            index = None if record.edited else len(found)
            step = await self._step(record.file_id, current, index)
            if step is None:
                break
            item, current = step
            found.append(item)
        if not found and record.head is not None:
            log.warning(
                "trashed file %s (%s): its head %d:%d is not its first slice; nothing freed",
                record.file_id,
                record.path,
                record.head.group,
                record.head.slot,
            )
        return found

    async def _step(
        self, file_id: str, at: Location, index: int | None
    ) -> tuple[Found, Location | None] | None:
        """One slice of the walk; None where the file's chain ends for the reclaimer."""
        assert self._session is not None
        headers = step_headers(self._c.secret, file_id, index, self._wall())
        last: MydfsError = Unavailable(f"group {at.group} has no node up", group=at.group)
        for url in self._c.nodes_of(at.group):
            try:
                async with self._session.get(
                    f"{url}/chain/{at.slot}?max=1", headers=headers
                ) as resp:
                    if resp.status != 200:
                        err = await error_of(resp, group=at.group, slot=at.slot)
                        if walk_outcome(err) is Walk.STOP:
                            log.info("walk of %s stops at %s: %s", file_id, at, err)
                            return None
                        last = err
                        continue
                    body = await resp.json()
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = Unavailable(f"{url}: {exc or type(exc).__name__}", group=at.group)
                continue
            entries = body.get("entries") or []
            if not entries:
                return None
            e = entries[0]
            nxt = body.get("next")
            following = None if nxt is None else Location(int(nxt[0]), int(nxt[1]))
            via = parse_via(e.get("via"))
            found = Found(int(e["group"]), int(e["slot"]), int(e["generation"]), via)
            return found, following
        raise last

    async def delete(self, file_id: str, item: Found) -> bool:
        """Delete one slice if it is still the file's; True when this call freed it."""
        assert self._session is not None
        path_qs = f"/internal/slices/{item.slot}?gen={item.generation}&file={file_id}"
        last: MydfsError = Unavailable(f"group {item.group} has no node up", group=item.group)
        for url in self._c.nodes_of(item.group):
            headers = {AUTH_HEADER: sign(self._c.secret, "DELETE", path_qs)}
            try:
                async with self._session.delete(
                    url + path_qs, headers=headers, allow_redirects=False
                ) as resp:
                    err = None if resp.status == 200 else await error_of(resp, slot=item.slot)
                    body = await resp.json() if resp.status == 200 else {}
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = Unavailable(f"{url}: {exc or type(exc).__name__}", group=item.group)
                continue
            outcome = delete_outcome(resp.status, err)
            if outcome is Delete.DONE:
                fresh = resp.status == 200 and not body.get("duplicate")
                self.freed += int(fresh)
                if fresh and self._on_freed is not None:
                    self._on_freed()
                return fresh
            if outcome is Delete.NOT_OURS:
                log.warning("slice %d:%d left alone: %s", item.group, item.slot, err)
                return False
            last = err or Unavailable(f"HTTP {resp.status} from {url}", group=item.group)
        raise last
