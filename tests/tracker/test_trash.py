"""The trash's decisions, pure: retention, the reclaimer's mark, undelete, purge; and the
service's rules on a real store (durable mark, a record undeleted or not due is not marked)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from tracker_harness import SECRET

from mydfs.common.errors import Conflict, InvalidArgument, InvariantViolation, NotFound
from mydfs.common.location import Location
from mydfs.tracker.config import OPTIONS, from_values
from mydfs.tracker.metrics import TrackerMetrics
from mydfs.tracker.namespace import Namespace, Registration
from mydfs.tracker.records import (
    DeleteFile,
    FileEntry,
    MarkTrash,
    PurgeTrash,
    PutFile,
    TrashReason,
    TrashRecord,
    TrashState,
    Undelete,
)
from mydfs.tracker.service import Tracker
from mydfs.tracker.store import MetaStore, recover
from mydfs.tracker.trash import describe, due, free_at, is_due

DAY = 86_400.0


def fid(n: int) -> str:
    return f"{n:032x}"


def entry(n: int, *, size: int = 10, head: Location | None = None) -> FileEntry:
    head = Location(1, n) if head is None else head
    return FileEntry(fid(n), size, 1, head, "crc32c:0000abcd", 100.0 + n, 200.0 + n, 3)


def ns_with(*files: tuple[str, int]) -> Namespace:
    ns = Namespace()
    for path, n in files:
        ns.apply(PutFile(path, entry(n)))
    return ns


def trashed(path: str, n: int, when: float) -> TrashRecord:
    return TrashRecord.of(path, entry(n), when, TrashReason.DELETED)


# --- retention --------------------------------------------------------------------------------


def test_a_held_record_is_due_only_after_the_retention() -> None:
    r = trashed("/a", 1, 1000.0)
    assert free_at(r, DAY) == 1000.0 + DAY
    assert not is_due(r, 1000.0 + DAY - 0.001, DAY)
    assert is_due(r, 1000.0 + DAY, DAY)
    shown = describe(r, 1000.0, DAY)
    assert shown["state"] == "held" and shown["free_at"] == 1000.0 + DAY and not shown["due"]
    assert shown["restorable"] is True


def test_purged_and_marked_records_are_due_at_once() -> None:
    for state in (TrashState.PURGED, TrashState.RECLAIMING):
        r = trashed("/a", 1, 1000.0).with_state(state)
        assert free_at(r, DAY) is None and is_due(r, 1000.0, DAY)
    marked = describe(trashed("/a", 1, 0).with_state(TrashState.RECLAIMING), 0, DAY)
    assert marked["state"] == "reclaiming" and marked["restorable"] is False


def test_due_lists_oldest_first_and_leaves_held_ones() -> None:
    old, young = trashed("/a", 1, 10.0), trashed("/b", 2, 500.0)
    purged = trashed("/c", 3, 900.0).with_state(TrashState.PURGED)
    assert due([purged, young, old], now=100.0, retention=50.0) == [old, purged]


# --- delete and overwrite keep the whole entry ------------------------------------------------


def test_delete_keeps_everything_an_undelete_needs() -> None:
    ns = ns_with(("/d/a", 1))
    original = ns.stat("/d/a")
    ns.apply(ns.plan_delete("/d/a", now=5000.0))
    [record] = ns.trash()
    assert record.entry() == original and record.state is TrashState.HELD
    assert (record.time, record.reason) == (5000.0, TrashReason.DELETED)
    assert not ns.is_dir("/d")  # the folder went with its last file


# --- undelete ---------------------------------------------------------------------------------


def test_undelete_restores_the_entry_under_its_old_or_a_new_path() -> None:
    ns = ns_with(("/d/a", 1), ("/d/b", 2))
    a, b = ns.stat("/d/a"), ns.stat("/d/b")
    ns.apply(ns.plan_delete("/d/a", now=10.0))
    ns.apply(ns.plan_delete("/d/b", now=11.0))
    edit = ns.plan_undelete("/d/a")
    assert edit == Undelete(fid(1), "/d/a")
    assert ns.apply(edit) == a and ns.stat("/d/a") == a
    ns.apply(ns.plan_undelete("/d/b", "/e/f/b2"))
    assert ns.stat("/e/f/b2") == b and ns.get("/d/b") is None
    assert ns.trash() == [] and ns.files == 2 and ns.bytes == a.size + b.size
    ns.check_invariants()


def test_undelete_takes_the_newest_record_of_a_path_unless_given_an_id() -> None:
    ns = ns_with(("/a", 1))
    ns.apply(ns.plan_delete("/a", now=10.0))
    ns.apply(PutFile("/a", entry(2)))
    ns.apply(ns.plan_delete("/a", now=20.0))
    ns.apply(PutFile("/a", entry(3)))
    ns.apply(ns.plan_delete("/a", now=15.0))  # removed at an earlier clock: not the newest
    assert ns.plan_undelete("/a").file_id == fid(2)
    assert ns.plan_undelete("/a", file_id=fid(1)).file_id == fid(1)
    assert ns.plan_undelete(None, file_id=fid(3)).file_id == fid(3)
    with pytest.raises(NotFound):
        ns.plan_undelete("/other", file_id=fid(1))  # that record is not of this path
    with pytest.raises(NotFound):
        ns.plan_undelete("/a", file_id=fid(9))
    with pytest.raises(NotFound):
        ns.plan_undelete("/nothing")
    with pytest.raises(InvalidArgument):
        ns.plan_undelete("/a", file_id="XYZ")
    with pytest.raises(InvalidArgument):
        ns.plan_undelete("/a", "relative/path")


def test_undelete_onto_a_taken_path_is_a_conflict_and_changes_nothing() -> None:
    ns = ns_with(("/a", 1), ("/dir/x", 2), ("/f", 3))
    ns.apply(ns.plan_delete("/a", now=10.0))
    ns.apply(PutFile("/a", entry(4)))  # a new file at the old path
    before = ns.state()
    for target in (None, "/dir", "/f/under", "/dir/x"):
        with pytest.raises(Conflict):
            ns.plan_undelete("/a", target)
    assert ns.state() == before
    ns.apply(ns.plan_undelete("/a", "/a.old"))
    assert ns.stat("/a.old").file_id == fid(1) and ns.stat("/a").file_id == fid(4)


def test_overwritten_files_can_be_undeleted_too() -> None:
    ns = ns_with(("/a", 1))
    reg = Registration(fid(2), 5, 1, Location(1, 99), "")
    put = ns.plan_put("/a", reg, now=300.0, overwrite=True)
    assert put is not None
    ns.apply(put)
    [record] = ns.trash()
    assert record.reason is TrashReason.REPLACED
    ns.apply(ns.plan_undelete("/a", "/a.v1"))
    assert ns.stat("/a.v1") == entry(1)


def test_a_marked_record_can_never_be_undeleted() -> None:
    ns = ns_with(("/a", 1))
    ns.apply(ns.plan_delete("/a", now=10.0))
    mark = ns.plan_mark(fid(1))
    assert mark == MarkTrash(fid(1))
    ns.apply(mark)
    assert ns.plan_mark(fid(1)) is None  # already marked
    with pytest.raises(Conflict, match="no longer be undeleted"):
        ns.plan_undelete("/a")
    with pytest.raises(InvariantViolation):  # nor on replay
        ns.apply(Undelete(fid(1), "/a"))
    assert ns.plan_purge("/a", None) == []  # nothing left to purge: it is being freed
    ns.apply(PurgeTrash(fid(1)))
    assert ns.find_trash(fid(1)).state is TrashState.RECLAIMING  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        ns.plan_mark(fid(9))


def test_records_of_an_older_tracker_load_but_cannot_be_undeleted() -> None:
    ns = Namespace()
    old = TrashRecord(fid(1), "/a", 10, 1, Location(1, 1), 5.0, TrashReason.DELETED)
    ns.load_trash(old)
    with pytest.raises(Conflict, match="older tracker"):
        ns.plan_undelete("/a")
    assert ns.plan_purge("/a", None) == [PurgeTrash(fid(1))]


def test_an_empty_file_is_undeleted_too() -> None:
    ns = Namespace()
    empty = dataclasses.replace(entry(1, size=0), slices=0, head=None)
    ns.apply(PutFile("/e", empty))
    ns.apply(DeleteFile("/e", 5.0))
    ns.apply(ns.plan_undelete("/e"))
    assert ns.stat("/e") == empty


# --- purge ------------------------------------------------------------------------------------


def test_purge_one_or_all() -> None:
    ns = ns_with(("/a", 1), ("/b", 2), ("/c", 3))
    for path, when in (("/a", 1.0), ("/b", 2.0), ("/c", 3.0)):
        ns.apply(ns.plan_delete(path, now=when))
    [edit] = ns.plan_purge("/b", None)
    ns.apply(edit)
    assert ns.find_trash(fid(2)).state is TrashState.PURGED  # type: ignore[union-attr]
    assert ns.plan_purge("/b", None) == []  # purged already: nothing to do
    ns.apply(ns.plan_undelete("/b"))  # a purged record is still undeletable until marked
    assert ns.get("/b") is not None
    with pytest.raises(NotFound):
        ns.plan_purge("/b", None)
    with pytest.raises(NotFound):
        ns.plan_purge("/zzz", None)
    with pytest.raises(InvalidArgument):
        ns.plan_purge(None, None)
    edits = ns.plan_purge(None, None, every=True)
    assert sorted(e.file_id for e in edits) == [fid(1), fid(3)]
    for e in edits:
        ns.apply(e)
    assert {r.state for r in ns.trash()} == {TrashState.PURGED}


# --- the service on a real store --------------------------------------------------------------


async def test_mark_is_durable_and_refused_for_undeleted_or_young_records(tmp_path: Path) -> None:
    values = {opt.key: opt.default for opt in OPTIONS}
    values.update(data_dir=tmp_path, secret=SECRET, trash_retention=3600.0)
    config = from_values(values)
    store = await MetaStore.open(tmp_path, checkpoint_interval=3600)
    clock = [1_000_000.0]
    tracker = Tracker(config, store, TrackerMetrics(), wall=lambda: clock[0])
    try:
        for n, path in ((1, "/a"), (2, "/b")):
            store.submit(PutFile(path, entry(n)))
        await tracker.delete_file("/a")
        await tracker.delete_file("/b")
        assert await tracker.trash_records() == []  # held: not the reclaimer's yet
        listed = (await tracker.trash())["trash"]
        assert [r["path"] for r in listed] == ["/a", "/b"]
        assert listed[0]["free_at"] == clock[0] + 3600.0
        [purged] = (await tracker.purge({"path": "/b"}))["purged"]
        assert purged["state"] == "purged" and purged["free_at"] is None
        [record] = await tracker.trash_records()
        assert record.path == "/b"
        young = store.ns.find_trash(fid(1))
        assert young is not None
        with pytest.raises(Conflict, match="not due"):
            await tracker.mark_reclaiming(young)
        clock[0] += 3600.0
        assert [r.path for r in await tracker.trash_records()] == ["/a", "/b"]
        await tracker.undelete({"path": "/a"})
        with pytest.raises(NotFound):  # undeleted since the pass began: not marked
            await tracker.mark_reclaiming(young)
        await tracker.mark_reclaiming(record)
        with pytest.raises(Conflict):
            await tracker.undelete({"path": "/b", "new_path": "/b2"})
        with pytest.raises(InvalidArgument):
            await tracker.purge({"all": True, "path": "/b"})
        with pytest.raises(InvalidArgument):
            await tracker.undelete({"new_path": "/x"})
    finally:
        await store.close()
    ns, _, _ = recover(tmp_path)  # the mark and the undelete survive a restart
    assert ns.find_trash(fid(2)).state is TrashState.RECLAIMING  # type: ignore[union-attr]
    assert ns.find_trash(fid(1)) is None and ns.stat("/a") == entry(1)


async def test_rm_now_purges_in_the_same_step(tmp_path: Path) -> None:
    values = {opt.key: opt.default for opt in OPTIONS}
    values.update(data_dir=tmp_path, secret=SECRET)
    store = await MetaStore.open(tmp_path, checkpoint_interval=3600)
    tracker = Tracker(from_values(values), store, TrackerMetrics())
    try:
        store.submit(PutFile("/a", entry(1)))
        body = await tracker.delete_file("/a", purge=True)
        assert body["purged"] is True and body["deleted"]["file_id"] == fid(1)
        assert [r.file_id for r in await tracker.trash_records()] == [fid(1)]
    finally:
        await store.close()


def test_config_refuses_a_retention_of_zero_or_less(tmp_path: Path) -> None:
    values = {opt.key: opt.default for opt in OPTIONS}
    values.update(data_dir=tmp_path, secret=SECRET)
    assert from_values(values).trash_retention == DAY
    for bad in (0.0, -5.0, float("nan"), float("inf")):
        with pytest.raises(InvalidArgument, match="trash_retention"):
            from_values(dict(values, trash_retention=bad))


def test_cluster_up_refuses_a_retention_of_zero(capsys: pytest.CaptureFixture[str]) -> None:
    from mydfs.client.cli import main

    assert main(["cluster", "up", "--trash-retention", "0"]) == 2  # before anything starts
    assert "--trash-retention must be a number of seconds > 0" in capsys.readouterr().err
