"""The service layer in-process: nobody sees a change before it is durable."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from tracker_harness import SECRET, wait_until

from mydfs.common.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
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


async def test_an_exclusive_intent_is_refused_when_the_path_is_taken(tmp_path: Path) -> None:
    """``POST /meta/intents`` with ``exclusive``: a file at the path refuses it before anything
    is recorded; a bad flag is a clear error; ``slices`` with no writable group records no
    intent either (the placement is made before the record)."""
    values = {opt.key: opt.default for opt in OPTIONS}
    values.update(data_dir=tmp_path, secret=SECRET)
    store = await MetaStore.open(tmp_path, checkpoint_interval=3600)
    tracker = Tracker(from_values(values), store, TrackerMetrics())
    try:
        await tracker.add_intent({"file_id": f"{1:032x}", "path": "/x"})
        await tracker.put_file("/x", body(1), overwrite=False)
        seq = store.log.last_seq
        with pytest.raises(AlreadyExists):
            await tracker.add_intent({"file_id": f"{2:032x}", "path": "/x", "exclusive": True})
        with pytest.raises(InvalidArgument):
            await tracker.add_intent({"file_id": f"{2:032x}", "path": "/y", "exclusive": "yes"})
        with pytest.raises(Unavailable):  # no storage group has reported
            await tracker.add_intent({"file_id": f"{2:032x}", "path": "/y", "slices": 1})
        assert store.log.last_seq == seq and store.ns.find_intent(f"{2:032x}") is None
        # Not exclusive (an overwrite): recorded.
        got = await tracker.add_intent({"file_id": f"{2:032x}", "path": "/x"})
        assert got["grant"] and "placement" not in got
    finally:
        await store.close()
