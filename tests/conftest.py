"""What every test folder shares.

* ``tests/`` and each folder in it are on ``sys.path``, so a test imports ``helpers`` and its
  own folder's harness (``cluster``, ``tracker_harness``, ``raft_harness`` ...) by name.
* Each test's reports are kept on it (``item.rep_setup``, ``rep_call``...), so a fixture can
  tell whether its test failed (:func:`helpers.failed`).
* ``MYDFS_CREDENTIALS`` points at a credentials file in a per-session temporary folder (so the
  API keys of the clusters tests start never touch the user's home), and ``MYDFS_TOKEN`` is
  unset.
* ``scratch`` — a temporary folder, removed after the test; ``session`` — an
  ``aiohttp.ClientSession`` (20 s per request) closed after the test.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

HERE = Path(__file__).resolve().parent
for folder in [HERE, *sorted(p for p in HERE.iterdir() if p.is_dir() and p.name.isidentifier())]:
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


_CREDENTIALS_DIR = tempfile.mkdtemp(prefix="mydfs-credentials-")


def pytest_configure(config: pytest.Config) -> None:
    os.environ["MYDFS_CREDENTIALS"] = os.path.join(_CREDENTIALS_DIR, "credentials.json")
    os.environ.pop("MYDFS_TOKEN", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_CREDENTIALS_DIR, ignore_errors=True)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, "rep_" + report.when, report)


@pytest.fixture
def scratch(request: pytest.FixtureRequest) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"mydfs-{request.path.parent.name}-") as name:
        yield Path(name)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s:
        yield s
