"""The cluster registry (pure): registration by heartbeat, liveness, writability, leaders."""

from __future__ import annotations

from typing import Any

import pytest

from mydfs.common.errors import Conflict, InvalidArgument
from mydfs.tracker.registry import Heartbeat, Registry
from mydfs.tracker.scheduler import GroupSpace


def hb(node: str, group: int = 1, role: str = "follower", **kw: Any) -> Heartbeat:
    body: dict[str, Any] = {
        "node_id": node,
        "group_id": group,
        "url": f"http://{node}.local:80",
        "role": role,
        "term": 1,
        "free_slots": 100,
        "used_slots": 5,
        "bytes_live": 1234,
        "load": 0.5,
    }
    body.update(kw)
    return Heartbeat.from_dict(body)


def test_a_group_joins_by_heartbeating_and_is_writable_with_leader_and_majority() -> None:
    reg = Registry(heartbeat_timeout=3.0)
    events = reg.heartbeat(hb("g1n1", role="leader"), now=0.0)
    assert "group 1 joined" in events
    view = reg.group(1, 0.0)
    assert view is not None and not view.writable  # a leader alone is not a majority
    reg.heartbeat(hb("g1n2"), now=0.5)
    view = reg.group(1, 0.5)
    assert view is not None and view.writable and view.leader is not None
    assert view.leader.hb.url == "http://g1n1.local:80"
    reg.heartbeat(hb("g1n3"), now=1.0)
    assert reg.counts(1.0) == (1, 1, 3, 0)
    assert "group 1 is writable" in reg.tick(1.0)
    assert reg.tick(1.1) == []
    # the leader falls silent: still up at exactly the timeout, down after it
    assert reg.group(1, 3.0).writable  # type: ignore[union-attr]
    reg.heartbeat(hb("g1n2"), now=3.2)
    reg.heartbeat(hb("g1n3"), now=3.2)
    view = reg.group(1, 3.2)
    assert view is not None and not view.writable and view.leader is None
    assert reg.counts(3.2) == (1, 0, 2, 1)
    events = reg.tick(3.2)
    assert any("g1n1" in e and "down" in e for e in events)
    assert any("NOT writable" in e for e in events)
    # a follower takes over with a higher term
    reg.heartbeat(hb("g1n2", role="leader", term=2), now=3.5)
    view = reg.group(1, 3.5)
    assert view is not None and view.writable and view.leader.hb.node_id == "g1n2"  # type: ignore[union-attr]


def test_the_highest_term_leader_wins_and_majority_of_two() -> None:
    reg = Registry(heartbeat_timeout=3.0)
    reg.heartbeat(hb("a", role="leader", term=1), now=0.0)
    reg.heartbeat(hb("b", role="leader", term=4), now=0.0)
    reg.heartbeat(hb("c", role="candidate", term=4), now=0.0)
    view = reg.group(1, 0.1)
    assert view is not None and view.leader is not None and view.leader.hb.node_id == "b"


def test_group_free_space_is_the_minimum_of_up_nodes_minus_planned() -> None:
    reg = Registry(heartbeat_timeout=3.0)
    reg.heartbeat(hb("a", role="leader", free_slots=50), now=0.0)
    reg.heartbeat(hb("b", free_slots=30), now=0.0)
    reg.heartbeat(hb("c", free_slots=None), now=0.0)
    assert reg.writable_spaces(0.0) == [GroupSpace(1, 30, 0)]
    reg.reserve(1, 7)
    assert reg.writable_spaces(0.0) == [GroupSpace(1, 23, 7)]
    reg.heartbeat(hb("a", role="leader", free_slots=50), now=1.0)  # the leader's report resets
    assert reg.writable_spaces(1.0) == [GroupSpace(1, 30, 0)]


def test_cluster_map_and_description() -> None:
    reg = Registry(heartbeat_timeout=3.0)
    for n in ("a", "b", "c"):
        reg.heartbeat(hb(n, group=2, role="leader" if n == "a" else "follower"), now=0.0)
    reg.heartbeat(hb("x", group=7, role="leader"), now=0.0)
    cmap = reg.cluster_map(1.0)
    assert cmap["2"] == {
        "leader": "http://a.local:80",
        "nodes": ["http://a.local:80", "http://b.local:80", "http://c.local:80"],
        "writable": True,
    }
    assert cmap["7"]["writable"] is False
    [g2, _g7] = reg.describe(1.0)
    assert g2["group_id"] == 2 and g2["free_slots"] == 100
    assert g2["nodes"][0] == {
        "node_id": "a",
        "url": "http://a.local:80",
        "role": "leader",
        "term": 1,
        "up": True,
        "last_seen_s": 1.0,
        "free_slots": 100,
        "used_slots": 5,
        "bytes_live": 1234,
        "load": 0.5,
        "unrepairable": [],
    }


def test_other_roles_are_accepted_but_do_not_lead() -> None:
    reg = Registry(heartbeat_timeout=3.0)
    reg.heartbeat(hb("a", role="stopped"), now=0.0)
    reg.heartbeat(hb("b", role="new"), now=0.0)
    reg.heartbeat(hb("c", role="candidate"), now=0.0)
    view = reg.group(1, 0.0)
    assert view is not None and view.leader is None and not view.writable
    assert len(view.up) == 3


def test_a_node_cannot_be_up_in_two_groups() -> None:
    reg = Registry(heartbeat_timeout=3.0)
    reg.heartbeat(hb("a", group=1), now=0.0)
    with pytest.raises(Conflict):
        reg.heartbeat(hb("a", group=2), now=1.0)
    events = reg.heartbeat(hb("a", group=2), now=10.0)  # after the old registration timed out
    assert any("moved" in e for e in events)
    assert reg.group(1, 10.0) is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"node_id": "bad id"}, "node_id"),
        ({"group_id": 0}, None),
        ({"group_id": "1"}, "group_id"),
        ({"url": "ftp://x"}, "url"),
        ({"role": "Leader!"}, "role"),
        ({"role": 1}, "role"),
        ({"term": -1}, "term"),
        ({"free_slots": "lots"}, "free_slots"),
        ({"used_slots": None}, "used_slots"),
        ({"load": float("nan")}, "load"),
        ({"load": True}, "load"),
        ({"unrepairable": 3}, "unrepairable"),
        ({"unrepairable": [1, -2]}, "unrepairable"),
        ({"unrepairable": [True]}, "unrepairable"),
        ({"unrepairable": list(range(101))}, "unrepairable"),
    ],
)
def test_heartbeat_fields_are_checked(change: dict[str, Any], field: str | None) -> None:
    with pytest.raises(InvalidArgument) as info:
        hb("n1", **change)
    assert info.value.context.get("field") == field


def test_unrepairable_slots_are_kept_and_shown() -> None:
    """A node's unrepairable slots (its scrub's) reach ``GET /cluster``; none when absent."""
    assert hb("n1").unrepairable == ()
    reg = Registry(heartbeat_timeout=3.0)
    reg.heartbeat(hb("g1n1", role="leader", unrepairable=[7, 9]), now=0.0)
    reg.heartbeat(hb("g1n2"), now=0.0)
    view = reg.group(1, 0.0)
    assert view is not None
    nodes = {n.hb.node_id: n.to_dict(0.0, 3.0) for n in view.nodes}
    assert nodes["g1n1"]["unrepairable"] == [7, 9]
    assert nodes["g1n2"]["unrepairable"] == []
