"""Fixtures for the real-process integration tests (the harness is ``cluster.py`` here).

* ``shared_cluster`` — one healthy 3-node group per test module, for tests that leave it
  healthy (each such test restores any node it touched).
* ``make_cluster`` — a factory of fresh clusters for destructive tests; every cluster it made
  is closed when the test ends, pass or fail.
* ``http`` — an ``aiohttp.ClientSession`` per test.

Whenever a test fails, the last lines of every node's log of every cluster still open are
added to its report. ``MYDFS_IT_KEEP=1`` keeps the temporary folders for a post-mortem.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import Any

import aiohttp
import pytest
from cluster import Cluster, can_mount_tmpfs

_OPEN: list[Cluster] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.failed and _OPEN:
        chunks = []
        for c in _OPEN:
            for proc in c.processes():
                if proc.starts:
                    state = "paused" if proc.paused else ("up" if proc.running else "down")
                    chunks.append(f"--- {c.name} {proc.name} {proc.url} ({state}) ---")
                    chunks.append(proc.log_tail(50))
        report.sections.append(("mydfs node logs", "\n".join(chunks)))


def _open(**kwargs: Any) -> Cluster:
    c = Cluster(**kwargs)
    _OPEN.append(c)
    return c


def _close(c: Cluster) -> None:
    try:
        c.close()
    finally:
        if c in _OPEN:
            _OPEN.remove(c)


@pytest.fixture(scope="module")
def shared_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """One started cluster for the whole module: ``CLUSTER_GROUPS`` groups (module attribute,
    default 1) of 3 nodes."""
    c = _open(
        name=request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_"),
        groups=getattr(request.module, "CLUSTER_GROUPS", 1),
    )
    try:
        c.start_sync()
        yield c
    finally:
        _close(c)


@pytest.fixture
def make_cluster() -> Iterator[Callable[..., Cluster]]:
    """``make_cluster(**kwargs)`` → a new, not yet started :class:`Cluster`."""
    made: list[Cluster] = []

    def factory(**kwargs: Any) -> Cluster:
        c = _open(**kwargs)
        made.append(c)
        return c

    try:
        yield factory
    finally:
        errors = []
        for c in made:
            try:
                _close(c)
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=64, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


@pytest.fixture(scope="session")
def tmpfs_available() -> None:
    reason = can_mount_tmpfs()
    if reason is not None:
        pytest.skip(f"disk-full test needs a tmpfs mount: {reason}")
