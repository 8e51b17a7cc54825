"""Raft safety of pysyncobj under controlled message schedules (see ``raft_sim.py``).

Scripted cases (Raft paper figures 7 and 8, a stale leader, and the stale append-entries that
made pysyncobj 0.3.17 lose a committed entry) and a seeded random run of many schedules. The
patched handler (:class:`mydfs.raft_ext.pysyncobj_patch.SafeSyncObj`) must keep every
committed entry; the unpatched one is shown to lose one, so the claim stays checked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from pysyncobj.node import TCPNode
from raft_harness import InprocCluster, wait_until
from raft_sim import LEADER, NAMES, Cluster, quiet_pysyncobj, run_random

from mydfs.common.errors import InvariantViolation
from mydfs.raft_ext.pysyncobj_patch import check_pysyncobj_version

#: Random schedules per run (CI default); RAFT_SIM_SCHEDULES raises it for a longer soak.
SCHEDULES = int(os.environ.get("RAFT_SIM_SCHEDULES", "3000"))
STEPS = 150


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with quiet_pysyncobj():
        yield


def _terms(cluster: Cluster, name: str) -> list[tuple[int, int]]:
    return [(e[1], e[2]) for e in cluster.log(name)]


def _value_at(cluster: Cluster, name: str, index: int) -> bytes | None:
    for entry in cluster.log(name):
        if entry[1] == index:
            return entry[0]
    return None


def _start(cluster: Cluster, leader: str = "a") -> None:
    cluster.campaign(leader)
    cluster.deliver_all()
    cluster.stabilize(2)
    assert cluster.leaders() == [leader]


def _elect(cluster: Cluster, name: str) -> None:
    cluster.campaign(name)
    cluster.deliver_all()
    cluster.stabilize(3)
    assert cluster.leaders() == [name], cluster.leaders()


def _b_takes_over_and_a_returns(cluster: Cluster) -> None:
    """No leader after c's failed campaign: b wins, the crashed a restarts and catches up."""
    assert cluster.leaders() == []
    _elect(cluster, "b")
    cluster.restart("a")
    cluster.stabilize(5)
    cluster.check()


def _stale_append_schedule(cluster: Cluster) -> None:
    """The schedule of the CRITICAL 'truncating already-applied' log, to a committed loss.

    1. a leads term 1; v1..v3 (indexes 3-5) reach b and c.
    2. b's first ack reaches a before the others: the unpatched leader rewinds b's nextIndex
       to 4, and its next heartbeat re-sends [4, 5] (prevLogIdx 3) to b. That message is held.
    3. v4 (index 6) reaches b only; b's ack makes a commit 6 (a + b) and apply it.
    4. The held re-send reaches b: the unpatched follower deletes everything after 3 and
       re-appends 4-5, so committed entry 6 is now only on a.
    5. a dies; c (log up to 5) campaigns, b votes for it, and c's no-op overwrites index 6.
    """
    _start(cluster)
    for value in ("v1", "v2", "v3"):
        cluster.submit("a", value)
    for message in cluster.pending("a", "c"):
        cluster.deliver(message)
    cluster.deliver_all("c", "a")
    for message in cluster.pending("a", "b"):
        cluster.deliver(message)
    replies = cluster.pending("b", "a")
    assert len(replies) == 3
    cluster.deliver(replies[0])
    cluster.advance(0.11)
    cluster.tick("a")  # heartbeat; unpatched: re-sends [4, 5] to b
    held = cluster.pending("a", "b")
    for message in replies[1:]:
        cluster.deliver(message)
    cluster.drop_all("a", "c")
    cluster.submit("a", "v4")
    cluster.drop_all("a", "c")  # c never sees index 6
    for message in cluster.pending("a", "b"):
        if message not in held:
            cluster.deliver(message)
    cluster.deliver_all("b", "a")
    cluster.tick("a")  # a counts b's ack: index 6 commits
    assert cluster.commit_index("a") >= 6
    assert ("v4", 6) in cluster.acks
    assert cluster.committed[6][0] == 1
    for message in held:
        cluster.deliver(message)  # the stale re-send
    cluster.drop_all("a")
    cluster.crash("a")
    cluster.campaign("c")
    cluster.deliver_all()
    cluster.stabilize(3)


def test_stale_append_entries_keeps_committed_entry() -> None:
    with Cluster(patched=True) as cluster:
        _stale_append_schedule(cluster)
        # b kept index 6, so it refused to vote for c.
        assert _terms(cluster, "b")[-1] == (6, 1)
        _b_takes_over_and_a_returns(cluster)
        for name in NAMES:
            assert b"v4" in (_value_at(cluster, name, 6) or b""), name
            assert cluster.commit_index(name) >= 7
        assert cluster.applied[6] == "v4"
        assert cluster.violations == []


