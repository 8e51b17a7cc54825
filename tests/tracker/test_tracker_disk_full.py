"""The real ``mydfs-tracker`` process with its data folder on a full tmpfs.

Registrations it cannot log get 507 ``disk_full`` (one request each, the log is not poisoned),
stat and list keep working, a checkpoint without space is skipped, and after the tmpfs is
resized registrations work again; after a kill -9 and a restart every acknowledged file is
there. Skipped (with the reason) where a tmpfs cannot be mounted.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tracker_harness import TrackerFactory, call, register, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from cluster import Cluster
from diskfill import fill, tmpfs


@pytest.fixture
def small_disk(scratch: Path) -> Iterator[Path]:
    with tmpfs(scratch / "small-disk", "4m") as root:
        yield root


def body(fid: int) -> dict[str, Any]:
    return {
        "file_id": f"{fid:032x}",
        "size": 100,
        "slices": 1,
        "head": [1, fid],
        "hash": "crc32c:0badf00d",
    }


async def test_tracker_on_a_full_disk(
    make_tracker: TrackerFactory, session: aiohttp.ClientSession, small_disk: Path
) -> None:
    tracker = make_tracker(data_dir=small_disk / "data", checkpoint_interval=1.0)
    await tracker.start(session)
    m = tracker.url + "/meta"
    acknowledged: list[int] = []
    for i in range(5):
        status, _, _ = await register(session, m + f"/files/d/f{i}", body(i))
        assert status == 201
        acknowledged.append(i)

    ballast = fill(small_disk)
    refused: list[int] = []
    for start in range(5, 20_000, 50):  # 50 at a time: group commit makes this quick
        batch = range(start, start + 50)
        answers = await asyncio.gather(
            *(register(session, m + f"/files/d/f{i}", body(i)) for i in batch)
        )
        for i, (status, err, resp) in zip(batch, answers, strict=True):
            if status == 507:
                assert err["error"] == "disk_full", err
                assert resp.headers.get("Retry-After"), resp.headers
                refused.append(i)
            else:
                assert status == 201, (status, err)
                acknowledged.append(i)
        if refused:
            break
    assert refused, "the tracker never ran out of space"

    # One request failed; the process is up and every read still works.
    assert tracker.proc is not None and tracker.proc.poll() is None
    assert (await call(session, "GET", tracker.url + "/health"))[0] == 200
    status, again, _ = await register(session, m + f"/files/d/f{refused[0]}", body(refused[0]))
    assert status == 507, again
    status, got, _ = await call(session, "GET", m + f"/files/d/f{acknowledged[-1]}")
    assert status == 200 and got["file_id"] == f"{acknowledged[-1]:032x}"
    for i in refused:
        assert (await call(session, "GET", m + f"/files/d/f{i}"))[0] == 404
    status, listing, _ = await call(session, "GET", m + "/list/d?limit=100000")
    assert status == 200 and len(listing["entries"]) == len(acknowledged)

    # The periodic checkpoint cannot be written: it is skipped, nothing is deleted.
    await wait_until(
        lambda: "checkpoint skipped" in tracker.logs(),
        timeout=20,
        what="a checkpoint attempt on the full disk",
    )

    # Space returns: registrations work again, on their own.
    Cluster.resize_tmpfs(small_disk, "32m")
    for i in refused:
        status, err, _ = await register(session, m + f"/files/d/f{i}", body(i))
        assert status == 201, (status, err)
        acknowledged.append(i)

    tracker.kill9()
    ballast.unlink()
    await tracker.start(session)
    for i in acknowledged:
        status, got, _ = await call(session, "GET", m + f"/files/d/f{i}")
        assert status == 200 and got["file_id"] == f"{i:032x}", (i, status, got)
    status, listing, _ = await call(session, "GET", m + "/list/d?limit=100000")
    assert len(listing["entries"]) == len(acknowledged)
    assert tracker.stop() == 0
