"""Unit tests of the edit commands of a group's slot table: prepare, commit, rollback."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from mydfs.common.errors import InvalidArgument, SlotOutOfRange
from mydfs.common.location import Location
from mydfs.storage import group_snapshot
from mydfs.storage.chain import walk
from mydfs.storage.edit_commands import MAX_EDIT_SLOTS, Commit, Prepare, Rollback
from mydfs.storage.group_commands import (
    Abort,
    Confirm,
    Delete,
    Move,
    Release,
    Relink,
    Reserve,
    Seal,
    decode_command,
)
from mydfs.storage.group_state import GroupState, SlotState

GROUP = 4
FILE = "00112233445566778899aabbccddeeff"
OTHER = "ffeeddccbbaa99887766554433221100"
NODES = ("n1", "n2")
TXN = "ab" * 16
TXN2 = "cd" * 16


def ok(machine: GroupState, command: Any) -> dict[str, Any]:
    wire = command if isinstance(command, dict) else command.to_dict()
    result = machine.apply(wire)
    assert result["ok"] is True, result
    machine.check_invariants()
    return result


def refused(machine: GroupState, command: Any, error: str, **context: Any) -> dict[str, Any]:
    before = machine.digest()
    wire = command if isinstance(command, dict) else command.to_dict()
    result = machine.apply(wire)
    assert result["ok"] is False, result
    assert result["error"] == error, result
    for key, value in context.items():
        assert result["context"].get(key) == value, result
    assert machine.digest() == before
    machine.check_invariants()
    return result


def live(machine: GroupState, upload_id: str, *, file_id: str = FILE) -> tuple[int, int]:
    got = ok(
        machine,
        Reserve(upload_id=upload_id, file_id=file_id, slice_index=0, length=10, crc32c=1, now_ms=1),
    )
    slot, generation = got["slot"], got["generation"]
    ok(machine, Seal(slot=slot, upload_id=upload_id, generation=generation, holders=NODES))
    return slot, generation


def prepare(
    txn: str = TXN,
    *,
    lock: tuple[tuple[int, int], ...] = (),
    move: tuple[int, int, Location] | None = None,
    new: tuple[tuple[int, int], ...] = (),
    file_id: str = FILE,
    now_ms: int = 100,
) -> Prepare:
    return Prepare(txn=txn, file_id=file_id, now_ms=now_ms, lock=lock, move=move, new=new)


@pytest.fixture
def g() -> GroupState:
    return GroupState(GROUP)


def edit_setup(g: GroupState) -> tuple[tuple[int, int], ...]:
    """Old slices a (entry), b, c and new slices n1, n2, all of FILE."""
    return tuple(live(g, f"u{i}") for i in range(5))


# ---------------------------------------------------------------------------------------------
# the happy paths


def test_prepare_commit_moves_the_entry_point_and_drops_the_rest(g: GroupState) -> None:
    a, b, c, n1, n2 = edit_setup(g)
    cmd = prepare(lock=(a, b, c), move=(*a, Location(GROUP, n1[0])), new=(n1, n2))
    got = ok(g, cmd)
    assert got["state"] == "prepared" and got["duplicate"] is False
    for slot, _ in (a, b, c, n1, n2):
        assert g.lock_of(slot) == TXN
    info = g.txn(TXN)
    assert info is not None and info.state == "prepared" and info.prepared_at_ms == 100
    assert g.prepared_txns() == [info]
    assert g.file_version(FILE) == 0
    got = ok(g, Commit(txn=TXN, version=1, prev=0))
    assert got["state"] == "committed" and got["version"] == 1
    assert sorted(got["slots"]) == sorted([a[0], b[0], c[0]])
    entry = g.get(a[0])
    assert entry is not None and entry.state is SlotState.MOVED
    assert entry.target == Location(GROUP, n1[0])
    for slot, _ in (b, c):
        record = g.get(slot)
        assert record is not None and record.state is SlotState.DELETED
        assert slot in g.free_slots()
    for slot, _ in (a, b, c, n1, n2):
        assert g.lock_of(slot) is None
    assert g.file_version(FILE) == 1
    assert g.prepared_txns() == []
    done = g.txn(TXN)
    assert done is not None and done.state == "committed" and done.version == 1
    # duplicates
    assert ok(g, Commit(txn=TXN, version=1, prev=0))["duplicate"] is True
    again = ok(g, cmd)
    assert again["duplicate"] is True and again["state"] == "committed"


def test_a_moved_entry_point_is_retargeted_and_intermediates_dropped(g: GroupState) -> None:
    a, b, n1, n2 = (live(g, f"u{i}") for i in range(4))
    ok(g, Move(slot=a[0], target=Location(GROUP, b[0])))  # a: 301 -> b (the live slice)
    ok(g, prepare(lock=(a, b), move=(*a, Location(GROUP, n1[0])), new=(n1,)))
    ok(g, Commit(txn=TXN, version=1, prev=0))
    entry = g.get(a[0])
    assert entry is not None and entry.state is SlotState.MOVED
    assert entry.target == Location(GROUP, n1[0])
    # the next edit: the entry point stays a single 301 hop, the former new slice goes
    ok(g, prepare(TXN2, lock=(a, n1), move=(*a, Location(GROUP, n2[0])), new=(n2,)))
    ok(g, Commit(txn=TXN2, version=2, prev=1))
    entry = g.get(a[0])
    assert entry is not None and entry.target == Location(GROUP, n2[0])
    record = g.get(n1[0])
    assert record is not None and record.state is SlotState.DELETED


def test_a_participant_without_move_only_drops(g: GroupState) -> None:
    a, b = live(g, "u0"), live(g, "u1")
    ok(g, prepare(lock=(a, b)))
    ok(g, Commit(txn=TXN, version=5, prev=0))
    assert all(g.get(s).state is SlotState.DELETED for s, _ in (a, b))  # type: ignore[union-attr]
    assert g.file_version(FILE) == 5


def test_a_participant_with_only_new_slices(g: GroupState) -> None:
    n1 = live(g, "u0")
    ok(g, prepare(new=(n1,)))
    ok(g, Commit(txn=TXN, version=1, prev=0))
    record = g.get(n1[0])
    assert record is not None and record.state is SlotState.LIVE
    assert g.lock_of(n1[0]) is None


def test_rollback_drops_the_new_slices_and_unlocks(g: GroupState) -> None:
    a, b, n1 = (live(g, f"u{i}") for i in range(3))
    ok(g, prepare(lock=(a, b), move=(*a, Location(GROUP, n1[0])), new=(n1,)))
    got = ok(g, Rollback(txn=TXN))
    assert got["state"] == "rolled_back" and got["slots"] == [n1[0]]
    assert g.get(a[0]).state is SlotState.LIVE  # type: ignore[union-attr]
    assert g.get(b[0]).state is SlotState.LIVE  # type: ignore[union-attr]
    assert g.get(n1[0]).state is SlotState.DELETED  # type: ignore[union-attr]
    assert all(g.lock_of(s) is None for s, _ in (a, b, n1))
    assert ok(g, Rollback(txn=TXN))["duplicate"] is True
    ok(g, Delete(slot=b[0]))  # unlocked: the ordinary commands work again


def test_rollback_of_an_unknown_txn_blocks_a_late_prepare(g: GroupState) -> None:
    a = live(g, "u0")
    got = ok(g, Rollback(txn=TXN))
    assert got["duplicate"] is False and got["state"] == "rolled_back"
    refused(g, prepare(lock=(a,)), "conflict", reason="rolled_back")
    assert g.lock_of(a[0]) is None


# ---------------------------------------------------------------------------------------------
# prepare refusals


def test_prepare_refusals(g: GroupState) -> None:
    a, b, n1 = (live(g, f"u{i}") for i in range(3))
    other = live(g, "x", file_id=OTHER)
    refused(g, prepare(lock=((a[0], a[1] + 100),)), "conflict", reason="stale_generation")
    refused(g, prepare(lock=((999, 1),)), "not_found", reason="unallocated")
    refused(g, prepare(lock=(other,)), "conflict", reason="another_owner")
    refused(g, prepare(new=(other,)), "conflict", reason="another_owner")
    refused(g, prepare(lock=(a,), move=(*a, Location(GROUP + 1, 3))), "invalid_argument")
    refused(g, prepare(lock=(a,), move=(*a, Location(GROUP, a[0]))), "invalid_argument")
    refused(g, prepare(lock=(a, b), move=(*a, Location(GROUP, b[0]))), "invalid_argument")
    # a pending slot is not lockable
    pend = ok(g, Reserve(upload_id="p", file_id=FILE, slice_index=0, length=1, crc32c=0, now_ms=1))
    refused(g, prepare(lock=((pend["slot"], pend["generation"]),)), "conflict")
    # a deleted one is a 404
    ok(g, Delete(slot=b[0]))
    refused(g, prepare(lock=(b,)), "slice_deleted")
    # a new slice must be live, not moved
    ok(g, Move(slot=n1[0], target=Location(GROUP, a[0])))
    refused(g, prepare(new=(n1,)), "slice_moved")


def test_a_plan_that_saw_a_live_slot_now_moved_is_stale_chain(g: GroupState) -> None:
    """Two edits of one slice planned on the same chain: the first turns the slice's slot into
    a 301 (same generation); the second, whose bytes came from that slot, must not re-target
    it (its commit would drop the first edit's bytes)."""
    a, n1, n2 = (live(g, f"u{i}") for i in range(3))
    ok(g, prepare(lock=(a,), move=(*a, Location(GROUP, n1[0])), new=(n1,)))
    ok(g, Commit(txn=TXN, version=1, prev=0))
    stale = prepare(TXN2, lock=(a,), move=(*a, Location(GROUP, n2[0])), new=(n2,))
    refused(g, stale, "conflict", reason="stale_chain", slot=a[0])
    # planned on the new chain (through the 301 to n1): accepted
    ok(g, prepare(TXN2, lock=(a, n1), move=(*a, Location(GROUP, n2[0])), new=(n2,)))


def test_prepare_refuses_a_slot_locked_by_another_txn(g: GroupState) -> None:
    a, b, n1 = (live(g, f"u{i}") for i in range(3))
    ok(g, prepare(lock=(a,), new=(n1,)))
    refused(g, prepare(TXN2, lock=(b, a)), "conflict", reason="locked", txn=TXN)
    refused(g, prepare(TXN2, new=(n1,)), "conflict", reason="locked", txn=TXN)
    ok(g, prepare(TXN2, lock=(b,)))  # other slots of the same file: fine


def test_prepare_again_same_is_duplicate_other_is_txn_mismatch(g: GroupState) -> None:
    a, b, n1 = (live(g, f"u{i}") for i in range(3))
    ok(g, prepare(lock=(a, b), new=(n1,), now_ms=5))
    got = ok(g, prepare(lock=(b, a), new=(n1,), now_ms=9))  # a retry: another clock
    assert got["duplicate"] is True and got["state"] == "prepared"
    assert g.txn(TXN).prepared_at_ms == 5  # type: ignore[union-attr]
    refused(g, prepare(lock=(a,), new=(n1,)), "conflict", reason="txn_mismatch")
    refused(g, prepare(lock=(a, b), new=(n1,), file_id=OTHER), "conflict", reason="txn_mismatch")


def test_prepare_decoding_refusals() -> None:
    base = prepare(lock=((1, 1), (2, 2)), move=(1, 1, Location(GROUP, 3)), new=((3, 3),))
    wire = base.to_dict()
    assert decode_command(orjson.loads(orjson.dumps(wire))) == base

    def bad(**change: Any) -> None:
        with pytest.raises(InvalidArgument):
            decode_command({**wire, **change})

    bad(txn="AB" * 16)
    bad(txn="ab" * 15)
    bad(lock=[[1, 1], [1, 2]])  # a slot twice
    bad(new=[[1, 1]])  # in both
    bad(lock=[], new=[])  # nothing at all
    bad(move=[2, 5, [GROUP, 3]])  # not in lock (another generation)
    bad(move=[1, 1])
    bad(lock=[[1, 0]])  # generation 0
    bad(lock=[[1, True]])
    bad(lock=[[i, 1] for i in range(MAX_EDIT_SLOTS + 1)], move=None)
    bad(now_ms=-1)
    bad(extra=1)
    with pytest.raises(SlotOutOfRange):
        decode_command({**wire, "lock": [[-1, 1]], "move": None})
    with pytest.raises(InvalidArgument):
        decode_command({k: v for k, v in wire.items() if k != "move"})
    with pytest.raises(InvalidArgument):
        Commit(txn=TXN, version=1, prev=1)
    with pytest.raises(InvalidArgument):
        decode_command({"op": "commit", "txn": TXN, "version": 0, "prev": 0})
    with pytest.raises(InvalidArgument):
        decode_command({"op": "rollback", "txn": TXN, "x": 1})


def test_at_most_max_edit_slots_is_accepted(g: GroupState) -> None:
    refs = tuple((i, 1) for i in range(MAX_EDIT_SLOTS))
    assert len(prepare(lock=refs).lock) == MAX_EDIT_SLOTS


# ---------------------------------------------------------------------------------------------
# commit and rollback refusals


def test_commit_refusals(g: GroupState) -> None:
    a, n1 = live(g, "u0"), live(g, "u1")
    refused(g, Commit(txn=TXN, version=1, prev=0), "not_found", reason="unknown_txn")
    ok(g, prepare(lock=(a,), new=(n1,)))
    refused(g, Commit(txn=TXN, version=3, prev=2), "conflict", reason="out_of_order")
    ok(g, Rollback(txn=TXN))
    refused(g, Commit(txn=TXN, version=1, prev=0), "conflict", reason="rolled_back")


def test_commits_of_one_file_apply_in_the_trackers_order(g: GroupState) -> None:
    a, b, n1, n2 = (live(g, f"u{i}") for i in range(4))
    ok(g, prepare(TXN, lock=(a,), new=(n1,)))
    ok(g, prepare(TXN2, lock=(b,), new=(n2,)))
    # the tracker decided TXN2 (version 1) then TXN (version 2)
    refused(g, Commit(txn=TXN, version=2, prev=1), "conflict", reason="out_of_order")
    ok(g, Commit(txn=TXN2, version=1, prev=0))
    ok(g, Commit(txn=TXN, version=2, prev=1))
    assert g.file_version(FILE) == 2


def test_a_commit_behind_the_files_version_is_version_mismatch(g: GroupState) -> None:
    a, b, n1, n2 = (live(g, f"u{i}") for i in range(4))
    ok(g, prepare(TXN, lock=(a,), new=(n1,)))
    ok(g, prepare(TXN2, lock=(b,), new=(n2,)))
    ok(g, Commit(txn=TXN2, version=3, prev=0))
    refused(g, Commit(txn=TXN, version=2, prev=0), "conflict", reason="version_mismatch")


def test_rollback_of_a_committed_txn_is_refused(g: GroupState) -> None:
    a = live(g, "u0")
    ok(g, prepare(lock=(a,)))
    ok(g, Commit(txn=TXN, version=1, prev=0))
    refused(g, Rollback(txn=TXN), "conflict", reason="committed")


# ---------------------------------------------------------------------------------------------
# locks against the other commands


def test_locked_slots_refuse_the_structural_commands(g: GroupState) -> None:
    a, b, n1 = (live(g, f"u{i}") for i in range(3))
    ok(g, Move(slot=b[0], target=Location(GROUP, a[0])))
    ok(g, prepare(lock=(a, b), new=(n1,)))
    for cmd in (
        Delete(slot=a[0]),
        Move(slot=a[0], target=Location(GROUP, 9)),
        Relink(slot=a[0], next=None),
        Release(slot=b[0]),
        Abort(slot=n1[0], upload_id="u2", generation=n1[1]),
        Delete(slot=n1[0]),
    ):
        refused(g, cmd, "conflict", reason="locked", txn=TXN)
    # confirm, unconfirm and seal are unaffected
    ok(g, Confirm(slot=a[0], node="n3", generation=a[1]))
    ok(g, Seal(slot=n1[0], upload_id="u2", generation=n1[1], holders=("n3",)))


# ---------------------------------------------------------------------------------------------
# the finished window, snapshots, invariants


def test_finished_txns_are_kept_in_a_bounded_window(g: GroupState) -> None:
    g._edit_window = 3  # type: ignore[misc]
    txns = [f"{i:032x}" for i in range(5)]
    for txn in txns:
        ok(g, Rollback(txn=txn))
    assert g.txn(txns[0]) is None and g.txn(txns[1]) is None
    assert all(g.txn(t) is not None for t in txns[2:])


def _edited_machine() -> GroupState:
    g = GroupState(GROUP)
    a, b, c, n1, n2 = edit_setup(g)
    ok(g, prepare(lock=(a, b), move=(*a, Location(GROUP, n1[0])), new=(n1,)))
    ok(g, Commit(txn=TXN, version=1, prev=0))
    ok(g, prepare(TXN2, lock=(c,), new=(n2,), now_ms=7))
    ok(g, Rollback(txn="ef" * 16))
    return g


def test_snapshot_round_trip_keeps_the_edit_tables() -> None:
    g = _edited_machine()
    data = g.snapshot()
    doc = orjson.loads(data)
    assert doc["version"] == 3
    assert len(doc["prepared"]) == 1 and len(doc["finished"]) == 2
    assert doc["file_versions"] == [[FILE, 1]]
    h = GroupState(GROUP)
    h.restore(data)
    assert h.snapshot() == data
    assert h.lock_of(g.txn(TXN2).new[0][0]) == TXN2  # type: ignore[union-attr]
    assert h.prepared_txns() == g.prepared_txns()
    assert h.file_version(FILE) == 1
    for m in (g, h):
        ok(m, Commit(txn=TXN2, version=2, prev=1))
    assert h.digest() == g.digest()


def test_a_version_1_snapshot_still_loads_with_empty_edit_tables() -> None:
    g = GroupState(GROUP)
    live(g, "u0")
    doc = orjson.loads(g.snapshot())
    for key in ("prepared", "finished", "file_versions", "inline"):
        del doc[key]
    doc["version"] = 1
    h = GroupState(GROUP)
    h.restore(orjson.dumps(doc))
    assert h.prepared_txns() == [] and h.file_version(FILE) == 0
    assert h.snapshot() == g.snapshot()
    doc["prepared"] = []  # a v1 snapshot with v2 keys is malformed
    with pytest.raises(Exception, match="keys"):
        h.restore(orjson.dumps(doc))


def _tampered(change: Any) -> bytes:
    doc = orjson.loads(_edited_machine().snapshot())
    change(doc)
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["prepared"].append(d["prepared"][0]),  # prepared twice
        lambda d: d["prepared"][0].__setitem__(3, [[1, 2]]),  # locks a deleted slot
        lambda d: d["prepared"][0].__setitem__(0, "x"),  # bad txn id
        lambda d: d["finished"].append(d["finished"][0]),  # finished twice
        lambda d: d["finished"][0].__setitem__(1, "prepared"),
        lambda d: d["finished"][0].__setitem__(3, 0),  # committed without a version
        lambda d: d["file_versions"].append([FILE, 2]),  # twice
        lambda d: d["file_versions"].__setitem__(0, [FILE, 0]),
        lambda d: d.__setitem__(
            "finished", d["finished"] + [[d["prepared"][0][0], "committed", FILE, 3]]
        ),  # both
    ],
)
def test_restore_refuses_bad_edit_tables(change: Any) -> None:
    g = _edited_machine()
    before = g.digest()
    with pytest.raises(Exception) as info:
        g.restore(_tampered(change))
    assert type(info.value).__name__ == "Corrupt"
    assert g.digest() == before


