"""A deterministic message-schedule simulator for pysyncobj (etcd-raft style).

Real pysyncobj ``SyncObj`` nodes (``autoTick=False``) run in one thread on a fake clock and a
fake transport. Every message a node sends is pickled into :attr:`Cluster.network`, a pool of
in-flight messages, and nothing is delivered unless the test says so: a test can deliver,
delay, duplicate, reorder and drop individual messages, advance the clock, tick a node, and
crash or restart a node between any two steps. A crashed node keeps its journal (term, vote
and log: the durable state), and a restart builds a fresh ``SyncObj`` on it that re-applies
the log from the start.

:meth:`Cluster.check` verifies the Raft safety properties after a step; :func:`run_random`
drives a seeded random schedule and checks after every step. Patched and unpatched nodes:
``Cluster(patched=True)`` uses :class:`mydfs.raft_ext.pysyncobj_patch.SafeSyncObj`, ``False``
plain ``pysyncobj.SyncObj``.
"""

from __future__ import annotations

import contextlib
import itertools
import pickle
import random
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import pysyncobj.syncobj as syncobj_module
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.journal import MemoryJournal
from pysyncobj.node import Node
from pysyncobj.transport import Transport

from mydfs.raft_ext.pysyncobj_patch import SafeSyncObj

FOLLOWER, CANDIDATE, LEADER = 0, 1, 2
NAMES = ("a", "b", "c")


class SafetyViolation(AssertionError):
    """A Raft safety property failed."""


@dataclass
class Message:
    id: int
    src: str
    dst: str
    blob: bytes

    @property
    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = pickle.loads(self.blob)
        return body

    @property
    def type(self) -> str:
        return str(self.body.get("type"))

    def __repr__(self) -> str:
        body = self.body
        brief = {k: v for k, v in body.items() if k not in ("entries", "type")}
        if "entries" in body:
            brief["entries"] = [(e[1], e[2]) for e in body["entries"]]
        return f"<#{self.id} {self.src}->{self.dst} {body.get('type')} {brief}>"


class SimNode(Node):  # type: ignore[misc]
    """A node id with a hash that does not depend on PYTHONHASHSEED: pysyncobj iterates
    sets of nodes when it sends, so str hashing would make the send order vary per run."""

    def __hash__(self) -> int:
        return zlib.crc32(str(self.id).encode())