def test_unpatched_handler_loses_committed_entry() -> None:
    """pysyncobj 0.3.17 unpatched: the same schedule loses committed entry 6 ('v4')."""
    with Cluster(patched=False, strict=False) as cluster:
        _stale_append_schedule(cluster)
        assert cluster.leaders() == ["c"]  # b voted for c
        assert cluster.term("c") == 2
        for name in ("b", "c"):
            assert _terms(cluster, name)[5] == (6, 2)  # the new leader's no-op
            assert b"v4" not in (_value_at(cluster, name, 6) or b"")
        cluster.check()
        assert "committed entry 6 (term 1) is held only by ['a']" in cluster.violations
        assert any("committed entry 6 changed" in v for v in cluster.violations)
        assert any("leader completeness: c" in v for v in cluster.violations)


def test_figure7_followers_far_behind_and_with_extra_entries() -> None:
    """A follower far behind catches up; one with extra uncommitted entries loses them."""
    with Cluster() as cluster:
        _start(cluster)
        cluster.drop_all("a", "c")
        cluster.crash("c")  # c stays at index 2
        committed = [cluster.submit("a") for _ in range(5)]  # indexes 3-7 on a and b
        cluster.deliver_all()
        cluster.tick("a")
        assert cluster.commit_index("a") == 7
        extra = [cluster.submit("a") for _ in range(2)]  # 8-9 on a only
        cluster.drop_all("a")
        cluster.crash("a")
        cluster.restart("c")
        _elect(cluster, "b")
        later = cluster.submit("b")
        cluster.stabilize(5)
        assert _terms(cluster, "c") == _terms(cluster, "b")
        cluster.restart("a")
        cluster.stabilize(8)
        cluster.check()
        logs = {name: cluster.log(name) for name in NAMES}
        assert logs["a"] == logs["b"] == logs["c"]
        applied = set(cluster.applied.values())
        assert set(committed) | {later} <= applied
        assert not set(extra) & applied
        assert cluster.violations == []


def test_figure8_leader_dies_after_partial_commit() -> None:
    """An entry committed on a majority survives its leader; a node without it cannot win."""
    with Cluster() as cluster:
        _start(cluster)
        value = cluster.submit("a")  # index 3
        cluster.drop_all("a", "c")
        cluster.deliver_all("a", "b")
        cluster.deliver_all("b", "a")
        cluster.tick("a")
        assert cluster.commit_index("a") == 3  # committed; b and c do not know it yet
        cluster.drop_all("a")
        cluster.crash("a")
        cluster.campaign("c")  # c lacks index 3: b refuses
        cluster.deliver_all()
        _b_takes_over_and_a_returns(cluster)
        for name in NAMES:
            assert _terms(cluster, name)[2] == (3, 1)
            assert cluster.commit_index(name) >= 4
        assert cluster.applied[3] == value
        assert cluster.violations == []


def _win_without_replicating(cluster: Cluster, name: str, voter: str) -> None:
    """``name`` wins ``voter``'s vote; its own no-op is sent nowhere."""
    cluster.campaign(name)
    for message in cluster.pending(name, voter, "request_vote"):
        cluster.deliver(message)
    for message in cluster.pending(voter, name, "response_vote"):
        cluster.deliver(message)
    assert cluster.role(name) == LEADER
    cluster.drop_all(name)


def _replicate(cluster: Cluster, leader: str, follower: str, rounds: int = 4) -> None:
    """Heartbeats between ``leader`` and ``follower`` only (others see nothing)."""
    for _ in range(rounds):
        cluster.advance(0.11)
        cluster.tick(leader)
        others = [n for n in NAMES if n not in (leader, follower)]
        for other in others:
            cluster.drop_all(leader, other)
        cluster.deliver_all(leader, follower)
        cluster.deliver_all(follower, leader)
        cluster.tick(leader)


