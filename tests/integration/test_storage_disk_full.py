"""A storage node whose whole data folder (volume + Raft journal and snapshot) fills up.

Each test puts one node's data folder on a small tmpfs, fills it to the last block with a
ballast file, and checks that the node (leader or follower) keeps running (no SIGBUS: the
process is alive and answers /health), refuses with 507 what it cannot store, keeps serving the
slices it holds, and, once the tmpfs is resized, catches up on its own and accepts writes again
with every acknowledged slice intact on every node.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cluster import (
    SLICE_CAPACITY,
    Cluster,
    StorageNode,
    get_slice,
    payload,
    put_slice,
    request,
    sha256,
    upload,
    wait_served,
)
from diskfill import fill
from helpers import wait_until

from mydfs.common.auth import AUTH_HEADER, sign
from mydfs.common.checksum import crc32c

pytestmark = pytest.mark.timeout(300)

Stored = list[tuple[dict[str, Any], bytes]]


def _uid(tag: str) -> str:
    return f"{tag}-{os.urandom(6).hex()}"


async def _alive(c: Cluster, node: StorageNode) -> dict[str, Any]:
    """The node's process runs and answers /health and /status."""
    assert node.running, f"{node.node_id} died:\n{node.log_tail(40)}"
    assert node.get_json("/health", timeout=5.0) is not None, (
        f"{node.node_id} does not answer /health"
    )
    st = await c.status(node, timeout=5.0)
    assert st is not None, f"{node.node_id} does not answer /status"
    assert "SIGBUS" not in node.log_text()
    return st


async def _refused_push(
    c: Cluster, http: aiohttp.ClientSession, node: StorageNode, body: dict[str, Any], data: bytes
) -> None:
    """A correctly signed replica push of a slice the node lacks: 507 disk_full."""
    path = (
        f"/internal/slices/{body['slot']}?gen={body['generation']}&file={'0' * 32}"
        f"&index=0&next=none&crc={crc32c(data)}"
    )
    reply = await request(
        http, "PUT", node.url + path, data=data, headers={AUTH_HEADER: sign(c.secret, "PUT", path)}
    )
    assert reply.status == 507, reply
    assert reply.json()["error"] == "disk_full", reply.json()
    assert reply.headers.get("Retry-After"), reply.headers


async def _journal_refusals(c: Cluster, node: StorageNode) -> int:
    """Entries the node's Raft journal refused, plus commands it refused as a full leader."""
    st = await c.status(node, timeout=5.0)
    raft = (st or {}).get("raft") or {}
    return int(raft.get("journal_appends_refused") or 0) + int(
        raft.get("commands_refused_disk_full") or 0
    )


async def _everything_intact(c: Cluster, http: aiohttp.ClientSession, stored: Stored) -> None:
    """Every node serves every acknowledged slice itself; offline, every volume verifies."""
    for node in c.nodes():
        for body, data in stored:
            got = await wait_served(http, node, body["slot"], sha256(data), timeout=90)
            assert got.body == data
    c.stop_all()
    expected = {
        body["slot"]: (body["generation"], len(data), sha256(data)) for body, data in stored
    }
    for node in c.nodes():
        done = c.verify_volume(node)
        assert done.returncode == 0, (node.node_id, done.stdout, done.stderr)
        assert c.volume_digest(node) == expected, node.node_id


