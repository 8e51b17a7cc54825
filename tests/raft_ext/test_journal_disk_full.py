"""The Raft journal on a full disk: refuses appends cleanly, never dies, resumes with space.

The journal lives on a small tmpfs, filled up with a ballast file; ``mount -o remount,size=``
gives space back. Skipped (with the reason) where a tmpfs cannot be mounted.
"""

from __future__ import annotations

import os
import queue
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pysyncobj.journal import FileJournal
from pysyncobj.pickle import dumps

from mydfs.common.errors import DiskFull, SyncFailed
from mydfs.raft_ext.bridge import FAIL_DISK_FULL, error_for_fail_reason
from mydfs.raft_ext.diskguard import CommandQueueGuard
from mydfs.raft_ext.journal import RESERVE, FsyncFileJournal
from mydfs.raft_ext.journal_meta import SLOT_SIZE, JournalMeta

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from cluster import Cluster
from diskfill import fill, tmpfs


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted afterwards."""
    root = Path(tempfile.mkdtemp(prefix="raft-journal-full-"))
    try:
        with tmpfs(root, "1m"):
            yield root
    finally:
        root.rmdir()


def resize(directory: Path, size: str) -> None:
    Cluster.resize_tmpfs(directory, size)


def add_until_full(j: FsyncFileJournal, first: int, limit: int = 10_000) -> int:
    """Append 200-byte commands until DiskFull; returns the index that was refused."""
    for idx in range(first, first + limit):
        try:
            j.add(b"\x00" + b"c" * 199, idx, 1)
        except DiskFull:
            return idx
    raise AssertionError("the journal never reported a full disk")


def test_full_disk_refuses_appends_cleanly_and_recovers(small_disk: Path) -> None:
    path = str(small_disk / "raft.journal")
    j = FsyncFileJournal(path)
    for idx in range(1, 11):
        j.add(b"\x00cmd-%d" % idx, idx, 1)
    j.sync()
    ballast = fill(small_disk)
    refused = add_until_full(j, 11)
    assert len(j) == refused - 1 and j[-1][1] == refused - 1
    # The refusal changed nothing; a retry is refused the same way, and the term and vote can
    # still be stored (in place) on the full disk.
    with pytest.raises(DiskFull):
        j.add(b"\x00" + b"c" * 199, refused, 1)
    assert not j.has_room(200)
    j.setCurrentTerm(7, "127.0.0.1:7002")
    j.sync()
    assert j.refused >= 2
    # Compaction needs a new file: skipped on a full disk, the journal kept whole.
    j.deleteEntriesTo(5)
    assert len(j) == refused - 1
    assert not list(small_disk.glob("*.tmp"))
    j._destroy()

    j = FsyncFileJournal(path)  # everything acknowledged-able is there, in order
    assert [e[1] for e in j] == list(range(1, refused))
    assert j.getCurrentTerm() == 7 and j.getVotedForNodeId() == "127.0.0.1:7002"

    resize(small_disk, "4m")  # space returns: appends and compaction work again
    assert j.has_room(200)
    j.add(b"\x00after", refused, 2)
    j.deleteEntriesTo(5)
    j._destroy()
    ballast.unlink()
    j = FsyncFileJournal(path)
    assert [e[1] for e in j] == list(range(6, refused + 1))
    assert j[-1] == (b"\x00after", refused, 2)
    j._destroy()


def test_snapshot_install_fits_in_the_reserve_on_a_full_disk(small_disk: Path) -> None:
    """pysyncobj installs a snapshot as clear() + two adds: the reserve always holds them."""
    path = str(small_disk / "raft.journal")
    j = FsyncFileJournal(path)
    j.add(b"\x00first", 1, 1)
    fill(small_disk)
    refused = add_until_full(j, 2)
    big = b"\x00" + b"s" * (60 * 1024)  # commands are capped below 64 KiB
    assert 2 * len(big) < RESERVE
    j.clear()
    j.add(big, 500, 3)
    j.add(big, 501, 3)
    j.sync()
    with pytest.raises(DiskFull):  # the reserve is for the restore only
        j.add(b"\x00x", 502, 3)
    j._destroy()
    j = FsyncFileJournal(path)
    assert [(e[1], e[2]) for e in j][:2] == [(500, 3), (501, 3)]
    assert refused > 2
    j._destroy()


def test_pysyncobj_reads_the_journal_and_meta(tmp_path: Path) -> None:
    path = str(tmp_path / "raft.journal")
    j = FsyncFileJournal(path)
    for idx in range(1, 4):
        j.add(b"\x00c%d" % idx, idx, 1)
    j.setCurrentTerm(3, None)
    j._destroy()
    plain = FileJournal(path)
    assert len(plain) == 3 and plain.getCurrentTerm() == 3
    plain._destroy()


def test_meta_survives_a_torn_slot_and_migrates_pysyncobj_layout(tmp_path: Path) -> None:
    path = str(tmp_path / "raft.journal.meta")
    with open(path, "wb") as f:  # pysyncobj's own layout: one pickle
        f.write(dumps({"currentTerm": 4, "votedForNodeId": "a:1", "raftCommitIndex": 9}))
    meta = JournalMeta(path)
    assert meta.meta == {"currentTerm": 4, "votedForNodeId": "a:1", "raftCommitIndex": 9}
    assert os.path.getsize(path) == 2 * SLOT_SIZE
    meta.store({"currentTerm": 5, "votedForNodeId": None})  # slot 0
    meta.store({"currentTerm": 6, "votedForNodeId": "b:2"})  # slot 1
    meta.close()
    with open(path, "r+b") as f:  # tear the newest slot
        f.seek(SLOT_SIZE + 10)
        f.write(b"\xff" * 8)
    meta = JournalMeta(path)
    assert meta.meta == {"currentTerm": 5, "votedForNodeId": None}
    meta.store({"currentTerm": 7, "votedForNodeId": None})  # overwrites the torn slot
    meta.close()
    assert JournalMeta(path).meta["currentTerm"] == 7


# -- the leader's command guard ---------------------------------------------------------


class _Queue:
    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def put_nowait(self, value: Any) -> None:
        self.items.append(value)

    def get_nowait(self) -> Any:
        if not self.items:
            raise queue.Empty
        return self.items.pop(0)


class _Transport:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, dict[str, Any]]] = []

    def send(self, node: Any, message: dict[str, Any]) -> bool:
        self.sent.append((node, message))
        return True


class _Host:
    def __init__(self, items: list[Any]) -> None:
        self._SyncObj__commandsQueue = _Queue(items)
        self._SyncObj__transport = _Transport()
        self.transfers = 0

    def transferLeadership(self) -> None:
        self.transfers += 1


class _Journal:
    def __init__(self, room: bool) -> None:
        self.room = room

    def has_room(self, command_bytes: int) -> bool:
        return self.room


def test_guard_refuses_on_a_full_leader_and_hands_leadership_over() -> None:
    results: list[tuple[Any, int]] = []

    def callback(result: Any, reason: int) -> None:
        results.append((result, reason))

    host = _Host([(b"a", callback), (b"b", ("node-2", 17)), (b"c", callback)])
    leading = [True]
    journal = _Journal(room=False)
    guard = CommandQueueGuard(
        host,
        journal,  # type: ignore[arg-type]
        is_leader=lambda: leading[0],
        on_fatal=lambda exc: None,
        clock=lambda: 100.0,
    )
    guard.install()
    assert host._SyncObj__commandsQueue is guard
    with pytest.raises(queue.Empty):
        guard.get_nowait()  # every command refused, then queue.Empty
    assert results == [(None, FAIL_DISK_FULL), (None, FAIL_DISK_FULL)]
    assert host._SyncObj__transport.sent == [
        (
            "node-2",
            {"type": "apply_command_response", "request_id": 17, "error": FAIL_DISK_FULL},
        )
    ]
    assert guard.refused == 3 and host.transfers == 1  # rate-limited: one per TRANSFER_EVERY

    # A follower only forwards commands: its own disk does not matter; with room, no refusal.
    guard.put_nowait((b"d", callback))
    leading[0] = False
    assert guard.get_nowait() == (b"d", callback)
    leading[0], journal.room = True, True
    guard.put_nowait((b"e", callback))
    assert guard.get_nowait() == (b"e", callback)

    error = error_for_fail_reason(FAIL_DISK_FULL, node="n1", leader_url=None, has_quorum=True)
    assert isinstance(error, DiskFull) and error.status == 507


def test_guard_tick_swallows_disk_full_and_stops_on_a_failed_meta_sync() -> None:
    fatals: list[BaseException] = []
    guard = CommandQueueGuard(
        _Host([]),
        _Journal(room=True),  # type: ignore[arg-type]
        is_leader=lambda: True,
        on_fatal=fatals.append,
    )

    def full() -> None:
        raise DiskFull("no space")

    def broken() -> None:
        raise SyncFailed("fdatasync failed", errno=5)

    guard.run_tick(full)
    assert not fatals
    with pytest.raises(SyncFailed):
        guard.run_tick(broken)
    assert len(fatals) == 1