def test_invariants_catch_a_lock_without_its_txn() -> None:
    g = _edited_machine()
    g._locks[0] = "00" * 16
    with pytest.raises(Exception, match="lock"):
        g.check_invariants()


def test_golden_snapshot() -> None:
    """The snapshot format must not change by accident (docs/group_state.md, "Snapshot")."""
    doc = orjson.loads(_edited_machine().snapshot())
    assert doc["prepared"] == [[TXN2, FILE, 7, [[2, 3]], None, [[4, 5]]]]
    assert doc["finished"] == [[TXN, "committed", FILE, 1], ["ef" * 16, "rolled_back", "", 0]]
    assert doc["file_versions"] == [[FILE, 1]]
    assert doc["inline"] == []
    assert group_snapshot.SNAPSHOT_VERSION == 3
    assert sorted(doc) == [
        "config",
        "file_versions",
        "finished",
        "format",
        "generation",
        "group",
        "inline",
        "prepared",
        "sealed",
        "slot_fields",
        "slots",
        "version",
    ]


# ---------------------------------------------------------------------------------------------
# the chain walk after edits: via


def _linked(g: GroupState, count: int) -> list[tuple[int, int]]:
    """``count`` live slices of FILE chained in slot order (each reserved with its next)."""
    refs = []
    for i in range(count):
        nxt = Location(GROUP, i + 1) if i + 1 < count else None
        got = ok(
            g,
            Reserve(
                upload_id=f"c{i}",
                file_id=FILE,
                slice_index=i,
                length=10,
                crc32c=1,
                now_ms=1,
                next=nxt,
            ),
        )
        assert got["slot"] == i
        ok(g, Seal(slot=i, upload_id=f"c{i}", generation=got["generation"], holders=NODES))
        refs.append((i, got["generation"]))
    return refs


