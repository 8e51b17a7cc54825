"""The live cluster view built from heartbeats: stats carried through, cluster totals, hot
slices merged over replicas and named by path, events, and the file-id → path index."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from mydfs.common.errors import InvalidArgument
from mydfs.tracker.cluster_view import PathIndex, build_view
from mydfs.tracker.registry import Heartbeat, Registry

F1 = "1" * 32
F2 = "2" * 32


def hb(node: str, role: str = "follower", stats: Any = None) -> Heartbeat:
    body: dict[str, Any] = {
        "node_id": node,
        "group_id": 1,
        "url": f"http://{node}.local:80",
        "role": role,
        "term": 3,
        "free_slots": 100,
        "used_slots": 5,
        "bytes_live": 1234,
        "load": 0.5,
    }
    if stats is not None:
        body["stats"] = stats
    return Heartbeat.from_dict(body)


def stats(read: float, hot: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rates": {"read_per_s": read, "write_per_s": 1.0, "bytes_out_per_s": 1000.0},
        "inflight": 2,
        "hot": hot,
    }


def item(file_id: str, index: int, slot: int, reads: int, total: int) -> dict[str, Any]:
    return {
        "file_id": file_id,
        "index": index,
        "slot": slot,
        "recent": reads,
        "since_start": reads,
        "total": total,
    }


def names(ids: list[str]) -> Mapping[str, str | None]:
    return {f: {F1: "/a/one.bin"}.get(f) for f in ids}


def test_view_sums_rates_merges_hot_slices_and_lists_events() -> None:
    reg = Registry(heartbeat_timeout=3.0)
    reg.heartbeat(hb("n1", "leader", stats(10.0, [item(F1, 0, 4, 7, 9)])), 0.0)
    reg.heartbeat(hb("n2", stats=stats(5.0, [item(F1, 0, 4, 3, 3), item(F2, 2, 9, 4, 4)])), 0.0)
    reg.heartbeat(hb("n3"), 0.0)  # an older node without stats
    reg.tick(0.5)
    view = build_view(reg, 1.0, 1000.0, names)
    c = view["cluster"]
    assert c["read_per_s"] == 15.0 and c["write_per_s"] == 2.0 and c["ops_per_s"] == 17.0
    assert c["bytes_out_per_s"] == 2000.0 and c["inflight"] == 4
    assert c["nodes_up"] == 3 and c["nodes_down"] == 0 and c["writable_groups"] == 1
    [group] = view["groups"]
    assert group["leader"] == "n1" and group["term"] == 3 and group["writable"]
    assert [n["node_id"] for n in group["nodes"]] == ["n1", "n2", "n3"]
    assert group["nodes"][2]["stats"] is None
    hot = view["hot"]
    assert [(h["file_id"], h["recent"], h["total"], h["path"]) for h in hot] == [
        (F1, 10, 12, "/a/one.bin"),
        (F2, 4, 4, None),
    ]
    assert hot[0]["nodes"] == ["n1", "n2"] and hot[0]["group"] == 1 and hot[0]["slot"] == 4
    texts = [e["text"] for e in view["events"]]
    assert any("registered" in t for t in texts) and any("leader" in t for t in texts)
    assert view["events"][0]["time"] == pytest.approx(1000.0 - 0.5)

    # n2 stops heartbeating: it turns down, its figures leave the totals, an event says so.
    reg.heartbeat(hb("n1", "leader", stats(1.0, [])), 4.0)
    reg.heartbeat(hb("n3"), 4.0)
    reg.tick(4.0)
    view = build_view(reg, 4.0, 1003.0, names)
    assert view["cluster"]["nodes_down"] == 1 and view["cluster"]["read_per_s"] == 1.0
    assert view["hot"] == []
    assert "n2" in view["events"][0]["text"] and "down" in view["events"][0]["text"]


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"hot": "x"},
        {"hot": [{"index": 1}]},
        {"hot": [{"file_id": F1, "index": "x"}]},
        {"hot": [{"file_id": F1, "recent": -1}]},
        {"hot": [{}] * 51},
        {"rates": []},
    ],
)
def test_bad_stats_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidArgument):
        hb("n1", stats=bad)


def test_path_index_walks_only_when_needed() -> None:
    walks: list[int] = []

    def walk() -> Iterator[tuple[str, str]]:
        walks.append(1)
        yield (F1, "/x")

    index = PathIndex(min_interval=10.0)
    assert index.lookup([F1], 1, 0.0, walk) == {F1: "/x"}
    assert index.lookup([F1], 2, 1.0, walk) == {F1: "/x"}  # known: no walk
    assert index.lookup([F2], 2, 2.0, walk) == {F2: None}  # unknown, but walked 2 s ago
    assert index.lookup([F2], 2, 20.0, walk) == {F2: None}  # walked, nothing new
    assert index.lookup([F2], 2, 40.0, walk) == {F2: None}  # same version: no walk
    assert len(walks) == 2
