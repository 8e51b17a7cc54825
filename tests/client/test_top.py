"""``mydfs top``'s frame, rendered from a cluster view (pure)."""

from __future__ import annotations

from typing import Any

from mydfs.client.top import human, render


def _view() -> dict[str, Any]:
    rates = {"read_per_s": 12.5, "write_per_s": 1.0, "bytes_out_per_s": 2_500_000.0}
    node = {
        "node_id": "g1n1",
        "up": True,
        "role": "leader",
        "term": 4,
        "last_seen_s": 0.4,
        "free_slots": 10,
        "used_slots": 2,
        "stats": {"rates": rates, "inflight": 3, "executor": {"queued": 1}, "raft": {"lag": 0}},
    }
    down = dict(node, node_id="g1n2", up=False, role="follower", stats=None, free_slots=None)
    cluster = {
        "groups": 1,
        "writable_groups": 0,
        "nodes_up": 1,
        "nodes_down": 1,
        "ops_per_s": 13.5,
        "read_per_s": 12.5,
        "write_per_s": 1.0,
        "replicate_per_s": 0.0,
        "edit_per_s": 0.0,
        "bytes_out_per_s": 2_500_000.0,
        "bytes_in_per_s": 0.0,
        "inflight": 3,
        "used_slots": 2,
    }
    hot = {"file_id": "ab" * 16, "index": 3, "group": 1, "slot": 9, "recent": 25, "total": 40,
           "since_start": 25, "nodes": ["g1n1"], "path": "/x/y.bin"}  # fmt: skip
    return {
        "cluster": cluster,
        "groups": [
            {
                "group_id": 1,
                "writable": False,
                "leader": "g1n1",
                "term": 4,
                "up": 1,
                "nodes": [node, down],
            }
        ],
        "hot": [hot, dict(hot, path=None, index=4, recent=1)],
        "events": [{"time": 0.0, "ago_s": 1.0, "text": "node g1n2 (group 1) is down: ..."}],
    }


def test_frame_shows_nodes_hot_slices_and_events() -> None:
    frame = render(_view())
    assert "1 groups (0 writable)  nodes 1 up / 1 down" in frame
    assert "ops/s 13.5 (read 12.5" in frame and "out 2.5 MB/s" in frame
    assert "group 1  NOT writable  leader g1n1  term 4  1/2 up" in frame
    [leader] = [line for line in frame.splitlines() if line.startswith("g1n1")]
    assert "leader" in leader and "13.5" in leader and "2.5 MB" in leader
    [down] = [line for line in frame.splitlines() if line.startswith("g1n2")]
    assert "DOWN" in down and "inf" in down
    assert "/x/y.bin#3" in frame and "(abababababab...)#4" in frame
    assert "is down" in frame
    assert "\x1b[" not in frame
    assert "\x1b[31m" in render(_view(), color=True)


def test_human_sizes() -> None:
    assert human(0) == "0 B"
    assert human(1500) == "1.5 KB"
    assert human(4 * 1024 * 1024) == "4.2 MB"
    assert human(3e15) == "3000.0 TB"
