"""A freed slot reused at once on the same leader: the leader's own copy of the old slice may
still be on its disk (its reconciler has not dropped it yet), and its local write of the new
slice must replace it rather than fail with "slot is in use" (which left such an upload
depending on both followers)."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import aiohttp
from cluster import (
    Cluster,
    delete_slice,
    metric,
    parse_metrics,
    payload,
    request,
    sha256,
    upload,
    wait_served,
)

from mydfs.common.checksum import crc32c


async def _push_failures(http: aiohttp.ClientSession, url: str) -> float:
    reply = await request(http, "GET", f"{url}/metrics")
    assert reply.status == 200
    return metric(
        parse_metrics(reply.body.decode()),
        "mydfs_storage_replication_total",
        kind="push",
        outcome="failed",
    )


async def _two_step(cluster: Cluster, http: aiohttp.ClientSession, data: bytes) -> dict[str, Any]:
    """Reserve, then fill: the reservation takes the lowest free slot at once (a one-request
    upload may take a slot the leader reserved ahead instead)."""
    leader = await cluster.leader()
    uid = os.urandom(16).hex()
    body = {"upload_id": uid, "length": len(data), "crc32c": crc32c(data)}
    reply = await request(http, "POST", leader.url + "/slices/reserve", data=json.dumps(body))
    assert reply.status == 201, reply
    slot, gen = reply.json()["slot"], reply.json()["generation"]
    reply = await request(
        http, "PUT", f"{leader.url}/slices/{slot}?upload={uid}&gen={gen}", data=data
    )
    assert reply.status == 201, reply
    return dict(reply.json())


async def test_a_freed_slot_reused_at_once_is_written_by_the_leader_too(
    shared_cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    leader = await shared_cluster.leader()
    failures_before = await _push_failures(http, leader.url)
    log_before = len(leader.log_text())
    reused = 0
    for round in range(4):
        # A batch of slices, all deleted at once, and as many new ones stored right away: the
        # new ones take the freed slots while the reconcilers are still dropping the old copies.
        olds = await asyncio.gather(
            *(
                upload(shared_cluster, http, payload(100_000, seed=round * 100 + i))
                for i in range(6)
            )
        )
        deletes = [
            delete_slice(http, shared_cluster, leader.url, o["slot"], o["generation"]) for o in olds
        ]
        assert all(r.status == 200 for r in await asyncio.gather(*deletes))
        datas = [payload(150_000, seed=round * 100 + 50 + i) for i in range(6)]
        news = await asyncio.gather(*(_two_step(shared_cluster, http, d) for d in datas))
        reused += len({o["slot"] for o in olds} & {n["slot"] for n in news})
        for new, data in zip(news, datas, strict=True):
            # The leader holds the new slice (written by itself or, at worst, fetched back).
            await wait_served(http, leader, new["slot"], sha256(data), timeout=30.0)
    assert reused >= 12, f"only {reused} of 24 uploads reused a freed slot"
    log = leader.log_text()[log_before:]
    assert "slot is in use" not in log, log[-3000:]
    assert await _push_failures(http, leader.url) == failures_before, log[-3000:]
    print(f"{reused} uploads reused a slot freed just before; no local write failed")
