"""The faults of the nemesis, each a start/stop pair on a :class:`~netcluster.NetCluster`.

``start`` picks its target (a group's leader, a follower, the tracker ...) and breaks it;
``stop`` undoes exactly that. Network faults are iptables rules inside the target's own
namespace (flushed by ``stop``); nothing outside the test's namespaces is touched.

| kind | start | stop |
| --- | --- | --- |
| ``kill_node`` / ``kill_tracker`` | SIGKILL | start again on the same data |
| ``pause_node`` / ``pause_tracker`` | SIGSTOP | SIGCONT |
| ``partition_leader`` | the leader drops all traffic with its two followers | flush |
| ``partition_tracker`` | the tracker drops all traffic with the storage nodes | flush |
| ``one_way`` | the leader drops what one follower sends it (it still sends) | flush |
| ``follower_split`` | the two followers drop each other's traffic | flush |
| ``loss`` | a node drops 30 % of the packets it receives (``statistic``) | flush |
| ``disk_full`` | a small-disk node's tmpfs is filled up | the filler is removed |
"""

from __future__ import annotations

import errno
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from netcluster import NetCluster

from mydfs.client.process import Process, StorageProcess

KINDS = (
    "kill_node",
    "kill_tracker",
    "pause_node",
    "pause_tracker",
    "partition_leader",
    "partition_tracker",
    "one_way",
    "follower_split",
    "loss",
    "disk_full",
)
LOSS = "0.3"


@dataclass
class Fault:
    """One fault in effect: what it is, whom it hit, and how to undo it."""

    kind: str
    target: str
    undo: Callable[[], None] = field(repr=False)

    def stop(self) -> None:
        self.undo()


class Nemesis:
    """Starts faults of the given kinds on ``cluster``, targets chosen with ``rng``."""

    def __init__(self, cluster: NetCluster, rng: random.Random) -> None:
        self.c = cluster
        self.net = cluster.net
        self.rng = rng

    # -- targets -------------------------------------------------------------------------------

    def _group(self) -> int:
        return self.rng.randint(1, self.c.groups)

    def _leader(self, group: int) -> StorageProcess:
        """The group's leader, or (none established right now) a random running member."""
        leader = self.c.leader_of(group)
        if leader is not None:
            return leader
        members = [n for n in self.c.nodes(group) if n.running] or self.c.nodes(group)
        return self.rng.choice(members)

    def _drop_between(self, host: str, peers: list[Process], *, both: bool = True) -> None:
        for peer in peers:
            self.net.iptables(host, "-A", "INPUT", "-s", self.net.ip(peer.name), "-j", "DROP")
            if both:
                self.net.iptables(host, "-A", "OUTPUT", "-d", self.net.ip(peer.name), "-j", "DROP")

    def _flush(self, *hosts: str) -> Callable[[], None]:
        def undo() -> None:
            for host in hosts:
                self.net.flush(host)

        return undo

    # -- faults --------------------------------------------------------------------------------

    def start(self, kind: str) -> Fault:
        return getattr(self, kind)()  # type: ignore[no-any-return]

    def kill_node(self) -> Fault:
        node = self.rng.choice(self.c.nodes())
        node.kill()
        return Fault("kill_node", node.name, node.start)

    def kill_tracker(self) -> Fault:
        tracker = self.c.tracker_process
        assert tracker is not None
        tracker.kill()
        return Fault("kill_tracker", tracker.name, tracker.start)

    def pause_node(self) -> Fault:
        node = self._leader(self._group()) if self.rng.random() < 0.5 else None
        node = node or self.rng.choice(self.c.nodes())
        node.pause()
        return Fault("pause_node", node.name, node.resume)

    def pause_tracker(self) -> Fault:
        tracker = self.c.tracker_process
        assert tracker is not None
        tracker.pause()
        return Fault("pause_tracker", tracker.name, tracker.resume)

    def partition_leader(self) -> Fault:
        leader = self._leader(self._group())
        self._drop_between(leader.name, self.c.others(leader))
        return Fault("partition_leader", leader.name, self._flush(leader.name))

    def partition_tracker(self) -> Fault:
        self._drop_between("tracker", list(self.c.nodes()))
        return Fault("partition_tracker", "tracker", self._flush("tracker"))

    def one_way(self) -> Fault:
        leader = self._leader(self._group())
        follower = self.rng.choice(self.c.others(leader))
        self._drop_between(leader.name, [follower], both=False)
        return Fault("one_way", f"{follower.name}->{leader.name}", self._flush(leader.name))

    def follower_split(self) -> Fault:
        leader = self._leader(self._group())
        a, b = self.c.others(leader)
        self._drop_between(a.name, [b])
        return Fault("follower_split", f"{a.name}|{b.name}", self._flush(a.name))

    def loss(self) -> Fault:
        node = self._leader(self._group()) if self.rng.random() < 0.5 else None
        node = node or self.rng.choice(self.c.nodes())
        self.net.iptables(node.name, "-A", "INPUT", "-m", "statistic", "--mode", "random",
                          "--probability", LOSS, "-j", "DROP")  # fmt: skip
        return Fault("loss", node.name, self._flush(node.name))

    def disk_full(self) -> Fault:
        assert self.c.small_disks, "the cluster has no small-disk node"
        node = self.rng.choice(self.c.small_disks)
        filler = node.data_dir / "filler.bin"
        fill_up(filler)
        return Fault("disk_full", node.name, lambda: filler.unlink(missing_ok=True))


def fill_up(filler: Path, chunk: int = 1 << 20) -> int:
    """Write ``filler`` until its filesystem is full (ENOSPC); the bytes written."""
    written = 0
    block = b"\0" * chunk
    with open(filler, "ab", buffering=0) as f:
        while written < 1 << 34:  # a bounded loop, whatever the filesystem says
            try:
                written += f.write(block) or 0
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    return written
