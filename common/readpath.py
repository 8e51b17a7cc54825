"""The one read path of mydfs: walk a file's chain, fetch its slices, stream a byte range.

Both the SDK (``client/aio.py``) and a storage node serving ``GET /files`` (through
``storage/file_reader.py``) read files with what is here:

The pure rules (records, owner, version and generation checks, range cuts) are in
``common/readrules.py`` and re-exported here.

1. **The chain** (:func:`walk_chain`, :func:`fetch_chain_run`, :func:`check_chain`): one
   ``GET /chain/{slot}?max=n`` per group run. A node of the group walks the run it holds in its
   replicated table and answers with the slices' locations and where the chain continues; the
   walk continues there, in the next group. A run that returns nothing and points back at its
   own start is :class:`Corrupt` (no progress). The slices found must match the file entry's
   count and size.
2. **A slice** (:func:`fetch_slice`): the whole slice or a range of it from one of its
   replicas, checked: the length, the whole slice's CRC32C against the chain's, and the owner
   and generation the replica answers with. A replica that fails, is unreachable or answers
   bad bytes is skipped for the next one; a 307 (a follower pointing at a holder or its
   leader) is followed, a 301 never: the slot was redirected by an edit committed after the
   reader's entry named it, so the entry is stale (:class:`StaleEntry`). Chain walks and
   slice reads are **hedged** (:func:`hedged`): a node that has not answered within
   ``ReadTimeouts.hedge`` (1 s) is not waited on alone, the next one is asked too and the
   first useful answer wins, so a paused or cut-off node delays a read by about a second,
   not by the request's whole timeout.
3. **A range** (:func:`cut_range`, :func:`stream_pieces`): the slices' pieces that overlap
   ``[offset, end)``, fetched a bounded window ahead and handed out in order.

:class:`ReadPath` bundles what these need: an aiohttp session, how to find a group's node URLs,
timeouts, the caller's retry policy, and optional hooks through which a storage node walks its
own group's runs in its table and reads the slices it holds from its own disk. Nothing here
imports a role package.

**The reader's rule** (``docs/client.md``): every answer is checked against what the reader
expects before a byte of it is used. The tracker's entry gives the file id; every entry of a
walk must carry that file id and the next slice index (0, 1, 2...) (:func:`owner_mismatch`),
and every slice a replica serves, whole or a range, must come with the owner (file id, slice
index) and the generation the chain gave (:func:`foreign_owner`, :func:`stale_generation`).
The reader sends what it expects (``X-Mydfs-File``, ``X-Mydfs-Index`` request headers) so that
a node whose table disagrees proves itself current or sends the reader to its leader; a
mismatch that still arrives is a stale answer, tried on another node, never data.

**Versions** (edited files): the entry carries ``versions``, for each group an edit touched the
version of the last commit that touched it. Each chain run request says which version the
reader expects from that group (``X-Mydfs-Version``: ``versions.get(group, 0)``) and the answer
says which one the node's group applied (``"version"``; absent from an old node: 0). Equal: the
run is used. Higher: the reader's entry is stale (:class:`StaleEntry`: re-read the entry, read
again). Lower: the node is behind, the next node is asked (and the walk retried under the
caller's policy). So a read sees exactly one committed version of the file, never a mix. The
slices of an edited file do not carry consecutive indexes (new slices are numbered from the
first slice they replaced): for it the walk checks the file id only (``owner_mismatch(...,
indexes=False)``), and a slice or chain slot gone (404, deleted) is a stale entry too.

**Grants**: a storage node serves ``/chain`` and ``/slices`` only to a reader that shows a read
grant for the file (``X-Mydfs-Grant``, signed by the tracker; ``common/grants.py``). Every
step here takes the ``grant`` the reader got with the file's entry and sends it along.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import aiohttp
import yarl

from mydfs.common.checksum import crc32c
from mydfs.common.errors import Corrupt, MydfsError, NotFound, StaleEntry, Unavailable
from mydfs.common.http_errors import error_of
from mydfs.common.location import Location
from mydfs.common.readrules import (
    VERSION_HEADER,
    ChainRun,
    Owned,
    Piece,
    SliceLoc,
    check_chain,
    cut_range,
    expect_headers,
    foreign_owner,
    owner_mismatch,
    stale_generation,
    version_check,
    versions_of,
)

__all__ = [
    "VERSION_HEADER",
    "ChainRun",
    "LocalRun",
    "LocalSlice",
    "NodesOf",
    "Owned",
    "Piece",
    "ReadPath",
    "ReadTimeouts",
    "Retry",
    "SliceLoc",
    "check_chain",
    "cut_range",
    "expect_headers",
    "fetch_chain_run",
    "fetch_slice",
    "foreign_owner",
    "once",
    "owner_mismatch",
    "stale_generation",
    "stream_pieces",
    "version_check",
    "versions_of",
    "walk_chain",
]

_T = TypeVar("_T")


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
    """Seconds one request may take (a chain walk, a slice fetch), and how long a request may
    go unanswered before the same question is also put to the next node (``hedge``)."""

    chain: float = 30.0
    slice: float = 60.0
    hedge: float = 1.0


class _Skip(Exception):
    """One node's answer is no use (it failed, timed out, is stale or behind): ask the next.
    ``reason`` is what the caller reports if no node answers."""

    def __init__(self, reason: object) -> None:
        super().__init__(str(reason))
        self.reason = reason


async def hedged(
    urls: Sequence[str], ask: Callable[[str], Awaitable[_T]], hedge: float
) -> tuple[_T | None, list[object]]:
    """The first useful answer of ``ask(url)`` over ``urls``, asked in order: the next node is
    asked when every question out has failed (:class:`_Skip`) or none has answered within
    ``hedge`` seconds, so a node that hangs (paused, cut off after the connect) costs
    ``hedge`` seconds, not the request's whole timeout; a slow node that answers first still
    wins. Returns ``(answer, [])``, or ``(None, reasons)`` with the skip reasons in the order
    they came when no node answered usefully. Any other exception from ``ask`` is definitive:
    it is raised at once and the other questions are cancelled."""
    waiting = list(urls)
    out: set[asyncio.Task[_T]] = set()
    reasons: list[object] = []
    try:
        while waiting or out:
            if waiting and not out:
                out.add(asyncio.ensure_future(ask(waiting.pop(0))))
            done, _ = await asyncio.wait(
                out, timeout=hedge if waiting else None, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:  # nobody answered in time: put the question to the next node too
                out.add(asyncio.ensure_future(ask(waiting.pop(0))))
                continue
            for task in done:
                out.discard(task)
                exc = task.exception()
                if exc is None:
                    return task.result(), []
                if not isinstance(exc, _Skip):
                    raise exc
                reasons.append(exc.reason)
        return None, reasons
    finally:
        for task in out:
            task.cancel()
        if out:
            await asyncio.gather(*out, return_exceptions=True)


# --- the chain --------------------------------------------------------------------------------


async def walk_chain(
    head: Location | None,
    count: int,
    run: Callable[[Location, int, int], Awaitable[ChainRun]],
    **context: Any,
) -> list[SliceLoc]:
    """At most ``count`` slices of the chain from ``head``, one ``run(start, limit, first)``
    per group run (``first``: the file's index of the run's first slice); :class:`Corrupt`
    when a run makes no progress."""
    locs: list[SliceLoc] = []
    current = head
    while current is not None and len(locs) < count:
        start = current
        got = await run(start, count - len(locs), len(locs))
        part, current = got.entries, got.next
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
    file_id: str = "",
    first: int = 0,
    grant: str = "",
    version: int | None = None,
    edited: bool = False,
    hedge: float = 1.0,
    **context: Any,
) -> ChainRun:
    """One group's run from ``start`` (at most ``limit`` slices), asked of ``urls`` in turn,
    the next node also when one has not answered within ``hedge`` seconds (:func:`hedged`).

    ``version`` (None: not checked): the file's version the reader's entry expects of this
    group (:func:`version_check`: a later one raises :class:`StaleEntry` at once, an earlier
    one skips the node). ``edited``: the file was edited (its entry has versions): the run's
    slice indexes are not checked, and a definitive NotFound or Corrupt answer (a slot of the
    chain deleted since) is a :class:`StaleEntry`.

    With ``file_id``, the run must be that file's from slice index ``first`` on
    (:func:`owner_mismatch`); the node is told so (request headers) and a run naming another
    owner is a stale answer, skipped for the next node. A follower that may be behind answers
    307 to its leader, which is followed. A node that fails, times out or answers a retryable
    error is skipped for the next; a definitive answer (e.g. :class:`Corrupt` for a deleted
    slice inside the chain, :class:`NotFound` from a leader whose table holds another file
    there) is raised at once.
    """
    where = {**context, "group": start.group, "slot": start.slot}
    if not urls:
        raise Unavailable(f"group {start.group} has no node up", **where)

    async def ask(url: str) -> ChainRun:
        try:
            async with session.get(
                f"{url}/chain/{start.slot}?max={limit}",
                headers=expect_headers(file_id, None if edited else first, grant, version),
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                if resp.status != 200:
                    err = await error_of(resp, **context)
                    if edited and isinstance(err, NotFound | Corrupt):
                        raise StaleEntry(
                            f"a slot of the edited file's chain is gone: {err.message}",
                            **where,
                            reason="stale_entry",
                        ) from err
                    if not err.retryable:
                        raise err
                    raise _Skip(err)
                body = await resp.json()
            nxt = body.get("next")
            run = ChainRun(
                [SliceLoc.from_wire(e) for e in body["entries"]],
                None if nxt is None else Location(int(nxt[0]), int(nxt[1])),
                int(body.get("version") or 0),
            )
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            raise _Skip(exc) from None
        if version is not None:
            verdict = version_check(version, run.version, **where, peer=url)
            if isinstance(verdict, StaleEntry):
                raise verdict
            if verdict is not None:
                raise _Skip(verdict.message)
        why = owner_mismatch(run.entries, file_id, first, indexes=not edited)
        if why is not None:
            raise _Skip(f"stale answer from {url}: {why}")
        return run

    run, reasons = await hedged(urls, ask, hedge)
    if run is not None:
        return run
    last = reasons[-1] if reasons else None
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
    grant: str = "",
    hedge: float = 1.0,
    **context: Any,
) -> bytes:
    """Bytes ``[offset, offset + length)`` of a slice (to its end if ``length`` is None) from
    the first of ``urls`` that serves them right, asked in turn, the next replica also when one
    has not answered within ``hedge`` seconds (:func:`hedged`: a paused replica costs that,
    not the whole ``timeout``).

    Checked, for a range as for the whole slice: the owner (``loc.file_id`` and ``loc.index``,
    also sent to the node so that one whose table disagrees proves itself current or
    redirects) and the generation the replica answers with (:func:`foreign_owner`,
    :func:`stale_generation`); the
    length; the whole slice's CRC32C against ``loc``. A replica answering another owner reads
    :class:`NotFound` (a slot freed and reused since), so does a newer generation (reused by
    the same file), an older generation :class:`Unavailable`
    (a stale answer). A replica that fails, is unreachable, lacks the slice or answers bad or
    foreign bytes is skipped; when none serves, the last NotFound or Corrupt is raised, else
    :class:`Unavailable`.
    """
    want = loc.length - offset if length is None else length
    whole = offset == 0 and want == loc.length
    headers = expect_headers(loc.file_id, loc.index, grant)
    if not whole:
        headers["Range"] = f"bytes={offset}-{offset + want - 1}"
    query = f"?gen={loc.generation}" if loc.generation else ""
    where = {**context, "group": loc.group, "slot": loc.slot}

    async def ask(url: str) -> bytes:
        try:
            async with _get_following_307(
                session,
                f"{url}/slices/{loc.slot}{query}",
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                if resp.status == 301:
                    # The slot became a 301 after the entry or the chain walk named it live (an
                    # edit committed since). Its target holds the file's later bytes under the
                    # same owner: following it would cut them to this entry's length.
                    raise StaleEntry(
                        f"slot {loc.slot} became a 301 since the reader's entry",
                        **where,
                        peer=url,
                        reason="stale_entry",
                    )
                if resp.status not in (200, 206):
                    err = await error_of(resp, **where)
                    if not err.retryable and not isinstance(err, NotFound | Corrupt):
                        raise err
                    raise _Skip(err)
                foreign = foreign_owner(loc, resp.headers, **where, peer=url)
                if foreign is not None:
                    raise _Skip(foreign)
                stale = stale_generation(loc, resp.headers, **where, peer=url)
                data = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            failed = Unavailable(f"replica {url} failed: {exc or type(exc).__name__}", **where)
            raise _Skip(failed) from None
        if len(data) != want or (whole and crc32c(data) != loc.crc32c):
            raise _Skip(Corrupt("slice failed its end-to-end checksum", **where, peer=url))
        if stale is not None:
            raise _Skip(stale)
        return data

    data, reasons = await hedged(urls, ask, hedge)
    if data is not None:
        return data
    last = reasons[-1] if reasons else None
    assert last is None or isinstance(last, MydfsError)
    if isinstance(last, NotFound | Corrupt):
        raise last
    if last is None:
        raise Unavailable("no replica to read from", **where)
    raise Unavailable(
        f"no replica of group {loc.group} served slot {loc.slot}: {last.message}", **where
    )


#: 307s a slice read follows (a follower to a holder, then maybe to its leader).
MAX_307_HOPS = 4


@contextlib.asynccontextmanager
async def _get_following_307(
    session: aiohttp.ClientSession,
    url: str,
    *,
    headers: Mapping[str, str],
    timeout: aiohttp.ClientTimeout,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """``GET url`` following only 307/308s (at most :data:`MAX_307_HOPS`): the response a
    slice read must judge itself, a 301 included (never followed: see :func:`fetch_slice`)."""
    for _ in range(MAX_307_HOPS + 1):
        async with session.get(
            url, headers=headers, timeout=timeout, allow_redirects=False
        ) as resp:
            location = resp.headers.get("Location")
            if resp.status in (307, 308) and location:
                url = str(resp.url.join(yarl.URL(location)))
                continue
            yield resp
            return
    raise Unavailable(f"more than {MAX_307_HOPS} redirects reading {url}", url=url)


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
        self,
        head: Location | None,
        slices: int,
        size: int,
        *,
        file_id: str = "",
        grant: str = "",
        versions: Mapping[int, int] | None = None,
        **context: Any,
    ) -> list[SliceLoc]:
        """Every slice of the file whose entry says ``head``, ``slices``, ``size`` and
        ``file_id``, checked against those: each run must be the file's (its id, the next slice
        indexes), the whole chain its count and size. Every reader that has the entry passes
        its file id; an empty one checks no owner. ``grant``: the reader's read grant.
        ``versions`` (None: not checked): the entry's versions by group; every run must come
        from a node that applied exactly ``versions.get(group, 0)`` (:class:`StaleEntry` when
        later); non-empty means the file was edited (indexes not checked)."""
        edited = bool(versions)

        async def run(start: Location, limit: int, first: int) -> ChainRun:
            version = None if versions is None else versions.get(start.group, 0)
            return await self.run(
                start,
                limit,
                file_id=file_id,
                first=first,
                grant=grant,
                version=version,
                edited=edited,
                **context,
            )

        locs = await walk_chain(head, slices, run, **context)
        check_chain(locs, slices, size, **context)
        return locs

    async def run(
        self,
        start: Location,
        limit: int,
        *,
        file_id: str = "",
        first: int = 0,
        grant: str = "",
        version: int | None = None,
        edited: bool = False,
        **context: Any,
    ) -> ChainRun:
        """One group's run of the chain from ``start``: the local hook's when it is the file's
        (``file_id`` from slice ``first`` on, at ``version`` when given), else a random node's
        of that group (others tried on failure or a stale answer)."""
        if self.local_run is not None:
            here = await self.local_run(start, limit)
            if (
                here is not None
                and owner_mismatch(here.entries, file_id, first, indexes=not edited) is None
                and (version is None or here.version == version)
            ):
                return here

        async def attempt() -> ChainRun:
            urls = list(await self.nodes_of(start.group))
            random.shuffle(urls)
            return await fetch_chain_run(
                self.session,
                urls,
                start,
                limit,
                timeout=self.timeouts.chain,
                hedge=self.timeouts.hedge,
                file_id=file_id,
                first=first,
                grant=grant,
                version=version,
                edited=edited,
                **context,
            )

        return await self.retry("chain walk", attempt, **{**context, "group": start.group})

    async def slice(
        self,
        loc: SliceLoc,
        offset: int = 0,
        length: int | None = None,
        *,
        grant: str = "",
        edited: bool = False,
        **context: Any,
    ) -> bytes:
        """Bytes of one slice (or a range of it): the local hook's, else from a replica chosen
        at random (others tried on failure), checked. ``edited``: the slice belongs to an
        edited file, where a slice gone (NotFound) means the reader's entry is stale
        (:class:`StaleEntry`)."""
        want = loc.length - offset if length is None else length
        if self.local_slice is not None:
            data = await self.local_slice(loc, offset, want)
            if data is not None:
                return data

        async def attempt() -> bytes:
            urls = list(loc.replicas) or list(await self.nodes_of(loc.group))
            random.shuffle(urls)
            return await fetch_slice(
                self.session,
                urls,
                loc,
                offset,
                want,
                timeout=self.timeouts.slice,
                hedge=self.timeouts.hedge,
                grant=grant,
                **context,
            )

        where = {**context, "group": loc.group, "slot": loc.slot}
        try:
            return await self.retry("slice read", attempt, **where)
        except NotFound as exc:
            if not edited:
                raise
            raise StaleEntry(
                f"a slice of the edited file is gone: {exc.message}", **where, reason="stale_entry"
            ) from exc

    def stream(
        self,
        locs: Sequence[SliceLoc],
        offset: int,
        end: int,
        *,
        grant: str = "",
        edited: bool = False,
        **context: Any,
    ) -> AsyncGenerator[bytes, None]:
        """The file's bytes [offset, end) as pieces in order, ``window`` fetches ahead
        (``edited``: see :meth:`slice`)."""

        def fetch(piece: Piece) -> Awaitable[bytes]:
            return self.slice(
                piece.loc, piece.offset, piece.length, grant=grant, edited=edited, **context
            )

        return stream_pieces(cut_range(locs, offset, end), fetch, self.window)
