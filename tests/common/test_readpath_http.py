"""The read path's network steps against small in-process aiohttp servers standing in for
storage nodes (no cluster): the chain walk across groups, a slice fetched from replicas that
answer wrong bytes, a wrong owner, errors or a 307, and the ordered stream with its bounded
read-ahead window."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from mydfs.common.checksum import crc32c
from mydfs.common.errors import (
    Corrupt,
    InvalidArgument,
    NotFound,
    SliceMoved,
    StaleEntry,
    Unavailable,
)
from mydfs.common.httprange import parse_range
from mydfs.common.location import Location
from mydfs.common.readpath import (
    ChainRun,
    Piece,
    ReadPath,
    ReadTimeouts,
    SliceLoc,
    fetch_chain_run,
    fetch_slice,
    stream_pieces,
)
from mydfs.common.web import error_response, json_response, moved_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FakeNode:
    """A storage node's read routes: ``/chain`` answers from ``runs``, ``/slices`` from
    ``slices``; ``chain_answer``/``slice_answer`` override an answer (an error, a 307...)."""

    runs: dict[int, dict[str, Any]] = field(default_factory=dict)
    slices: dict[int, bytes] = field(default_factory=dict)
    owner: str = "ab" * 16
    index: int = 0
    generation: int = 1
    chain_answer: Handler | None = None
    slice_answer: Handler | None = None
    asked: list[str] = field(default_factory=list)
    url: str = ""

    async def chain(self, request: web.Request) -> web.StreamResponse:
        self.asked.append(request.path_qs)
        if self.chain_answer is not None:
            return await self.chain_answer(request)
        return json_response(self.runs[int(request.match_info["slot"])])

    async def slice(self, request: web.Request) -> web.StreamResponse:
        self.asked.append(request.path_qs)
        if self.slice_answer is not None:
            return await self.slice_answer(request)
        data = self.slices.get(int(request.match_info["slot"]))
        if data is None:
            return error_response(NotFound("no such slice"))
        rng = parse_range(request.headers.get("Range"), len(data))
        headers = {
            "X-Mydfs-File": self.owner,
            "X-Mydfs-Index": str(self.index),
            "X-Mydfs-Generation": str(self.generation),
        }
        if rng is None:
            return web.Response(body=data, headers=headers)
        lo, n = rng
        headers["Content-Range"] = f"bytes {lo}-{lo + n - 1}/{len(data)}"
        return web.Response(body=data[lo : lo + n], status=206, headers=headers)


def entry(group: int, slot: int, data: bytes, replicas: list[str]) -> dict[str, Any]:
    return {
        "group": group,
        "slot": slot,
        "generation": 1,
        "length": len(data),
        "crc32c": crc32c(data),
        "replicas": replicas,
    }


def nodes(mapping: dict[int, list[str]]) -> Callable[[int], Awaitable[list[str]]]:
    async def nodes_of(group: int) -> list[str]:
        return mapping.get(group, [])

    return nodes_of


def refused_url() -> str:
    return "http://127.0.0.1:9"  # the discard port: nothing listens on loopback


# --- the chain --------------------------------------------------------------------------------


async def test_chain_walk_one_request_per_group_run(
    serve: Callable[[FakeNode], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    g1, g2 = FakeNode(), FakeNode()
    u1, u2 = await serve(g1), await serve(g2)
    a, b, c = b"a" * 10, b"b" * 10, b"c" * 3
    g1.slices.update({5: a, 6: b})
    g2.slices[7] = c
    g1.runs[5] = {"entries": [entry(1, 5, a, [u1]), entry(1, 6, b, [u1])], "next": [2, 7]}
    g2.runs[7] = {"entries": [entry(2, 7, c, [u2])], "next": None}
    reader = ReadPath(session, nodes({1: [u1], 2: [u2]}))
    locs = await reader.chain(Location(1, 5), 3, 23, path="/f")
    assert [(x.group, x.slot, x.length) for x in locs] == [(1, 5, 10), (1, 6, 10), (2, 7, 3)]
    assert g1.asked == ["/chain/5?max=3"] and g2.asked == ["/chain/7?max=1"]
    data = b"".join([p async for p in reader.stream(locs, 0, 23)])
    assert data == a + b + c
    assert b"".join([p async for p in reader.stream(locs, 8, 21)]) == (a + b + c)[8:21]


async def test_chain_walk_without_progress_is_corrupt(
    serve: Callable[[FakeNode], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    g1 = FakeNode()
    url = await serve(g1)
    g1.runs[5] = {"entries": [], "next": [1, 5]}
    reader = ReadPath(session, nodes({1: [url]}))
    with pytest.raises(Corrupt, match="no progress") as exc:
        await reader.chain(Location(1, 5), 2, 20, path="/f")
    assert exc.value.context == {"path": "/f", "group": 1, "slot": 5}


async def test_chain_shorter_than_the_entry_is_corrupt(
    serve: Callable[[FakeNode], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    g1 = FakeNode()
    url = await serve(g1)
    g1.runs[5] = {"entries": [entry(1, 5, b"x" * 10, [url])], "next": None}
    reader = ReadPath(session, nodes({1: [url]}))
    with pytest.raises(Corrupt, match="chain has 1 slices / 10 bytes; the file entry says 2"):
        await reader.chain(Location(1, 5), 2, 20, path="/f")


async def test_chain_run_skips_failing_nodes_and_follows_a_307(
    serve: Callable[[FakeNode], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    leader, behind, busy = FakeNode(), FakeNode(), FakeNode()
    lurl, burl, busy_url = await serve(leader), await serve(behind), await serve(busy)
    leader.runs[5] = {"entries": [entry(1, 5, b"x", [lurl])], "next": None}

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect(lurl + request.path_qs)

    async def unavailable(request: web.Request) -> web.StreamResponse:
        return error_response(Unavailable("no leader known yet"))

    behind.chain_answer = redirect
    busy.chain_answer = unavailable
    run = await fetch_chain_run(
        session, [refused_url(), busy_url, burl], Location(1, 5), 4, timeout=5
    )
    assert run == ChainRun([SliceLoc(1, 5, 1, 1, crc32c(b"x"), (lurl,))], None)
    assert busy.asked == ["/chain/5?max=4"] and behind.asked == leader.asked == ["/chain/5?max=4"]

    with pytest.raises(Unavailable, match="no node of group 1 answered"):
        await fetch_chain_run(session, [refused_url(), busy_url], Location(1, 5), 4, timeout=5)
    with pytest.raises(Unavailable, match="group 3 has no node up"):
        await fetch_chain_run(session, [], Location(3, 5), 4, timeout=5)


async def test_a_definitive_chain_answer_is_raised_at_once(
    serve: Callable[[FakeNode], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    broken, other = FakeNode(), FakeNode()
    burl, ourl = await serve(broken), await serve(other)

    async def corrupt(request: web.Request) -> web.StreamResponse:
        return error_response(Corrupt("chain of a live file hits a deleted slice", slot=6))

    broken.chain_answer = corrupt
    with pytest.raises(Corrupt, match="deleted slice") as exc:
        await fetch_chain_run(session, [burl, ourl], Location(1, 5), 4, timeout=5, path="/f")
    assert exc.value.context["path"] == "/f"
    assert other.asked == []


# --- a slice ----------------------------------------------------------------------------------


async def test_slice_with_a_wrong_crc_is_fetched_from_another_replica(
    serve: Callable[[FakeNode], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    good, bad = FakeNode(), FakeNode()
    gurl, burl = await serve(good), await serve(bad)
    data = bytes(range(256)) * 4
    good.slices[3] = data
    bad.slices[3] = data[:-1] + b"\x00"  # same length, wrong bytes
    loc = SliceLoc(1, 3, 1, len(data), crc32c(data), (burl, gurl))
    assert await fetch_slice(session, [burl, gurl], loc, timeout=5) == data
    assert bad.asked == ["/slices/3?gen=1"]
    with pytest.raises(Corrupt, match="end-to-end checksum") as exc:
        await fetch_slice(session, [burl], loc, timeout=5, path="/f")
    assert exc.value.context["path"] == "/f" and exc.value.context["slot"] == 3

    bad.slices[3] = data[:-1]  # short
    with pytest.raises(Corrupt):
        await fetch_slice(session, [burl], loc, timeout=5)


async def test_slice_range_is_asked_with_a_range_header_and_checked_for_length(
    serve: Callable[[FakeNode], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    node = FakeNode()
    url = await serve(node)
    data = bytes(range(200))
    node.slices[3] = data
    loc = SliceLoc(1, 3, 1, len(data), crc32c(data), (url,))
    assert await fetch_slice(session, [url], loc, 10, 20, timeout=5) == data[10:30]
    assert await fetch_slice(session, [url], loc, 190, timeout=5) == data[190:]

    async def ignores_range(request: web.Request) -> web.StreamResponse:
        return web.Response(body=data, headers={"X-Mydfs-File": node.owner})

    node.slice_answer = ignores_range
    with pytest.raises(Corrupt):
        await fetch_slice(session, [url], loc, 10, 20, timeout=5)


async def test_slice_owner_must_match_when_located_from_the_entry(
    serve: Callable[[FakeNode], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    node = FakeNode(owner="cd" * 16)
    url = await serve(node)
    data = b"another file's bytes"
    node.slices[3] = data
    stale = SliceLoc(1, 3, 0, len(data), crc32c(data), (), file_id="ab" * 16)
    with pytest.raises(NotFound, match="another file"):
        await fetch_slice(session, [url], stale, timeout=5)
    assert node.asked == ["/slices/3"]  # generation unknown: none asked for
    mine = SliceLoc(1, 3, 0, len(data), crc32c(data), (), file_id="cd" * 16)
    assert await fetch_slice(session, [url], mine, timeout=5) == data


async def test_slice_follows_a_307_to_a_holder(
    serve: Callable[[FakeNode], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    holder, lagging = FakeNode(), FakeNode()
    hurl, lurl = await serve(holder), await serve(lagging)
    data = b"held elsewhere" * 100
    holder.slices[8] = data

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect(hurl + request.path_qs)

    lagging.slice_answer = redirect
    loc = SliceLoc(2, 8, 1, len(data), crc32c(data), (lurl,))
    assert await fetch_slice(session, [lurl], loc, 5, 50, timeout=5) == data[5:55]
    assert holder.asked == ["/slices/8?gen=1"]


async def test_a_301_is_never_followed_it_means_the_entry_is_stale(
    serve: Callable[[FakeNode], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    """A slot that became a 301 since the reader's entry (an edit of a file the entry says is
    not edited, or a slot the chain walk found live) answers 301 with a ``Location`` in its
    group. Its target holds the file's later bytes under the same owner; following it would
    cut them to the old entry's length (a read of no version): StaleEntry instead."""

    class Moved(FakeNode):
        async def slice(self, request: web.Request) -> web.StreamResponse:
            if request.match_info["slot"] != "3":
                return await super().slice(request)
            self.asked.append(request.path_qs)
            return moved_response(SliceMoved("slot 3 redirects", target=(1, 9)), 1)

    node = Moved()
    url = await serve(node)
    node.slices[9] = b"the file after an edit " * 10
    old = SliceLoc(1, 3, 0, 100, 0, (), file_id=node.owner)
    with pytest.raises(StaleEntry, match="301"):
        await fetch_slice(session, [url], old, 10, 50, timeout=5)
    assert node.asked == ["/slices/3"]


