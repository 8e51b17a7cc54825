"""A 3-node in-process Raft group whose leader's disk fills up, then gets space back.

Each node's data folder is its own small tmpfs. The full leader must not die (no SIGBUS, no
fatal), must refuse what it cannot log with ``DiskFull`` and hand leadership over; the two other
nodes keep committing; once space returns the full node catches up with every committed entry.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from raft_harness import InprocCluster, free_ports, wait_until

from mydfs.common.errors import DiskFull, NotLeader, OutcomeUnknown, Unavailable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from cluster import Cluster
from diskfill import fill, tmpfs


@pytest.fixture
async def tmpfs_cluster(scratch_dir: Path) -> AsyncIterator[InprocCluster]:
    ports = free_ports(6)
    addresses = [f"127.0.0.1:{p}" for p in ports[:3]]
    urls = {a: f"http://127.0.0.1:{p}" for a, p in zip(addresses, ports[3:], strict=True)}
    with contextlib.ExitStack() as disks:
        for i in range(3):
            disks.enter_context(tmpfs(scratch_dir / f"node{i}", "2m"))
        cluster = InprocCluster(scratch_dir, addresses, urls)
        try:
            await cluster.start()
            yield cluster
        finally:
            await cluster.close()


async def test_full_leader_refuses_hands_over_and_catches_up(
    tmpfs_cluster: InprocCluster,
) -> None:
    c = tmpfs_cluster
    leader = await c.leader()
    for i in range(10):
        await leader.submit({"op": "set", "k": f"k{i}", "v": i})
    full_index = c.nodes.index(leader)
    disk = c.root / f"node{full_index}"
    ballast = fill(disk)

    # The full leader refuses what it cannot log (507 DiskFull) and hands leadership over;
    # meanwhile a command may still fit in the journal's last allocated page.
    refusals: list[type[BaseException]] = []

    async def moved() -> bool:
        try:
            await leader.submit_if_leader({"op": "incr", "k": "tries"}, timeout=2.0)
        except (DiskFull, NotLeader, Unavailable, OutcomeUnknown) as exc:
            refusals.append(type(exc))
        others = [n for n in c.nodes if n is not leader]
        return any(n.is_leader() and n.has_quorum for n in others)

    await wait_until(moved, timeout=30, what="leadership to leave the full node")
    assert DiskFull in refusals, refusals
    new_leader = await c.leader()
    assert new_leader is not leader

    # The group keeps committing on the two nodes with space; the full node stays up.
    for i in range(10, 40):
        await new_leader.submit({"op": "set", "k": f"k{i}", "v": i})
    assert not c.fatals[full_index]
    assert leader.role == "follower"
    await wait_until(
        lambda: leader.status()["journal_appends_refused"] >= 1,
        timeout=10,
        what="the full follower's journal to refuse entries",
    )
    assert await leader.read(lambda m: m.data.get("k39")) is None  # it could not store them

    # Space returns: the full node catches up on its own, with every committed entry.
    Cluster.resize_tmpfs(disk, "16m")
    expected = await new_leader.read(lambda m: dict(m.data))

    async def caught_up() -> bool:
        return await leader.read(lambda m: dict(m.data)) == expected

    await wait_until(caught_up, timeout=30, what="the formerly full node to catch up")
    assert all(not f for f in c.fatals)
    ballast.unlink()
