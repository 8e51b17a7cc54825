"""Threads sharing one volume: readers never wait on other slots, writers never collide."""

from __future__ import annotations

import hashlib
import os
import random
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mydfs.common.errors import Conflict, NotFound, SliceDeleted
from mydfs.common.location import Location
from mydfs.storage import volume as volume_mod
from mydfs.storage.format import BLOCK_SIZE, PAYLOAD_OFFSET, SliceOwner, slot_offset
from mydfs.storage.volume import Volume

WAIT = 20.0  # generous deadline for anything that must happen; tests never sleep to "make sure"


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "threads.vol"


@pytest.fixture
def vol(path: Path) -> Iterator[Volume]:
    v = Volume.open(path, create=True, node_id="n", group_id=1, max_slots=512)
    yield v
    v.close()


class Background:
    """Run a call in a thread; its result or exception is collected with a deadline."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self._fn = fn
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def get(self) -> Any:
        assert self.done.wait(WAIT), "background call did not finish"
        self._thread.join(WAIT)
        if self.error is not None:
            raise self.error
        return self.result


# --- readers of different slots never wait on each other ---------------------------------------


def test_a_slow_reader_does_not_hold_up_readers_of_other_slots(
    vol: Volume, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = {s: payload(3 * BLOCK_SIZE, seed=s) for s in range(6)}
    for s, d in data.items():
        vol.write(s, d)
    slow_slot = 2
    slow_start = slot_offset(slow_slot) + PAYLOAD_OFFSET
    entered, gate = threading.Event(), threading.Event()
    real = volume_mod._pread_exact

    def pread(fd: int, length: int, offset: int) -> bytes:
        if offset >= slow_start and offset < slow_start + len(data[slow_slot]):
            entered.set()
            assert gate.wait(WAIT)  # this reader's disk is very slow
        return real(fd, length, offset)

    monkeypatch.setattr(volume_mod, "_pread_exact", pread)
    slow = Background(lambda: vol.read(slow_slot).data)
    try:
        assert entered.wait(WAIT)
        # Many readers of the other slots, in several threads, all finish meanwhile.
        with ThreadPoolExecutor(8) as pool:
            others = [s for s in data if s != slow_slot] * 10
            results = list(pool.map(lambda s: (s, vol.read(s, BLOCK_SIZE, 100).data), others))
        for s, got in results:
            assert got == data[s][BLOCK_SIZE : BLOCK_SIZE + 100]
        assert vol.header(slow_slot).slot == slow_slot
        assert not slow.done.is_set()  # still stuck on its own slot
    finally:
        gate.set()
    assert slow.get() == data[slow_slot]


def test_a_header_update_blocks_only_readers_of_its_own_slot(
    vol: Volume, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = {s: payload(10_000 + s, seed=s) for s in range(4)}
    for s, d in data.items():
        vol.write(s, d)
    in_sync, gate = threading.Event(), threading.Event()
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        in_sync.set()
        assert gate.wait(WAIT)  # the disk takes its time
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    # relink writes copy A, then waits for its sync while holding the slot's lock.
    update = Background(lambda: vol.relink(1, Location(8, 88)))
    try:
        assert in_sync.wait(WAIT)
        # A reader of slot 1 sees the copies differ and waits for the update to finish...
        reader_1 = Background(lambda: vol.read(1))
        # ...while readers of every other slot go straight through.
        for _ in range(20):
            for s in (0, 2, 3):
                assert vol.read(s).data == data[s]
        assert not update.done.is_set()
        assert not reader_1.done.is_set()
    finally:
        gate.set()
    assert update.get().next == Location(8, 88)
    got = reader_1.get()
    assert got.data == data[1]
    assert got.header.next == Location(8, 88)  # it saw the finished update, not half of it


# --- writers --------------------------------------------------------------------------------------


def test_concurrent_writes_of_one_slot_one_wins(vol: Volume) -> None:
    vol.write(0, b"first")
    vol.write(1, b"soon deleted")
    allocated = vol.allocate()
    vol.mark_deleted(1)
    for slot in (5, 1, allocated):  # a free slot past the end, a 404 slot, an allocated slot
        n = 6
        barrier = threading.Barrier(n)
        payloads = [payload(50_000 + i, seed=100 * slot + i) for i in range(n)]

        def write(
            i: int,
            slot: int = slot,
            payloads: list[bytes] = payloads,
            barrier: threading.Barrier = barrier,
        ) -> str:
            barrier.wait(WAIT)
            try:
                vol.write(slot, payloads[i])
            except Conflict:
                return "conflict"
            return "ok"

        with ThreadPoolExecutor(n) as pool:
            outcomes = list(pool.map(write, range(n)))
        assert outcomes.count("ok") == 1, outcomes
        winner = outcomes.index("ok")
        assert vol.read(slot).data == payloads[winner]
    assert vol.read(0).data == b"first"
    assert vol.verify().ok


def test_concurrent_allocations_are_unique(vol: Volume) -> None:
    with ThreadPoolExecutor(8) as pool:
        batches = list(pool.map(lambda _: [vol.allocate() for _ in range(25)], range(8)))
    slots = [s for batch in batches for s in batch]
    assert sorted(slots) == list(range(200))


@dataclass
class Entry:
    slot: int
    owner: SliceOwner
    digest: str
    deleting: bool = False


def test_many_threads_writing_deleting_and_reading(vol: Volume, path: Path) -> None:
    """Writers, deleters (whose slots get reused) and readers of everyone's slices at once.

    A read may only return the exact bytes its owner wrote; it may say "gone" only for a
    slice whose deletion had started; it may never say Corrupt.
    """
    registry: list[Entry] = []
    lock = threading.Lock()
    threads, steps = 8, 30
    barrier = threading.Barrier(threads)

    def worker(n: int) -> int:
        rng = random.Random(n)
        mine: list[Entry] = []
        reads = 0
        barrier.wait(WAIT)
        for step in range(steps):
            roll = rng.random()
            if roll < 0.45 or not mine:
                size = rng.choice([1, 100, 4000, 30_000, BLOCK_SIZE + 1, 130_000])
                data = payload(size, seed=n * 1000 + step)
                owner = SliceOwner(uuid.uuid4().bytes, step)
                slot = vol.allocate()
                vol.write(slot, data, owner=owner)
                assert vol.read(slot, expect_owner=owner).data == data
                entry = Entry(slot, owner, sha(data))
                mine.append(entry)
                with lock:
                    registry.append(entry)
            elif roll < 0.6:
                entry = mine.pop(rng.randrange(len(mine)))
                entry.deleting = True
                vol.mark_deleted(entry.slot)
            else:
                with lock:
                    sample = rng.sample(registry, min(4, len(registry)))
                for entry in sample:
                    try:
                        got = vol.read(entry.slot, expect_owner=entry.owner)
                    except (SliceDeleted, NotFound):
                        assert entry.deleting, f"live slice in slot {entry.slot} not found"
                        continue
                    assert sha(got.data) == entry.digest
                    reads += 1
        return reads

    with ThreadPoolExecutor(threads) as pool:
        reads = sum(pool.map(worker, range(threads)))
    assert reads > 50
    live = [e for e in registry if not e.deleting]
    deleted = [e for e in registry if e.deleting]
    assert deleted and live
    assert vol.stats().live == len(live)
    assert vol.verify().ok
    vol.close()
    with Volume.open(path) as again:
        assert again.report.clean
        assert again.report.checkpoint_mismatch is None
        for e in live:
            assert sha(again.read(e.slot, expect_owner=e.owner).data) == e.digest
        for e in deleted:
            with pytest.raises(NotFound):
                again.read(e.slot, expect_owner=e.owner)
        assert again.verify().ok


def test_readers_during_repeated_header_updates(vol: Volume) -> None:
    data = payload(3 * BLOCK_SIZE, seed=7)
    vol.write(0, data)
    vol.write(1, b"neighbour")
    targets = [Location(1, 1), Location(2, 2), None]
    stop = threading.Event()

    def updater() -> int:
        try:
            for i in range(60):
                vol.relink(0, targets[i % 3])
        finally:
            stop.set()
        return 60

    def reader() -> int:
        n = 0
        while not stop.is_set() or n == 0:
            got = vol.read(0, BLOCK_SIZE - 5, 10)
            assert got.data == data[BLOCK_SIZE - 5 : BLOCK_SIZE + 5]
            assert got.header.next in targets
            assert vol.read(1).data == b"neighbour"
            n += 1
        return n

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(updater)] + [pool.submit(reader) for _ in range(3)]
        counts = [f.result(timeout=60) for f in futures]
    assert all(counts)
    assert vol.header(0).next == targets[59 % 3]
    assert vol.verify().ok
