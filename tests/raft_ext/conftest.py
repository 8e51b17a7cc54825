"""Fixtures for the raft_ext tests (helpers live in ``raft_harness.py``).

Every node, process and temporary directory is torn down in ``finally`` blocks, also when a test
fails; the per-process logs are printed when a test using them failed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from helpers import failed, free_ports
from raft_harness import InprocCluster, ProcCluster


@pytest.fixture
def scratch_dir(scratch: Path) -> Path:
    return scratch


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
    request: pytest.FixtureRequest, scratch_dir: Path, session: aiohttp.ClientSession
) -> AsyncIterator[ProcCluster]:
    cluster = ProcCluster(scratch_dir, session)
    try:
        yield cluster
    finally:
        await cluster.close()
        if failed(request):
            cluster.dump_logs()
