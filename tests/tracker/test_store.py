"""Checkpoints and the durable store: checkpoint + replay rebuilds exactly the live state."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import pytest

from mydfs.common.errors import AlreadyExists, Conflict, Corrupt
from mydfs.tracker.checkpoint import list_checkpoints, read_checkpoint, write_checkpoint
from mydfs.tracker.editlog import list_segments
from mydfs.tracker.namespace import Namespace, Registration
from mydfs.tracker.records import Edit
from mydfs.tracker.store import MetaStore


def random_edit(ns: Namespace, rnd: random.Random, i: int) -> Edit | None:
    path = f"/d{rnd.randint(0, 8)}/s{rnd.randint(0, 3)}/f{rnd.randint(0, 40)}"
    op = rnd.random()
    try:
        if op < 0.75:
            body = {"file_id": f"{i:032x}", "size": i, "slices": 1, "head": [1, i], "hash": "h:1"}
            return ns.plan_put(path, Registration.from_dict(body), now=float(i), overwrite=True)
        if op < 0.9 and ns.get(path) is not None:
            return ns.plan_delete(path, now=float(i))
        return ns.plan_intent(f"{i:032x}", path, now=float(i))
    except (AlreadyExists, Conflict):
        return None


async def fill(store: MetaStore, start: int, count: int, seed: int) -> None:
    rnd = random.Random(seed)
    for i in range(start, start + count):
        edit = random_edit(store.ns, rnd, i)
        if edit is not None:
            await store.commit(edit)


async def reopen(directory: Path, **kw: Any) -> MetaStore:
    return await MetaStore.open(directory, checkpoint_interval=3600, **kw)


def test_checkpoint_file_round_trip(tmp_path: Path) -> None:
    ns = Namespace()
    rnd = random.Random(1)
    for i in range(500):
        edit = random_edit(ns, rnd, i)
        if edit is not None:
            ns.apply(edit)
    path = write_checkpoint(tmp_path, 777, ns.snapshot(), 123.0)
    assert path.name == "checkpoint-00000000000000000777.ckpt"
    assert not list(tmp_path.glob("*.tmp"))
    seq, back = read_checkpoint(path)
    assert seq == 777 and back.state() == ns.state()
    back.check_invariants()
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 40):
        path.write_bytes(data[:cut])
        with pytest.raises(Corrupt):
            read_checkpoint(path)
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 1
    path.write_bytes(bytes(bad))
    with pytest.raises(Corrupt):
        read_checkpoint(path)


async def test_checkpoint_plus_replay_equals_memory(tmp_path: Path) -> None:
    store = await reopen(tmp_path)
    try:
        await fill(store, 0, 300, seed=2)
        first = await store.checkpoint()
        await fill(store, 300, 300, seed=3)
        second = await store.checkpoint()
        await fill(store, 600, 200, seed=4)  # only in the log
        expected = store.ns.state()
        assert first < second < store.log.last_seq
    finally:
        await store.close()
    # two checkpoints kept; the log from the older one on
    assert [s for s, _ in list_checkpoints(tmp_path)] == [second, first]
    assert list_segments(tmp_path)[0][0] <= first + 1
    store = await reopen(tmp_path)
    try:
        assert store.ns.state() == expected
        assert store.report.checkpoint_seq == second
        assert store.report.replayed == store.log.last_seq - second
        store.ns.check_invariants()
    finally:
        await store.close()


async def test_a_damaged_newest_checkpoint_falls_back_to_the_older_one(tmp_path: Path) -> None:
    store = await reopen(tmp_path)
    try:
        await fill(store, 0, 200, seed=5)
        await store.checkpoint()
        await fill(store, 200, 200, seed=6)
        newest = await store.checkpoint()
        await fill(store, 400, 50, seed=7)
        expected = store.ns.state()
    finally:
        await store.close()
    path = dict(list_checkpoints(tmp_path))[newest]
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    store = await reopen(tmp_path)
    try:
        assert store.ns.state() == expected
        assert store.report.skipped_checkpoints and store.report.checkpoint_seq < newest
        assert path.with_name(path.name + ".corrupt").exists()
    finally:
        await store.close()


async def test_checkpoints_are_taken_by_edit_count_and_old_files_dropped(tmp_path: Path) -> None:
    store = await MetaStore.open(tmp_path, checkpoint_interval=3600, checkpoint_edits=50)
    try:
        await fill(store, 0, 400, seed=8)
        deadline = time.monotonic() + 10
        while store.edits_since_checkpoint >= 50 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert store.checkpoints >= 2
        assert len(list_checkpoints(tmp_path)) <= 2
        assert len(list_segments(tmp_path)) <= 3
    finally:
        await store.close()


async def test_writes_during_a_checkpoint_are_kept(tmp_path: Path) -> None:
    store = await reopen(tmp_path)
    try:
        await fill(store, 0, 200, seed=9)
        ckpt = asyncio.ensure_future(store.checkpoint())
        await fill(store, 200, 200, seed=10)
        await ckpt
        await fill(store, 400, 20, seed=11)
        expected = store.ns.state()
    finally:
        await store.close()
    store = await reopen(tmp_path)
    try:
        assert store.ns.state() == expected
    finally:
        await store.close()


async def test_one_tracker_per_data_folder(tmp_path: Path) -> None:
    store = await reopen(tmp_path)
    try:
        with pytest.raises(Conflict, match="another tracker"):
            await reopen(tmp_path)
    finally:
        await store.close()
    store = await reopen(tmp_path)  # released on close
    await store.close()
