"""Unit tests of the storage group's replicated slot table, command by command."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import orjson
import pytest

from mydfs.common.errors import (
    AlreadyExists,
    Conflict,
    Corrupt,
    DiskFull,
    IncompatibleVolume,
    InvalidArgument,
    InvariantViolation,
    NotFound,
    SliceDeleted,
    SliceMoved,
)
from mydfs.common.location import Location
from mydfs.storage.group_commands import (
    Abort,
    Command,
    Configure,
    Confirm,
    ConfirmMany,
    Delete,
    Move,
    Noop,
    Release,
    Relink,
    Reserve,
    Seal,
    Unconfirm,
)
from mydfs.storage.group_state import (
    DEFAULT_UPLOAD_WINDOW,
    GroupState,
    SlotState,
    raise_for_result,
)

GROUP = 4
FILE = "00112233445566778899aabbccddeeff"
NODES = ("n1", "n2")


def reserve_cmd(upload_id: str, **kw: Any) -> Reserve:
    args: dict[str, Any] = {
        "file_id": FILE,
        "slice_index": 0,
        "length": 1000,
        "crc32c": 77,
        "now_ms": 1_000,
    }
    args.update(kw)
    return Reserve(upload_id=upload_id, **args)


def ok(machine: GroupState, command: Any) -> dict[str, Any]:
    wire = command if isinstance(command, dict) else command.to_dict()
    result = machine.apply(wire)
    assert result["ok"] is True, result
    return result


def refused(machine: GroupState, command: Any, error: str, **context: Any) -> dict[str, Any]:
    """Apply a command that must be refused; check the code, context and that nothing changed."""
    before = machine.digest()
    wire = command.to_dict() if isinstance(command, Command) else command
    result = machine.apply(wire)
    assert result["ok"] is False, result
    assert result["error"] == error, result
    for key, value in context.items():
        assert result["context"].get(key) == value, result
    assert machine.digest() == before
    machine.check_invariants()
    return result


def gen(machine: GroupState, slot: int) -> int:
    """The generation a slot is at now (1 for a slot never allocated)."""
    info = machine.get(slot)
    return 1 if info is None else info.generation


def reserve(machine: GroupState, upload_id: str, **kw: Any) -> int:
    result = ok(machine, reserve_cmd(upload_id, **kw))
    assert result["duplicate"] is False
    slot: int = result["slot"]
    return slot


def live(machine: GroupState, upload_id: str, **kw: Any) -> int:
    slot = reserve(machine, upload_id, **kw)
    ok(machine, Seal(slot=slot, upload_id=upload_id, generation=gen(machine, slot), holders=NODES))
    return slot


@pytest.fixture
def g() -> GroupState:
    return GroupState(GROUP)


# ---------------------------------------------------------------------------------------------
# a fresh machine


def test_fresh_machine(g: GroupState) -> None:
    stats = g.stats()
    assert (stats.group, stats.end, stats.generation) == (GROUP, 0, 0)
    assert (stats.pending, stats.live, stats.moved, stats.deleted) == (0, 0, 0, 0)
    assert stats.available is None
    assert g.next_slot() == 0
    assert g.free_slots() == []
    assert g.slots() == []
    assert g.pending() == []
    assert g.uploads() == []
    assert g.get(0) is None
    assert g.get(-1) is None
    assert g.config.upload_window == DEFAULT_UPLOAD_WINDOW
    assert g.config.min_holders == 2
    g.check_invariants()


def test_bad_genesis_config() -> None:
    with pytest.raises(InvalidArgument):
        GroupState(-1)
    with pytest.raises(InvalidArgument):
        GroupState(1, min_holders=0)
    with pytest.raises(InvalidArgument):
        GroupState(1, max_slots=0)


def test_noop(g: GroupState) -> None:
    before = g.digest()
    assert g.apply(Noop().to_dict()) == {"ok": True, "op": "noop"}
    assert g.digest() == before


# ---------------------------------------------------------------------------------------------
# reserve


def test_reserve_allocates_at_the_end_with_new_generations(g: GroupState) -> None:
    for i in range(3):
        result = ok(g, reserve_cmd(f"u{i}", slice_index=i, now_ms=100 + i))
        assert result == {
            "ok": True,
            "op": "reserve",
            "slot": i,
            "generation": i + 1,
            "state": "pending",
            "duplicate": False,
            "holders": [],
        }
    info = g.get(1)
    assert info is not None
    assert info.state is SlotState.PENDING
    assert (info.upload_id, info.slice_index, info.reserved_at_ms) == ("u1", 1, 101)
    assert info.holders == () and info.target is None
    assert [p.slot for p in g.pending()] == [0, 1, 2]
    assert [p.slot for p in g.pending(reserved_before_ms=102)] == [0, 1]
    stats = g.stats()
    assert (stats.end, stats.pending, stats.bytes_pending, stats.uploads_pending) == (3, 3, 3000, 3)
    ref = g.upload("u2")
    assert ref is not None and (ref.slot, ref.generation, ref.sealed) == (2, 3, False)
    assert ref.state is SlotState.PENDING


def test_reserve_retry_returns_the_same_slot(g: GroupState) -> None:
    slot = reserve(g, "u1")
    before = g.digest()
    again = ok(g, reserve_cmd("u1", now_ms=9_999))  # a later clock does not matter
    assert (again["slot"], again["generation"], again["state"]) == (slot, 1, "pending")
    assert again["duplicate"] is True
    assert g.digest() == before
    ok(g, Seal(slot=slot, upload_id="u1", generation=gen(g, slot), holders=NODES))
    again = ok(g, reserve_cmd("u1"))
    assert (again["slot"], again["state"], again["duplicate"]) == (slot, "live", True)
    assert again["holders"] == ["n1", "n2"]
    assert g.stats().end == 1


def test_reserve_retry_with_other_content_is_refused(g: GroupState) -> None:
    reserve(g, "u1")
    refused(g, reserve_cmd("u1", crc32c=78), AlreadyExists.code, upload_id="u1", slot=0)
    refused(g, reserve_cmd("u1", length=999), AlreadyExists.code)
    refused(g, reserve_cmd("u1", slice_index=1), AlreadyExists.code)


def test_reserve_prefers_the_lowest_free_slot(g: GroupState) -> None:
    for i in range(5):
        live(g, f"u{i}")
    for slot in (3, 1, 4):
        ok(g, Delete(slot=slot))
    assert g.free_slots() == [1, 3, 4]
    assert g.next_slot() == 1
    assert reserve(g, "a") == 1
    assert reserve(g, "b") == 3
    assert reserve(g, "c") == 4
    assert reserve(g, "d") == 5
    reused = g.get(1)
    assert reused is not None and reused.generation == 6 and reused.upload_id == "a"


def test_reserve_when_full(g: GroupState) -> None:
    ok(g, Configure(max_slots=2, min_holders=2, upload_window=10))
    live(g, "a")
    reserve(g, "b")
    assert g.stats().available == 0
    assert g.next_slot() is None
    refused(g, reserve_cmd("c"), DiskFull.code, group=GROUP, max_slots=2)
    ok(g, Delete(slot=0))
    assert g.stats().available == 1
    assert reserve(g, "c") == 0


def test_reserve_refuses_a_self_link(g: GroupState) -> None:
    refused(g, reserve_cmd("a", next=Location(GROUP, 0)), "invalid_argument", reason="self_link")
    assert reserve(g, "a", next=Location(GROUP + 1, 0)) == 0
    assert reserve(g, "b", next=Location(GROUP, 0)) == 1


# ---------------------------------------------------------------------------------------------
# seal


def test_seal_makes_a_slot_live(g: GroupState) -> None:
    slot = reserve(g, "u1", length=4096)
    result = ok(g, Seal(slot=slot, upload_id="u1", generation=gen(g, slot), holders=("n3", "n1")))
    assert result["state"] == "live" and result["duplicate"] is False
    assert result["holders"] == ["n1", "n3"]
    assert g.holders(slot) == ("n1", "n3")
    stats = g.stats()
    assert (stats.live, stats.pending, stats.bytes_live, stats.bytes_pending) == (1, 0, 4096, 0)
    assert g.pending() == []
    ref = g.upload("u1")
    assert ref is not None and ref.sealed and ref.state is SlotState.LIVE
    assert g.require_live(slot).upload_id == "u1"


def test_seal_retry_merges_holders(g: GroupState) -> None:
    slot = live(g, "u1")
    result = ok(g, Seal(slot=slot, upload_id="u1", generation=gen(g, slot), holders=("n3",)))
    assert result["duplicate"] is True
    assert g.holders(slot) == ("n1", "n2", "n3")
    before = g.digest()
    assert (
        ok(g, Seal(slot=slot, upload_id="u1", generation=gen(g, slot), holders=NODES))["duplicate"]
        is True
    )
    assert g.digest() == before


def test_seal_refusals(g: GroupState) -> None:
    slot = reserve(g, "u1")
    refused(
        g,
        Seal(slot=slot, upload_id="u1", generation=gen(g, slot), holders=("n1",)),
        "invalid_argument",
    )
    refused(
        g,
        Seal(slot=5, upload_id="u1", generation=gen(g, 5), holders=NODES),
        NotFound.code,
        reason="unallocated",
    )
    refused(
        g,
        Seal(slot=slot, upload_id="u2", generation=gen(g, slot), holders=NODES),
        Conflict.code,
        reason="upload_mismatch",
    )
    ok(g, Abort(slot=slot, upload_id="u1", generation=gen(g, slot)))
    refused(
        g,
        Seal(slot=slot, upload_id="u1", generation=gen(g, slot), holders=NODES),
        SliceDeleted.code,
        slot=slot,
    )
    reserve(g, "u2")  # reuses the slot
    refused(
        g,
        Seal(slot=slot, upload_id="u1", generation=gen(g, slot), holders=NODES),
        Conflict.code,
        reason="upload_mismatch",
    )


def test_a_stale_seal_cannot_seal_a_later_reservation() -> None:
    g = GroupState(GROUP, upload_window=0)  # no retry window: "u1" is forgotten once sealed
    slot = live(g, "u1")
    ok(g, Delete(slot=slot))
    assert reserve(g, "u1") == slot  # the same upload id reserves the same slot again
    assert gen(g, slot) == 2
    stale = Seal(slot=slot, upload_id="u1", generation=1, holders=NODES)
    refused(g, stale, Conflict.code, reason="stale_generation", generation=2)
    refused(g, Abort(slot=slot, upload_id="u1", generation=1), Conflict.code)
    ok(g, Seal(slot=slot, upload_id="u1", generation=2, holders=NODES))


def test_min_holders_is_configurable(g: GroupState) -> None:
    ok(g, Configure(max_slots=None, min_holders=1, upload_window=10))
    slot = reserve(g, "u1")
    ok(g, Seal(slot=slot, upload_id="u1", generation=gen(g, slot), holders=("n1",)))


# ---------------------------------------------------------------------------------------------
# abort


def test_abort_frees_the_slot_and_forgets_the_upload(g: GroupState) -> None:
    slot = reserve(g, "u1")
    result = ok(g, Abort(slot=slot, upload_id="u1", generation=gen(g, slot)))
    assert (result["state"], result["duplicate"]) == ("deleted", False)
    assert g.free_slots() == [slot]
    assert g.upload("u1") is None
    assert g.pending() == []
    assert ok(g, Abort(slot=slot, upload_id="u1", generation=gen(g, slot)))["duplicate"] is True
    # the client's retry of the same upload gets a fresh reservation (the same slot, reused)
    again = ok(g, reserve_cmd("u1"))
    assert (again["slot"], again["generation"], again["duplicate"]) == (slot, 2, False)


def test_abort_refusals(g: GroupState) -> None:
    slot = live(g, "u1")
    refused(
        g,
        Abort(slot=slot, upload_id="u1", generation=gen(g, slot)),
        Conflict.code,
        reason="wrong_state",
    )
    refused(
        g,
        Abort(slot=slot, upload_id="zz", generation=gen(g, slot)),
        Conflict.code,
        reason="upload_mismatch",
    )
    refused(g, Abort(slot=9, upload_id="u1", generation=gen(g, 9)), NotFound.code)


# ---------------------------------------------------------------------------------------------
# delete


def test_delete(g: GroupState) -> None:
    slot = live(g, "u1")
    result = ok(g, Delete(slot=slot, generation=1))
    assert (result["state"], result["holders"]) == ("deleted", [])
    assert g.free_slots() == [slot]
    assert g.stats().bytes_live == 0
    assert ok(g, Delete(slot=slot))["duplicate"] is True
    assert ok(g, Delete(slot=slot, generation=1))["duplicate"] is True
    ref = g.upload("u1")
    assert ref is not None and ref.state is SlotState.DELETED


def test_delete_refusals(g: GroupState) -> None:
    pending = reserve(g, "p")
    refused(g, Delete(slot=pending), Conflict.code, reason="wrong_state", state="pending")
    slot = live(g, "u1")
    refused(g, Delete(slot=slot, generation=1), Conflict.code, reason="stale_generation")
    refused(g, Delete(slot=99), NotFound.code)
    ok(g, Move(slot=slot, target=Location(1, 1)))
    result = refused(g, Delete(slot=slot), SliceMoved.code)
    assert result["context"]["target"] == "1:1"


def test_stale_delete_cannot_hit_a_reused_slot(g: GroupState) -> None:
    slot = live(g, "u1")
    ok(g, Delete(slot=slot, generation=1))
    live(g, "u2")  # reuses the slot at generation 2
    refused(g, Delete(slot=slot, generation=1), Conflict.code, reason="stale_generation")
    info = g.get(slot)
    assert info is not None and info.state is SlotState.LIVE and info.upload_id == "u2"


# ---------------------------------------------------------------------------------------------
# move and release


def test_move_makes_a_301_that_is_never_reused(g: GroupState) -> None:
    slot = live(g, "u1")
    result = ok(g, Move(slot=slot, target=Location(2, 7), generation=1))
    assert (result["state"], result["target"]) == ("moved", [2, 7])
    assert ok(g, Move(slot=slot, target=Location(2, 7)))["duplicate"] is True
    assert g.free_slots() == []
    assert reserve(g, "u2") == slot + 1
    with pytest.raises(SliceMoved) as info:
        g.require_live(slot)
    assert info.value.target == (2, 7)
    stats = g.stats()
    assert (stats.moved, stats.live, stats.bytes_live) == (1, 0, 0)


def test_move_refusals(g: GroupState) -> None:
    slot = live(g, "u1")
    refused(
        g, Move(slot=slot, target=Location(GROUP, slot)), "invalid_argument", reason="self_redirect"
    )
    ok(g, Move(slot=slot, target=Location(2, 7)))
    refused(g, Move(slot=slot, target=Location(2, 8)), SliceMoved.code, target="2:7")
    pending = reserve(g, "p")
    refused(g, Move(slot=pending, target=Location(2, 8)), Conflict.code, reason="wrong_state")


def test_release_frees_a_301(g: GroupState) -> None:
    slot = live(g, "u1")
    refused(g, Release(slot=slot), Conflict.code, reason="wrong_state", state="live")
    ok(g, Move(slot=slot, target=Location(2, 7)))
    result = ok(g, Release(slot=slot, generation=1))
    assert (result["state"], result["duplicate"]) == ("deleted", False)
    assert "target" not in result
    assert g.free_slots() == [slot]
    assert ok(g, Release(slot=slot))["duplicate"] is True
    assert reserve(g, "u2") == slot


# ---------------------------------------------------------------------------------------------
# relink


def test_relink(g: GroupState) -> None:
    slot = reserve(g, "u1")
    result = ok(g, Relink(slot=slot, next=Location(1, 2)))
    assert result["duplicate"] is False
    info = g.get(slot)
    assert info is not None and info.next == Location(1, 2)
    assert ok(g, Relink(slot=slot, next=Location(1, 2)))["duplicate"] is True
    ok(g, Seal(slot=slot, upload_id="u1", generation=gen(g, slot), holders=NODES))
    ok(g, Relink(slot=slot, next=None, generation=1))
    info = g.get(slot)
    assert info is not None and info.next is None


def test_relink_refusals(g: GroupState) -> None:
    slot = live(g, "u1")
    refused(
        g, Relink(slot=slot, next=Location(GROUP, slot)), "invalid_argument", reason="self_link"
    )
    refused(g, Relink(slot=slot, next=None, generation=3), Conflict.code, reason="stale_generation")
    ok(g, Move(slot=slot, target=Location(1, 1)))
    refused(g, Relink(slot=slot, next=None), SliceMoved.code)
    other = live(g, "u2")
    ok(g, Delete(slot=other))
    refused(g, Relink(slot=other, next=None), SliceDeleted.code)


# ---------------------------------------------------------------------------------------------
# confirm / unconfirm


def test_confirm_and_unconfirm(g: GroupState) -> None:
    slot = live(g, "u1")
    assert [r.slot for r in g.missing_on("n3")] == [slot]
    assert g.missing_on("n1") == []
    result = ok(g, Confirm(slot=slot, node="n3", generation=1))
    assert result["holders"] == ["n1", "n2", "n3"]
    assert g.missing_on("n3") == []
    assert ok(g, Confirm(slot=slot, node="n3", generation=1))["duplicate"] is True
    ok(g, Unconfirm(slot=slot, node="n1", generation=1))
    assert g.holders(slot) == ("n2", "n3")
    assert ok(g, Unconfirm(slot=slot, node="n1", generation=1))["duplicate"] is True


def test_confirm_refusals(g: GroupState) -> None:
    pending = reserve(g, "p")
    refused(g, Confirm(slot=pending, node="n3", generation=1), Conflict.code, reason="wrong_state")
    slot = live(g, "u1")
    refused(
        g, Confirm(slot=slot, node="n3", generation=1), Conflict.code, reason="stale_generation"
    )
    refused(g, Confirm(slot=42, node="n3", generation=1), NotFound.code)
    ok(g, Delete(slot=slot))
    refused(g, Confirm(slot=slot, node="n3", generation=2), SliceDeleted.code)
    refused(g, Unconfirm(slot=slot, node="n1", generation=2), SliceDeleted.code)
    with pytest.raises(NotFound):
        g.holders(42)


def test_confirm_many_confirms_each_slice_on_its_own(g: GroupState) -> None:
    first, second, pending = live(g, "u1"), live(g, "u2"), reserve(g, "p")
    ok(g, Confirm(slot=second, node="n3", generation=gen(g, second)))
    result = ok(
        g,
        ConfirmMany(
            node="n3",
            slices=(
                (first, gen(g, first)),
                (second, gen(g, second)),
                (pending, gen(g, pending)),
                (42, 1),
            ),
        ),
    )
    assert result["slots"] == [first, second]  # newly, and already, held
    assert [(r["slot"], r["error"], r["context"].get("reason")) for r in result["refused"]] == [
        (pending, Conflict.code, "wrong_state"),
        (42, NotFound.code, "unallocated"),
    ]
    assert g.holders(first) == ("n1", "n2", "n3")
    assert g.missing_on("n3") == []


def test_holders_are_bounded(g: GroupState) -> None:
    slot = reserve(g, "u1")
    ok(
        g,
        Seal(
            slot=slot,
            upload_id="u1",
            generation=gen(g, slot),
            holders=tuple(f"n{i:02}" for i in range(16)),
        ),
    )
    refused(g, Confirm(slot=slot, node="x", generation=1), "invalid_argument")
    refused(
        g,
        Seal(slot=slot, upload_id="u1", generation=gen(g, slot), holders=("x",)),
        "invalid_argument",
    )


# ---------------------------------------------------------------------------------------------
# configure and the upload-id window


def test_configure(g: GroupState) -> None:
    result = ok(g, Configure(max_slots=10, min_holders=3, upload_window=5))
    assert result == {
        "ok": True,
        "op": "configure",
        "duplicate": False,
        "config": {"max_slots": 10, "min_holders": 3, "upload_window": 5},
    }
    assert ok(g, Configure(max_slots=10, min_holders=3, upload_window=5))["duplicate"] is True
    assert g.stats().available == 10
    reserve(g, "a")
    reserve(g, "b")
    refused(
        g, Configure(max_slots=1, min_holders=2, upload_window=5), Conflict.code, reason="below_end"
    )
    ok(g, Configure(max_slots=2, min_holders=2, upload_window=5))


def test_upload_window_is_bounded_by_count() -> None:
    g = GroupState(GROUP, upload_window=2)
    for uid in ("a", "b", "c"):
        live(g, uid)
    assert [r.upload_id for r in g.uploads()] == ["b", "c"]
    assert g.upload("a") is None
    assert g.stats().uploads_sealed == 2
    # "b" and "c" are still deduplicated ...
    assert ok(g, reserve_cmd("b"))["duplicate"] is True
    # ... but a retry of "a" arrives after the window moved on: it is stored again.
    assert ok(g, reserve_cmd("a"))["slot"] == 3
    assert [r.upload_id for r in g.uploads()] == ["a", "b", "c"]  # pending first, then window
    ok(g, Configure(max_slots=None, min_holders=2, upload_window=1))
    assert [r.upload_id for r in g.uploads() if r.sealed] == ["c"]
    ok(g, Configure(max_slots=None, min_holders=2, upload_window=0))
    assert [r.upload_id for r in g.uploads()] == ["a"]


def test_retry_of_an_upload_whose_slot_was_reused(g: GroupState) -> None:
    slot = live(g, "old")
    ok(g, Delete(slot=slot))
    live(g, "new")  # same slot, generation 2
    again = ok(g, reserve_cmd("old", crc32c=1))  # content cannot be compared any more
    assert (again["slot"], again["generation"], again["state"]) == (slot, 1, "deleted")
    assert again["duplicate"] is True
    ref = g.upload("old")
    assert ref is not None and ref.state is SlotState.DELETED and ref.generation == 1


# ---------------------------------------------------------------------------------------------
# reads


def test_require_live(g: GroupState) -> None:
    with pytest.raises(NotFound):
        g.require_live(0)
    slot = reserve(g, "u1")
    with pytest.raises(NotFound) as pending:
        g.require_live(slot)
    assert pending.value.context["reason"] == "pending"
    ok(g, Seal(slot=slot, upload_id="u1", generation=gen(g, slot), holders=NODES))
    assert g.require_live(slot, generation=1).slot == slot
    with pytest.raises(SliceDeleted):
        g.require_live(slot, generation=2)
    ok(g, Delete(slot=slot))
    with pytest.raises(SliceDeleted):
        g.require_live(slot)


def test_slots_by_state_and_stats(g: GroupState) -> None:
    a = live(g, "a", length=10)
    b = live(g, "b", length=20)
    c = reserve(g, "c", length=30)
    d = live(g, "d", length=40)
    ok(g, Move(slot=b, target=Location(0, 0)))
    ok(g, Delete(slot=d))
    assert [i.slot for i in g.slots(SlotState.LIVE)] == [a]
    assert [i.slot for i in g.slots(SlotState.MOVED)] == [b]
    assert [i.slot for i in g.slots(SlotState.PENDING)] == [c]
    assert [i.slot for i in g.slots(SlotState.DELETED)] == [d] == g.free_slots()
    assert [i.slot for i in g.slots()] == [a, b, c, d]
    stats = g.stats().to_dict()
    assert stats["live"] == 1 and stats["bytes_live"] == 10 and stats["bytes_pending"] == 30
    assert orjson.loads(orjson.dumps(stats)) == stats
    info = g.get(b)
    assert info is not None
    assert info.to_dict()["target"] == [0, 0]


# ---------------------------------------------------------------------------------------------
# malformed commands, results as errors


@pytest.mark.parametrize(
    "wire",
    [
        {"op": "seal", "slot": "0", "upload_id": "u", "generation": 1, "holders": ["n1", "n2"]},
        {"op": "reserve"},
        {"op": "nope"},
        {},
        ["seal"],
        "seal",
        None,
        {"op": "delete", "slot": 0, "generation": True},
        {"op": "seal", "slot": 0, "upload_id": "u1", "generation": 1, "holders": ["n1"], "x": 0},
        {"op": "abort", "slot": 0, "upload_id": "u1"},
    ],
)
def test_malformed_commands_change_nothing(g: GroupState, wire: Any) -> None:
    reserve(g, "u1")
    result = refused(g, wire, "invalid_argument", group=GROUP)
    assert result["op"] == (wire.get("op") if isinstance(wire, dict) else None)
    assert set(result) == {"ok", "op", "error", "message", "context"}


def test_raise_for_result_rebuilds_typed_errors(g: GroupState) -> None:
    slot = live(g, "u1")
    assert raise_for_result(g.apply(Noop().to_dict()))["ok"] is True
    ok(g, Move(slot=slot, target=Location(3, 4)))
    with pytest.raises(SliceMoved) as moved:
        raise_for_result(g.apply(Delete(slot=slot).to_dict()))
    assert moved.value.target == (3, 4)
    with pytest.raises(NotFound):
        raise_for_result(g.apply(Delete(slot=100).to_dict()))
    with pytest.raises(InvalidArgument):
        raise_for_result(g.apply({"op": "nope"}))


def test_typed_commands_apply_like_their_wire_form() -> None:
    a, b = GroupState(GROUP), GroupState(GROUP)
    commands = [
        reserve_cmd("u1"),
        Seal(slot=0, upload_id="u1", generation=1, holders=NODES),
        Delete(slot=0),
    ]
    for command in commands:
        assert a.apply(command) == b.apply(command.to_dict())
    assert a.digest() == b.digest()


def test_results_are_json_ready(g: GroupState) -> None:
    slot = live(g, "u1")
    for wire in (
        Move(slot=slot, target=Location(1, 1)).to_dict(),
        Delete(slot=slot).to_dict(),
        {"op": "x"},
    ):
        result = g.apply(wire)
        assert orjson.loads(orjson.dumps(result)) == result


# ---------------------------------------------------------------------------------------------
# snapshot, restore, digest, invariants


def _busy_machine() -> GroupState:
    g = GroupState(GROUP, upload_window=3)
    for i in range(6):
        live(g, f"u{i}", slice_index=i, next=Location(GROUP + 1, i))
    reserve(g, "p1", now_ms=7)
    ok(g, Move(slot=1, target=Location(9, 9)))
    ok(g, Delete(slot=2))
    ok(g, Confirm(slot=3, node="n3", generation=4))
    ok(g, Configure(max_slots=100, min_holders=2, upload_window=3))
    return g


def test_snapshot_round_trip() -> None:
    g = _busy_machine()
    data = g.snapshot()
    assert isinstance(data, bytes)
    h = GroupState(GROUP)
    h.restore(data)
    assert h.snapshot() == data
    assert h.digest() == g.digest()
    assert h.stats() == g.stats()
    assert h.config == g.config
    assert h.free_slots() == g.free_slots()
    assert h.uploads() == g.uploads()
    h.check_invariants()
    # both continue identically
    for m in (g, h):
        reserve(m, "after")
    assert h.digest() == g.digest()


def test_snapshot_is_json_without_pickle() -> None:
    doc = orjson.loads(_busy_machine().snapshot())
    assert doc["format"] == "mydfs.group_state" and doc["version"] == 3
    assert doc["group"] == GROUP
    assert len(doc["slots"]) == 7


def _tampered(change: Any) -> bytes:
    doc = orjson.loads(_busy_machine().snapshot())
    change(doc)
    return orjson.dumps(doc)


def _set(path: list[Any], value: Any) -> Any:
    def change(doc: Any) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", Corrupt),
        (b"\x80\x04pickle", Corrupt),
        (b"[]", Corrupt),
        (b'{"format": "something else"}', IncompatibleVolume),
        (_tampered(_set(["version"], 4)), IncompatibleVolume),
        (_tampered(_set(["version"], True)), IncompatibleVolume),
        (_tampered(_set(["group"], GROUP + 1)), IncompatibleVolume),
        (_tampered(_set(["extra"], 1)), Corrupt),
        (_tampered(_set(["slot_fields", 0], "x")), Corrupt),
        (_tampered(_set(["generation"], 3)), Corrupt),  # below generations in use
        (_tampered(_set(["slots", 0, 0], 5)), Corrupt),  # out of order
        (_tampered(_set(["slots", 0, 1], "free")), Corrupt),  # unknown state
        (_tampered(_set(["slots", 0, 2], 2)), Corrupt),  # repeated generation
        (_tampered(_set(["slots", 0, 4], "XYZ")), Corrupt),  # bad file id
        (_tampered(_set(["slots", 0, 9], ["n2", "n1"])), Corrupt),  # unsorted holders
        (_tampered(_set(["slots", 0, 10], [1, 1])), Corrupt),  # target on a live slot
        (_tampered(_set(["slots", 1, 10], None)), Corrupt),  # moved without target
        (_tampered(_set(["slots", 2, 9], ["n1"])), Corrupt),  # holders on a deleted slot
        (_tampered(_set(["slots", 6, 3], "u5")), Corrupt),  # pending id also sealed
        (_tampered(_set(["slots", 0], [0])), Corrupt),
        (_tampered(_set(["sealed", 0], ["u9", 0])), Corrupt),
        (_tampered(_set(["sealed", 1], ["u5", 5, 6])), Corrupt),  # sealed twice
        (_tampered(_set(["sealed", 0, 1], 50)), Corrupt),  # outside the table
        (_tampered(_set(["config", "upload_window"], 1)), Corrupt),  # window over its bound
        (_tampered(_set(["config", "max_slots"], 3)), Corrupt),  # below the end
        (_tampered(_set(["config", "min_holders"], 0)), Corrupt),
        (_tampered(_set(["config"], [])), Corrupt),
    ],
)
def test_restore_refuses_bad_snapshots(data: bytes, error: type[Exception]) -> None:
    g = _busy_machine()
    before = g.digest()
    with pytest.raises(error) as info:
        g.restore(data)
    assert type(info.value) is error
    assert g.digest() == before
    g.check_invariants()


def test_digest_depends_on_every_table() -> None:
    a, b = GroupState(GROUP), GroupState(GROUP)
    assert a.digest() == b.digest()
    ok(a, Configure(max_slots=None, min_holders=2, upload_window=7))
    assert a.digest() != b.digest()
    assert GroupState(1).digest() != GroupState(2).digest()


def test_invariant_checks_catch_corruption() -> None:
    g = _busy_machine()
    g._free.append(0)  # a LIVE slot in the free table
    with pytest.raises(InvariantViolation):
        g.check_invariants()


def test_allocator_stops_on_a_broken_free_table() -> None:
    g = GroupState(GROUP)
    live(g, "u1")
    g._free.append(0)  # a LIVE slot in the free table: the node must stop, not reuse it
    with pytest.raises(InvariantViolation):
        g.apply(reserve_cmd("u2").to_dict())


def test_out_of_range_slot_is_refused_with_its_own_code(g: GroupState) -> None:
    wire = {"op": "seal", "slot": -1, "upload_id": "u", "generation": 1, "holders": ["n1", "n2"]}
    refused(g, wire, "slot_out_of_range", field="slot", op="seal")
    refused(g, {**reserve_cmd("u").to_dict(), "length": 5 << 20}, "payload_too_large")


_HASHSEED_SCRIPT = """
from mydfs.common.location import Location
from mydfs.storage.group_commands import Confirm, Delete, Move, Reserve, Seal
from mydfs.storage.group_state import GroupState

g = GroupState(3, upload_window=5)
for i in range(12):
    uid = f"up-{i}"
    r = g.apply(Reserve(upload_id=uid, file_id="ab" * 16, slice_index=i, length=i, crc32c=i,
                        now_ms=i).to_dict())
    g.apply(Seal(slot=r["slot"], upload_id=uid, generation=r["generation"],
                 holders=("n-c", "n-a", "n-b")[: 2 + i % 2]).to_dict())
    if i % 3 == 0:
        g.apply(Delete(slot=r["slot"]).to_dict())
    if i % 4 == 1:
        g.apply(Move(slot=r["slot"], target=Location(1, i)).to_dict())
    g.apply(Confirm(slot=0, node=f"x{i}", generation=g.get(0).generation).to_dict())
print(g.digest())
"""


def test_digest_does_not_depend_on_the_hash_seed() -> None:
    """Nodes run in different processes: nothing may depend on str hashing order."""
    digests = set()
    for seed in ("1", "2", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", _HASHSEED_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1