def test_walk_reports_the_301_slots_passed_through() -> None:
    g = GroupState(GROUP)
    _, b, _ = _linked(g, 3)
    entries, nxt = walk(g, 0, 10)
    assert [e.slot for e in entries] == [0, 1, 2] and nxt is None
    assert all(e.via == () for e in entries)
    # an edit of slice b: its entry point (slot 1) becomes a 301 to a new slice -> c
    got = ok(
        g,
        Reserve(
            upload_id="n",
            file_id=FILE,
            slice_index=1,
            length=5,
            crc32c=2,
            now_ms=1,
            next=Location(GROUP, 2),
        ),
    )
    n = (got["slot"], got["generation"])
    ok(g, Seal(slot=n[0], upload_id="n", generation=n[1], holders=NODES))
    ok(g, prepare(lock=(b,), move=(*b, Location(GROUP, n[0])), new=(n,)))
    ok(g, Commit(txn=TXN, version=1, prev=0))
    entries, _ = walk(g, 0, 10)
    assert [e.slot for e in entries] == [0, n[0], 2]
    assert entries[1].via == (b,)
    assert entries[1].to_dict({})["via"] == [list(b)]
    assert entries[0].to_dict({})["via"] == []


# ---------------------------------------------------------------------------------------------
# keep: a compaction relinks a chain around its 301 and releases it


