"""Inline uploads on real processes (a tracker and one group of 3 storage nodes): a one-slice
file of at most ``inline_max`` bytes is stored by one ``put`` command whose payload travels in
the Raft log (``docs/replication.md``, "Inline uploads").

The guarantee tested: an acknowledged inline put is durable. Every file reads back byte-identical
right after its put, after the group's leader is killed with SIGKILL, and after all three nodes
are killed with SIGKILL at once and started again; afterwards every node holds a copy in its
volume and the table carries no inline payload any more.
"""

from __future__ import annotations

import re
import signal
import urllib.request
from collections.abc import Callable
from urllib.parse import quote

from e2e_helpers import curl_ok, random_bytes
from helpers import wait_for

from mydfs.client import Client
from mydfs.client.local_cluster import LocalCluster
from mydfs.client.process import Process


def metric(node: Process, name: str, labels: str = "") -> float:
    with urllib.request.urlopen(node.url + "/metrics", timeout=10) as reply:
        text = reply.read().decode()
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return 0.0 if found is None else float(found.group(1))


def settled(cluster: LocalCluster) -> bool:
    """Every node answers, carries no inline payload, and misses no live slice."""
    try:
        return all(
            metric(n, "mydfs_storage_inline_bytes") == 0
            and metric(n, "mydfs_storage_missing_slices") == 0
            for n in cluster.nodes()
        )
    except OSError:
        return False


def read_all(cluster: LocalCluster, files: dict[str, bytes], *, curl: bool = True) -> None:
    with Client(cluster.tracker_url, deadline=60.0) as reader:
        for path, model in files.items():
            assert reader.read(path) == model, path
    for path in list(files)[:5] if curl else []:
        assert curl_ok("-L", cluster.tracker_url + "/files" + quote(path)) == files[path]


def test_inline_puts_survive_kill_9_of_the_leader_and_of_every_node(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster(groups=1)
    sizes = [0, 1, 100, 1000, 4095, 4096, 4097, 20_000] + [(i * 397) % 4097 for i in range(40)]
    files = {f"/inline/f{i}.bin": random_bytes(size, seed=i) for i, size in enumerate(sizes)}
    leader = cluster.wait_leader(1)
    with Client(cluster.tracker_url, deadline=60.0) as writer:
        for path, model in files.items():
            writer.put(path, model)
            assert writer.read(path) == model  # served before any volume may hold it
    inline = metric(leader, "mydfs_storage_uploads_total", '{outcome="inline"}')
    assert inline >= len([s for s in sizes if 0 < s <= 4096]), "small puts did not go inline"

    # The leader dies right after the last acknowledgement: the new leader serves everything.
    leader.kill(signal.SIGKILL)
    assert cluster.wait_leader(1, timeout=60) is not leader
    read_all(cluster, files, curl=False)  # the tracker may still send curl to the dead node
    leader.start()
    wait_for(leader.health, timeout=60, what=f"{leader.name} answering again")

    # Every node dies at once, with the last puts maybe only in the Raft journals.
    more = {f"/inline/late{i}.bin": random_bytes(50 * i, seed=100 + i) for i in range(20)}
    with Client(cluster.tracker_url, deadline=60.0) as writer:
        for path, model in more.items():
            writer.put(path, model)
    files.update(more)
    for node in cluster.nodes():
        node.kill(signal.SIGKILL)
    for node in cluster.nodes():
        node.start()
    for node in cluster.nodes():
        wait_for(node.health, timeout=60, what=f"{node.name} answering again")
    cluster.wait_leader(1, timeout=60)
    read_all(cluster, files)

    # In the end every volume holds every slice and the table has let go of the payloads.
    wait_for(lambda: settled(cluster), timeout=60, what="inline payloads written to volumes")
    for node in cluster.nodes():
        table = metric(node, "mydfs_storage_slots", '{state="live",view="group"}')
        volume = metric(node, "mydfs_storage_slots", '{state="live",view="volume"}')
        assert table == volume == len([m for m in files.values() if m]), node.name


def test_uploads_into_slots_reserved_ahead_survive_a_leader_kill(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    """A one-slice file too large to go inline is written into a slot the leader reserved
    ahead and made live by one ``assign`` (``docs/replication.md``, "Slots reserved ahead").
    Every acknowledged put reads back across a SIGKILL of the leader; the slots the dead
    leader had reserved ahead are aborted, not left pending."""
    cluster = make_cluster(groups=1)
    sizes = [5000 + (i * 7919) % 200_000 for i in range(60)]
    files = {f"/ahead/f{i}.bin": random_bytes(size, seed=500 + i) for i, size in enumerate(sizes)}
    paths = list(files)
    leader = cluster.wait_leader(1)
    with Client(cluster.tracker_url, deadline=60.0) as writer:
        for path in paths[:30]:
            writer.put(path, files[path])
            assert writer.read(path) == files[path]
        assert metric(leader, "mydfs_storage_uploads_total", '{outcome="ahead"}') >= 20
        leader.kill(signal.SIGKILL)
        for path in paths[30:]:
            writer.put(path, files[path])
    read_all(cluster, files, curl=False)
    new_leader = cluster.wait_leader(1, timeout=60)
    assert metric(new_leader, "mydfs_storage_uploads_total", '{outcome="ahead"}') >= 10
    leader.start()
    wait_for(leader.health, timeout=60, what=f"{leader.name} answering again")
    read_all(cluster, files)
    wait_for(lambda: settled(cluster), timeout=60, what="every copy in every volume")

    def slots(state: str) -> float:
        return metric(new_leader, "mydfs_storage_slots", f'{{state="{state}",view="group"}}')

    # No upload is left pending, and only the new leader's own pool stays reserved ahead (at
    # most 16 slots): the dead leader's were aborted.
    wait_for(
        lambda: slots("pending") == 0 and slots("ahead") <= 16,
        timeout=30,
        what="no upload pending and the dead leader's slots aborted",
    )
