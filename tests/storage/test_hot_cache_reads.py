"""The hot cache in the node's one local read path (``ReadResolver.read_local``) over a real
volume and a real group table: a slice read past the threshold is served from memory, with the
current header; and the cached bytes are never served once the volume or the table says
otherwise (a local 404, a delete the node has not yet been told about, a slot reused with a new
generation, a corrupt copy), whether or not the table-change callback ran."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mydfs.common.checksum import crc32c
from mydfs.common.errors import MydfsError
from mydfs.common.location import Location
from mydfs.storage.access_stats import AccessStats
from mydfs.storage.budget import MemoryBudget
from mydfs.storage.context import LockedGroup
from mydfs.storage.format import SliceOwner
from mydfs.storage.group_commands import Confirm, Delete, Put, Reserve, Seal
from mydfs.storage.group_state import GroupState, SlotInfo, SlotState
from mydfs.storage.hot_cache import HotCache
from mydfs.storage.inflight import InFlight
from mydfs.storage.metrics import StorageMetrics
from mydfs.storage.reads import ReadResolver
from mydfs.storage.volume import Volume

GROUP = 1
FILE_A, FILE_B = "0a" * 16, "0b" * 16
THRESHOLD = 2


class Ctx:
    """What :meth:`ReadResolver.read_local` uses of a node."""

    def __init__(self, volume: Volume) -> None:
        self.group_id = GROUP
        self.node_id = "n1"
        self.volume = volume
        self.state = GroupState(GROUP)
        self.group = LockedGroup(self.state, lambda slot, bytes_changed: None)
        self.metrics = StorageMetrics()
        self.inflight = InFlight(MemoryBudget(64 << 20, 16 << 20), self.metrics)
        self.hot = HotCache(THRESHOLD, 1 << 20)
        self.access = AccessStats(0.0)

    def require(self) -> tuple[Volume, Any, Any]:
        return self.volume, object(), object()

    def info(self, slot: int) -> SlotInfo | None:
        return self.group.read(lambda g: g.get(slot))

    async def disk(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    def put(self, file_id: str, upload: str, data: bytes) -> SlotInfo:
        """A sealed one-slice file in the table and its bytes in the volume."""
        got = self.state.apply(
            Reserve(
                upload_id=upload,
                file_id=file_id,
                slice_index=0,
                length=len(data),
                crc32c=crc32c(data),
                now_ms=1,
                next=None,
            ).to_dict()
        )
        slot, generation = int(got["slot"]), int(got["generation"])
        owner = SliceOwner(bytes.fromhex(file_id), 0)
        self.volume.write(slot, data, owner=owner, generation=generation)
        self.state.apply(
            Seal(slot=slot, upload_id=upload, generation=generation, holders=("n1", "n2")).to_dict()
        )
        info = self.info(slot)
        assert info is not None and info.state == SlotState.LIVE, info
        return info


@pytest.fixture
def ctx(tmp_path: Path) -> Any:
    volume = Volume.open(tmp_path / "v.dat", create=True, node_id="n1", group_id=GROUP)
    try:
        yield Ctx(volume)
    finally:
        volume.close()


def resolver(ctx: Ctx) -> ReadResolver:
    return ReadResolver(ctx, lambda slot, gen: True, lambda slot: None)  # type: ignore[arg-type]


def read(ctx: Ctx, info: SlotInfo, offset: int = 0, length: int | None = None) -> bytes:
    return asyncio.run(resolver(ctx).read_local(info, offset, length)).data


def hits(ctx: Ctx) -> float:
    return ctx.metrics.hot_hits._value.get()


def make_hot(ctx: Ctx, info: SlotInfo, data: bytes) -> None:
    for _ in range(THRESHOLD):
        assert read(ctx, info) == data
    assert (info.slot, info.generation) in ctx.hot
    assert read(ctx, info) == data and hits(ctx) == 1


def test_hot_slices_come_from_memory_with_their_current_header(ctx: Ctx) -> None:
    data = bytes(range(256)) * 4
    info = ctx.put(FILE_A, "u1", data)
    read(ctx, info, 10, 5)  # a range counts as a read; the admitting read takes it all
    assert read(ctx, info, 100, 20) == data[100:120]
    assert ctx.hot.bytes == len(data)
    assert read(ctx, info) == data and read(ctx, info, 1000) == data[1000:]
    assert hits(ctx) == 2
    ctx.volume.relink(info.slot, Location(GROUP, 42))  # a header-only change
    got = asyncio.run(resolver(ctx).read_local(info))
    assert got.data == data and got.header.next == Location(GROUP, 42)
    with pytest.raises(MydfsError):
        read(ctx, info, 2000, 10)  # a bad range is refused as from the disk


def test_a_local_404_is_never_served_from_memory(ctx: Ctx) -> None:
    data = b"old" * 100
    info = ctx.put(FILE_A, "u1", data)
    make_hot(ctx, info, data)
    ctx.volume.mark_deleted(info.slot)  # the node dropped its copy (e.g. found it corrupt)
    with pytest.raises(MydfsError):
        read(ctx, info)
    assert len(ctx.hot) == 0


def test_a_delete_or_reuse_the_callback_has_not_reported_yet(ctx: Ctx) -> None:
    old, new = b"old" * 100, b"new" * 90
    info = ctx.put(FILE_A, "u1", old)
    make_hot(ctx, info, old)
    ctx.state.apply(Delete(slot=info.slot, generation=info.generation).to_dict())
    # The table says 404 and the cache was not told: the entry is dropped, not served (a read
    # resolved before the delete goes to the disk, as without the cache).
    before = hits(ctx)
    read(ctx, info)
    assert len(ctx.hot) == 0 and hits(ctx) == before
    ctx.volume.mark_deleted(info.slot)  # the node applies the delete to its volume
    with pytest.raises(MydfsError):
        read(ctx, info)
    again = ctx.put(FILE_B, "u2", new)  # the same slot, a new generation
    assert again.slot == info.slot and again.generation > info.generation
    assert read(ctx, again) == new
    with pytest.raises(MydfsError):
        read(ctx, info)  # the old generation: refused, never the old bytes
    make_hot_again = [read(ctx, again) for _ in range(THRESHOLD)]
    assert make_hot_again == [new] * THRESHOLD
    assert ctx.hot.keys() == [(again.slot, again.generation)]


def test_a_table_change_drops_the_entry(ctx: Ctx) -> None:
    data = b"x" * 500
    info = ctx.put(FILE_A, "u1", data)
    make_hot(ctx, info, data)
    resolver(ctx).forget(info.slot)
    assert len(ctx.hot) == 0 and ctx.hot.bytes == 0
    make_hot_again = [read(ctx, info) for _ in range(THRESHOLD + 1)]
    assert make_hot_again == [data] * (THRESHOLD + 1)
    resolver(ctx).forget(None)
    assert len(ctx.hot) == 0


def test_an_inline_slice_is_served_from_the_table_then_the_cache_never_after_a_delete(
    ctx: Ctx,
) -> None:
    """An inline upload (``put``) not in the volume yet is read from the table's copy, counted
    for the hot cache, and cached; the cached copy stays good while only holders change (the
    confirms) and is never served once the slice is deleted."""
    data = b"inline bytes " * 50
    got = ctx.state.apply(
        Put.of(
            data,
            upload_id="i1",
            file_id=FILE_A,
            slice_index=0,
            length=len(data),
            crc32c=crc32c(data),
            now_ms=1,
            next=None,
        ).to_dict()
    )
    info = ctx.info(int(got["slot"]))
    assert info is not None and info.state == SlotState.LIVE and not info.holders
    for _ in range(THRESHOLD):
        assert read(ctx, info) == data  # from the table: the volume has no copy
    assert (info.slot, info.generation) in ctx.hot
    assert read(ctx, info, 13, 5) == data[13:18] and hits(ctx) == 1
    for node in ("n2", "n3"):  # the volumes confirm their copies: the table lets go
        ctx.state.apply(Confirm(slot=info.slot, node=node, generation=info.generation).to_dict())
    assert ctx.state.inline(info.slot, info.generation) is None
    owner = SliceOwner(bytes.fromhex(FILE_A), 0)
    ctx.volume.write(info.slot, data, owner=owner, generation=info.generation)
    assert read(ctx, info) == data and hits(ctx) == 2  # the volume's header vouches now
    ctx.state.apply(Delete(slot=info.slot, generation=info.generation).to_dict())
    before = hits(ctx)
    read(ctx, info)  # resolved before the delete: the disk answers, never the cache
    assert len(ctx.hot) == 0 and hits(ctx) == before
    ctx.volume.mark_deleted(info.slot)
    with pytest.raises(MydfsError):
        read(ctx, info)