def compaction_setup(g: GroupState) -> tuple[tuple[int, int], ...]:
    """p -> s (a 301 to t), t -> None: the chain a compaction rewrites to p -> t."""
    p, s, t = (live(g, f"k{i}") for i in range(3))
    ok(g, Relink(slot=p[0], next=Location(GROUP, s[0]), generation=p[1]))
    ok(g, Move(slot=s[0], target=Location(GROUP, t[0]), generation=s[1]))
    return p, s, t


def test_keep_relinks_the_predecessor_and_frees_the_301(g: GroupState) -> None:
    p, s, t = compaction_setup(g)
    cmd = Prepare(
        txn=TXN,
        file_id=FILE,
        now_ms=5,
        lock=(p, s, t),
        move=None,
        new=(),
        keep=((*p, Location(GROUP, t[0])), (*t, None)),
    )
    assert cmd.drop == (s,)
    ok(g, cmd)
    refused(g, Release(slot=s[0], generation=s[1]), "conflict", reason="locked")
    got = ok(g, Commit(txn=TXN, version=3, prev=0))
    assert sorted(got["slots"]) == sorted([p[0], s[0]])
    pred, freed, target = g.get(p[0]), g.get(s[0]), g.get(t[0])
    assert pred is not None and pred.next == Location(GROUP, t[0]) and pred.state is SlotState.LIVE
    assert freed is not None and freed.state is SlotState.DELETED
    assert target is not None and target.state is SlotState.LIVE and target.next is None
    assert g.file_version(FILE) == 3 and g.lock_of(t[0]) is None
    entries, end = walk(g, p[0], 10)
    assert [e.slot for e in entries] == [p[0], t[0]] and end is None


