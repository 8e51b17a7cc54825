"""Fixtures for the tracker tests: real tracker processes cleaned up in finally.

The logs of every tracker a test started are printed when that test fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import failed
from tracker_harness import TrackerFactory, TrackerProc


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
        if failed(request):
            for proc in made:
                print(f"--- {proc.log_path.name} ---\n{proc.logs()}")