class SimTransport(Transport):  # type: ignore[misc]
    """Hands every message to the cluster's network pool; always 'connected'."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        super().__init__(None, None, None)
        self._cluster = cluster
        self._name = name

    def send(self, node: Any, message: Any) -> bool:
        self._cluster._post(self._name, str(node.id), message)
        return True

    def deliver(self, src: str, message: dict[str, Any]) -> None:
        self._onMessageReceived(SimNode(src), message)


class _SimMachine:
    """The replicated state machine of a simulated node: records (index, value) per apply."""

    _sim_cluster: Cluster
    _sim_name: str

    @replicated  # type: ignore[misc]
    def put(self, value: str) -> int:
        index = int(self._SyncObj__raftLastApplied) + 1  # type: ignore[attr-defined]
        self._sim_cluster._on_apply(self._sim_name, index, value)
        return index


class PatchedNode(_SimMachine, SafeSyncObj):
    pass


class UnpatchedNode(_SimMachine, SyncObj):  # type: ignore[misc]
    pass


def _conf() -> Any:
    return SyncObjConf(
        autoTick=False,
        appendEntriesUseBatch=False,
        appendEntriesPeriod=0.1,
        raftMinTimeout=0.4,
        raftMaxTimeout=1.4,
        leaderFallbackTimeout=1.0,
        connectionTimeout=3.5,
        commandsWaitLeader=False,
        logCompactionMinEntries=10**9,
        logCompactionMinTime=10**9,
        pollerType="select",
        dynamicMembershipChange=False,
    )


@dataclass
class Stats:
    steps: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    crashes: int = 0
    elections_won: int = 0
    acked: int = 0
    max_commit: int = 0


@dataclass
class Cluster:
    """Three simulated pysyncobj nodes, a fake clock and a pool of in-flight messages."""

    seed: int = 0
    patched: bool = True
    names: tuple[str, ...] = NAMES
    #: Raise on the first violation (False: collect them in ``violations``).
    strict: bool = True
    now: float = 1000.0
    network: list[Message] = field(default_factory=list)
    nodes: dict[str, Any] = field(default_factory=dict)
    journals: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)
    #: index -> (term, command) of every entry ever seen committed.
    committed: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    #: index -> the lowest current term of a node that held it committed.
    committed_seen_term: dict[int, int] = field(default_factory=dict)
    #: index -> value applied there (any node, any incarnation).
    applied: dict[int, str] = field(default_factory=dict)
    acks: list[tuple[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._ids = itertools.count(1)
        self._values = itertools.count(1)
        self._patches = contextlib.ExitStack()
        self._patches.enter_context(
            mock.patch.object(syncobj_module, "monotonicTime", lambda: self.now)
        )
        self._patches.enter_context(
            mock.patch.object(syncobj_module, "random", random.Random(self.seed + 1))
        )
        self._patches.enter_context(
            mock.patch.object(syncobj_module, "PIPE_NOTIFIER_ENABLED", False)
        )
        self._journal_for: str | None = None
        self._patches.enter_context(
            mock.patch.object(syncobj_module, "createJournal", self._create_journal)
        )
        for name in self.names:
            self.journals[name] = MemoryJournal()
            self._start(name)

    def close(self) -> None:
        for node in self.nodes.values():
            if node is not None:
                node._poller = None
        self._patches.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- nodes ------------------------------------------------------------------------------
    def _create_journal(self, _path: Any) -> Any:
        assert self._journal_for is not None
        return self.journals[self._journal_for]

    def _start(self, name: str) -> None:
        cls = PatchedNode if self.patched else UnpatchedNode
        transport = SimTransport(self, name)
        others = [SimNode(n) for n in self.names if n != name]
        node = cls.__new__(cls)
        node._sim_cluster = self
        node._sim_name = name
        self._journal_for = name
        try:
            node.__init__(SimNode(name), others, _conf(), transport=transport)
        finally:
            self._journal_for = None
        for other in others:
            transport._onNodeConnected(other)
        self.nodes[name] = node

    def alive(self) -> list[str]:
        return [n for n in self.names if self.nodes.get(n) is not None]

    def crash(self, name: str) -> None:
        """Stop ``name`` now; its journal (log, term, vote) survives, messages to it drop."""
        self.nodes[name] = None
        self.stats.crashes += 1
        self.network = [m for m in self.network if m.dst != name]

    def wipe(self, name: str) -> None:
        """Replace a crashed node's journal by an empty one (a replaced disk)."""
        assert self.nodes.get(name) is None
        self.journals[name] = MemoryJournal()

    def restart(self, name: str) -> None:
        assert self.nodes.get(name) is None
        self._start(name)

    def node(self, name: str) -> Any:
        node = self.nodes[name]
        assert node is not None, f"{name} is down"
        return node

    def role(self, name: str) -> int | None:
        node = self.nodes.get(name)
        return None if node is None else int(node._SyncObj__raftState)

    def term(self, name: str) -> int:
        return int(self.journals[name].getCurrentTerm())

    def commit_index(self, name: str) -> int:
        return int(self.node(name)._SyncObj__raftCommitIndex)

    def log(self, name: str) -> list[tuple[bytes, int, int]]:
        journal = self.journals[name]
        return [journal[i] for i in range(len(journal))]

    def leaders(self) -> list[str]:
        return [n for n in self.alive() if self.role(n) == LEADER]

    # -- driving ----------------------------------------------------------------------------
    def tick(self, name: str) -> None:
        self.node(name).doTick(0.0)
        self._observe()

    def tick_all(self) -> None:
        for name in self.alive():
            self.node(name).doTick(0.0)
        self._observe()

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def campaign(self, name: str) -> None:
        """Make ``name``'s election timer fire at its next tick (etcd's MsgHup)."""
        self.node(name)._SyncObj__raftElectionDeadline = 0.0
        self.tick(name)

    def submit(self, name: str, value: str | None = None) -> str:
        """Submit ``put(value)`` on ``name`` and tick it (a leader appends and sends)."""
        value = value if value is not None else f"v{next(self._values)}"

        def on_done(result: Any, error: int, value: str = value) -> None:
            if error == 0:
                self.acks.append((value, int(result)))

        self.node(name).put(value, callback=on_done)
        self.tick(name)
        return value

    def _post(self, src: str, dst: str, message: Any) -> None:
        blob = pickle.dumps(message, 2)  # the wire: no aliasing with the sender's log
        self.network.append(Message(next(self._ids), src, dst, blob))

    def pending(
        self, src: str | None = None, dst: str | None = None, type: str | None = None
    ) -> list[Message]:
        return [
            m
            for m in self.network
            if (src is None or m.src == src)
            and (dst is None or m.dst == dst)
            and (type is None or m.type == type)
        ]

    def deliver(self, message: Message, *, keep: bool = False) -> None:
        """Deliver ``message`` (``keep``: leave a copy in flight, i.e. duplicate it)."""
        if not keep:
            self.network.remove(message)
        node = self.nodes.get(message.dst)
        if node is None:
            return
        self.stats.delivered += 1
        node._SyncObj__transport.deliver(message.src, message.body)
        self._observe()

    def deliver_all(self, src: str | None = None, dst: str | None = None) -> None:
        """Deliver, in send order, everything in flight now (and what that produces)."""
        while True:
            batch = self.pending(src, dst)
            if not batch:
                return
            self.deliver(batch[0])

    def drop(self, message: Message) -> None:
        self.network.remove(message)
        self.stats.dropped += 1

    def drop_all(self, src: str | None = None, dst: str | None = None) -> None:
        for message in self.pending(src, dst):
            self.drop(message)

    def stabilize(self, rounds: int = 20) -> None:
        """Tick everyone and deliver everything, a few rounds of heartbeats."""
        for _ in range(rounds):
            self.advance(0.11)
            self.tick_all()
            self.deliver_all()

    # -- observation and safety -------------------------------------------------------------
    def _on_apply(self, name: str, index: int, value: str) -> None:
        previous = self.applied.setdefault(index, value)
        if previous != value:
            self._violation(
                f"state-machine safety: {name} applied {value!r} at {index}, "
                f"another node applied {previous!r}"
            )

    def _violation(self, text: str) -> None:
        self.violations.append(text)
        if self.strict:
            raise SafetyViolation(f"seed {self.seed}: {text}")

    def _observe(self) -> None:
        """Record what the live nodes consider committed (never changes once committed)."""
        for name in self.alive():
            node = self.nodes[name]
            commit = int(node._SyncObj__raftCommitIndex)
            self.stats.max_commit = max(self.stats.max_commit, commit)
            journal = self.journals[name]
            first = journal[0][1]
            term = self.term(name)
            for idx in range(max(first, 1), commit + 1):
                if idx - first >= len(journal):
                    self._violation(f"{name} commit index {commit} beyond its log end")
                    break
                entry = journal[idx - first]
                record = (entry[2], entry[0])
                known = self.committed.setdefault(idx, record)
                if known != record:
                    self._violation(
                        f"committed entry {idx} changed: {known[0]}/{known[1]!r} -> "
                        f"{record[0]}/{record[1]!r} on {name}"
                    )
                seen = self.committed_seen_term.get(idx)
                if seen is None or term < seen:
                    self.committed_seen_term[idx] = term

    def check(self) -> None:
        """Log matching, leader completeness, committed entries on a majority."""
        logs = {name: self.log(name) for name in self.names}
        by_index = {name: {e[1]: e for e in log} for name, log in logs.items()}
        # Log matching: same index and term => same entry and identical prefixes.
        for a, b in itertools.combinations(self.names, 2):
            common = [
                idx
                for idx, entry in by_index[a].items()
                if idx in by_index[b] and by_index[b][idx][2] == entry[2]
            ]
            if not common:
                continue
            top = max(common)
            low = max(logs[a][0][1], logs[b][0][1])
            for idx in range(low, top + 1):
                if by_index[a].get(idx) != by_index[b].get(idx):
                    self._violation(f"log matching: {a} and {b} differ at {idx} below {top}")
                    break
        majority = len(self.names) // 2 + 1
        leaders = [(name, self.term(name)) for name in self.leaders()]
        for idx, (term, command) in self.committed.items():
            # Durability: a committed entry stays in the logs of a majority.
            holders = [n for n in self.names if by_index[n].get(idx, (None, 0, -1))[2] == term]
            if len(holders) < majority:
                self._violation(f"committed entry {idx} (term {term}) is held only by {holders}")
            # Leader completeness: leaders of later terms hold every committed entry.
            seen_term = self.committed_seen_term[idx]
            for leader, leader_term in leaders:
                if leader_term > seen_term:
                    entry = by_index[leader].get(idx)
                    if entry is None or entry[2] != term or entry[0] != command:
                        self._violation(
                            f"leader completeness: {leader} (term {leader_term}) "
                            f"lacks committed entry {idx} (term {term})"
                        )


