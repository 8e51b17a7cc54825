"""Fixtures for the tracker tests: a session, and real tracker processes cleaned up in finally.

The logs of every tracker a test started are printed when that test fails.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from tracker_harness import TrackerFactory, TrackerProc  # noqa: E402


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, "rep_" + report.when, report)


@pytest.fixture
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mydfs-tracker-") as name:
        yield Path(name)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s:
        yield s


@pytest.fixture
def make_tracker(request: pytest.FixtureRequest, scratch: Path) -> Iterator[TrackerFactory]:
    """``make_tracker(data_dir=None, **options)`` → an unstarted :class:`TrackerProc`."""
    made: list[TrackerProc] = []

    def factory(data_dir: Path | None = None, **options: Any) -> TrackerProc:
        n = len(made)
        proc = TrackerProc(
            data_dir or scratch / f"tracker{n}", scratch / f"tracker{n}.log", **options
        )
        made.append(proc)
        return proc

    try:
        yield factory
    finally:
        for proc in made:
            proc.stop()
        report = getattr(request.node, "rep_call", None)
        if report is None or report.failed:
            for proc in made:
                print(f"--- {proc.log_path.name} ---\n{proc.logs()}")
