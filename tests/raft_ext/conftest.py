"""Fixtures for the raft_ext tests (helpers live in ``raft_harness.py``).

Every node, process and temporary directory is torn down in ``finally`` blocks, also when a test
fails; the per-process logs are printed when a test using them failed.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from raft_harness import InprocCluster, ProcCluster, free_ports  # noqa: E402


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, "rep_" + report.when, report)


def _failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "rep_call", None)
    return report is None or report.failed


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="raft-ext-") as name:
        yield Path(name)


@pytest.fixture
async def inproc_cluster(scratch_dir: Path) -> AsyncIterator[InprocCluster]:
    ports = free_ports(6)
    addresses = [f"127.0.0.1:{p}" for p in ports[:3]]
    urls = {a: f"http://127.0.0.1:{p}" for a, p in zip(addresses, ports[3:], strict=True)}
    cluster = InprocCluster(scratch_dir, addresses, urls)
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.close()


@pytest.fixture
async def proc_cluster(
    request: pytest.FixtureRequest, scratch_dir: Path
) -> AsyncIterator[ProcCluster]:
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
    cluster = ProcCluster(scratch_dir, session)
    try:
        yield cluster
    finally:
        try:
            await cluster.close()
            if _failed(request):
                cluster.dump_logs()
        finally:
            await session.close()
