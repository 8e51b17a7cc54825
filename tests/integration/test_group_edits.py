"""An edit's participant side on a real group (3 processes, no tracker): prepare locks the
slots, the decision token commits (a 301 to the new slice, the rest 404), every node's
``GET /chain`` then reports the new version and the 301 passed through, and the reclaimer's
delete releases a 301 but is refused on a locked slot. The decision tokens are made here with
the cluster secret, as the tracker would."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import aiohttp
from cluster import (
    Cluster,
    delete_slice,
    metric,
    parse_metrics,
    payload,
    request,
    upload,
)

from mydfs.common import grants

FILE = "5e" * 16
OWNER = {"X-Mydfs-File": FILE}


def decision(cluster: Cluster, op: str, txn: str, *, ver: int = 0, prev: int = 0) -> str:
    grant = grants.Grant(
        op, int(time.time()) + 600, file_id=FILE, txn=txn, version=ver, prevs=((1, prev),)
    )
    return grants.issue(cluster.secret, grant)


async def store(
    cluster: Cluster, http: aiohttp.ClientSession, seed: int, nxt: tuple[int, int] | None
) -> tuple[int, int]:
    headers = {**OWNER, "X-Mydfs-Next": "none" if nxt is None else f"{nxt[0]}:{nxt[1]}"}
    got = await upload(cluster, http, payload(1000 + seed, seed), headers=headers)
    return int(got["slot"]), int(got["generation"])


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    reply = await request(http, "POST", url, json=body, headers=OWNER)
    return reply.status, json.loads(reply.body) if reply.body else None


async def chain_at(
    http: aiohttp.ClientSession, base: str, slot: int, version: int
) -> dict[str, Any] | None:
    """A node's ``GET /chain`` answer, or None while it sends the reader elsewhere."""
    headers = {**OWNER, "X-Mydfs-Version": str(version)}
    reply = await request(http, "GET", f"{base}/chain/{slot}", headers=headers)
    if reply.status in (307, 503):
        return None
    assert reply.status == 200, reply
    answer: dict[str, Any] = reply.json()
    return answer


async def test_prepare_commit_and_the_chain_after_it(
    shared_cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    c = shared_cluster
    leader = await c.leader()
    tail = await store(c, http, 3, None)
    mid = await store(c, http, 2, (1, tail[0]))
    head = await store(c, http, 1, (1, mid[0]))
    new = await store(c, http, 9, (1, tail[0]))  # replaces mid
    txn = os.urandom(16).hex()
    body = {"file_id": FILE, "lock": [list(mid)], "move": [*mid, [1, new[0]]], "new": [list(new)]}

    follower = c.followers(leader)[0]
    reply = await request(
        http, "POST", f"{follower.url}/edits/{txn}/prepare", json=body, headers=OWNER
    )
    assert reply.status == 307 and reply.headers["Location"].startswith(leader.url)
    status, answer = await post(http, f"{leader.url}/edits/{txn}/prepare", body)
    assert status == 200, answer
    assert answer == {"ok": True, "txn": txn, "state": "prepared", "duplicate": False}
    status, answer = await post(http, f"{leader.url}/edits/{txn}/prepare", body)
    assert (status, answer["duplicate"]) == (200, True)

    # Locked: the reclaimer's delete is refused, and another edit of the slot too.
    refused = await delete_slice(http, c, leader.url, new[0], new[1], file_id=FILE)
    assert refused.status == 409 and refused.json()["context"]["reason"] == "locked"
    other = {"file_id": FILE, "lock": [list(mid)], "move": None, "new": []}
    status, answer = await post(http, f"{leader.url}/edits/{os.urandom(16).hex()}/prepare", other)
    assert status == 409 and answer["context"]["reason"] == "locked", answer

    # Before the commit every node walks the old chain at version 0.
    before = await chain_at(http, leader.url, head[0], 0)
    assert before is not None and before["version"] == 0
    assert [e["slot"] for e in before["entries"]] == [head[0], mid[0], tail[0]]

    token = decision(c, "commit", txn, ver=1, prev=0)
    status, answer = await post(http, f"{leader.url}/edits/{txn}/commit", {"decision": token})
    assert status == 200, answer
    assert (answer["state"], answer["duplicate"]) == ("committed", False)
    status, answer = await post(http, f"{leader.url}/edits/{txn}/commit", {"decision": token})
    assert (status, answer["duplicate"]) == (200, True)
    abort = decision(c, "abort", txn)
    status, answer = await post(http, f"{leader.url}/edits/{txn}/rollback", {"decision": abort})
    assert status == 409 and answer["context"]["reason"] == "committed"

    # Every node: the new chain, the 301 passed through, version 1.
    for node in c.nodes(1):
        deadline = time.monotonic() + 20
        while True:
            got = await chain_at(http, node.url, head[0], 1)
            if got is not None and got["version"] == 1:
                break
            assert time.monotonic() < deadline, f"{node.node_id} never reported version 1"
            await asyncio.sleep(0.2)
        assert [e["slot"] for e in got["entries"]] == [head[0], new[0], tail[0]]
        assert [e["via"] for e in got["entries"]] == [[], [list(mid)], []]
    # A reader holding an older entry is told the version as it is (it decides).
    stale = await chain_at(http, leader.url, head[0], 0)
    assert stale is not None and stale["version"] == 1

    moved = await request(http, "GET", f"{leader.url}/slices/{mid[0]}", headers=OWNER)
    assert moved.status == 301, moved
    metrics = parse_metrics((await request(http, "GET", f"{leader.url}/metrics")).body.decode())
    for outcome in ("prepared", "committed"):
        assert metric(metrics, "mydfs_storage_edits_total", outcome=outcome) >= 1

    # The reclaimer frees a 301 slot (release) once its file is gone.
    released = await delete_slice(http, c, leader.url, mid[0], mid[1], file_id=FILE)
    assert released.status == 200, released
    assert released.json()["state"] == "deleted"


async def test_an_undecided_edit_keeps_its_locks_until_a_decision(
    shared_cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """No tracker answers the resolver here: past ``edit_timeout`` (3 s under the launcher)
    the locks stay; the abort decision then rolls it back and frees the new slice."""
    c = shared_cluster
    leader = await c.leader()
    old = await store(c, http, 20, None)
    new = await store(c, http, 21, None)
    txn = os.urandom(16).hex()
    body = {"file_id": FILE, "lock": [list(old)], "move": None, "new": [list(new)]}
    status, answer = await post(http, f"{leader.url}/edits/{txn}/prepare", body)
    assert status == 200, answer
    await asyncio.sleep(4.5)
    status = (await request(http, "GET", f"{leader.url}/status")).json()
    assert txn in status["edits"]["txns"], status["edits"]
    refused = await delete_slice(http, c, leader.url, old[0], old[1], file_id=FILE)
    assert refused.status == 409 and refused.json()["context"]["reason"] == "locked"
    abort = decision(c, "abort", txn)
    status, answer = await post(http, f"{leader.url}/edits/{txn}/rollback", {"decision": abort})
    assert status == 200 and answer["state"] == "rolled_back", answer
    gone = await request(http, "GET", f"{leader.url}/slices/{new[0]}", headers=OWNER)
    assert gone.status == 404
    freed = await delete_slice(http, c, leader.url, old[0], old[1], file_id=FILE)
    assert freed.status == 200, freed
    # A late prepare of the rolled-back txn never locks anything.
    status, answer = await post(http, f"{leader.url}/edits/{txn}/prepare", body)
    assert status == 409 and answer["context"]["reason"] == "rolled_back"
