"""Nodes that come back: a follower killed and restarted, and one whose data folder was wiped.

Both catch up on their own (commands through Raft, payloads fetched from holders) until every
node serves the same bytes for every slot; then every node is stopped cleanly and each volume
is checked offline with ``mydfs-storage verify`` and ``mydfs-storage stat``.
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import pytest
from cluster import (
    SLICE_CAPACITY,
    Cluster,
    StorageNode,
    delete_slice,
    get_slice,
    payload,
    request,
    served_digests,
    sha256,
    upload,
    wait_served,
)
from helpers import wait_until

pytestmark = pytest.mark.timeout(240)


def _uid(tag: str) -> str:
    return f"{tag}-{os.urandom(6).hex()}"


async def _upload_many(
    c: Cluster, http: aiohttp.ClientSession, sizes: list[int], seed: int
) -> list[tuple[dict[str, Any], bytes]]:
    out = []
    for i, size in enumerate(sizes):
        data = payload(size, seed=seed + i)
        out.append((await upload(c, http, data, upload_id=_uid(f"s{seed}-{i}")), data))
    return out


async def _caught_up(
    c: Cluster,
    http: aiohttp.ClientSession,
    node: StorageNode,
    live: list[tuple[dict[str, Any], bytes]],
    deleted: list[int] = (),  # type: ignore[assignment]
) -> None:
    """Wait until ``node`` serves every live slice itself and has dropped the deleted ones."""
    for body, data in live:
        got = await wait_served(http, node, body["slot"], sha256(data), timeout=60)
        assert got.body == data
    for slot in deleted:

        async def gone(slot: int = slot) -> bool:
            reply = await get_slice(http, node.url, slot)
            return reply.status == 404

        await wait_until(gone, timeout=30, what=f"{node.node_id} to answer 404 for slot {slot}")

    async def volume_matches_table() -> bool:
        st = await c.status(node)
        return bool(st and st["volume"]["live"] == st["group"]["live"] == len(live))

    await wait_until(volume_matches_table, timeout=30, what=f"{node.node_id}'s volume to match")


async def _reserved_ahead(http: aiohttp.ClientSession, node: StorageNode, slot: int) -> bool:
    reply = await request(http, "GET", f"{node.url}/slices/{slot}/meta", timeout=5)
    info = reply.json() if reply.status == 200 else {}
    return info.get("state") == "pending" and info.get("upload_id", "").startswith("pool.")


async def _assert_identical_everywhere(c: Cluster, http: aiohttp.ClientSession) -> None:
    """Same bytes (or the same refusal) for every slot from every node; then stop all nodes
    cleanly and check every volume offline."""
    leader = await c.leader()
    st = await c.status(leader)
    assert st is not None
    end, live = st["group"]["end"], st["group"]["live"]
    # Slots the leader reserved ahead hold no slice yet: a follower sends their readers to the
    # leader (307), as for any pending slot, where the leader answers 404.
    slots = [s for s in range(end) if not await _reserved_ahead(http, leader, s)]
    digests = {n.node_id: await served_digests(http, n, slots) for n in c.nodes()}
    reference = digests[leader.node_id]
    for node_id, got in digests.items():
        assert got == reference, f"{node_id} serves different bytes than {leader.node_id}"
    codes = c.stop_all()
    assert all(code == 0 for code in codes.values()), codes
    volumes = {}
    for node in c.nodes():
        done = c.verify_volume(node)
        assert done.returncode == 0, (node.node_id, done.stdout, done.stderr)
        assert c.stat_volume(node)["stats"]["live"] == live, node.node_id
        volumes[node.node_id] = c.volume_digest(node)
    # The volumes themselves hold the same live slices: same slots, generations and bytes.
    first = volumes[leader.node_id]
    assert len(first) == live
    for node_id, digest in volumes.items():
        assert digest == first, f"{node_id}'s volume differs from {leader.node_id}'s"
    for slot, (_gen, _length, sha) in first.items():
        assert reference[slot] == sha


async def test_restarted_follower_catches_up(
    make_cluster: Any, http: aiohttp.ClientSession
) -> None:
    c: Cluster = make_cluster(name="restart")
    await c.start()
    leader = await c.leader()
    victim = c.followers(leader)[0]
    before = await _upload_many(c, http, [SLICE_CAPACITY, 65_536, 500_000, 1 << 20], seed=100)
    for body, data in before:
        await wait_served(http, victim, body["slot"], sha256(data))

    c.kill(victim)
    # While it is down: more uploads (the other two carry them) and a delete.
    during = await _upload_many(c, http, [SLICE_CAPACITY, 1, 250_000, 70_000, 1 << 20], seed=200)
    gone_slot, gone_gen = before[1][0]["slot"], before[1][0]["generation"]
    reply = await delete_slice(http, c, leader.url, gone_slot, gone_gen)
    assert reply.status == 200, reply
    live = [x for x in before if x[0]["slot"] != gone_slot] + during

    await c.restart(victim)
    await _caught_up(c, http, victim, live, deleted=[gone_slot])
    await _assert_identical_everywhere(c, http)


async def test_wiped_follower_catches_up(make_cluster: Any, http: aiohttp.ClientSession) -> None:
    c: Cluster = make_cluster(name="wipe")
    await c.start()
    leader = await c.leader()
    victim = c.followers(leader)[0]
    live = await _upload_many(c, http, [SLICE_CAPACITY, 100_000, 1 << 20, 3_000, 400_000], seed=300)
    for body, data in live:
        await wait_served(http, victim, body["slot"], sha256(data))

    c.kill(victim)
    c.wipe(victim)
    assert not victim.data_dir.exists()
    live += await _upload_many(c, http, [SLICE_CAPACITY, 90_000], seed=400)

    await c.restart(victim)  # an empty journal and an empty volume
    await _caught_up(c, http, victim, live)
    await _assert_identical_everywhere(c, http)
