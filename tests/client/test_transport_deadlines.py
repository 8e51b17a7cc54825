"""The SDK transport's per-request deadlines and liveness probes against local servers: one
that accepts connections and never answers (a paused process), one that is slow but answers its
health probe (a busy node), one that answers its probe but never the request (the idle
deadline), and the operation deadline of ``retry``. Timings are printed, bounds are generous."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mydfs.client._transport import RetryPolicy, Transport
from mydfs.common.errors import DiskFull, NotLeader, Timeout, TooManyRequests, Unavailable

FAST = RetryPolicy(deadline=10.0, connect=1.0, idle=30.0, suspect=0.3, probe=0.5, suspect_for=5.0)


@pytest.fixture
async def silent() -> AsyncIterator[str]:
    """A listening socket that is never accepted from: the kernel completes every TCP connect
    (backlog), nothing ever answers — what a SIGSTOPped node looks like to a client."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


async def _server(app: web.Application) -> TestServer:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@pytest.fixture
async def busy() -> AsyncIterator[str]:
    """Answers /health at once and /slow after 1.5 s (a node busy with fsyncs), never /hang."""

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "leader": True})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.5)
        return web.json_response({"done": True})

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/slow", slow)
    app.router.add_put("/slow", slow)
    app.router.add_get("/hang", hang)
    server = await _server(app)
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def transport(session: aiohttp.ClientSession) -> AsyncIterator[Callable[..., Transport]]:
    """``transport(policy)`` → a Transport on the test's session, closed after the test."""
    made: list[Transport] = []

    def factory(policy: RetryPolicy) -> Transport:
        made.append(Transport(session, policy))
        return made[-1]

    try:
        yield factory
    finally:
        for t in made:
            await t.close()


async def test_a_node_that_accepts_and_never_answers_fails_fast_and_is_suspected(
    silent: str, transport: Callable[..., Transport]
) -> None:
    t = transport(FAST)
    start = time.monotonic()
    with pytest.raises(Unavailable, match="does not answer") as caught:
        await t.json("GET", f"{silent}/cluster")
    took = time.monotonic() - start
    print(f"silent node given up after {took:.2f}s (suspect 0.3s + probe 0.5s)")
    assert took < 5.0  # far below the 30 s idle deadline
    assert caught.value.context["reason"] == "not_answering"
    assert t.suspected(silent + "/slices/3")
    # A write redirected to it is refused at once, without sending the body.
    start = time.monotonic()
    with pytest.raises(Unavailable, match="does not answer"):
        await t.put_bytes(f"{silent}/slices?upload=u", b"x" * 1000)
    assert time.monotonic() - start < 0.5


async def test_a_busy_node_that_answers_its_probe_is_waited_for(
    busy: str, transport: Callable[..., Transport]
) -> None:
    t = transport(FAST)
    start = time.monotonic()
    assert await t.json("GET", f"{busy}/slow") == {"done": True}
    assert await t.put_bytes(f"{busy}/slow", b"y" * 100_000) == {"done": True}
    print(f"two slow answers after {time.monotonic() - start:.2f}s")
    assert not t.suspected(busy)


async def test_the_idle_deadline_bounds_a_request_that_never_answers(
    busy: str, transport: Callable[..., Transport]
) -> None:
    t = transport(RetryPolicy(deadline=10.0, idle=1.0, suspect=0.3, probe=0.5))
    start = time.monotonic()
    with pytest.raises(Unavailable, match="failed"):
        await t.json("GET", f"{busy}/hang")
    took = time.monotonic() - start
    print(f"idle deadline hit after {took:.2f}s")
    assert 0.9 <= took < 5.0
    assert not t.suspected(busy)  # it answers its probe: busy, not gone


async def test_retry_cuts_a_hanging_attempt_at_the_operation_deadline(
    transport: Callable[..., Transport],
) -> None:
    t = transport(RetryPolicy(deadline=1.0))
    calls = 0

    async def hangs() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(3600)

    start = time.monotonic()
    with pytest.raises(Timeout, match="within 1s"):
        await t.retry("hanging call", hangs)
    assert time.monotonic() - start < 3.0
    assert calls == 1

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise Unavailable("try later")

    calls = 0
    with pytest.raises(Timeout, match="try later"):
        await t.retry("refused call", refused, path="/a")
    assert calls >= 3  # backed off and tried again until the deadline


def test_an_upload_window_below_two_is_refused() -> None:
    """A slice is written once its successor's place is known, so an upload holds two slices:
    a window of 1 would wait on itself forever; it is refused up front instead."""
    from mydfs.client import AsyncClient
    from mydfs.common.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="at least 2"):
        AsyncClient("http://127.0.0.1:1", window=1)


def test_the_backoff_stays_short_while_a_node_or_leader_is_away() -> None:
    policy = RetryPolicy()
    for away in (Unavailable("no leader"), NotLeader("moved"), aiohttp.ClientConnectionError()):
        assert policy.pause(1.0, away) == policy.cap_away
        assert policy.pause(0.1, away) == 0.1
    for busy in (TooManyRequests("full"), DiskFull("no room")):
        assert policy.pause(1.0, busy) == 1.0  # a busy or full node keeps the long pauses
