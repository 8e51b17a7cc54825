"""Only the system frees slices, and only a file's own (``tracker/reclaim.py``).

* A file entry forged to point at another file's head slice (an intent for a new file id, then
  a registration naming the other file's head) and then removed frees nothing of the other
  file: it still reads back byte-identical, and its slices are served by every node.
* Removing a file frees its slices through the tracker's reclaimer within a deadline, and the
  trash record goes with them.
* A tracker killed with SIGKILL in the middle of freeing a file (some slices deleted, some not)
  finishes after its restart: the record is still in its trash, and every slice ends deleted.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from e2e_helpers import (
    SLICE,
    random_bytes,
    read_grant,
    restart_tracker,
    slice_status_everywhere,
    walk_chain,
)
from helpers import auth_headers, http_json, tracker_token, wait_for

from mydfs.client import Client, FileInfo, MydfsError
from mydfs.client._transport import origin
from mydfs.client.local_cluster import LocalCluster

#: Seconds the reclaimer may take to free a file and forget it (it passes every second).
RECLAIM_DEADLINE = 60.0


def tracker_call(method: str, url: str, body: dict[str, Any]) -> tuple[int, Any]:
    """One JSON request to the tracker with its saved admin key: (status, decoded body)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method=method)
    req.add_header("Content-Type", "application/json")
    for name, value in auth_headers(tracker_token(origin(url))).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def trash_ids(cluster: LocalCluster) -> set[str]:
    status, body = http_json(cluster.tracker_url + "/meta/trash", headers=cluster.auth_headers())
    assert status == 200, body
    return {r["file_id"] for r in body["trash"]}


def chain_of(cluster: LocalCluster, info: FileInfo) -> list[dict[str, Any]]:
    assert info.head is not None
    grant = read_grant(cluster, info.file_id)
    return walk_chain(cluster.tracker_url, list(info.head), info.slices, grant=grant)


def statuses(cluster: LocalCluster, info: FileInfo, entries: list[dict[str, Any]]) -> list[int]:
    """Per slice: 200 when every node of its group serves it, 404 when none does, else 0."""
    grant = read_grant(cluster, info.file_id)
    out = []
    for e in entries:
        seen = set(slice_status_everywhere(cluster.tracker_url, e, grant=grant))
        out.append(seen.pop() if len(seen) == 1 and seen <= {200, 404} else 0)
    return out


def test_removing_a_forged_entry_frees_nothing_of_the_file_it_points_at(
    cluster: LocalCluster, client: Client
) -> None:
    data = random_bytes(SLICE + 5000, seed=61)
    victim = client.put("/own/victim.bin", data)
    assert victim.head is not None and victim.slices == 2
    entries = chain_of(cluster, victim)
    wait_for(
        lambda: statuses(cluster, victim, entries) == [200, 200],
        timeout=30,
        what="every copy of the victim's slices",
    )

    # A writer forges an entry: its own (new) file id, the victim's head, size and count.
    forged_id = uuid.uuid4().hex
    t = cluster.tracker_url
    status, intent = tracker_call(
        "POST", t + "/meta/intents", {"file_id": forged_id, "path": "/own/forged.bin"}
    )
    assert status == 201, intent
    entry = {
        "file_id": forged_id,
        "size": victim.size,
        "slices": victim.slices,
        "head": list(victim.head),
        "hash": victim.hash,
    }
    status, body = tracker_call("PUT", t + "/meta/files" + quote("/own/forged.bin"), entry)
    assert status == 201, body
    # Its grant is for its own file id: the victim's slices are not served under it.
    try:
        got = client.read("/own/forged.bin")
    except MydfsError:
        pass
    else:
        raise AssertionError(f"the forged entry read {len(got)} bytes")

    client.delete("/own/forged.bin")
    wait_for(
        lambda: forged_id not in trash_ids(cluster),
        timeout=RECLAIM_DEADLINE,
        what="the reclaimer to process the forged entry",
    )
    assert statuses(cluster, victim, entries) == [200, 200]
    client._aio._chains.clear()
    assert client.read("/own/victim.bin") == data
    with Client(cluster.tracker_url) as fresh:
        assert fresh.read("/own/victim.bin") == data


def test_rm_frees_the_files_slices_through_the_reclaimer(
    cluster: LocalCluster, client: Client
) -> None:
    info = client.put("/own/gone.bin", random_bytes(2 * SLICE + 10, seed=62))
    entries = chain_of(cluster, info)
    assert len(entries) == 3
    wait_for(
        lambda: statuses(cluster, info, entries) == [200] * 3,
        timeout=30,
        what="every copy of the file's slices",
    )
    client.delete("/own/gone.bin")
    wait_for(
        lambda: statuses(cluster, info, entries) == [404] * 3,
        timeout=RECLAIM_DEADLINE,
        what="the reclaimer to free every slice of the removed file",
    )
    wait_for(
        lambda: info.file_id not in trash_ids(cluster),
        timeout=RECLAIM_DEADLINE,
        what="the trash record to go",
    )


def test_a_tracker_killed_mid_reclaim_finishes_after_restart(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    c = make_cluster(groups=1)
    # Slow enough that a kill lands between two deletes (one slice every 4 s).
    restart_tracker(c, reclaim_rate=0.25)
    with Client(c.tracker_url, deadline=60.0) as client:
        info = client.put("/own/slow.bin", random_bytes(3 * SLICE + 1, seed=63))
        entries = chain_of(c, info)
        assert len(entries) == 4
        wait_for(
            lambda: statuses(c, info, entries) == [200] * 4,
            timeout=30,
            what="every copy of the file's slices",
        )
        client.delete("/own/slow.bin")

    def part_freed() -> list[int] | None:
        now = statuses(c, info, entries)
        return now if 404 in now else None

    seen = wait_for(part_freed, timeout=RECLAIM_DEADLINE, what="the first slice freed")
    proc = c.tracker_process
    assert proc is not None
    proc.kill()  # SIGKILL, in the middle of the file
    assert 200 in seen or 0 in seen, f"the reclaimer finished before the kill: {seen}"

    restart_tracker(c, reclaim_rate=200)
    assert info.file_id in trash_ids(c) or statuses(c, info, entries) == [404] * 4
    wait_for(
        lambda: statuses(c, info, entries) == [404] * 4,
        timeout=RECLAIM_DEADLINE,
        what="the restarted tracker to free the rest",
    )
    wait_for(
        lambda: info.file_id not in trash_ids(c),
        timeout=RECLAIM_DEADLINE,
        what="the trash record to go",
    )
