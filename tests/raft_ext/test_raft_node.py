"""raft_ext: settings, codec, journal, snapshot format, and an in-process 3-node group."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import orjson
import pytest
from helpers import free_ports, wait_until
from pysyncobj.journal import LAST_RECORD_OFFSET_OFFSET, FileJournal
from pysyncobj.node import TCPNode
from raft_harness import PASSWORD, InprocCluster
from raft_toy import KVMachine

from mydfs.common.errors import (
    Conflict,
    Corrupt,
    InvalidArgument,
    InvariantViolation,
    NotLeader,
    OutcomeUnknown,
    PayloadTooLarge,
    Unavailable,
)
from mydfs.raft_ext import (
    HARD_MAX_COMMAND_BYTES,
    RaftNode,
    RaftSettings,
    decode_snapshot,
    encode_command,
    encode_snapshot,
)
from mydfs.raft_ext.journal import FsyncFileJournal, repair_torn_tail


def _settings(tmp: Path, **overrides: object) -> RaftSettings:
    values: dict[str, object] = dict(
        self_address="127.0.0.1:7001",
        peers=("127.0.0.1:7002", "127.0.0.1:7003"),
        http_urls={f"127.0.0.1:700{i}": f"http://127.0.0.1:800{i}" for i in (1, 2, 3)},
        data_dir=tmp,
        password=PASSWORD,
    )
    values.update(overrides)
    return RaftSettings(**values)  # type: ignore[arg-type]


# -- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize("password", [None, "", "   ", "short"])
def test_node_without_password_is_refused(scratch_dir: Path, password: str | None) -> None:
    settings = _settings(scratch_dir, password=password)
    with pytest.raises(InvalidArgument):
        settings.validate()
    with pytest.raises(InvalidArgument):
        RaftNode(settings, KVMachine())


def test_vetted_settings(scratch_dir: Path) -> None:
    s = _settings(scratch_dir)
    conf = s.to_syncobj_conf(
        serializer=lambda f, d: None,
        deserializer=lambda f: None,
        serialize_checker=lambda: 0,
        on_state_changed=lambda a, b: None,
        on_ready=lambda: None,
    )
    assert conf.bindAddress == "127.0.0.1:7001"  # never 0.0.0.0 by default
    assert conf.password == PASSWORD
    assert conf.connectionRetryTime == pytest.approx(0.2)
    assert conf.leaderFallbackTimeout == pytest.approx(1.0)
    assert conf.appendEntriesUseBatch is False
    assert conf.commandsWaitLeader is False
    assert conf.journalFile and conf.fullDumpFile  # never journal-only
    assert conf.useFork is False and conf.serializer is not None
    assert conf.dynamicMembershipChange is False
    with pytest.raises(InvalidArgument):
        _settings(scratch_dir, self_address="0.0.0.0:7001").validate()
    with pytest.raises(InvalidArgument):
        _settings(scratch_dir, http_urls={"127.0.0.1:7001": "http://x"}).validate()
    with pytest.raises(InvalidArgument):
        _settings(scratch_dir, max_command_bytes=HARD_MAX_COMMAND_BYTES + 1).validate()


def test_command_codec_guards() -> None:
    assert orjson.loads(encode_command({"op": "set", "k": "a"}, 1024)) == {"op": "set", "k": "a"}
    with pytest.raises(PayloadTooLarge) as info:
        encode_command({"op": "set", "v": "x" * 70_000}, HARD_MAX_COMMAND_BYTES)
    assert isinstance(info.value, InvalidArgument)
    with pytest.raises(InvalidArgument):
        encode_command({"op": "set", "v": b"raw bytes never travel in the log"}, 1024)
    with pytest.raises(InvalidArgument):
        encode_command(["not", "an", "object"], 1024)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        encode_command({}, 1024)


# -- snapshot file -------------------------------------------------------------------------


def test_snapshot_format_roundtrip_and_corruption() -> None:
    raft_data = (
        (b"\x00\x80\x02pickled-command", 42, 3),
        (b"\x01", 41, 3),
        {TCPNode("127.0.0.1:7001"), TCPNode("127.0.0.1:7002"), TCPNode("127.0.0.1:7003")},
    )
    state = orjson.dumps({"data": {"a": 1}})
    blob = encode_snapshot(raft_data, state)
    assert b"pickled" not in blob  # commands are stored base64-encoded, never unpickled
    decoded, decoded_state = decode_snapshot(blob)
    assert decoded == raft_data and decoded_state == state
    assert isinstance(decoded[0][0], bytes)
    for pos in (0, 20, len(blob) // 2, len(blob) - 1):
        broken = bytearray(blob)
        broken[pos] ^= 0xFF
        with pytest.raises(Corrupt):
            decode_snapshot(bytes(broken))
    with pytest.raises(Corrupt):
        decode_snapshot(blob[:-10])


# -- journal -------------------------------------------------------------------------------


def test_fsync_journal_roundtrip_compaction_and_torn_tail(scratch_dir: Path) -> None:
    path = str(scratch_dir / "raft.journal")
    j = FsyncFileJournal(path)
    for idx in range(1, 101):
        j.add(b"\x00cmd-%d" % idx, idx, 1)
    assert j.dirty
    j.sync()
    assert not j.dirty and j.sync_count == 1
    j.setCurrentTerm(5, "127.0.0.1:7002")
    j._destroy()

    plain = FileJournal(path)  # the on-disk format is pysyncobj's own
    assert len(plain) == 100 and plain[99] == (b"\x00cmd-100", 100, 1)
    assert plain.getCurrentTerm() == 5 and plain.getVotedForNodeId() == "127.0.0.1:7002"
    plain._destroy()

    j = FsyncFileJournal(path)
    size_before = os.path.getsize(path)
    j.deleteEntriesTo(90)  # compaction: atomic rewrite of the kept tail
    assert [e[1] for e in j] == list(range(91, 101))
    j.add(b"\x00cmd-101", 101, 2)
    j.deleteEntriesFrom(10)  # follower truncation of the last entry
    j.add(b"\x00cmd-101b", 101, 3)
    j._destroy()
    assert os.path.getsize(path) < size_before

    j = FsyncFileJournal(path)
    assert [e[1] for e in j] == list(range(91, 102)) and j[-1] == (b"\x00cmd-101b", 101, 3)
    j._destroy()

    # A torn tail: the header points past the last complete record.
    with open(path, "r+b") as f:
        f.seek(LAST_RECORD_OFFSET_OFFSET)
        (last,) = struct.unpack("<I", f.read(4))
        f.seek(LAST_RECORD_OFFSET_OFFSET)
        f.write(struct.pack("<I", last + 40))
    assert repair_torn_tail(path) == 40
    j = FsyncFileJournal(path)
    assert [e[1] for e in j] == list(range(91, 102))
    j._destroy()


async def test_compacted_journal_without_snapshot_is_refused(scratch_dir: Path) -> None:
    settings = _settings(scratch_dir / "n", self_address=f"127.0.0.1:{free_ports(1)[0]}")
    settings.data_dir.mkdir()
    http_urls = dict(settings.http_urls)
    http_urls[settings.self_address] = "http://127.0.0.1:8000"
    settings = settings.replace(http_urls=http_urls)
    j = FsyncFileJournal(str(settings.journal_file))
    j.add(b"\x01", 50, 1)
    j.add(b"\x01", 51, 1)
    j._destroy()
    node = RaftNode(settings, KVMachine())
    with pytest.raises(Corrupt):
        await node.start()
    await node.close()


# -- in-process group ----------------------------------------------------------------------


async def test_commit_on_leader_and_not_leader_on_follower(inproc_cluster: InprocCluster) -> None:
    c = inproc_cluster
    leader = await c.leader()
    follower = c.followers(leader)[0]

    assert await leader.submit({"op": "set", "k": "a", "v": 1}) == {"ok": True, "size": 1}
    assert (await leader.submit_if_leader({"op": "incr", "k": "n"}))["value"] == 1

    await wait_until(
        lambda: all(n.leader_url() == leader.url for n in c.nodes),
        timeout=10,
        what="every node to learn the leader",
    )
    with pytest.raises(NotLeader) as info:
        await follower.submit_if_leader({"op": "incr", "k": "n"})
    assert info.value.leader == leader.url
    assert info.value.to_dict()["context"]["leader"] == leader.url

    # Without leader_only a follower forwards to the leader.
    assert (await follower.submit({"op": "incr", "k": "n"}))["value"] == 2

    # A deterministic rejection reaches the caller as the machine's error; nothing changes.
    with pytest.raises(Conflict):
        await leader.submit({"op": "reject", "k": "a"})

    with pytest.raises(PayloadTooLarge):
        await leader.submit({"op": "set", "k": "big", "v": "x" * (HARD_MAX_COMMAND_BYTES + 1)})

    await leader.barrier()
    expected = {"a": 1, "n": 2}

    async def converged() -> bool:
        dumps = [await n.read(lambda m: m.dump()) for n in c.nodes]
        return all(d["data"] == expected for d in dumps)

    await wait_until(converged, timeout=10, what="all replicas to apply")

    st = leader.status()
    for key in ("role", "term", "commit_index", "last_applied", "has_quorum", "leader_url"):
        assert key in st
    assert st["role"] == "leader" and st["is_leader"] and st["has_quorum"]
    assert st["leader_url"] == leader.url and st["ready"] is True
    assert st["journal_syncs"] > 0 and st["commands_succeeded"] >= 2
    assert follower.role == "follower" and follower.has_quorum and follower.is_ready()
    assert leader.term >= 1 and leader.commit_index >= leader.last_applied >= 1

    i = c.nodes.index(leader)
    await wait_until(lambda: c.events[i] == ["leader"], timeout=5, what="on_become_leader")
    await wait_until(
        lambda: all(n.status()["keepalive_pings_sent"] >= 2 for n in c.nodes),
        timeout=5,
        what="keepalive pings on every link",
    )


async def test_submit_timeout_is_outcome_unknown(inproc_cluster: InprocCluster) -> None:
    c = inproc_cluster
    leader = await c.leader()
    for node in c.nodes:
        node.machine.gate.clear()  # the "block" op now parks the tick thread
    try:
        with pytest.raises(OutcomeUnknown):
            await leader.submit({"op": "block"}, timeout=0.5)
    finally:
        for node in c.nodes:
            node.machine.gate.set()
    # The command was committed after all: the outcome really was unknown, not failed.
    await wait_until(
        lambda: all(n.machine.applied >= 1 for n in c.nodes), timeout=15, what="the block op"
    )
    leader = await c.leader()
    assert (await leader.submit({"op": "incr", "k": "after"}, timeout=5))["value"] == 1


async def test_apply_crash_is_fatal(inproc_cluster: InprocCluster) -> None:
    c = inproc_cluster
    leader = await c.leader()
    with pytest.raises((InvariantViolation, OutcomeUnknown)):
        await leader.submit({"op": "crash"}, timeout=5)
    i = c.nodes.index(leader)
    await wait_until(lambda: bool(c.fatals[i]), timeout=10, what="on_fatal on the leader")
    # Every replica that applied the entry stops (the others may never learn the commit).
    for node, fatals in zip(c.nodes, c.fatals, strict=True):
        if fatals:
            assert isinstance(fatals[0], InvariantViolation)
            assert node.role == "stopped" and not node.is_ready()
    with pytest.raises(Unavailable):
        await leader.submit({"op": "incr", "k": "x"})


async def test_close_fires_lose_leadership(inproc_cluster: InprocCluster) -> None:
    c = inproc_cluster
    leader = await c.leader()
    i = c.nodes.index(leader)
    await wait_until(lambda: c.events[i] == ["leader"], timeout=5, what="on_become_leader")
    await leader.close()
    assert c.events[i] == ["leader", "lost"]
    assert leader.role == "stopped" and not leader.is_leader() and leader.leader_url() is None
    with pytest.raises(Unavailable):
        await leader.submit({"op": "incr", "k": "x"})
    # The two others elect a new leader.
    survivors = c.followers(leader)
    await wait_until(
        lambda: sum(n.is_leader() for n in survivors) == 1, timeout=15, what="a new leader"
    )


def test_snapshot_store_reports_success_only_for_its_own_durable_file(scratch_dir: Path) -> None:
    from pysyncobj import SERIALIZER_STATE

    from mydfs.raft_ext.snapshot import SnapshotStore

    machine = KVMachine()
    machine.data = {"a": 1}
    fatals: list[BaseException] = []
    path = scratch_dir / "raft.snapshot"
    store = SnapshotStore(path, machine, fatals.append)
    raft_data = ((b"\x01", 7, 2), (b"\x01", 6, 2), {TCPNode("127.0.0.1:7001")})
    assert store.check() == SERIALIZER_STATE.NOT_SERIALIZING

    tmp = str(path) + ".tmp"
    store.serialize(tmp, raft_data)
    os.rename(tmp, path)  # what pysyncobj does right after serialize()
    assert store.check() == SERIALIZER_STATE.SUCCESS
    assert store.check() == SERIALIZER_STATE.NOT_SERIALIZING

    store.serialize(tmp, raft_data)
    os.rename(tmp, path)
    received = scratch_dir / "raft.snapshot.1.tmp"  # a snapshot received from the leader
    received.write_bytes(path.read_bytes())
    os.rename(received, path)
    assert store.check() == SERIALIZER_STATE.FAILED

    other = KVMachine()
    loaded = SnapshotStore(path, other, fatals.append).deserialize(str(path))
    assert loaded == raft_data and other.data == {"a": 1} and not fatals

    path.write_bytes(b"garbage")
    with pytest.raises(Corrupt):
        SnapshotStore(path, other, fatals.append).deserialize(str(path))
    assert len(fatals) == 1


async def test_lagging_follower_installs_snapshot_from_leader(
    inproc_cluster: InprocCluster,
) -> None:
    c = inproc_cluster
    leader = await c.leader()
    lagging = c.followers(leader)[0]
    i = c.nodes.index(lagging)
    await lagging.close()
    for k in range(30):
        await leader.submit({"op": "set", "k": f"k{k}", "v": k})
    for node in c.nodes:
        if node is not lagging:
            node.force_log_compaction()
    await wait_until(
        lambda: leader.status()["snapshots_saved"] >= 1, timeout=10, what="leader compaction"
    )
    # The leader's log now starts after what the lagging node has: it must get the snapshot.
    fresh = KVMachine()
    c.nodes[i] = RaftNode(c.settings(i), fresh)
    await c.nodes[i].start()

    async def installed() -> bool:
        dump = await c.nodes[i].read(lambda m: m.dump())
        return len(dump["data"]) == 30

    await wait_until(installed, timeout=15, what="the lagging node to install the snapshot")
    assert fresh.restores >= 1
    await wait_until(
        lambda: c.nodes[i].status()["snapshots_loaded"] >= 1, timeout=5, what="status update"
    )
    assert (await leader.submit({"op": "incr", "k": "n"}))["value"] == 1