async def test_follower_data_dir_full_then_space_returns(
    make_cluster: Any, http: aiohttp.ClientSession, tmpfs_available: None
) -> None:
    c: Cluster = make_cluster(name="df-follower")
    a, b, full = c.nodes()
    disk = c.mount_tmpfs(c.root / "small-disk", "24m")
    full.data_dir = disk / "data"  # the volume and the Raft journal/snapshot
    await c.start([a, b])
    leader = await c.leader()
    await c.start([full], wait_leader=False)

    async def following() -> bool:
        st = await c.status(full)
        return bool(st and st["leader"] == leader.url and st["raft"].get("ready"))

    await wait_until(following, timeout=30, what=f"{full.node_id} to follow {leader.node_id}")

    stored: Stored = []
    for i in range(2):  # while there is space: the small disk holds these
        data = payload(SLICE_CAPACITY, seed=500 + i)
        stored.append((await upload(c, http, data, upload_id=_uid(f"early{i}")), data))
    for body, data in stored:
        await wait_served(http, full, body["slot"], sha256(data))

    ballast = fill(disk)
    # The group carries on with the two other nodes; the full one refuses to store.
    for i in range(4):
        data = payload(SLICE_CAPACITY if i % 2 else 70_000, seed=600 + i)
        stored.append((await upload(c, http, data, upload_id=_uid(f"late{i}")), data))

    # Small uploads until the Raft log outgrows what the full node's journal had allocated.
    for i in range(400):
        if await _journal_refusals(c, full) >= 1:
            break
        data = payload(2000, seed=1000 + i)
        stored.append((await upload(c, http, data, upload_id=_uid(f"small{i}")), data))
    else:
        raise AssertionError("the full node's journal never refused an entry")
    st = await _alive(c, full)
    assert st["role"] == "follower", st["role"]
    for body, data in stored[:2]:  # it keeps serving what it holds
        reply = await get_slice(http, full.url, body["slot"])
        assert reply.status == 200 and reply.body == data, reply
    body, data = stored[-1]
    await _refused_push(c, http, full, body, data)

    # Space returns: the node catches up on its own and takes writes again.
    Cluster.resize_tmpfs(disk, "120m")
    for body, data in stored:
        await wait_served(http, full, body["slot"], sha256(data), timeout=90)
    for i in range(2):
        data = payload(SLICE_CAPACITY, seed=700 + i)
        stored.append((await upload(c, http, data, upload_id=_uid(f"after{i}")), data))
    await _alive(c, full)
    ballast.unlink()
    await _everything_intact(c, http, stored)


async def test_leader_data_dir_full_then_space_returns(
    make_cluster: Any, http: aiohttp.ClientSession, tmpfs_available: None
) -> None:
    c: Cluster = make_cluster(name="df-leader")
    disks: dict[str, Path] = {}
    for node in c.nodes():
        disks[node.node_id] = c.mount_tmpfs(c.root / f"disk-{node.node_id}", "40m")
        node.data_dir = disks[node.node_id] / "data"
    await c.start()
    full = await c.leader()

    stored: Stored = []
    for i in range(2):
        data = payload(SLICE_CAPACITY, seed=800 + i)
        stored.append((await upload(c, http, data, upload_id=_uid(f"early{i}")), data))
    for body, data in stored:
        await wait_served(http, full, body["slot"], sha256(data))

    ballast = fill(disks[full.node_id])
    # Uploads sent to the full leader: it refuses what it cannot log (507 disk_full) and hands
    # leadership to a node with space (then it redirects, 307, or answers 503 meanwhile).
    data = payload(SLICE_CAPACITY, seed=900)
    uid = _uid("while-full")
    answers: list[int] = []

    async def leadership_moved() -> bool:
        reply = await put_slice(http, full.url, data, upload_id=uid, timeout=30)
        answers.append(reply.status)
        if reply.status == 507:
            assert reply.json()["error"] == "disk_full", reply.json()
        else:
            assert reply.status in (200, 201, 307, 503, 504, 409), reply
        leader = c.leader_now(1)
        return leader is not None and leader is not full

    await wait_until(leadership_moved, timeout=60, what="leadership to leave the full node")
    assert 507 in answers, answers
    stored.append((await upload(c, http, data, upload_id=uid), data))  # the same upload id
    for i in range(3):
        more = payload(SLICE_CAPACITY if i % 2 else 90_000, seed=910 + i)
        stored.append((await upload(c, http, more, upload_id=_uid(f"late{i}")), more))

    st = await _alive(c, full)
    assert st["role"] == "follower", st["role"]

    async def journal_refused() -> bool:
        return await _journal_refusals(c, full) >= 1

    await wait_until(journal_refused, timeout=15, what="the full node's refusals to show")
    for body, slice_data in stored[:2]:
        reply = await get_slice(http, full.url, body["slot"])
        assert reply.status == 200 and reply.body == slice_data, reply
    body, slice_data = stored[-1]
    await _refused_push(c, http, full, body, slice_data)

    # Space returns: the former leader catches up on its own; the group takes writes.
    Cluster.resize_tmpfs(disks[full.node_id], "120m")
    for body, slice_data in stored:
        await wait_served(http, full, body["slot"], sha256(slice_data), timeout=90)
    more = payload(SLICE_CAPACITY, seed=990)
    stored.append((await upload(c, http, more, upload_id=_uid("after")), more))
    await _alive(c, full)
    ballast.unlink()
    await _everything_intact(c, http, stored)