def test_keep_round_trips_through_the_wire_and_a_snapshot(g: GroupState) -> None:
    p, s, t = compaction_setup(g)
    cmd = prepare(lock=(p, s, t))
    wire_keep = [[p[0], p[1], [GROUP, t[0]]], [t[0], t[1], None]]
    cmd = Prepare.from_dict({**cmd.to_dict(), "keep": wire_keep})
    assert cmd.keep == ((p[0], p[1], Location(GROUP, t[0])), (t[0], t[1], None))
    assert decode_command(cmd.to_dict()) == cmd
    assert "keep" not in prepare(lock=(p,)).to_dict()  # old form when nothing is kept
    ok(g, cmd)
    copy = GroupState(GROUP)
    copy.restore(g.snapshot())
    assert copy.txn(TXN) == g.txn(TXN) and copy.digest() == g.digest()
    ok(g, cmd)  # the same prepare again: a duplicate
    other = Prepare.from_dict({**cmd.to_dict(), "keep": wire_keep[:1]})
    refused(g, other, "conflict", reason="txn_mismatch")


@pytest.mark.parametrize(
    ("keep", "reason"),
    [
        (lambda p, s, t: ((*p, Location(GROUP, p[0])),), "self_link"),
        (lambda p, s, t: ((*p, Location(GROUP, s[0])),), "next_dropped"),
    ],
)
def test_keep_refusals(g: GroupState, keep: Any, reason: str) -> None:
    p, s, t = compaction_setup(g)
    cmd = Prepare(
        txn=TXN, file_id=FILE, now_ms=5, lock=(p, s, t), move=None, new=(), keep=keep(p, s, t)
    )
    refused(g, cmd, "invalid_argument", reason=reason)


