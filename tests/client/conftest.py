"""Fixtures of the client tests: the coordinator against an in-process stand-in of the edit
routes (``fake_edit_cluster.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fake_edit_cluster import FakeTracker, start_fake

from mydfs.client import AsyncClient


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeTracker, AsyncClient]]:
    tracker, servers = await start_fake(2)
    tracker.create("/f")
    client = AsyncClient(tracker.url, deadline=10.0)
    try:
        yield tracker, client
    finally:
        await client.close()
        for server in servers:
            await server.close()
