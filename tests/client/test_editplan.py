"""The edit planner (``client/editplan.py``) against a bytes model.

A file is a list of slices (random lengths of 1..CAP bytes, CAP small so that hypothesis
explores many slices), each reached directly or through some 301 slots. For every operation
(write, append, truncate, insert, cut) the plan applied to the old slices' bytes must give what
the same operation gives on the file's bytes, with the contract's rules: never an empty new
slice, full slices except the last unless the layout is kept (then the replaced lengths
exactly), the range extended by a neighbour only when the new content would be empty, locks
on exactly the old slots of the range, the entry point of slice ``i`` moved to the first new
slice.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mydfs.client.editplan import (
    Data,
    Old,
    Op,
    Plan,
    Segment,
    Zeros,
    cut_lengths,
    entry_point,
    plan,
    prepares,
    splice_of,
)
from mydfs.common.errors import InvalidArgument
from mydfs.common.location import Location
from mydfs.common.readpath import SliceLoc

CAP = 8


def model(old: bytes, op: Op, data: bytes) -> bytes:
    """What ``op`` does to the bytes ``old`` (the reference; no data changes nothing)."""
    if op.kind in ("write", "append", "insert") and not data:
        return old
    if op.kind == "append":
        return old + data
    if op.kind == "write":
        padded = old + bytes(max(0, op.offset - len(old)))
        return padded[: op.offset] + data + padded[op.offset + len(data) :]
    if op.kind == "truncate":
        return old[: op.offset] + bytes(max(0, op.offset - len(old)))
    if op.kind == "insert":
        return old[: op.offset] + data + old[op.offset :]
    assert op.kind == "cut"
    return old[: op.offset] + old[op.offset + op.length :]


def materialize(segments: tuple[Segment, ...], olds: list[bytes], data: bytes) -> bytes:
    out = []
    for seg in segments:
        if isinstance(seg, Old):
            out.append(olds[seg.index][seg.offset : seg.offset + seg.length])
        elif isinstance(seg, Data):
            out.append(data[seg.offset : seg.offset + seg.length])
        else:
            assert isinstance(seg, Zeros)
            out.append(bytes(seg.length))
    return b"".join(out)


@st.composite
def files(draw: st.DrawFn) -> tuple[list[SliceLoc], list[bytes]]:
    lengths = draw(st.lists(st.integers(1, CAP), max_size=7))
    locs, olds = [], []
    slot = 100
    for k, n in enumerate(lengths):
        group = draw(st.sampled_from([1, 2]))
        via = tuple((slot + h, 1) for h in range(draw(st.integers(0, 2))))
        slot += len(via)
        locs.append(SliceLoc(group, slot, 3, n, 0, (), "f" * 32, k, via))
        slot += 1
        olds.append(bytes((k * 16 + x) % 251 + 1 for x in range(n)))
    return locs, olds


@st.composite
def ops(draw: st.DrawFn, size: int) -> tuple[Op, bytes]:
    kind = draw(st.sampled_from(["write", "append", "truncate", "insert", "cut"]))
    data = bytes(range(200, 200 + draw(st.integers(0, 3 * CAP))))
    if kind == "write":
        return Op.write(draw(st.integers(0, size + 2 * CAP)), len(data)), data
    if kind == "append":
        return Op.append(len(data)), data
    if kind == "truncate":
        return Op.truncate(draw(st.integers(0, size + 2 * CAP))), b""
    if kind == "insert":
        return Op.insert(draw(st.integers(0, size)), len(data)), data
    off = draw(st.integers(0, size))
    return Op.cut(off, draw(st.integers(0, size - off))), b""


def check_plan(p: Plan, locs: list[SliceLoc], olds: list[bytes], op: Op, data: bytes) -> None:
    old = b"".join(olds)
    want = model(old, op, data)
    content = materialize(p.content, olds, data)
    assert sum(p.lengths) == len(content)
    if p.i < 0:  # an empty file: all new
        assert not locs and p.head == "set" and p.home is None and not p.locks
        assert content == want
    else:
        got = b"".join(olds[: p.i]) + content + b"".join(olds[p.j + 1 :])
        assert got == want
        assert 0 <= p.i <= p.j < len(locs)
        assert content[: p.a] == olds[p.i][: p.a]
        assert content[len(content) - (len(olds[p.j]) - p.b) :] == olds[p.j][p.b :]
        # locks: exactly the old slots of the range, by group
        slots = sorted(s for _, group_slots in p.locks for s in group_slots)
        expect = sorted(s for loc in locs[p.i : p.j + 1] for s in (*loc.via, (loc.slot, 3)))
        assert slots == expect
        if p.head == "clear":
            assert want == b"" and not p.lengths and p.move is None and p.next is None
            assert (p.i, p.j) == (0, len(locs) - 1)
        else:
            assert p.head == "keep" and p.home == locs[p.i].group
            assert p.move == entry_point(locs[p.i])
            assert p.move in dict(p.locks)[p.home]
            after = locs[p.j + 1] if p.j + 1 < len(locs) else None
            assert p.next == (
                None if after is None else Location(after.group, entry_point(after)[0])
            )
    assert p.size == len(want)
    assert p.slices == (len(locs) - (p.j - p.i + 1) if p.i >= 0 else 0) + len(p.lengths)
    assert all(1 <= n <= CAP for n in p.lengths)
    if p.layout_change:
        assert p.lengths == cut_lengths(len(content), CAP)
    else:
        assert op.kind in ("write", "append") and p.size == p.size_before
        assert p.lengths == tuple(loc.length for loc in locs[p.i : p.j + 1])
    assert content == b"".join(materialize(piece, olds, data) for piece in p.pieces())
    assert [sum(s.length for s in piece) for piece in p.pieces()] == list(p.lengths)


@settings(max_examples=600, deadline=None)
@given(st.data())
def test_a_plan_applied_to_the_old_slices_gives_what_the_operation_gives(
    data: st.DataObject,
) -> None:
    locs, olds = data.draw(files())
    op, payload = data.draw(ops(sum(len(o) for o in olds)))
    p = plan(locs, op, CAP)
    if p is None:
        assert model(b"".join(olds), op, payload) == b"".join(olds)
        return
    check_plan(p, locs, olds, op, payload)
    # the range is as small as the rule allows: extended only when the content was empty
    splice = splice_of(op, p.size_before)
    assert splice is not None
    if p.i >= 0 and p.head == "keep":
        olds_kept = p.a + (locs[p.j].length - p.b)
        middle = sum(s.length for s in splice.middle)
        assert olds_kept + middle > 0
        if p.lengths != () and middle == 0 and splice.start == splice.stop:
            raise AssertionError("an empty splice is a no-op")
    new = [(p.home or 9, 500 + k, 1) for k in range(len(p.lengths))]
    parts = prepares(p, new)
    assert sorted(x.group for x in parts) == sorted(
        {g for g, _ in p.locks} | {g for g, _, _ in new}
    )
    assert sum(len(x.new) for x in parts) == len(new)
    moves = [x for x in parts if x.move is not None]
    if p.move is None:
        assert not moves
    else:
        assert len(moves) == 1 and moves[0].group == p.home
        assert moves[0].move == (p.move[0], p.move[1], (new[0][0], new[0][1]))


def locs_of(*lengths: int, group: int = 1) -> list[SliceLoc]:
    return [SliceLoc(group, 10 + k, 3, n, 0, (), "f" * 32, k) for k, n in enumerate(lengths)]


def olds_of(locs: list[SliceLoc]) -> list[bytes]:
    return [bytes([k + 1]) * loc.length for k, loc in enumerate(locs)]


def test_an_overwrite_inside_the_size_keeps_the_layout() -> None:
    locs = locs_of(8, 8, 5)
    p = plan(locs, Op.write(6, 4), CAP)
    assert p is not None and not p.layout_change
    assert (p.i, p.j, p.a, p.b) == (0, 1, 6, 2) and p.lengths == (8, 8)
    check_plan(p, locs, olds_of(locs), Op.write(6, 4), b"abcd")


def test_an_overwrite_reaching_past_the_end_changes_the_layout() -> None:
    locs = locs_of(8, 5)
    p = plan(locs, Op.write(12, 4), CAP)
    assert p is not None and p.layout_change and p.size == 16 and p.lengths == (8,)
    assert (p.i, p.j) == (1, 1)


def test_cutting_a_whole_middle_slice_takes_in_the_previous_one() -> None:
    locs = locs_of(8, 8, 8)
    p = plan(locs, Op.cut(8, 8), CAP)
    assert p is not None and (p.i, p.j, p.a, p.b) == (0, 1, 8, 8)
    assert p.lengths == (8,) and p.content == (Old(0, 0, 8),)
    assert p.next == Location(1, 12)


def test_cutting_the_first_slice_takes_in_the_next_one() -> None:
    locs = locs_of(8, 8, 3)
    p = plan(locs, Op.cut(0, 8), CAP)
    assert p is not None and (p.i, p.j, p.a, p.b) == (0, 1, 0, 0)
    assert p.content == (Old(1, 0, 8),) and p.head == "keep"


def test_truncating_to_zero_drops_everything_and_clears_the_head() -> None:
    via = ((7, 2),)
    locs = [SliceLoc(1, 10, 3, 8, 0, (), "f" * 32, 0, via), *locs_of(4, group=2)[0:1]]
    p = plan(locs, Op.truncate(0), CAP)
    assert p is not None and p.head == "clear" and p.lengths == () and p.move is None
    assert dict(p.locks) == {1: ((7, 2), (10, 3)), 2: ((10, 3),)}
    assert prepares(p, []) == [
        prepares(p, [])[0],
        prepares(p, [])[1],
    ] and [x.move for x in prepares(p, [])] == [None, None]


def test_the_entry_point_is_the_first_301_slot() -> None:
    via = ((5, 1), (6, 2))
    locs = [SliceLoc(1, 10, 3, 8, 0, (), "f" * 32, 0, via)]
    p = plan(locs, Op.write(0, 1), CAP)
    assert p is not None and p.move == (5, 1)
    (part,) = prepares(p, [(1, 40, 9)])
    assert part.body("f" * 32) == {
        "file_id": "f" * 32,
        "lock": [[5, 1], [6, 2], [10, 3]],
        "move": [5, 1, [1, 40]],
        "new": [[40, 9]],
    }


def test_an_empty_file_gets_new_slices_and_a_head() -> None:
    p = plan([], Op.truncate(20), CAP)
    assert p is not None and p.head == "set" and p.lengths == (8, 8, 4)
    assert p.content == (Zeros(20),)
    assert plan([], Op.cut(0, 0), CAP) is None
    assert plan([], Op.truncate(0), CAP) is None


def test_append_answers_the_offset_of_its_data() -> None:
    p = plan(locs_of(8, 3), Op.append(2), CAP)
    assert p is not None and p.data_at == 11 and p.content == (Old(1, 0, 3), Data(0, 2))


@pytest.mark.parametrize(
    "op",
    [
        Op.write(-1, 3),
        Op.write(0, -3),
        Op.truncate(-1),
        Op.insert(12, 1),
        Op.insert(-1, 1),
        Op.cut(5, 7),
        Op.cut(-1, 1),
        Op.write(True, 1),  # type: ignore[arg-type]
        Op("move", 0, 0),  # type: ignore[arg-type]
        Op.truncate(10**18),
    ],
)
def test_bad_arguments_are_refused_before_anything(op: Op) -> None:
    with pytest.raises(InvalidArgument):
        plan(locs_of(8, 3), op, CAP)


def test_no_ops_plan_nothing() -> None:
    locs = locs_of(8, 3)
    for op in (Op.write(20, 0), Op.append(0), Op.truncate(11), Op.insert(4, 0), Op.cut(4, 0)):
        assert plan(locs, op, CAP) is None


def test_prepares_refuses_new_slices_outside_the_home_group() -> None:
    p = plan(locs_of(8), Op.write(0, 1), CAP)
    assert p is not None
    with pytest.raises(InvalidArgument):
        prepares(p, [(2, 1, 1)])
    with pytest.raises(InvalidArgument):
        prepares(p, [])


def test_an_edit_bigger_than_a_prepare_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="more than 4096"):
        plan(locs_of(8), Op.write(0, 4097 * CAP), CAP)
    with pytest.raises(InvalidArgument, match="more than 4096"):
        plan([], Op.truncate(4096 * CAP + 1), CAP)
    assert plan([], Op.truncate(4096 * CAP), CAP) is not None
