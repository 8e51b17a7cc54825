"""The one read path of mydfs: walk a file's chain, fetch its slices, stream a byte range.

Both the SDK (``client/aio.py``) and a storage node serving ``GET /files`` (through
``storage/file_reader.py``) read files with what is here:

1. **The chain** (:func:`walk_chain`, :func:`fetch_chain_run`, :func:`check_chain`): one
   ``GET /chain/{slot}?max=n`` per group run. A node of the group walks the run it holds in its
   replicated table and answers with the slices' locations and where the chain continues; the
   walk continues there, in the next group. A run that returns nothing and points back at its
   own start is :class:`Corrupt` (no progress). The slices found must match the file entry's
   count and size.
2. **A slice** (:func:`fetch_slice`): the whole slice or a range of it from one of its
   replicas, checked: the length, the whole slice's CRC32C against the chain's, and for a slice
   located from the file entry alone (a one-slice file) the ``X-Mydfs-File`` owner header. A
   replica that fails, is unreachable or answers bad bytes is skipped for the next one; a 307
   (a follower pointing at a holder or its leader) is followed.
3. **A range** (:func:`cut_range`, :func:`stream_pieces`): the slices' pieces that overlap
   ``[offset, end)``, fetched a bounded window ahead and handed out in order.

:class:`ReadPath` bundles what these need: an aiohttp session, how to find a group's node URLs,
timeouts, the caller's retry policy, and optional hooks through which a storage node walks its
own group's runs in its table and reads the slices it holds from its own disk. Nothing here
imports a role package.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar

import aiohttp

from mydfs.common.checksum import crc32c
from mydfs.common.errors import Corrupt, MydfsError, NotFound, Unavailable
from mydfs.common.http_errors import error_of
from mydfs.common.location import Location

_T = TypeVar("_T")


@dataclass(frozen=True)
class SliceLoc:
    """Where one slice of a file is, as its group's chain walk reported it."""

    group: int
    slot: int
    generation: int  # 0: not known (a one-slice file located from its entry alone)
    length: int
    crc32c: int
    replicas: tuple[str, ...]
    file_id: str = ""  # when set, a replica must answer with this owner

    @classmethod
    def from_wire(cls, entry: Mapping[str, Any]) -> SliceLoc:
        """An entry of a ``GET /chain`` answer."""
        return cls(
            group=int(entry["group"]),
            slot=int(entry["slot"]),
            generation=int(entry["generation"]),
            length=int(entry["length"]),
            crc32c=int(entry["crc32c"]),
            replicas=tuple(entry.get("replicas") or ()),
        )


class ChainRun(NamedTuple):
    """One group's run of a chain, and where the chain continues (None: it ends)."""

    entries: list[SliceLoc]
    next: Location | None


class Piece(NamedTuple):
    """The bytes ``[offset, offset + length)`` of one slice."""

    loc: SliceLoc
    offset: int
    length: int


class NodesOf(Protocol):
    """The base URLs of a group's nodes (empty when none is known to be up)."""

    def __call__(self, group: int) -> Awaitable[Sequence[str]]: ...


class Retry(Protocol):
    """Runs ``attempt`` until it succeeds or fails for good (the SDK's retry policy)."""

    def __call__(
        self, what: str, attempt: Callable[[], Awaitable[_T]], **context: Any
    ) -> Awaitable[_T]: ...


class LocalRun(Protocol):
    """A node's own walk of a run, or None when the run is not its to walk."""

    def __call__(self, start: Location, limit: int) -> Awaitable[ChainRun | None]: ...


class LocalSlice(Protocol):
    """A node's own read of a piece of a slice it holds, or None when it does not hold it."""

    def __call__(self, loc: SliceLoc, offset: int, length: int) -> Awaitable[bytes | None]: ...


async def once(what: str, attempt: Callable[[], Awaitable[_T]], **context: Any) -> _T:
    """No retry: one attempt."""
    return await attempt()


@dataclass(frozen=True)
class ReadTimeouts:
    """Seconds one request may take: a chain walk, a slice fetch."""

    chain: float = 30.0
    slice: float = 60.0


# --- pure parts -------------------------------------------------------------------------------


def check_chain(locs: Sequence[SliceLoc], slices: int, size: int, **context: Any) -> None:
    """:class:`Corrupt` unless the chain holds as many slices and bytes as the file entry says."""
    total = sum(loc.length for loc in locs)
    if len(locs) != slices or total != size:
        raise Corrupt(
            f"chain has {len(locs)} slices / {total} bytes; the file entry says {slices} / {size}",
            **context,
        )


