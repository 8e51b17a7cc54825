"""The scrub's shell (:class:`~mydfs.storage.scrub.Scrubber`) on a real volume with a stand-in
node context and an injected clock: the waits it asks for keep the rate, a bad copy is dropped
and unconfirmed, a refetched one counts as repaired, a copy nobody else holds is unrepairable."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mydfs.storage.format import PAYLOAD_OFFSET, SliceOwner, slot_offset
from mydfs.storage.format import SlotState as Disk
from mydfs.storage.group_state import SlotInfo, SlotState
from mydfs.storage.metrics import StorageMetrics
from mydfs.storage.replica import give_up_copy
from mydfs.storage.scrub import MIB, Scrubber
from mydfs.storage.scrub_core import HEADER_BYTES
from mydfs.storage.volume import Volume

SIZES = {0: 200_000, 1: 100_000, 2: 300_000}


class Table:
    def __init__(self) -> None:
        self.records: dict[int, SlotInfo] = {}

    def read(self, fn: Callable[[Any], Any]) -> Any:
        return fn(self)

    def slots(self, state: SlotState | None = None) -> list[SlotInfo]:
        return [r for _, r in sorted(self.records.items()) if state is None or r.state is state]

    def get(self, slot: int) -> SlotInfo | None:
        return self.records.get(slot)


class Raft:
    def __init__(self) -> None:
        self.submitted: list[dict[str, Any]] = []

    def is_ready(self) -> bool:
        return True

    async def submit(self, command: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        self.submitted.append(command)
        return {"ok": True}


class Budget:
    async def charge(self, size: int, *, timeout: float, what: str) -> Any:
        return SimpleNamespace(release=lambda: None)


def record(slot: int, holders: tuple[str, ...] = ("a", "b")) -> SlotInfo:
    return SlotInfo(
        slot=slot,
        state=SlotState.LIVE,
        generation=slot + 1,
        upload_id=f"u{slot}",
        file_id="0" * 32,
        slice_index=0,
        length=SIZES[slot],
        crc32c=0,
        next=None,
        holders=holders,
        target=None,
        reserved_at_ms=0,
    )


def payload(slot: int) -> bytes:
    return bytes([slot + 1]) * SIZES[slot]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[SimpleNamespace]:
    volume = Volume.open(tmp_path / "v.dat", create=True)
    table, raft = Table(), Raft()
    for slot in SIZES:
        volume.write(slot, payload(slot), owner=SliceOwner(), generation=slot + 1)
        table.records[slot] = record(slot)

    after_read: list[Callable[[], None]] = []  # run once, right after the next disk call

    async def disk(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        while after_read:
            after_read.pop()()
        return result

    ctx = SimpleNamespace(
        volume=volume,
        raft=raft,
        group=table,
        node_id="a",
        config=SimpleNamespace(scrub_rate_mb=1.0, scrub_interval=100.0),
        metrics=StorageMetrics(),
        inflight=Budget(),
        info=table.get,
        require=lambda: (volume, raft, None),
        disk=disk,
    )
    now = [1000.0]
    dirty: list[int | None] = []
    scrubber = Scrubber(ctx, dirty.append, clock=lambda: now[0], wall=lambda: 1.7e9 + now[0])  # type: ignore[arg-type]
    try:
        yield SimpleNamespace(
            ctx=ctx,
            volume=volume,
            table=table,
            raft=raft,
            now=now,
            dirty=dirty,
            s=scrubber,
            after_read=after_read,
        )
    finally:
        volume.close()


def one_pass(n: SimpleNamespace) -> list[float]:
    """Step until a pass ended, advancing the clock by every wait asked for within the pass;
    those waits."""
    waits = []
    passes = n.s.schedule.passes
    for _ in range(100):
        wait = asyncio.run(n.s.step())
        if n.s.schedule.passes > passes:
            return waits
        waits.append(wait)
        n.now[0] += wait
    raise AssertionError("the pass did not end")


def flip(volume: Volume, slot: int, at: int) -> None:
    with open(volume.path, "r+b") as f:
        f.seek(slot_offset(slot) + PAYLOAD_OFFSET + at)
        byte = f.read(1)[0]
        f.seek(slot_offset(slot) + PAYLOAD_OFFSET + at)
        f.write(bytes([byte ^ 0x80]))


def test_a_clean_pass_reads_every_slot_at_the_rate(node: SimpleNamespace) -> None:
    waits = one_pass(node)
    read = sum(SIZES.values()) + 3 * HEADER_BYTES
    assert node.s.slots_checked == 3 and node.s.bytes_checked == read
    # The waits add up to the bytes at 1 MiB/s (the clock only moves when told to wait).
    assert sum(waits) == pytest.approx(read / MIB)
    assert node.s.corrupt_found == 0 and node.raft.submitted == []
    report = node.s.report()
    assert report["passes"] == 1 and report["last_pass_end"] == pytest.approx(1.7e9 + node.now[0])
    assert report["last_pass_seconds"] == pytest.approx(read / MIB, abs=1e-3)
    # The next pass waits for the interval from the start of this one.
    assert asyncio.run(node.s.step()) == pytest.approx(100.0 - read / MIB)
    node.now[0] += 100.0
    assert one_pass(node)


def test_a_bad_copy_is_given_up_then_counted_repaired(node: SimpleNamespace) -> None:
    flip(node.volume, 1, 99_999)
    one_pass(node)
    assert node.s.corrupt_found == 1 and node.s.report()["waiting_repair"] == [1]
    # Never served again: the copy is a 404 marker; the node left the holders; the reconciler
    # was woken for the slot.
    assert node.volume.header(1).state is Disk.DELETED
    assert node.raft.submitted == [{"op": "unconfirm", "slot": 1, "node": "a", "generation": 2}]
    assert 1 in node.dirty
    assert node.s.unrepairable == []
    # The reconciler fetches it from another holder (same generation, same bytes).
    node.volume.write(1, payload(1), owner=SliceOwner(), generation=2)
    asyncio.run(node.s.step())
    assert node.s.repairs == 1 and node.s.report()["waiting_repair"] == []
    node.now[0] += 200.0
    one_pass(node)
    assert node.s.corrupt_found == 1  # the repaired copy checks


def test_a_bad_copy_nobody_else_holds_is_unrepairable(node: SimpleNamespace) -> None:
    node.table.records[2] = record(2, holders=("a",))
    flip(node.volume, 2, 0)
    one_pass(node)
    assert node.s.unrepairable == [2]
    assert node.s.report()["unrepairable"] == [2]
    # The slice is deleted in the group: nothing left to repair or to alert on.
    node.table.records.pop(2)
    asyncio.run(node.s.step())
    assert node.s.unrepairable == [] and node.s.repairs == 0


def test_a_slot_changed_during_the_pass_is_not_judged(node: SimpleNamespace) -> None:
    flip(node.volume, 0, 5)
    flip(node.volume, 1, 5)
    asyncio.run(node.s.step())  # starts the pass over 0, 1, 2
    # Slot 0: the group reused it (a new generation) while its bad copy was being read.
    node.after_read.append(
        lambda: node.table.records.__setitem__(0, replace(record(0), generation=9))
    )
    asyncio.run(node.s.step())
    # Slot 1: deleted in the group before the scrub got to it.
    node.table.records[1] = replace(record(1), state=SlotState.DELETED, holders=())
    one_pass(node)
    assert node.s.corrupt_found == 0 and node.raft.submitted == []
    assert node.volume.header(0).state is Disk.LIVE
    assert node.volume.header(1).state is Disk.LIVE


def test_give_up_copy_leaves_a_rewritten_or_newer_copy_alone(node: SimpleNamespace) -> None:
    ctx, volume = node.ctx, node.volume
    seen = volume.header(0)
    # Rewritten since the bad read (a repair got there first): not dropped, no unconfirm.
    volume.mark_deleted(0)
    volume.write(0, payload(0), owner=SliceOwner(), generation=1)
    assert not asyncio.run(give_up_copy(ctx, volume, 0, 1, node.dirty.append, checked=seen))
    # A newer generation in the slot: not dropped either.
    assert not asyncio.run(give_up_copy(ctx, volume, 1, 1, node.dirty.append))
    assert node.raft.submitted == []
    assert volume.header(0).state is Disk.LIVE and volume.header(1).state is Disk.LIVE
    # The read path's way: dropped at once, the unconfirm goes in the background.

    async def from_a_read() -> bool:
        dropped = await give_up_copy(ctx, volume, 2, 3, node.dirty.append, wait=False)
        await asyncio.sleep(0.01)
        return dropped

    assert asyncio.run(from_a_read())
    assert volume.header(2).state is Disk.DELETED
    assert node.raft.submitted == [{"op": "unconfirm", "slot": 2, "node": "a", "generation": 3}]
    assert node.dirty == [0, 1, 2]