def test_figure8_old_term_entry_commits_only_with_current_term_entry() -> None:
    """Figure 8: a leader re-replicating an earlier term's entry must not count it alone."""
    with Cluster() as cluster:
        _start(cluster)
        old = cluster.submit("a")  # index 3, term 1, on a only
        cluster.drop_all("a")
        cluster.crash("a")
        _win_without_replicating(cluster, "b", "c")  # term 2: no-op at 3 on b only
        cluster.crash("b")
        cluster.restart("a")
        cluster.campaign("a")  # term 2: c already voted for b in term 2
        cluster.drop_all("a")
        _win_without_replicating(cluster, "a", "c")  # term 3: c (last 2/t1) votes for a
        assert cluster.term("a") == 3
        assert cluster.commit_index("a") <= 2
        _replicate(cluster, "a", "c")  # 3/t1 travels with a's term-3 no-op at 4
        assert cluster.commit_index("a") == 4
        assert cluster.committed[3] == (1, cluster.log("a")[2][0])
        cluster.restart("b")  # b holds 3/t2: it must not win, and it loses that entry
        cluster.campaign("b")
        cluster.stabilize(10)
        cluster.check()
        logs = {name: cluster.log(name) for name in NAMES}
        assert logs["a"] == logs["b"] == logs["c"]
        assert cluster.applied[3] == old
        assert cluster.violations == []


def test_stale_leader_entries_are_replaced_and_its_messages_ignored() -> None:
    with Cluster() as cluster:
        _start(cluster)
        stale = cluster.submit("a")  # index 3 of term 1: a is partitioned from here on
        held = cluster.pending("a")
        for message in held:
            cluster.network.remove(message)
        _win_without_replicating(cluster, "b", "c")  # term 2, no-op at 3
        fresh = cluster.submit("b")  # index 4
        cluster.drop_all("b", "a")
        _replicate(cluster, "b", "c")
        assert cluster.commit_index("b") == 4
        assert cluster.role("a") == LEADER  # a still believes it leads term 1
        logs = {name: cluster.log(name) for name in ("b", "c")}
        cluster.network.extend(held)  # the old leader's append_entries arrive late
        cluster.deliver_all("a")
        assert {name: cluster.log(name) for name in ("b", "c")} == logs
        cluster.stabilize(6)
        cluster.check()
        logs = {name: cluster.log(name) for name in NAMES}
        assert logs["a"] == logs["b"] == logs["c"]
        assert _terms(cluster, "a")[2] == (3, 2)
        assert fresh in cluster.applied.values()
        assert stale not in cluster.applied.values()
        assert cluster.leaders() == ["b"]
        assert cluster.violations == []


def test_conflict_at_committed_index_stops_the_node() -> None:
    """A message that would delete a committed entry is a broken invariant: refused, loudly."""
    with Cluster() as cluster:
        _start(cluster)
        cluster.submit("a")
        cluster.stabilize(2)
        node = cluster.node("b")
        assert cluster.commit_index("b") == 3
        before = cluster.log("b")
        broken: list[InvariantViolation] = []
        node._safe_invariant_broken = broken.append
        forged = {
            "type": "append_entries",
            "term": 5,
            "commit_index": 3,
            "prevLogIdx": 2,
            "prevLogTerm": 1,
            "entries": [(b"\x01", 3, 5)],
        }
        with pytest.raises(InvariantViolation):
            node._SyncObj__transport.deliver("c", forged)
        assert len(broken) == 1 and broken[0].context["index"] == 3
        assert cluster.log("b") == before


def test_stale_and_duplicate_messages_never_shrink_a_matching_log() -> None:
    with Cluster() as cluster:
        _start(cluster)
        for _ in range(4):
            cluster.submit("a")
        first = cluster.pending("a", "b")
        for message in first:
            cluster.deliver(message, keep=True)
        length = len(cluster.log("b"))
        for message in reversed(first):  # every old message again, newest first
            cluster.deliver(message)
        assert len(cluster.log("b")) == length
        cluster.deliver_all()
        cluster.stabilize(2)
        cluster.check()
        assert cluster.violations == []


def test_wiped_follower_catches_up() -> None:
    """The leader follows a refusal below the follower's old match index (a replaced disk)."""
    with Cluster() as cluster:
        _start(cluster)
        for _ in range(4):
            cluster.submit("a")
        cluster.stabilize(2)
        assert cluster.commit_index("c") == 6
        cluster.crash("c")
        cluster.wipe("c")
        cluster.restart("c")
        cluster.stabilize(5)
        cluster.check()
        logs = {name: cluster.log(name) for name in NAMES}
        assert logs["a"] == logs["b"] == logs["c"]
        assert cluster.commit_index("c") == 6
        assert cluster.violations == []


def test_version_check_fails_loudly_on_another_pysyncobj() -> None:
    check_pysyncobj_version()
    with pytest.raises(RuntimeError, match=r"0\.3\.18"):
        check_pysyncobj_version("0.3.18")


