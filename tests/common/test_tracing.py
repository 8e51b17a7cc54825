"""Request ids: the server middleware, the client trace config, the log filter and formats."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Callable, Iterator

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mydfs.common.tracing import (
    HEADER,
    REQUEST_ID,
    JsonFormatter,
    RequestIdFilter,
    client_trace_config,
    configure_logging,
    new_request_id,
    request_id_middleware,
    sane_request_id,
    traced,
    use_request_id,
)


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[str | None]]]:
    """A server with the middleware: ``/seen`` answers the id its handler ran under (also kept
    in the list), ``/moved`` redirects to ``/seen``."""
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(REQUEST_ID.get())
        return web.Response(text=REQUEST_ID.get() or "")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/seen")

    app = web.Application(middlewares=[request_id_middleware])
    app.router.add_get("/seen", handler)
    app.router.add_get("/moved", moved)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    try:
        yield str(srv.make_url("")).rstrip("/"), seen
    finally:
        await srv.close()


async def test_a_sane_id_is_kept_and_echoed(server: tuple[str, list[str | None]]) -> None:
    url, _ = server
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{url}/seen", headers={HEADER: "op-1.A_b"}) as r,
    ):
        assert r.headers[HEADER] == "op-1.A_b"
        assert await r.text() == "op-1.A_b"


@pytest.mark.parametrize("hostile", ["a b", "x" * 65, "../etc/passwd", "a\tb", "ünï", "a=b;c", ""])
async def test_a_hostile_id_is_replaced(server: tuple[str, list[str | None]], hostile: str) -> None:
    url, _ = server
    async with aiohttp.ClientSession() as s, s.get(f"{url}/seen", headers={HEADER: hostile}) as r:
        rid = r.headers[HEADER]
        assert rid != hostile and sane_request_id(rid) == rid
        assert await r.text() == rid


async def test_a_missing_id_is_made_and_redirects_carry_it(
    server: tuple[str, list[str | None]],
) -> None:
    url, seen = server
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{url}/seen") as r:
            rid = r.headers[HEADER]
            assert len(rid) == 16 and await r.text() == rid
        async with s.get(f"{url}/moved", allow_redirects=False) as r:
            assert r.status == 307 and sane_request_id(r.headers[HEADER])
    assert REQUEST_ID.get() is None  # nothing leaks out of a request
    assert seen == [rid]


async def test_the_client_sends_the_operation_id(server: tuple[str, list[str | None]]) -> None:
    url, seen = server

    @traced
    async def operation(s: aiohttp.ClientSession) -> str | None:
        for _ in range(2):
            async with s.get(f"{url}/seen") as r:
                await r.read()
        return REQUEST_ID.get()

    async with aiohttp.ClientSession(trace_configs=[client_trace_config()]) as s:
        async with s.get(f"{url}/seen") as r:  # outside any operation: the server makes one
            await r.read()
        first = await operation(s)
        second = await operation(s)
        with use_request_id("known-id") as rid:
            assert rid == "known-id"
            assert await operation(s) == "known-id"  # an id already set is kept
    assert first and second and first != second
    assert seen[1:] == [first, first, second, second, "known-id", "known-id"]
    assert seen[0] not in (first, second)


@pytest.fixture
def capture() -> Iterator[Callable[[str], io.StringIO]]:
    """``capture(fmt)``: route the root logger to a buffer in ``fmt``; restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)

    def install(fmt: str) -> io.StringIO:
        configure_logging("debug", fmt, "g1n2")
        buffer = io.StringIO()
        handler = root.handlers[-1]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(buffer)
        return buffer

    root.handlers.clear()
    yield install
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_text_lines_name_the_node_and_the_request(capture: Callable[[str], io.StringIO]) -> None:
    out = capture("text")
    log = logging.getLogger("mydfs.test")
    log.info("outside")
    with use_request_id("abc123"):
        log.info("inside %d", 7)
    first, second = out.getvalue().splitlines()
    assert first.endswith(" INFO g1n2 mydfs.test: outside")
    assert second.endswith(" INFO g1n2 mydfs.test rid=abc123: inside 7")


def test_json_lines_parse_and_carry_the_request_id(capture: Callable[[str], io.StringIO]) -> None:
    out = capture("json")
    log = logging.getLogger("mydfs.test")
    log.debug("plain")
    with use_request_id("abc123"):
        log.warning('with "quotes"\nand a newline')
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    plain, quoted, failed = (orjson.loads(line) for line in lines)
    assert plain["level"] == "DEBUG" and plain["node"] == "g1n2" and "request_id" not in plain
    assert plain["logger"] == "mydfs.test" and plain["message"] == "plain"
    assert plain["time"].endswith("+00:00")
    assert quoted["request_id"] == "abc123" and quoted["message"] == 'with "quotes"\nand a newline'
    assert failed["request_id"] == "abc123" and "ValueError: boom" in failed["exc"]


def test_the_filter_and_formatter_alone() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert RequestIdFilter().filter(record)
    assert record.request_id is None and record.rid == ""  # type: ignore[attr-defined]
    rid = new_request_id()
    with use_request_id(rid):
        RequestIdFilter().filter(record)
    assert record.rid == f" rid={rid}"  # type: ignore[attr-defined]
    assert orjson.loads(JsonFormatter("tracker").format(record))["request_id"] == rid