# -- randomized schedules -----------------------------------------------------------------
Action = Callable[[Cluster, random.Random], None]


def _act_deliver(cluster: Cluster, rng: random.Random) -> None:
    if cluster.network:
        cluster.deliver(rng.choice(cluster.network))


def _act_deliver_fifo(cluster: Cluster, rng: random.Random) -> None:
    if cluster.network:
        src, dst = rng.choice([(m.src, m.dst) for m in cluster.network])
        cluster.deliver(cluster.pending(src, dst)[0])


def _act_duplicate(cluster: Cluster, rng: random.Random) -> None:
    if cluster.network:
        cluster.stats.duplicated += 1
        cluster.deliver(rng.choice(cluster.network), keep=True)


def _act_drop(cluster: Cluster, rng: random.Random) -> None:
    if cluster.network:
        cluster.drop(rng.choice(cluster.network))


def _act_tick(cluster: Cluster, rng: random.Random) -> None:
    cluster.advance(rng.choice((0.0, 0.05, 0.1, 0.2, 0.5)))
    cluster.tick_all()


def _act_tick_one(cluster: Cluster, rng: random.Random) -> None:
    alive = cluster.alive()
    if alive:
        cluster.tick(rng.choice(alive))


def _act_submit(cluster: Cluster, rng: random.Random) -> None:
    alive = cluster.alive()
    leaders = cluster.leaders()
    pick = leaders if leaders and rng.random() < 0.8 else alive
    if pick:
        cluster.submit(rng.choice(pick))