def test_keep_of_a_301_or_outside_lock_is_refused(g: GroupState) -> None:
    p, s, t = compaction_setup(g)
    cmd = Prepare(
        txn=TXN, file_id=FILE, now_ms=5, lock=(p, s, t), move=None, new=(), keep=((*s, None),)
    )
    refused(g, cmd, "slice_moved")
    with pytest.raises(InvalidArgument, match="kept slot must be one of lock"):
        Prepare(txn=TXN, file_id=FILE, now_ms=5, lock=(s, t), move=None, new=(), keep=((*p, None),))
    with pytest.raises(InvalidArgument, match="names a slot twice"):
        Prepare.from_dict({**prepare(lock=(p,)).to_dict(), "keep": [[*p, None], [*p, None]]})


def test_rollback_of_a_compaction_changes_nothing(g: GroupState) -> None:
    p, s, t = compaction_setup(g)
    before = g.digest()
    keep = ((*p, Location(GROUP, t[0])), (*t, None))
    ok(g, Prepare(txn=TXN, file_id=FILE, now_ms=5, lock=(p, s, t), move=None, new=(), keep=keep))
    ok(g, Rollback(txn=TXN))
    pred = g.get(p[0])
    assert pred is not None and pred.next == Location(GROUP, s[0])
    assert g.get(s[0]).state is SlotState.MOVED  # type: ignore[union-attr]
    assert g.lock_of(p[0]) is None and g.digest() != before  # only the txn window grew