def cut_range(locs: Sequence[SliceLoc], offset: int, end: int) -> list[Piece]:
    """The pieces of the slices (in chain order) that overlap the file's bytes [offset, end)."""
    pieces: list[Piece] = []
    pos = 0
    for loc in locs:
        lo, hi = max(offset, pos), min(end, pos + loc.length)
        if lo < hi:
            pieces.append(Piece(loc, lo - pos, hi - lo))
        pos += loc.length
    return pieces


# --- the chain --------------------------------------------------------------------------------


async def walk_chain(
    head: Location | None,
    count: int,
    run: Callable[[Location, int], Awaitable[ChainRun]],
    **context: Any,
) -> list[SliceLoc]:
    """At most ``count`` slices of the chain from ``head``, one ``run(start, limit)`` per group
    run; :class:`Corrupt` when a run makes no progress."""
    locs: list[SliceLoc] = []
    current = head
    while current is not None and len(locs) < count:
        start = current
        part, current = await run(start, count - len(locs))
        if not part and current == start:
            raise Corrupt(
                "chain walk made no progress",
                **{**context, "group": start.group, "slot": start.slot},
            )
        locs += part
    return locs


async def fetch_chain_run(
    session: aiohttp.ClientSession,
    urls: Sequence[str],
    start: Location,
    limit: int,
    *,
    timeout: float,
    **context: Any,
) -> ChainRun:
    """One group's run from ``start`` (at most ``limit`` slices), asked of ``urls`` in turn.

    A follower that may be behind answers 307 to its leader, which is followed. A node that
    fails, times out or answers a retryable error is skipped for the next; a definitive answer
    (e.g. :class:`Corrupt` for a deleted slice inside the chain) is raised at once.
    """
    where = {**context, "group": start.group, "slot": start.slot}
    if not urls:
        raise Unavailable(f"group {start.group} has no node up", **where)
    last: object = None
    for url in urls:
        try:
            async with session.get(
                f"{url}/chain/{start.slot}?max={limit}",
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                if resp.status != 200:
                    err = await error_of(resp, **context)
                    if not err.retryable:
                        raise err
                    last = err
                    continue
                body = await resp.json()
            nxt = body.get("next")
            return ChainRun(
                [SliceLoc.from_wire(e) for e in body["entries"]],
                None if nxt is None else Location(int(nxt[0]), int(nxt[1])),
            )
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            last = exc
    raise Unavailable(f"no node of group {start.group} answered the chain walk: {last}", **where)


# --- a slice ----------------------------------------------------------------------------------


async def fetch_slice(
    session: aiohttp.ClientSession,
    urls: Sequence[str],
    loc: SliceLoc,
    offset: int = 0,
    length: int | None = None,
    *,
    timeout: float,
    **context: Any,
) -> bytes:
    """Bytes ``[offset, offset + length)`` of a slice (to its end if ``length`` is None) from
    the first of ``urls`` that serves them right.

    Checked: the length; the whole slice's CRC32C against ``loc``; the ``X-Mydfs-File`` owner
    when ``loc.file_id`` is set (a slot freed and reused since reads :class:`NotFound`). A
    replica that fails, is unreachable, lacks the slice or answers bad bytes is skipped; when
    none serves, the last NotFound or Corrupt is raised, else :class:`Unavailable`.
    """
    want = loc.length - offset if length is None else length
    whole = offset == 0 and want == loc.length
    headers = {} if whole else {"Range": f"bytes={offset}-{offset + want - 1}"}
    query = f"?gen={loc.generation}" if loc.generation else ""
    where = {**context, "group": loc.group, "slot": loc.slot}
    last: MydfsError | None = None
    for url in urls:
        try:
            async with session.get(
                f"{url}/slices/{loc.slot}{query}",
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                if resp.status not in (200, 206):
                    err = await error_of(resp, **where)
                    if not err.retryable and not isinstance(err, NotFound | Corrupt):
                        raise err
                    last = err
                    continue
                if loc.file_id and resp.headers.get("X-Mydfs-File") != loc.file_id:
                    last = NotFound("the slot holds another file now", **where)
                    continue
                data = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            last = Unavailable(f"replica {url} failed: {exc or type(exc).__name__}", **where)
            continue
        if len(data) != want or (whole and crc32c(data) != loc.crc32c):
            last = Corrupt("slice failed its end-to-end checksum", **where, peer=url)
            continue
        return data
    if isinstance(last, NotFound | Corrupt):
        raise last
    if last is None:
        raise Unavailable("no replica to read from", **where)
    raise Unavailable(
        f"no replica of group {loc.group} served slot {loc.slot}: {last.message}", **where
    )


# --- a range ----------------------------------------------------------------------------------


async def stream_pieces(
    pieces: Sequence[Piece], fetch: Callable[[Piece], Awaitable[bytes]], window: int
) -> AsyncGenerator[bytes, None]:
    """The pieces' bytes in order, at most ``window`` fetches in flight (the one being handed
    out included). Closing the stream cancels the fetches ahead."""
    if window < 1:
        raise ValueError("window must be at least 1")
    tasks: list[asyncio.Future[bytes] | None] = []
    try:
        for i in range(len(pieces)):
            while len(tasks) < min(len(pieces), i + window):
                tasks.append(asyncio.ensure_future(fetch(pieces[len(tasks)])))
            task = tasks[i]
            assert task is not None
            tasks[i] = None  # let the bytes go once handed out
            yield await task
    finally:
        for left in tasks:
            if left is not None:
                left.cancel()


class ReadPath:
    """A reader's dependencies in one place; see the module's docstring for the steps.

    ``nodes_of`` finds a group's nodes (for chain walks, and for slices whose replicas are not
    known); ``retry`` wraps every remote step (default: :func:`once`); ``local_run`` and
    ``local_slice`` let a storage node answer from its own table and disk first.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        nodes_of: NodesOf,
        *,
        timeouts: ReadTimeouts | None = None,
        window: int = 8,
        retry: Retry = once,
        local_run: LocalRun | None = None,
        local_slice: LocalSlice | None = None,
    ) -> None:
        self.session = session
        self.nodes_of = nodes_of
        self.timeouts = timeouts or ReadTimeouts()
        self.window = window
        self.retry = retry
        self.local_run = local_run
        self.local_slice = local_slice

    async def chain(
        self, head: Location | None, slices: int, size: int, **context: Any
    ) -> list[SliceLoc]:
        """Every slice of the file whose entry says ``head``, ``slices`` and ``size``, checked
        against those."""

        async def run(start: Location, limit: int) -> ChainRun:
            return await self.run(start, limit, **context)

        locs = await walk_chain(head, slices, run, **context)
        check_chain(locs, slices, size, **context)
        return locs

    async def run(self, start: Location, limit: int, **context: Any) -> ChainRun:
        """One group's run of the chain from ``start``: the local hook's, else a random node's
        of that group (others tried on failure)."""
        if self.local_run is not None:
            here = await self.local_run(start, limit)
            if here is not None:
                return here

        async def attempt() -> ChainRun:
            urls = list(await self.nodes_of(start.group))
            random.shuffle(urls)
            return await fetch_chain_run(
                self.session, urls, start, limit, timeout=self.timeouts.chain, **context
            )

        return await self.retry("chain walk", attempt, **{**context, "group": start.group})

    async def slice(
        self, loc: SliceLoc, offset: int = 0, length: int | None = None, **context: Any
    ) -> bytes:
        """Bytes of one slice (or a range of it): the local hook's, else from a replica chosen
        at random (others tried on failure), checked."""
        want = loc.length - offset if length is None else length
        if self.local_slice is not None:
            data = await self.local_slice(loc, offset, want)
            if data is not None:
                return data

        async def attempt() -> bytes:
            urls = list(loc.replicas) or list(await self.nodes_of(loc.group))
            random.shuffle(urls)
            return await fetch_slice(
                self.session, urls, loc, offset, want, timeout=self.timeouts.slice, **context
            )

        return await self.retry(
            "slice read", attempt, **{**context, "group": loc.group, "slot": loc.slot}
        )

    def stream(
        self, locs: Sequence[SliceLoc], offset: int, end: int, **context: Any
    ) -> AsyncGenerator[bytes, None]:
        """The file's bytes [offset, end) as pieces in order, ``window`` fetches ahead."""

        def fetch(piece: Piece) -> Awaitable[bytes]:
            return self.slice(piece.loc, piece.offset, piece.length, **context)

        return stream_pieces(cut_range(locs, offset, end), fetch, self.window)
