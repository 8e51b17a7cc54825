"""A fill sent again while the first one is still being written (the SDK's retry after its
request timed out, or after it gave up on a silent leader that came back): the leader waits for
the write under way and answers its outcome, never 409 "still in progress"."""

from __future__ import annotations

import asyncio
import os

import aiohttp
from cluster import SLICE_CAPACITY, Cluster, payload, request
from helpers import grant_headers

from mydfs.common.checksum import crc32c


async def test_the_same_fill_sent_three_times_at_once_is_stored_once(
    shared_cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    leader = await shared_cluster.leader()
    for round in range(3):
        data = payload(SLICE_CAPACITY, seed=700 + round)
        upload_id = os.urandom(16).hex()
        file_id = os.urandom(16).hex()
        grant = grant_headers(shared_cluster.secret, "write", file_id)
        reserve = {
            "upload_id": upload_id,
            "file_id": file_id,
            "index": 0,
            "length": len(data),
            "crc32c": crc32c(data),
        }
        reply = await request(
            http, "POST", f"{leader.url}/slices/reserve", json=reserve, headers=grant
        )
        assert reply.status in (200, 201), reply
        slot, gen = reply.json()["slot"], reply.json()["generation"]
        url = f"{leader.url}/slices/{slot}?upload={upload_id}&gen={gen}&next=none"
        headers = {"X-Mydfs-Crc32c": str(crc32c(data)), **grant}
        replies = await asyncio.gather(
            *(request(http, "PUT", url, data=data, headers=headers) for _ in range(3))
        )
        assert all(r.status in (200, 201) for r in replies), replies
        bodies = [r.json() for r in replies]
        assert {(b["slot"], b["generation"]) for b in bodies} == {(slot, gen)}
        assert sorted(b["duplicate"] for b in bodies) == [False, True, True], bodies
