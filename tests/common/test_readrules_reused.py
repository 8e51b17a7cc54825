"""A replica answering a slice at a newer generation than the chain's (found by the concurrent
edit test of issue 9): the slot was freed by an edit committed since the chain was read and
reused, for a new slice of the same file at the same index, so the owner check passes. Slot
generations only grow: that replica no longer has the slice (:class:`NotFound`; for an edited
file the read path makes it a stale entry, re-read at once) instead of a stale answer retried
until the deadline. An older generation stays a stale answer (:class:`Unavailable`)."""

from __future__ import annotations

from mydfs.common.errors import NotFound, Unavailable
from mydfs.common.readrules import SliceLoc, stale_generation

FILE = "00112233445566778899aabbccddeeff"


def test_a_newer_generation_is_a_reused_slot_and_an_older_one_a_stale_answer() -> None:
    loc = SliceLoc(1, 4, 7, 10, 0, (), FILE, 2)
    answer = {"X-Mydfs-File": FILE, "X-Mydfs-Index": "2"}
    newer = stale_generation(loc, dict(answer, **{"X-Mydfs-Generation": "112"}), slot=4)
    assert isinstance(newer, NotFound) and not newer.retryable
    assert newer.context == {"slot": 4, "reason": "reused"}
    older = stale_generation(loc, dict(answer, **{"X-Mydfs-Generation": "6"}))
    assert isinstance(older, Unavailable) and older.retryable
    assert isinstance(
        stale_generation(loc, dict(answer, **{"X-Mydfs-Generation": "x"})), Unavailable
    )
    assert isinstance(stale_generation(loc, answer), Unavailable)
    assert stale_generation(loc, dict(answer, **{"X-Mydfs-Generation": "7"})) is None
