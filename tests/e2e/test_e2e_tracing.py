"""Request ids across real processes: one SDK ``put`` of a three-slice file under a known id, on
a tracker and one group of 3 storage nodes logging JSON at DEBUG.

Shows: the id is in the tracker's log (the intent with its placement, registration), in the
leader's (its HTTP calls) and in both followers' (the leader's pushes carried it); every line of
every log is one JSON object.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from e2e_helpers import random_bytes
from helpers import dispose, free_base, wait_until

from mydfs.client.aio import SLICE, AsyncClient
from mydfs.client.local_cluster import LocalCluster
from mydfs.common.tracing import use_request_id

LOG_FLAGS = {"log_format": "json", "log_level": "debug"}


@pytest.fixture
def json_cluster() -> Iterator[LocalCluster]:
    root = Path(tempfile.mkdtemp(prefix="mydfs-e2e-tracing-"))
    storage_args = [arg for k, v in LOG_FLAGS.items() for arg in ("--" + k.replace("_", "-"), v)]
    c = LocalCluster(root, groups=1, base_port=free_base(1), storage_args=storage_args)
    assert c.tracker_process is not None
    c.tracker_process.options.update(LOG_FLAGS)
    try:
        c.start(timeout=90.0)
        yield c
    finally:
        dispose(c, root)


def _entries(path: Path) -> list[dict[str, Any]]:
    """Every line a process wrote to its log, each parsed as one JSON object (fails on any
    other line); the launcher's own ``=== start ...`` markers are skipped."""
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("=== "):
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            pytest.fail(f"{path.name}:{number} is not JSON: {line!r}")
        assert isinstance(entry, dict) and {"time", "level", "node", "message"} <= entry.keys()
        out.append(entry)
    return out


async def test_one_put_is_traced_from_client_to_followers(json_cluster: LocalCluster) -> None:
    rid = "e2e-put-0001"
    data = random_bytes(2 * SLICE + 1000, seed=7)
    async with AsyncClient(json_cluster.tracker_url, deadline=60.0) as client:
        with use_request_id(rid):
            await client.put("/traced/three-slices.bin", data)
        assert await client.read("/traced/three-slices.bin") == data
    tracker = json_cluster.tracker_process
    assert tracker is not None
    nodes = json_cluster.group(1)
    assert len(nodes) == 3

    def mentioning(path: Path) -> list[dict[str, Any]]:
        return [e for e in _entries(path) if e.get("request_id") == rid]

    def pushed_to(path: Path) -> bool:
        return any(e["message"].startswith("PUT /internal/slices/") for e in mentioning(path))

    await wait_until(
        lambda: mentioning(tracker.log_path) and all(mentioning(n.log_path) for n in nodes),
        timeout=30.0,
        what="the request id in the tracker's and every node's log",
    )
    await wait_until(
        lambda: sum(pushed_to(n.log_path) for n in nodes) == 2,
        timeout=30.0,
        what="both followers logging the leader's pushes under the request id",
    )
    assert any("/meta/intents" in e["message"] for e in mentioning(tracker.log_path))
    assert {e["node"] for e in mentioning(tracker.log_path)} == {"tracker"}
    json_cluster.stop()
    for proc in [tracker, *nodes]:
        _entries(proc.log_path)  # complete logs: every line still one JSON object