async def test_slice_errors_skip_to_the_next_replica_then_say_what_failed(
    serve: Callable[[FakeNode], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    empty, busy, picky, good = FakeNode(), FakeNode(), FakeNode(), FakeNode()
    eurl, burl, purl, gurl = [await serve(n) for n in (empty, busy, picky, good)]
    data = b"payload"
    good.slices[1] = data

    async def unavailable(request: web.Request) -> web.StreamResponse:
        return error_response(Unavailable("slot is being rewritten; retry"))

    async def refuse(request: web.Request) -> web.StreamResponse:
        return error_response(InvalidArgument("bad request"))

    busy.slice_answer = unavailable
    picky.slice_answer = refuse
    loc = SliceLoc(1, 1, 1, len(data), crc32c(data), ())
    urls = [refused_url(), eurl, burl, gurl]
    assert await fetch_slice(session, urls, loc, timeout=5) == data
    with pytest.raises(NotFound):  # the last replica said the slice is gone
        await fetch_slice(session, [refused_url(), eurl], loc, timeout=5)
    with pytest.raises(Unavailable):  # the last one may have it: worth a retry
        await fetch_slice(session, [eurl, refused_url()], loc, timeout=5)
    with pytest.raises(Unavailable, match="no replica of group 1 served slot 1"):
        await fetch_slice(session, [burl, refused_url()], loc, timeout=5)
    with pytest.raises(Unavailable, match="no replica to read from"):
        await fetch_slice(session, [], loc, timeout=5)
    with pytest.raises(InvalidArgument):  # a definitive refusal is not hidden
        await fetch_slice(session, [purl, gurl], loc, timeout=5)


# --- hooks, retry, stream ---------------------------------------------------------------------


async def test_local_hooks_answer_first_and_retry_wraps_remote_steps(
    serve: Callable[[FakeNode], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    remote = FakeNode()
    url = await serve(remote)
    mine, theirs = b"on my disk", b"on theirs"
    remote.slices[2] = theirs
    remote.runs[2] = {"entries": [entry(2, 2, theirs, [url])], "next": None}
    here = SliceLoc(1, 1, 1, len(mine), crc32c(mine), ())

    async def local_run(start: Location, limit: int) -> ChainRun | None:
        return ChainRun([here], Location(2, 2)) if start.group == 1 else None

    async def local_slice(loc: SliceLoc, offset: int, length: int) -> bytes | None:
        return mine[offset : offset + length] if loc.group == 1 else None

    calls: list[tuple[str, dict[str, Any]]] = []

    async def retry(what: str, attempt: Callable[[], Awaitable[Any]], **context: Any) -> Any:
        calls.append((what, context))
        return await attempt()

    reader = ReadPath(
        session,
        nodes({2: [url]}),
        timeouts=ReadTimeouts(chain=5, slice=5),
        retry=retry,
        local_run=local_run,
        local_slice=local_slice,
    )
    locs = await reader.chain(Location(1, 1), 2, len(mine) + len(theirs), path="/f")
    assert locs[0] == here and locs[1].group == 2
    assert (
        b"".join([p async for p in reader.stream(locs, 3, 15, path="/f")]) == (mine + theirs)[3:15]
    )
    assert calls == [
        ("chain walk", {"path": "/f", "group": 2}),
        ("slice read", {"path": "/f", "group": 2, "slot": 2}),
    ]
    assert remote.asked == ["/chain/2?max=1", "/slices/2?gen=1"]


async def test_stream_hands_out_in_order_with_a_bounded_window() -> None:
    loc = SliceLoc(1, 0, 1, 1, 0, ())
    pieces = [Piece(loc, i, 1) for i in range(10)]
    in_flight = 0
    most = 0
    started: list[int] = []

    async def fetch(piece: Piece) -> bytes:
        nonlocal in_flight, most
        started.append(piece.offset)
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.001 * (10 - piece.offset))  # later pieces finish first
        in_flight -= 1
        return bytes([piece.offset])

    out = [p async for p in stream_pieces(pieces, fetch, 3)]
    assert out == [bytes([i]) for i in range(10)]
    assert most <= 3 and started == list(range(10))


async def test_closing_the_stream_cancels_the_fetches_ahead() -> None:
    loc = SliceLoc(1, 0, 1, 1, 0, ())
    pieces = [Piece(loc, i, 1) for i in range(6)]
    cancelled: list[int] = []
    release = asyncio.Event()

    async def fetch(piece: Piece) -> bytes:
        if piece.offset == 0:
            return b"0"
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled.append(piece.offset)
            raise
        return b"x"

    stream = stream_pieces(pieces, fetch, 4)
    assert await stream.__anext__() == b"0"
    await stream.aclose()
    await asyncio.sleep(0)
    assert sorted(cancelled) == [1, 2, 3]
