"""Fixtures of the read path's network tests: small in-process aiohttp servers standing in for
storage nodes, and a client session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer


class ReadRoutes(Protocol):
    """A stand-in storage node: its ``/chain`` and ``/slices`` handlers; ``url`` is set once it
    serves."""

    url: str

    async def chain(self, request: web.Request) -> web.StreamResponse: ...

    async def slice(self, request: web.Request) -> web.StreamResponse: ...


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Any], Awaitable[str]]]:
    """``await serve(node)``: serve ``node``'s read routes on loopback; its base URL."""
    servers: list[TestServer] = []

    async def start(node: ReadRoutes) -> str:
        app = web.Application()
        app.router.add_get("/chain/{slot}", node.chain)
        app.router.add_get("/slices/{slot}", node.slice)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        node.url = str(server.make_url("")).rstrip("/")
        return node.url

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s
