"""Fixtures for the end-to-end tests: real ``mydfs-tracker`` and ``mydfs-storage`` processes
(a tracker and 2 groups of 3 nodes, :class:`mydfs.client.local_cluster.LocalCluster`) on
127.0.0.1, driven through the SDK, the ``mydfs`` CLI and curl.

* ``cluster`` — one started cluster per test module, for tests that leave it healthy.
* ``client`` — a blocking SDK :class:`~mydfs.client.Client` on the module's cluster.
* ``make_cluster`` — a factory of fresh, started clusters for destructive tests (kills,
  restarts); every cluster it made is stopped and its folder removed when the test ends.
* ``scratch`` — a temporary folder for local files, removed after the test.

When a test fails, the last lines of every log of every cluster still running are added to its
report. ``MYDFS_E2E_KEEP=1`` keeps the temporary folders for a post-mortem.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import free_base

from mydfs.client import Client
from mydfs.client.local_cluster import LocalCluster

_OPEN: list[LocalCluster] = []
KEEP = os.environ.get("MYDFS_E2E_KEEP") == "1"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and _OPEN:
        chunks = []
        for c in _OPEN:
            for proc in c.processes():
                state = "up" if proc.alive() else "down"
                chunks.append(f"--- {c.root.name} {proc.name} {proc.url} ({state}) ---")
                chunks.append(_tail(proc.log_path))
        report.sections.append(("mydfs process logs", "\n".join(chunks)))


def new_root(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"mydfs-e2e-{prefix}-"))


def remove_root(root: Path) -> None:
    if not KEEP:
        shutil.rmtree(root, ignore_errors=True)


def stop_cluster(c: LocalCluster) -> None:
    """Stop every process of ``c`` (SIGTERM, then SIGKILL) and check none is left running."""
    try:
        c.stop()
    finally:
        for proc in c.processes():
            if proc.alive():
                proc.kill()  # SIGKILL
        if c in _OPEN:
            _OPEN.remove(c)
    left = [p.name for p in c.processes() if p.alive()]
    assert not left, f"processes still running after stop: {left}"


def start_cluster(root: Path, **kwargs: Any) -> LocalCluster:
    kwargs.setdefault("groups", 2)
    kwargs.setdefault("base_port", free_base(kwargs["groups"]))
    c = LocalCluster(root, **kwargs)
    _OPEN.append(c)
    try:
        c.start(timeout=90.0)
    except BaseException:
        stop_cluster(c)
        raise
    return c


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A tracker and 2 groups of 3 storage nodes, shared by the tests of one module."""
    root = new_root(request.module.__name__.rsplit(".", 1)[-1])
    try:
        c = start_cluster(root)
        try:
            yield c
        finally:
            stop_cluster(c)
    finally:
        remove_root(root)


@pytest.fixture(scope="module")
def client(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster.tracker_url, deadline=60.0) as c:
        yield c


@pytest.fixture
def make_cluster() -> Iterator[Callable[..., LocalCluster]]:
    """``make_cluster(**LocalCluster kwargs)`` → a fresh, started cluster of its own."""
    made: list[tuple[LocalCluster, Path]] = []

    def factory(**kwargs: Any) -> LocalCluster:
        root = new_root("fresh")
        try:
            c = start_cluster(root, **kwargs)
        except BaseException:
            remove_root(root)
            raise
        made.append((c, root))
        return c

    try:
        yield factory
    finally:
        errors: list[BaseException] = []
        for c, root in made:
            try:
                stop_cluster(c)
            except Exception as exc:
                errors.append(exc)
            finally:
                remove_root(root)
        if errors:
            raise errors[0]


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A temporary folder for local files."""
    root = new_root("local")
    try:
        yield root
    finally:
        remove_root(root)