def test_random_schedules_keep_every_committed_entry() -> None:
    """SCHEDULES seeded schedules of STEPS steps; every safety property after every step."""
    started = time.monotonic()
    totals = {"delivered": 0, "dropped": 0, "duplicated": 0, "crashes": 0, "acked": 0}
    max_commit = 0
    committed = 0
    for seed in range(SCHEDULES):
        cluster = run_random(seed, steps=STEPS)
        for key in totals:
            totals[key] += getattr(cluster.stats, key)
        max_commit = max(max_commit, cluster.stats.max_commit)
        committed += len(cluster.committed)
    elapsed = time.monotonic() - started
    print(
        f"{SCHEDULES} schedules x {STEPS} steps in {elapsed:.1f}s: {committed} committed "
        f"entries (max index {max_commit}), {totals}"
    )
    # The schedules must exercise something: commits, acks, faults.
    assert committed > SCHEDULES * 2
    assert totals["acked"] > SCHEDULES
    assert totals["crashes"] > SCHEDULES // 10
    assert totals["duplicated"] > SCHEDULES // 2


def test_random_schedules_catch_the_unpatched_handler() -> None:
    """The same checks find the 0.3.17 truncation within the first 100 seeds, including
    schedules where a committed (and acknowledged) entry is replaced."""
    durability, loss = [], []
    for seed in range(100):
        cluster = run_random(seed, steps=STEPS, patched=False, strict=False)
        if any("is held only by" in v for v in cluster.violations):
            durability.append(seed)
        if any("changed" in v or "state-machine" in v for v in cluster.violations):
            loss.append(seed)
    assert len(durability) >= 5, durability
    assert loss, "no unpatched schedule lost a committed entry"


async def test_raft_node_stops_on_a_conflict_below_its_commit_index(
    inproc_cluster: InprocCluster,
) -> None:
    """The real host wires the broken invariant to ``on_fatal``: the replica stops."""
    c = inproc_cluster
    leader = await c.leader()
    await leader.submit({"op": "incr", "k": "x"}, timeout=5)
    follower = c.followers(leader)[0]
    i = c.nodes.index(follower)
    await wait_until(lambda: follower.commit_index >= 3, timeout=10, what="the follower commit")
    host = follower._host
    assert host is not None
    commit = follower.commit_index
    entries = host._SyncObj__getEntries(commit - 1, 2)
    forged = {
        "type": "append_entries",
        "term": follower.term,
        "commit_index": commit,
        "prevLogIdx": commit - 1,
        "prevLogTerm": entries[0][2],
        "entries": [(b"\x01", commit, entries[1][2] + 1)],
    }
    sender = TCPNode(leader.address)
    host.rx_run_on_tick(lambda: host._SyncObj__onMessageReceived(sender, forged))
    await wait_until(lambda: bool(c.fatals[i]), timeout=10, what="on_fatal on the follower")
    assert isinstance(c.fatals[i][0], InvariantViolation)
    assert follower.role == "stopped"
    assert host._SyncObj__getEntries(commit, 1) == [entries[1]]


def test_chunked_entry_reaches_followers() -> None:
    """An entry above the 64 KiB batch size travels in chunks (start/process/finish)."""
    with Cluster() as cluster:
        _start(cluster)
        value = cluster.submit("a", "x" * 150_000)
        chunks = cluster.pending("a", "b")
        assert {m.body.get("transmission") for m in chunks} == {"start", "process", "finish"}
        cluster.deliver_all()
        cluster.stabilize(2)
        cluster.check()
        assert cluster.applied[3] == value
        assert all(cluster.commit_index(name) == 3 for name in NAMES)


def test_a_stale_leader_with_a_long_tail_catches_up_in_a_few_heartbeats() -> None:
    """An old leader that appended many entries no one else has (it was cut off) comes back
    as a follower: the refusal names the first index of the conflicting term, so the leader
    skips the whole tail at once instead of one index per heartbeat."""
    tail = 60
    with Cluster() as cluster:
        _start(cluster)
        for _ in range(tail):  # term 1, on a only: a is cut off from here on
            cluster.submit("a")
        cluster.drop_all("a")
        _win_without_replicating(cluster, "b", "c")
        for _ in range(tail):
            cluster.submit("b")
        cluster.drop_all("b", "a")
        _replicate(cluster, "b", "c")
        cluster.drop_all("b", "a")
        rounds = 0
        while _terms(cluster, "a") != _terms(cluster, "b") and rounds < 3 * tail:
            cluster.stabilize(1)
            rounds += 1
        assert _terms(cluster, "a") == _terms(cluster, "b")
        print(f"caught up after {rounds} heartbeat rounds")
        assert rounds <= 5
        cluster.check()
        assert cluster.violations == []
