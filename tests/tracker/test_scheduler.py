"""Placement of slices onto groups (the pure scheduler), including property tests."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mydfs.common.errors import DiskFull, InvalidArgument, Unavailable
from mydfs.tracker.scheduler import MAX_SLICES, GroupSpace, Run, plan_runs


def runs(n: int, k: int, *groups: GroupSpace) -> list[tuple[int, int]]:
    return [(r.group_id, r.count) for r in plan_runs(n, k, groups)]


def test_seven_slices_over_two_equal_groups_is_3_3_1() -> None:
    assert runs(7, 3, GroupSpace(1, 100), GroupSpace(2, 100)) == [(1, 3), (2, 3), (1, 1)]
    assert runs(7, 3, GroupSpace(1, None), GroupSpace(2, None)) == [(1, 3), (2, 3), (1, 1)]


def test_the_group_with_most_free_space_goes_first() -> None:
    assert runs(7, 3, GroupSpace(1, 10), GroupSpace(2, 50)) == [(2, 3), (1, 3), (2, 1)]
    # unbounded (null) counts as the most free space
    assert runs(4, 3, GroupSpace(1, 10**9), GroupSpace(2, None)) == [(2, 3), (1, 1)]


def test_space_taken_by_the_plan_itself_counts() -> None:
    # a has 10, b 8: a3 (a=7), b3 (b=5), a3 (a=4), b3 (b=2), a3 (a=1), b2 (b=0)... alternating
    assert runs(12, 3, GroupSpace(1, 10), GroupSpace(2, 8)) == [
        (1, 3),
        (2, 3),
        (1, 3),
        (2, 3),
    ]
    # three unbounded groups take turns instead of two of them ping-ponging
    assert runs(9, 3, GroupSpace(1, None), GroupSpace(2, None), GroupSpace(3, None)) == [
        (1, 3),
        (2, 3),
        (3, 3),
    ]
    # earlier placements (planned) rank an unbounded group later
    assert runs(3, 3, GroupSpace(1, None, planned=6), GroupSpace(2, None)) == [(2, 3)]


def test_a_single_group_gets_every_run() -> None:
    assert runs(7, 3, GroupSpace(5, None)) == [(5, 3), (5, 3), (5, 1)]
    assert runs(1, 3, GroupSpace(5, 1)) == [(5, 1)]


def test_runs_are_cut_by_free_space() -> None:
    assert runs(5, 3, GroupSpace(1, 1), GroupSpace(2, 10)) == [(2, 3), (1, 1), (2, 1)]
    # once the other group is full, the rest must stay in one group (runs of at most k)
    assert runs(8, 3, GroupSpace(1, 1), GroupSpace(2, 10)) == [(2, 3), (1, 1), (2, 3), (2, 1)]


def test_errors() -> None:
    with pytest.raises(Unavailable):
        plan_runs(1, 3, [])
    with pytest.raises(DiskFull) as info:
        plan_runs(10, 3, [GroupSpace(1, 4), GroupSpace(2, 5)])
    assert info.value.status == 507
    for bad in (0, -1, MAX_SLICES + 1, True, 1.5, "3"):
        with pytest.raises(InvalidArgument):
            plan_runs(bad, 3, [GroupSpace(1, None)])  # type: ignore[arg-type]


def test_a_million_slices_is_fast_enough() -> None:
    plan = plan_runs(MAX_SLICES, 3, [GroupSpace(g, None) for g in range(1, 51)])
    assert sum(r.count for r in plan) == MAX_SLICES


_groups = st.lists(
    st.tuples(st.integers(1, 40), st.one_of(st.none(), st.integers(0, 60))),
    min_size=1,
    max_size=6,
    unique_by=lambda t: t[0],
).map(lambda gs: [GroupSpace(g, f) for g, f in gs])


@settings(max_examples=400, deadline=None)
@given(n=st.integers(1, 200), k=st.integers(1, 5), groups=_groups)
def test_plan_properties(n: int, k: int, groups: list[GroupSpace]) -> None:
    free = {g.group_id: g.free_slots for g in groups}
    room = None if any(f is None for f in free.values()) else sum(f or 0 for f in free.values())
    if room is not None and room < n:
        with pytest.raises(DiskFull):
            plan_runs(n, k, groups)
        return
    plan: list[Run] = plan_runs(n, k, groups)
    assert plan == plan_runs(n, k, list(reversed(groups)))  # deterministic, order-independent
    assert sum(r.count for r in plan) == n
    assert all(1 <= r.count <= k for r in plan)
    assert all(r.group_id in free for r in plan)  # only the given (writable) groups
    used: dict[int, int] = {}
    for r in plan:
        used[r.group_id] = used.get(r.group_id, 0) + r.count
    for g, count in used.items():
        assert free[g] is None or count <= (free[g] or 0)
    # adjacent runs differ whenever some other group still had room at that point
    left = dict(free)
    for prev, run in itertools.pairwise(plan):
        left_prev = left[prev.group_id]
        if left_prev is not None:
            left[prev.group_id] = left_prev - prev.count
        if run.group_id == prev.group_id:
            others = [g for g, f in left.items() if g != prev.group_id and (f is None or f > 0)]
            assert not others, (plan, free)


@given(n=st.integers(1, 300), k=st.integers(1, 4), count=st.integers(2, 5))
def test_with_ample_space_adjacent_runs_always_differ(n: int, k: int, count: int) -> None:
    plan = plan_runs(n, k, [GroupSpace(g, None if g % 2 else 10**6) for g in range(1, count + 1)])
    assert all(a.group_id != b.group_id for a, b in itertools.pairwise(plan))
    assert all(r.count == k for r in plan[:-1])  # full runs except possibly the last
