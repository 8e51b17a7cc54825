"""Group commit: concurrent writers share fdatasync calls, and a failed sync is final."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mydfs.common.errors import StorageIOError
from mydfs.storage.syncer import GroupSyncer, SyncFailed
from mydfs.storage.volume import Volume

WAIT = 20.0


@pytest.fixture
def fd(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path / "data", os.O_RDWR | os.O_CREAT, 0o644)
    yield fd
    os.close(fd)


class SlowDisk:
    """Stands in for ``os.fdatasync``: slow, counted, and it records which writes each sync
    covered (the writes that had completed when it started)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.completed: set[int] = set()  # writes that returned
        self.durable: set[int] = set()  # writes covered by a finished sync
        self.calls = 0
        self.concurrent = 0
        self.max_concurrent = 0

    def write_done(self, n: int) -> None:
        with self.lock:
            self.completed.add(n)

    def __call__(self, fd: int) -> None:
        with self.lock:
            covered = set(self.completed)
            self.calls += 1
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
        time.sleep(self.delay)
        with self.lock:
            self.durable |= covered
            self.concurrent -= 1


def test_single_writer(fd: int) -> None:
    s = GroupSyncer(fd)
    assert not s.failed
    t1 = s.ticket()
    s.wait_durable(t1)
    assert s.syncs == 1
    s.wait_durable(t1)  # already durable: no new sync
    assert s.syncs == 1
    t2 = s.ticket()
    assert t2 > t1
    s.wait_durable(t2)
    assert s.syncs == 2
    s.sync()
    assert s.syncs == 3


def test_concurrent_writers_share_syncs_and_each_write_is_covered(
    fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = SlowDisk(delay=0.02)
    monkeypatch.setattr(os, "fdatasync", disk)
    s = GroupSyncer(fd)
    writers = 32
    barrier = threading.Barrier(writers)

    def writer(n: int) -> None:
        barrier.wait(WAIT)
        os.pwrite(fd, n.to_bytes(4, "little"), 4 * n)
        disk.write_done(n)
        s.wait_durable(s.ticket())
        with disk.lock:  # when wait_durable returns, a finished sync covered this write
            assert n in disk.durable

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(writer, range(writers)))
    assert disk.durable == set(range(writers))
    assert disk.max_concurrent == 1  # one sync at a time
    assert s.syncs == disk.calls
    assert disk.calls < writers // 2, f"{disk.calls} syncs for {writers} writes"


def test_a_write_after_a_sync_started_waits_for_the_next_one(
    fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, gate = threading.Event(), threading.Event()
    calls = []

    def fdatasync(_: int) -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            started.set()
            assert gate.wait(WAIT)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    s = GroupSyncer(fd)
    first = threading.Thread(target=s.sync)
    first.start()
    assert started.wait(WAIT)
    late = s.ticket()  # written while the first sync is running: not covered by it
    done = threading.Event()

    def wait_late() -> None:
        s.wait_durable(late)
        done.set()

    second = threading.Thread(target=wait_late)
    second.start()
    assert not done.wait(0.05)
    gate.set()
    first.join(WAIT)
    second.join(WAIT)
    assert done.is_set()
    assert len(calls) == 2
    assert s.syncs == 2


def test_a_failed_sync_is_final(fd: int, monkeypatch: pytest.MonkeyPatch) -> None:
    s = GroupSyncer(fd)
    s.sync()

    def broken(_: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken)
    with pytest.raises(SyncFailed) as exc:
        s.sync()
    assert exc.value.errno == errno.EIO
    assert s.failed
    monkeypatch.undo()  # the disk "recovers": durability still cannot be promised
    with pytest.raises(SyncFailed):
        s.sync()
    with pytest.raises(SyncFailed):
        s.wait_durable(1)  # even a ticket made durable before the failure
    assert s.syncs == 1


def test_waiters_queued_behind_a_failing_sync_all_fail(
    fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, gate = threading.Event(), threading.Event()

    def failing(_: int) -> None:
        started.set()
        assert gate.wait(WAIT)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    s = GroupSyncer(fd)
    results: list[str] = []
    lock = threading.Lock()

    def waiter() -> None:
        try:
            s.sync()
            outcome = "ok"
        except SyncFailed:
            outcome = "failed"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=waiter) for _ in range(6)]
    threads[0].start()
    assert started.wait(WAIT)
    for t in threads[1:]:
        t.start()
    gate.set()
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive()
    assert results == ["failed"] * 6


# --- the syncer inside a volume -----------------------------------------------------------------


def test_volume_writers_share_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = SlowDisk(delay=0.01)
    monkeypatch.setattr(os, "fdatasync", disk)
    writers = 16
    with Volume.open(tmp_path / "v.vol", create=True, max_slots=64) as vol:
        base = vol.stats().syncs
        barrier = threading.Barrier(writers)

        def write(n: int) -> int:
            barrier.wait(WAIT)
            slot = vol.allocate()
            vol.write(slot, bytes([n]) * 20_000)
            return slot

        with ThreadPoolExecutor(writers) as pool:
            slots = list(pool.map(write, range(writers)))
        syncs = vol.stats().syncs - base
        # Each write needs two syncs (payload, then header); shared, they cost far fewer.
        assert syncs < writers, f"{syncs} syncs for {writers} writes"
        for n, slot in enumerate(slots):
            assert vol.read(slot).data == bytes([n]) * 20_000


def test_volume_after_a_failed_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "v.vol"
    vol = Volume.open(path, create=True)
    vol.write(0, b"durable")

    def broken(_: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken)
    with pytest.raises(StorageIOError) as exc:
        vol.write(1, b"lost")
    assert "fdatasync" in exc.value.message
    monkeypatch.undo()
    # The volume stops promising anything: every later call fails the same way.
    for op in (lambda: vol.read(0), lambda: vol.write(2, b"x"), vol.allocate):
        with pytest.raises(StorageIOError):
            op()
    vol.close()  # no clean checkpoint is written after a failed sync
    with Volume.open(path) as again:
        assert not again.report.clean
        assert again.read(0).data == b"durable"
        assert again.verify().ok