def _act_campaign(cluster: Cluster, rng: random.Random) -> None:
    candidates = [n for n in cluster.alive() if cluster.role(n) != LEADER]
    if candidates:
        cluster.campaign(rng.choice(candidates))


def _act_crash_restart(cluster: Cluster, rng: random.Random) -> None:
    down = [n for n in cluster.names if cluster.nodes.get(n) is None]
    if down and (len(down) > 1 or rng.random() < 0.6):
        cluster.restart(rng.choice(down))
    elif not down or rng.random() < 0.3:
        leaders = cluster.leaders()
        victims = leaders if leaders and rng.random() < 0.7 else cluster.alive()
        if victims:
            cluster.crash(rng.choice(victims))


ACTIONS: tuple[tuple[Action, int], ...] = (
    (_act_deliver, 30),
    (_act_deliver_fifo, 20),
    (_act_duplicate, 4),
    (_act_drop, 4),
    (_act_tick, 12),
    (_act_tick_one, 4),
    (_act_submit, 14),
    (_act_campaign, 2),
    (_act_crash_restart, 2),
)


def run_random(
    seed: int, *, steps: int = 150, patched: bool = True, strict: bool = True
) -> Cluster:
    """One seeded random schedule, every property checked after every step.

    ``strict``: raise :class:`SafetyViolation` at the first bad step; otherwise run all the
    steps and return the cluster with its ``violations``.
    """
    rng = random.Random(seed * 7919 + 17)
    actions = [a for a, _ in ACTIONS]
    weights = [w for _, w in ACTIONS]
    with Cluster(seed=seed, patched=patched, strict=strict) as cluster:
        for step in range(steps):
            action = rng.choices(actions, weights)[0]
            try:
                action(cluster, rng)
                cluster.check()
            except SafetyViolation as exc:
                raise SafetyViolation(f"{exc} (step {step}, action {action.__name__})") from None
            cluster.stats.steps += 1
        cluster.stats.acked = len(cluster.acks)
        return cluster


@contextlib.contextmanager
def quiet_pysyncobj() -> Iterator[None]:
    """pysyncobj logs every CRITICAL truncation; keep test output readable."""
    import logging

    loggers = [logging.getLogger("pysyncobj.syncobj"), logging.getLogger("mydfs.raft_ext")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
