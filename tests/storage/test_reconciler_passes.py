"""Which slots a reconciler pass looks at (pure :class:`PassSelector`, time passed in)."""

from __future__ import annotations

from mydfs.storage.reconciler import PassSelector, Selection


def test_the_first_pass_is_full_then_only_marked_slots() -> None:
    sel = PassSelector(full_interval=30, retry_delay=2)
    assert sel.select(100.0) == Selection(full=True)
    assert not sel.select(101.0)
    sel.mark(4)
    sel.mark(7)
    assert sel.select(102.0) == Selection(full=False, slots=frozenset({4, 7}))
    assert not sel.select(103.0)  # handed out once


def test_a_full_pass_runs_every_interval_and_on_demand() -> None:
    sel = PassSelector(full_interval=30, retry_delay=2)
    sel.select(0.0)
    sel.mark(1)
    assert sel.select(30.5).full  # the interval passed: every slot (the marks are covered)
    assert not sel.select(31.0)
    sel.mark(None)  # a snapshot install: every slot may have changed
    assert sel.select(31.5).full


def test_a_failed_action_is_retried_after_the_delay() -> None:
    sel = PassSelector(full_interval=30, retry_delay=2)
    sel.select(0.0)
    sel.failed(5, now=1.0)
    assert sel.waiting == 1
    assert not sel.may_run(5, 2.0)
    assert not sel.select(2.0)
    assert sel.select(3.0) == Selection(full=False, slots=frozenset({5}))
    assert sel.may_run(5, 3.0)
    sel.succeeded(5)
    assert sel.waiting == 0
    assert not sel.select(10.0)


def test_a_retry_with_nothing_left_to_do_is_forgotten() -> None:
    sel = PassSelector(full_interval=30, retry_delay=2)
    sel.select(0.0)
    sel.failed(5, now=1.0)
    sel.failed(6, now=1.0)
    sel.settled(looked_at={5, 6}, acted={6})
    assert sel.waiting == 1
    assert sel.select(3.0).slots == frozenset({6})
