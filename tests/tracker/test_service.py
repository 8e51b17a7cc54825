"""The service layer in-process: nobody sees a change before it is durable."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from tracker_harness import SECRET, wait_until

from mydfs.common.errors import AlreadyExists, NotFound
from mydfs.tracker.config import OPTIONS, from_values
from mydfs.tracker.metrics import TrackerMetrics
from mydfs.tracker.service import Tracker
from mydfs.tracker.store import MetaStore


def body(fid: int) -> dict[str, object]:
    return {"file_id": f"{fid:032x}", "size": 1, "slices": 1, "head": [1, fid], "hash": None}


async def test_reads_and_refusals_wait_for_the_sync(tmp_path: Path) -> None:
    values = {opt.key: opt.default for opt in OPTIONS}
    values.update(data_dir=tmp_path, secret=SECRET)
    config = from_values(values)
    store = await MetaStore.open(tmp_path, checkpoint_interval=3600)
    # A registration needs the upload's intent (edit 1), made durable before the gate closes.
    intent = {"file_id": f"{1:032x}", "path": "/x"}
    await Tracker(config, store, TrackerMetrics()).add_intent(intent)
    gate = threading.Event()
    write = store.log._write_sync

    def slow_write(data: bytes) -> None:
        gate.wait(10)
        write(data)

    store.log._write_sync = slow_write  # type: ignore[method-assign]
    tracker = Tracker(config, store, TrackerMetrics())
    try:
        put = asyncio.ensure_future(tracker.put_file("/x", body(1), overwrite=False))
        await wait_until(lambda: store.ns.get("/x") is not None, timeout=5, what="the apply")
        stat = asyncio.ensure_future(tracker.stat("/x"))
        refused = asyncio.ensure_future(tracker.put_file("/x", body(2), overwrite=False))
        missing = asyncio.ensure_future(tracker.stat("/y"))
        await asyncio.sleep(0.1)
        assert not any(t.done() for t in (put, stat, refused, missing))  # all held back
        gate.set()
        status, entry = await put
        assert status == 201 and entry["file_id"] == f"{1:032x}"
        assert (await stat).file_id == f"{1:032x}"
        with pytest.raises(AlreadyExists):
            await refused
        with pytest.raises(NotFound):
            await missing
        assert store.log.durable_seq == 2
    finally:
        gate.set()
        await store.close()
