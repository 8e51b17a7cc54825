"""The collector's windows on a real cluster (``docs/collector.md``, "The grace period and the
windows"), each opened on purpose with an injected pause:

* a pass surveyed, then paused while the group's leader is killed with -9, the orphan it saw
  is freed by another pass and its slot reused by a new file: when the paused pass resumes
  (against the new leader) it frees nothing, and every file reads back byte-identical;
* an upload in progress while the tracker is killed with -9 and restarted, with a grace period
  far shorter than the upload: its intent survives the restart, the collector keeps its slices,
  the upload completes and reads back byte-identical; only then, with nothing left to free, is
  every allocated slot one of a file.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from e2e_helpers import SLICE, random_bytes, restart_tracker
from helpers import signed_headers
from test_e2e_collector import df, feed, put_from_pipe, stray_slice, wait_for

from mydfs.bench.edits import parse_counter
from mydfs.client import AsyncClient, Client
from mydfs.client.local_cluster import LocalCluster
from mydfs.common.location import Location
from mydfs.tracker.collector import Collector, Sources
from mydfs.tracker.orphans import Roots

#: The tracker's own collector never runs during the first test (its first pass is an hour
#: after the start): the test drives a collector of its own.
IDLE = {"collect_interval": 3600}
#: The second test: a slice is an orphan 2 s after its reservation, a pass every second.
SHORT = {"orphan_grace": 2, "intent_ttl": 20, "collect_interval": 1, "collect_rate": 50}


def slot_meta(c: LocalCluster, slot: int) -> dict[str, Any]:
    """Group 1's record of ``slot``, from its leader."""
    path = f"/slices/{slot}/meta"
    req = urllib.request.Request(
        c.wait_leader(1).url + path, headers=signed_headers(c.secret, "GET", path)
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        meta: dict[str, Any] = json.loads(resp.read())
    return meta


def own_collector(c: LocalCluster, files: Callable[[], list[tuple[str, Location]]]) -> Collector:
    """A collector run by the test against ``c``'s group 1, whose roots are ``files()``."""

    async def drop_intent(file_id: str) -> None:
        return None

    return Collector(
        Sources(
            c.secret,
            lambda: [1],
            lambda group: [n.url for n in c.nodes(group) if n.running],
            lambda: Roots(files=files()),
            lambda: [],
            drop_intent,
        ),
        grace=0.001,
        intent_ttl=3600,
        rate=100,
        interval=3600,
    )


async def test_a_paused_pass_frees_nothing_after_a_leader_change_and_a_reuse(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    c = make_cluster(groups=1, tracker_options=IDLE)
    keep = random_bytes(2 * SLICE + 100, 11)
    fresh = random_bytes(5000, 12)
    async with AsyncClient(c.tracker_url, deadline=60.0) as client:
        await client.put("/keep.bin", keep)
        entry = await client.stat("/keep.bin")
        assert entry.head is not None
        roots = [(entry.file_id, entry.head)]
        stray, gen = stray_slice(c, entry.file_id)  # an edit's slice before its prepare
        collector = own_collector(c, lambda: list(roots))
        try:
            paused = await collector.survey()
            assert [(o.slot, o.generation) for o in paused.verdict.orphans] == [(stray, gen)]
            # The pause: the leader dies, another pass frees the orphan, a new file takes its
            # slot (the lowest free one) at the next generation.
            old_leader = c.wait_leader(1)
            old_leader.kill()
            c.wait_leader(1)
            assert await collector.pass_once() == 1
            await client.put("/fresh.bin", fresh)
            new = await client.stat("/fresh.bin")
            assert new.head is not None
            roots.append((new.file_id, new.head))
            reused = slot_meta(c, stray)
            assert (new.head.slot, reused["state"]) == (stray, "live")
            assert reused["generation"] > gen
            # The paused pass resumes against the new leader: its delete names the old
            # generation and owner, and the node refuses it.
            assert await collector.collect(paused) == 0
            assert slot_meta(c, stray) == reused
            old_leader.start()
            assert await client.read("/keep.bin") == keep
            assert await client.read("/fresh.bin") == fresh
            again = await collector.survey()
            assert again.verdict.complete and again.verdict.orphans == []
        finally:
            await collector.close()


def last_pass(c: LocalCluster) -> float:
    """The unix time the tracker's collector last completed a pass (0 before its first)."""
    with urllib.request.urlopen(c.tracker_url + "/metrics", timeout=30) as resp:
        return parse_counter(resp.read().decode(), "mydfs_tracker_collector_last_pass_time")


def test_an_upload_keeps_its_slices_across_a_tracker_restart(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    c = make_cluster(groups=1, tracker_options=SHORT)
    slow = random_bytes(5 * SLICE - 3, 13)
    upload = put_from_pipe(c, "/slow.bin")
    try:
        # One slice every 4 s: each slice is older than the grace period long before the upload
        # registers its file; only its intent protects it.
        feeder = threading.Thread(target=feed, args=(upload, slow, 4.0), daemon=True)
        feeder.start()
        with Client(c.tracker_url, deadline=60.0) as client:
            wait_for("2 slices of the upload", lambda: df(c)["cluster"]["live"]["slots"] >= 2, 40)
            restart_tracker(c)
            restarted = time.time()
            # The restarted tracker's collector passes while the upload is still going on.
            wait_for("a collector pass", lambda: last_pass(c) > restarted, 30)
            assert upload.poll() is None, "the upload ended before the collector passed"
            during = client.df()
            assert during["complete"] and during["cluster"]["orphan"]["slots"] == 0, during
            feeder.join(60)
            assert upload.wait(60) == 0, upload.stderr.read() if upload.stderr else ""
            assert client.read("/slow.bin") == slow
            after = client.df()["cluster"]
            assert after["orphan"]["slots"] == 0, after
            used = after["live"]["slots"] + after["moved"]["slots"] + after["pending"]["slots"]
            assert used == after["files"]["slots"] == 5, after
    finally:
        if upload.poll() is None:
            upload.kill()
            upload.wait(10)
