"""The tracker's store on a full disk: one change fails with DiskFull, nothing is poisoned.

The data folder is a small tmpfs filled up with a ballast file; ``mount -o remount,size=``
gives space back. Skipped (with the reason) where a tmpfs cannot be mounted.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mydfs.common.errors import DiskFull
from mydfs.tracker.checkpoint import list_checkpoints
from mydfs.tracker.editlog import list_segments
from mydfs.tracker.namespace import Registration
from mydfs.tracker.store import MetaStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from cluster import Cluster
from diskfill import fill, tmpfs


@pytest.fixture
def small_disk() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="tracker-full-"))
    try:
        with tmpfs(root, "4m"):
            yield root
    finally:
        root.rmdir()


def registration(i: int) -> Registration:
    body = {"file_id": f"{i:032x}", "size": i, "slices": 1, "head": [1, i], "hash": None}
    return Registration.from_dict(body)


async def put(store: MetaStore, i: int) -> None:
    edit = store.ns.plan_put(f"/f{i}", registration(i), now=float(i), overwrite=False)
    assert edit is not None
    await store.commit(edit)


async def test_a_full_disk_fails_one_change_and_the_store_goes_on(small_disk: Path) -> None:
    data = small_disk / "meta"
    store = await MetaStore.open(data, checkpoint_interval=3600)
    acknowledged: list[int] = []
    try:
        for i in range(5):
            await put(store, i)
            acknowledged.append(i)
        assert await store.checkpoint() == 5
        ballast = fill(small_disk)
        before = sorted(list_segments(data)), sorted(list_checkpoints(data))

        refused_at = None
        for i in range(5, 50_000):
            try:
                await put(store, i)
            except DiskFull as exc:
                assert exc.status == 507
                refused_at = i
                break
            acknowledged.append(i)
        assert refused_at is not None, "the edit log never ran out of space"
        # The refused change was neither logged nor applied, and the log is not poisoned.
        assert store.ns.get(f"/f{refused_at}") is None
        assert not store.log.failed and store.log.refused == 1
        assert store.log.durable_seq == store.log.last_seq
        with pytest.raises(DiskFull):
            await put(store, refused_at)
        assert store.ns.stat(f"/f{acknowledged[-1]}").file_id == f"{acknowledged[-1]:032x}"

        # A checkpoint cannot be written: the previous one and every segment are kept.
        with pytest.raises(DiskFull):
            await store.checkpoint()
        assert sorted(list_checkpoints(data)) == before[1]
        assert {s for s, _ in before[0]} <= {s for s, _ in list_segments(data)}
        assert not list(data.glob("*.tmp"))

        # Space returns: changes and checkpoints work again, on their own.
        Cluster.resize_tmpfs(small_disk, "16m")
        for i in range(refused_at, refused_at + 20):
            await put(store, i)
            acknowledged.append(i)
        assert await store.checkpoint() == store.log.last_seq
        await put(store, 100_000)
        acknowledged.append(100_000)
    finally:
        await store.close()
    ballast.unlink()

    store = await MetaStore.open(data, checkpoint_interval=3600)
    try:
        for i in acknowledged:
            assert store.ns.stat(f"/f{i}").file_id == f"{i:032x}"
        assert store.ns.files == len(acknowledged)
        assert store.report.cut_bytes == 0
    finally:
        await store.close()


async def test_a_roll_without_space_fails_alone(small_disk: Path) -> None:
    data = small_disk / "meta"
    store = await MetaStore.open(data, checkpoint_interval=3600)
    try:
        await put(store, 1)
        segments = list_segments(data)
        fill(small_disk)
        with pytest.raises(DiskFull):
            await store.log.roll()
        assert list_segments(data) == segments and not store.log.failed
        await put(store, 2)  # the current segment's reserve still takes records
        Cluster.resize_tmpfs(small_disk, "16m")
        assert await store.log.roll() == 3
        await put(store, 3)
    finally:
        await store.close()
    store = await MetaStore.open(data, checkpoint_interval=3600)
    try:
        assert store.ns.files == 3
    finally:
        await store.close()
