"""Hedged reads (:func:`mydfs.common.readpath.hedged`): a node that hangs costs the hedge delay,
not the request's timeout; a node that fails is passed over at once; a definitive answer
stops the rest; the first useful answer wins."""

from __future__ import annotations

import asyncio
import time

import pytest

from mydfs.common.errors import NotFound
from mydfs.common.readpath import _Skip, hedged


def asker(behaviour: dict[str, tuple[float, object]], asked: list[str], cancelled: list[str]):
    """``ask(url)``: after the url's delay, return its value, or raise it when it is an
    exception."""

    async def ask(url: str) -> str:
        asked.append(url)
        delay, outcome = behaviour[url]
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            cancelled.append(url)
            raise
        if isinstance(outcome, BaseException):
            raise outcome
        return str(outcome)

    return ask


async def test_a_hanging_node_costs_the_hedge_delay_not_its_timeout() -> None:
    asked: list[str] = []
    cancelled: list[str] = []
    ask = asker({"a": (30.0, "late"), "b": (0.01, "b-bytes")}, asked, cancelled)
    t0 = time.monotonic()
    got, reasons = await hedged(["a", "b"], ask, hedge=0.2)
    assert (got, reasons) == ("b-bytes", [])
    assert 0.2 <= time.monotonic() - t0 < 2.0
    assert asked == ["a", "b"] and cancelled == ["a"]


async def test_a_failing_node_is_passed_over_at_once() -> None:
    asked: list[str] = []
    ask = asker({"a": (0.0, _Skip("down")), "b": (0.0, "b-bytes")}, asked, [])
    t0 = time.monotonic()
    assert await hedged(["a", "b"], ask, hedge=30.0) == ("b-bytes", [])
    assert time.monotonic() - t0 < 2.0


async def test_a_slow_node_that_answers_first_wins() -> None:
    asked: list[str] = []
    cancelled: list[str] = []
    ask = asker({"a": (0.3, "a-bytes"), "b": (30.0, "late")}, asked, cancelled)
    assert await hedged(["a", "b"], ask, hedge=0.1) == ("a-bytes", [])
    assert asked == ["a", "b"] and cancelled == ["b"]


async def test_nothing_useful_gives_every_reason_in_the_order_they_came() -> None:
    ask = asker({"a": (0.2, _Skip("a stale")), "b": (0.0, _Skip("b down"))}, [], [])
    assert await hedged(["a", "b"], ask, hedge=0.05) == (None, ["b down", "a stale"])
    assert await hedged([], ask, hedge=0.05) == (None, [])


async def test_a_definitive_answer_is_raised_and_the_rest_cancelled() -> None:
    cancelled: list[str] = []
    ask = asker({"a": (30.0, "late"), "b": (0.0, NotFound("gone"))}, [], cancelled)
    with pytest.raises(NotFound):
        await hedged(["a", "b", "c"], ask, hedge=0.05)
    assert cancelled == ["a"]
