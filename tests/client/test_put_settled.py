"""A put whose reservations are settled away under it (a leader that aborts reservations left
pending too long, on a loaded machine), against the in-process fake (``fake_edit_cluster.py``):
the put still stores the file with a whole chain.

The case found by ``mydfs bench`` (large write N=16, 2026-12-02): slice 0's reservation is
settled away, slice 1 is reserved into that very slot (lowest free first), then slice 1's is
settled away too and slice 0, reserved again, gets the slot slice 1 had: its fill must not
point it at itself (refused ``self_link``, which failed the put)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from fake_edit_cluster import FakeGroup, start_fake

from mydfs.client import AsyncClient
from mydfs.common.slices import PAYLOAD_CAPACITY as CAP


async def test_a_slice_reserved_again_into_its_successors_old_slot() -> None:
    tracker, servers = await start_fake(1)
    group = tracker.groups[0]
    steps: list[str] = []
    refilled = asyncio.Event()

    async def interleave(g: FakeGroup, upload: str, body: dict[str, Any] | None) -> None:
        first, second = upload[:-1] + "0", upload[:-1] + "1"
        if body is not None and body["index"] == 1 and not steps:
            steps.append(f"slice 0 settled from slot {g.settle(first)}")
        elif body is not None and body["index"] == 0 and len(steps) == 2:
            steps.append("slice 0 reserved again")
        elif body is None and upload.endswith(".0") and len(steps) == 1:
            steps.append(f"slice 1 settled from slot {g.settle(second)}")
        elif body is None and upload.endswith(".0") and len(steps) == 3:
            refilled.set()
        elif body is None and upload.endswith(".1") and not refilled.is_set():
            await asyncio.wait_for(refilled.wait(), 10)  # slice 1 fills after slice 0's retry

    group.hooks.append(interleave)
    data = os.urandom(CAP + 1000)
    try:
        async with AsyncClient(tracker.url, deadline=10.0) as c:
            info = await c.put("/settled.bin", data)
        assert steps == [
            "slice 0 settled from slot 1",
            "slice 1 settled from slot 1",
            "slice 0 reserved again",
        ]
        head = group.slots[info.head.slot] if info.head else None
        assert head is not None and head.data == data[:CAP] and info.head.slot == 1
        assert head.next is not None
        tail = group.slots[head.next[1]]
        assert tail.data == data[CAP:] and tail.next is None and tail.state == "live"
    finally:
        for server in servers:
            await server.close()
