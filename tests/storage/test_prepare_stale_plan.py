"""A prepare planned on a stale chain (found by the concurrent edit test of issue 9): a newer
edit freed a slot the stale plan locks, and the stale edit's own reservation got that slot
again at the next generation. The prepare names the same slot at two generations (in ``lock``
or ``move`` at the old one, in ``new`` at the new one): it is refused as a stale plan
(``conflict``, ``reason=stale_generation``, which the client retries on the new version), not as
a malformed command (``invalid_argument``, which the client raises)."""

from __future__ import annotations

from mydfs.common.location import Location
from mydfs.storage.edit_commands import Commit
from mydfs.storage.group_state import GroupState
from tests.storage.test_group_edits import GROUP, TXN, TXN2, live, ok, prepare, refused


def test_a_slot_reused_between_plan_and_prepare_is_a_stale_generation() -> None:
    g = GroupState(GROUP)
    a, b, n1 = (live(g, f"u{i}") for i in range(3))
    # The newer edit: a -> 301 to n1, b freed.
    ok(g, prepare(TXN, lock=(a, b), move=(*a, Location(GROUP, n1[0])), new=(n1,)))
    ok(g, Commit(txn=TXN, version=1, prev=0))
    # The stale edit reserves and gets b's slot back, at the next generation.
    again = live(g, "stale.0")
    assert again[0] == b[0] and again[1] != b[1]
    # It locks b (old generation) and adds b's slot (new generation): stale, not malformed.
    refused(g, prepare(TXN2, lock=(a, b), new=(again,)), "conflict", reason="stale_generation")
    # Its entry point's 301 targets the reused slot, which it also drops: the same answer.
    stale = prepare(TXN2, lock=(a, b), move=(*a, Location(GROUP, again[0])), new=(again,))
    refused(g, stale, "conflict", reason="stale_generation")
