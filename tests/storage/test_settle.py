"""Settlement's decision (pure): seal with 2 holders, wait while silent nodes could still make a
majority and patience lasts, abort otherwise."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mydfs.storage.settle import SETTLE_PATIENCE, Verdict, settle_decision


def test_two_holders_seal_with_the_holders_sorted() -> None:
    got = settle_decision({"c": True, "a": True, "b": False}, age=0.0)
    assert got.verdict == Verdict.SEAL
    assert got.holders == ("a", "c")


def test_seal_does_not_wait_for_a_silent_node() -> None:
    got = settle_decision({"a": True, "b": True, "c": None}, age=0.0)
    assert (got.verdict, got.holders, got.silent) == (Verdict.SEAL, ("a", "b"), 1)


def test_one_holder_and_a_silent_node_wait_within_patience() -> None:
    answers = {"a": True, "b": False, "c": None}
    assert settle_decision(answers, age=SETTLE_PATIENCE - 0.1).verdict == Verdict.WAIT
    assert settle_decision(answers, age=SETTLE_PATIENCE).verdict == Verdict.ABORT


def test_two_silent_nodes_wait_even_with_no_holder() -> None:
    got = settle_decision({"a": False, "b": None, "c": None}, age=1.0, patience=5.0)
    assert (got.verdict, got.holders, got.silent) == (Verdict.WAIT, (), 2)


def test_no_majority_possible_aborts_at_once() -> None:
    got = settle_decision({"a": True, "b": False, "c": False}, age=0.0)
    assert (got.verdict, got.holders) == (Verdict.ABORT, ("a",))


answer = st.sampled_from([True, False, None])


@given(
    answers=st.dictionaries(st.sampled_from("abcde"), answer, max_size=5),
    age=st.floats(min_value=0, max_value=100),
    patience=st.floats(min_value=0, max_value=100),
)
def test_the_rule(answers: dict[str, bool | None], age: float, patience: float) -> None:
    got = settle_decision(answers, age, patience)
    holders = sorted(n for n, yes in answers.items() if yes)
    silent = sum(1 for yes in answers.values() if yes is None)
    assert list(got.holders) == holders and got.silent == silent
    if len(holders) >= 2:
        assert got.verdict == Verdict.SEAL  # never more than needed, never less
    elif len(holders) + silent >= 2 and age < patience:
        assert got.verdict == Verdict.WAIT
    else:
        assert got.verdict == Verdict.ABORT
    assert got.verdict != Verdict.SEAL or len(got.holders) >= 2


def test_a_slot_reserved_ahead_is_aborted_whoever_holds_it() -> None:
    for answers in ({"a": True, "b": True, "c": True}, {"a": None, "b": None, "c": True}):
        assert settle_decision(answers, age=0.0, ahead=True).verdict == Verdict.ABORT
