"""Live monitoring on a real cluster: the tracker's cluster view, the dashboard's files, the new
Prometheus series, and per-slice read totals that survive a restart.

Shows: ``GET /cluster/view`` lists every node with its live figures; a file read 25 times shows
up in the hot-slice list with its path; a killed follower turns down in the view and the tracker's
``mydfs_tracker_node_up`` gauge; the storage node's totals file keeps the per-slice counts across a
restart; ``/ui`` and its script are served.
"""

from __future__ import annotations

import os
import stat
import urllib.request
from typing import Any

from e2e_helpers import cli_ok, random_bytes, run_cli
from helpers import auth_headers, http_json, tracker_token, wait_for

from mydfs.client import Client
from mydfs.client.local_cluster import LocalCluster
from mydfs.storage.monitoring import TOTALS_FILE


def _view(tracker: str) -> dict[str, Any]:
    status, body = http_json(
        tracker + "/cluster/view", headers=auth_headers(tracker_token(tracker))
    )
    assert status == 200, body
    assert isinstance(body, dict)
    return body


def _text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def _hot_row(tracker: str, path: str) -> dict[str, Any] | None:
    return next((h for h in _view(tracker)["hot"] if h["path"] == path), None)


def test_view_hot_slices_node_down_and_totals(make_cluster: Any) -> None:
    cluster: LocalCluster = make_cluster(groups=1)
    tracker = cluster.tracker_url
    names = {n.name for n in cluster.nodes()}
    view = _view(tracker)
    assert {n["node_id"] for g in view["groups"] for n in g["nodes"]} == names
    wait_for(
        lambda: all(n["stats"] for g in _view(tracker)["groups"] for n in g["nodes"]),
        timeout=10,
        what="every node to send its stats",
    )

    with Client(tracker, deadline=60.0) as c:
        c.put("/mon/hot.bin", random_bytes(1000, 1))
        for _ in range(25):
            assert len(c.read("/mon/hot.bin")) == 1000
    wait_for(
        lambda: (_hot_row(tracker, "/mon/hot.bin") or {}).get("recent", 0) >= 25,
        timeout=15,
        what="the slice in the hot list",
    )
    row = _hot_row(tracker, "/mon/hot.bin")
    assert row is not None and row["index"] == 0 and row["group"] == 1
    assert _view(tracker)["cluster"]["groups"] == 1

    metrics = _text(cluster.nodes()[0].url + "/metrics")
    for series in ("mydfs_storage_ops_total", "mydfs_storage_inflight_requests",
                   "mydfs_storage_fs_free_bytes", "mydfs_storage_raft_apply_lag"):  # fmt: skip
        assert series in metrics, series
    assert 'mydfs_tracker_group_writable{group="1"} 1.0' in _text(tracker + "/metrics")
    assert "<canvas" in _text(tracker + "/ui") and "refresh" in _text(tracker + "/ui/dashboard.js")

    # The nodes that served the reads keep their totals across a restart.
    served = set(row["nodes"])
    node = next(n for n in cluster.nodes() if n.name in served)
    node.terminate()
    totals = node.data_dir / TOTALS_FILE
    assert totals.exists() and stat.S_IMODE(os.stat(totals).st_mode) == 0o600
    node.start()
    wait_for(
        lambda: any(
            n["node_id"] == node.name and n["up"] and n["stats"] and n["stats"]["reads_total"] > 0
            for g in _view(tracker)["groups"]
            for n in g["nodes"]
        ),
        timeout=30,
        what="the restarted node to report its earlier reads",
    )

    # A follower killed with -9 turns down.
    leader = cluster.wait_leader(1)
    follower = next(n for n in cluster.group(1) if n is not leader)
    follower.kill()

    def down() -> bool:
        nodes = {n["node_id"]: n for g in _view(tracker)["groups"] for n in g["nodes"]}
        return not nodes[follower.name]["up"]

    wait_for(down, timeout=15, what="the killed follower to turn down")
    wait_for(
        lambda: any(
            follower.name in e["text"] and "down" in e["text"] for e in _view(tracker)["events"]
        ),
        timeout=5,
        what="a node-down event",
    )
    assert f'mydfs_tracker_node_up{{group="1",node="{follower.name}"}} 0.0' in _text(
        tracker + "/metrics"
    )

    # `mydfs top --once` prints the same picture as one plain-text frame.
    frame = cli_ok("top", "--once", tracker=tracker).stdout.decode()
    assert "\x1b[" not in frame  # no escapes when the output is not a terminal
    assert "group 1  writable" in frame and "/mon/hot.bin#0" in frame
    assert any(line.startswith(follower.name) and "DOWN" in line for line in frame.splitlines())
    assert all(n.name in frame for n in cluster.nodes())
    stopped = run_cli("top", "--once", tracker="http://127.0.0.1:9")
    assert stopped.returncode == 1 and b"cannot read the cluster view" in stopped.stderr
