"""Fixtures for the real-process integration tests (the harness is ``cluster.py`` here).

* ``shared_cluster`` — one healthy 3-node group per test module, for tests that leave it
  healthy (each such test restores any node it touched).
* ``make_cluster`` — a factory of fresh clusters for destructive tests; every cluster it made
  is closed when the test ends, pass or fail.
* ``http`` — an ``aiohttp.ClientSession`` per test. Storage nodes serve their client routes
  only with a grant (``docs/replication.md``, Grants): for a request to a node of an open
  cluster that carries none, the session adds one minted with that cluster's secret — a write
  grant (which reads too) for the ``X-Mydfs-File`` the request names, else for
  :data:`TEST_FILE` (the owner an upload without ``X-Mydfs-File`` then gets) — and signs
  ``GET /slices/N/meta``. ``/internal/...`` calls are left as the test sends them.

Whenever a test fails, the last lines of every node's log of every cluster still open are
added to its report. ``MYDFS_IT_KEEP=1`` keeps the temporary folders for a post-mortem.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import Any

import aiohttp
import pytest
from cluster import TEST_FILE, Cluster, can_mount_tmpfs
from helpers import grant_headers, signed_headers
from yarl import URL

from mydfs.common.grants import GRANT_HEADER, GRANT_PARAM

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


def _secret_of(url: URL) -> str | None:
    """The secret of the open cluster one of whose nodes ``url`` addresses."""
    origin = f"{url.scheme}://{url.host}:{url.port}"
    for c in _OPEN:
        if any(n.url == origin for n in c.nodes()):
            return c.secret
    return None


async def _add_grant(
    session: aiohttp.ClientSession, ctx: Any, params: aiohttp.TraceRequestStartParams
) -> None:
    url, headers = params.url, params.headers
    secret = _secret_of(url)
    if secret is None or url.path.startswith("/internal/"):
        return
    if GRANT_HEADER in headers or GRANT_PARAM in url.query or "X-Mydfs-Auth" in headers:
        return
    if url.path.endswith("/meta"):
        headers.update(signed_headers(secret, params.method, url.raw_path_qs))
        return
    file_id = headers.get("X-Mydfs-File") or TEST_FILE
    headers.update(grant_headers(secret, "write", file_id))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=64, force_close=False)
    grants = aiohttp.TraceConfig()
    grants.on_request_start.append(_add_grant)
    async with aiohttp.ClientSession(connector=connector, trace_configs=[grants]) as session:
        yield session


@pytest.fixture(scope="session")
def tmpfs_available() -> None:
    reason = can_mount_tmpfs()
    if reason is not None:
        pytest.skip(f"disk-full test needs a tmpfs mount: {reason}")
