"""A healthy storage group of 3 real processes: uploads through the leader, byte-identical
reads from every replica, 307 from followers, many concurrent uploaders, /status and /metrics.

One cluster of two groups serves the whole module (``shared_cluster``); no test here stops
a node.
"""

from __future__ import annotations

import asyncio
import os
import random

import aiohttp
import pytest
from cluster import (
    SLICE_CAPACITY,
    Cluster,
    delete_slice,
    get_slice,
    metric,
    parse_metrics,
    payload,
    put_slice,
    request,
    sha256,
    upload,
    wait_served,
)

from mydfs.common.checksum import crc32c

pytestmark = pytest.mark.timeout(180)

#: The module's cluster has two groups; most tests use group 1, one checks they are separate.
CLUSTER_GROUPS = 2

SIZES = [1, 65_536, 300_001, 1 << 20, SLICE_CAPACITY]
INLINE_MAX = 4096  # the storage nodes' default inline_max


def _uid(tag: str) -> str:
    return f"{tag}-{os.urandom(6).hex()}"


async def _group_end(cluster: Cluster) -> int:
    leader = await cluster.leader()
    st = await cluster.status(leader)
    assert st is not None
    return int(st["group"]["end"])


async def test_upload_through_leader_reads_identical_from_every_replica(
    shared_cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    c = shared_cluster
    leader = await c.leader()
    node_ids = {n.node_id for n in c.nodes(1)}
    stored = []
    for i, size in enumerate(SIZES):
        data = payload(size, seed=1000 + i)
        uid = _uid(f"repl{i}")
        reply = await put_slice(http, leader.url, data, upload_id=uid)
        assert reply.status == 201, reply
        body = reply.json()
        assert body["group"] == 1
        assert body["length"] == size
        assert body["crc32c"] == crc32c(data)
        assert body["upload_id"] == uid
        assert body["duplicate"] is False
        if size <= INLINE_MAX:  # in the journals of a majority; the volumes copy it after
            assert body["inline"] is True and set(body["holders"]) <= node_ids, body
        else:
            assert body["inline"] is False, body
            assert len(body["holders"]) >= 2 and set(body["holders"]) <= node_ids, body
        stored.append((body, data))
    assert len({b["slot"] for b, _ in stored}) == len(stored), "every slice got its own slot"

    # Every replica ends up serving every slice itself (no redirect), byte for byte.
    for body, data in stored:
        for node in c.nodes(1):
            got = await wait_served(http, node, body["slot"], sha256(data))
            assert got.body == data
            assert got.headers["X-Mydfs-Length"] == str(len(data))
            assert got.headers["X-Mydfs-Generation"] == str(body["generation"])
            assert got.headers["X-Mydfs-Crc32c"] == str(body["crc32c"])
            assert got.headers["X-Mydfs-Group"] == "1"

    # One Range from a follower: 206 with exactly those bytes.
    body, data = stored[3]
    follower = c.followers(leader)[0]
    got = await get_slice(http, follower.url, body["slot"], headers={"Range": "bytes=1000-70999"})
    assert got.status == 206, got
    assert got.body == data[1000:71000]
    assert got.headers["Content-Range"] == f"bytes 1000-70999/{len(data)}"

    # A retry with the same upload id is answered from the table: 200, duplicate, same slot.
    body, data = stored[1]
    again = await put_slice(http, leader.url, data, upload_id=body["upload_id"])
    assert again.status == 200, again
    dup = again.json()
    assert dup["duplicate"] is True
    assert (dup["slot"], dup["generation"]) == (body["slot"], body["generation"])

    # Every node's replicated table agrees, and the third holder confirmed every slice.
    async def all_confirmed() -> bool:
        for slot in (b["slot"] for b, _ in stored):
            for node in c.nodes(1):
                meta = await request(http, "GET", f"{node.url}/slices/{slot}/meta", timeout=5)
                if meta.status != 200:
                    return False
                info = meta.json()
                if info["state"] != "live" or sorted(info["holders"]) != sorted(node_ids):
                    return False
                if not info["held_here"]:
                    return False
        return True

    from helpers import wait_until

    await wait_until(all_confirmed, timeout=30, what="all 3 nodes confirmed as holders")


async def test_follower_answers_writes_with_307_to_the_leader(
    shared_cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    c = shared_cluster
    leader = await c.leader()
    end_before = await _group_end(c)
    data = payload(70_000, seed=7)
    uid = _uid("redir")
    for follower in c.followers(leader):
        reply = await put_slice(http, follower.url, data, upload_id=uid)
        assert reply.status == 307, reply
        assert reply.headers["Location"] == f"{leader.url}/slices?upload={uid}"
        # Deletes are writes too.
        reply = await delete_slice(http, c, follower.url, 0, 1)
        assert reply.status == 307, reply
        assert reply.headers["Location"].startswith(f"{leader.url}/internal/slices/0?")
    assert await _group_end(c) == end_before, "a redirected write reserved nothing"

    # Following the redirect stores the slice exactly once.
    location = (await put_slice(http, c.followers(leader)[0].url, data, upload_id=uid)).headers[
        "Location"
    ]
    reply = await request(http, "PUT", location, data=data)
    assert reply.status == 201, reply
    assert reply.json()["upload_id"] == uid
    for node in c.nodes(1):
        await wait_served(http, node, reply.json()["slot"], sha256(data))


async def test_many_concurrent_uploaders_all_readable_everywhere(
    shared_cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    c = shared_cluster
    leader = await c.leader()
    tasks, per_task = 16, 4
    rng = random.Random(42)
    plans = [
        [payload(rng.randint(1, 256 * 1024), seed=10_000 + t * 100 + k) for k in range(per_task)]
        for t in range(tasks)
    ]

    async def uploader(t: int) -> list[tuple[dict[str, object], bytes]]:
        out = []
        for k, data in enumerate(plans[t]):
            body = await upload(c, http, data, upload_id=_uid(f"conc{t}-{k}"), base=leader.url)
            assert body["length"] == len(data) and body["crc32c"] == crc32c(data)
            out.append((body, data))
        return out

    results = [r for chunk in await asyncio.gather(*map(uploader, range(tasks))) for r in chunk]
    assert len(results) == tasks * per_task
    slots = [int(b["slot"]) for b, _ in results]  # type: ignore[call-overload]
    assert len(set(slots)) == len(slots), "two uploads got the same slot"

    async def check(node_index: int) -> None:
        node = c.nodes(1)[node_index]
        for body, data in results:
            got = await wait_served(http, node, int(body["slot"]), sha256(data))  # type: ignore[call-overload]
            assert got.body == data

    await asyncio.gather(*(check(i) for i in range(3)))


async def test_status_and_metrics(shared_cluster: Cluster, http: aiohttp.ClientSession) -> None:
    c = shared_cluster
    leader = await c.leader()
    # at least one sealed upload, so the slot and upload counters are non-zero
    reply = await put_slice(http, leader.url, payload(4096, seed=99), upload_id=_uid("metrics"))
    assert reply.status == 201, reply

    statuses = {n.node_id: await c.status(n) for n in c.nodes(1)}
    for node in c.nodes(1):
        st = statuses[node.node_id]
        assert st is not None
        assert st["node_id"] == node.node_id and st["group_id"] == 1
        assert st["role"] == ("leader" if node is leader else "follower")
        assert st["leader"] == leader.url
        assert st["volume"] is not None and st["group"]["live"] >= 1

    for node in c.nodes(1):
        reply = await request(http, "GET", node.url + "/metrics", timeout=10)
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain"), reply.headers
        samples = parse_metrics(reply.body.decode())
        role = "leader" if node is leader else "follower"
        assert metric(samples, "mydfs_storage_raft_role", role=role) == 1
        assert metric(samples, "mydfs_storage_raft_role") == 1
        assert metric(samples, "mydfs_storage_raft_term") >= 1
        assert metric(samples, "mydfs_storage_raft_commit_index") >= 1
        assert metric(samples, "mydfs_storage_raft_last_applied") >= 1
        assert metric(samples, "mydfs_storage_slots", view="group", state="live") >= 1
        assert metric(samples, "mydfs_storage_live_bytes") >= 4096
        assert metric(samples, "mydfs_storage_http_requests_total") >= 1
    samples = parse_metrics(
        (await request(http, "GET", leader.url + "/metrics", timeout=10)).body.decode()
    )
    assert metric(samples, "mydfs_storage_uploads_total", outcome="ok") >= 1
    assert (
        metric(
            samples,
            "mydfs_storage_http_requests_total",
            route="/slices",
            method="PUT",
            status="201",
        )
        >= 1
    )


async def test_two_groups_are_independent(
    shared_cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    c = shared_cluster
    leaders = {g: await c.leader(g) for g in (1, 2)}
    assert leaders[1].node_id.startswith("g1") and leaders[2].node_id.startswith("g2")
    stored = {}
    for g in (1, 2):
        data = payload(90_000 + g, seed=3000 + g)
        body = await upload(c, http, data, group_id=g)
        assert body["group"] == g
        stored[g] = (body, data)
    for g in (1, 2):
        body, data = stored[g]
        for node in c.nodes(g):
            got = await wait_served(http, node, body["slot"], sha256(data))
            assert got.headers["X-Mydfs-Group"] == str(g)
    # The groups keep separate tables: group 2's nodes never heard of group 1's writes.
    st1 = await c.status(leaders[1])
    st2 = await c.status(leaders[2])
    assert st1 is not None and st2 is not None
    assert st2["group"]["live"] == 1 < st1["group"]["live"]
    # A follower of one group redirects writes to its own group's leader.
    follower = c.followers(leaders[2])[0]
    reply = await put_slice(http, follower.url, b"x", upload_id=_uid("g2"))
    assert reply.status == 307 and reply.headers["Location"].startswith(leaders[2].url)
