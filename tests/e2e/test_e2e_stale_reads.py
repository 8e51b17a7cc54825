"""A stale storage node never hands out another file's bytes (the reader's rule, docs/client.md).

Real processes on loopback: a tracker and one group of three nodes. While files A (two slices)
and A1 (one slice) are live, one follower, F, is frozen (SIGSTOP). Once the leader has given up
its Raft link and its idle HTTP connections to F, A and A1 are deleted and files B and B1 of the
same sizes are written, reusing A's and A1's slots (checked). The rest of the group is then
killed (B is durable on both, guarantee 1) and F resumed: alone, it can learn nothing, so its
table stays where it was: A's and A1's slices live in the very slots B and B1 now use, with the
same sizes, slice counts and the CRCs of the old bytes, which it still holds. It answers HTTP at
its usual address, like a partitioned node still reachable by clients. Last, the group comes
back.

First the test shows the scenario is real: F's plain ``/chain`` and ``/slices`` answers name A's
slices and serve A's bytes, and a reader that does not check the owner (the read path called
without a file id) returns A's bytes for B. Then every checked way of reading B through F (the
node's ``/chain`` and ``/slices`` told the expected owner, the SDK with F as the group's only
node, whole reads and ranges, ``/files`` streaming on F) returns B's bytes or a retryable error,
never A's; and once the group is back, every reader gets B's bytes from any node.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from e2e_helpers import SLICE, curl, http_request, random_bytes
from helpers import http_json, signed_headers, wait_for

from mydfs.client import AsyncClient
from mydfs.client.local_cluster import LocalCluster
from mydfs.client.process import StorageProcess
from mydfs.common import grants
from mydfs.common.errors import Unavailable

pytestmark = pytest.mark.slow

T = TypeVar("T")
# Every slice is megabytes: a push of B's slices to the frozen node stalls in its socket
# buffer and fails when the pushing node dies, so the frozen node keeps A's bytes as well as
# A's table.
SIZE2 = 2 * SLICE  # A and B: two slices
SIZE1 = SLICE - 1000  # A1 and B1: one slice


def sdk(tracker: str, fn: Callable[[AsyncClient], Awaitable[T]], *, only: str | None = None) -> T:
    """Run ``fn(client)`` on a fresh SDK client; with ``only``, the client knows that node as
    the group's only one (its chain walks and its one-slice reads go there), and gives up
    retrying after 4 s."""

    async def go() -> T:
        async with AsyncClient(tracker, deadline=60.0 if only is None else 4.0) as client:
            await client.status()
            if only is not None:
                client._groups[1] = (None, (only,))
            return await fn(client)

    return asyncio.run(go())


def put(tracker: str, path: str, data: bytes) -> dict[str, Any]:
    async def go(c: AsyncClient) -> dict[str, Any]:
        return (await c.put(path, data)).to_dict()

    return sdk(tracker, go)


def delete(tracker: str, path: str) -> None:
    async def go(c: AsyncClient) -> None:
        await c.delete(path)

    sdk(tracker, go)


def meta(url: str, slot: int, secret: str) -> dict[str, Any] | None:
    path = f"/slices/{slot}/meta"
    try:
        status, _, body = http_request(
            url + path, headers=signed_headers(secret, "GET", path), timeout=5.0
        )
    except OSError:
        return None
    return json.loads(body) if status == 200 else None


def holds(url: str, slot: int, file_id: str, secret: str) -> bool:
    m = meta(url, slot, secret)
    return bool(
        m and m.get("file_id") == file_id and m.get("state") == "live" and m.get("held_here")
    )


def listed(url: str, slot: int, node: str, secret: str) -> bool:
    """Does ``url``'s table list ``node`` among the holders of ``slot``? (A copy counts once
    its node's confirm committed, up to a moment after the copy is written.)"""
    m = meta(url, slot, secret)
    return bool(m and node in m.get("holders", ()))


def open_connections(port: int) -> int:
    """TCP connections to the local ``port`` still open (ESTABLISHED) on this host."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                count += 1
    return count


def raft_linked(node: StorageProcess, peer: StorageProcess) -> bool:
    """Whether ``node``'s Raft is connected to ``peer`` (as its ``/status`` says)."""
    status, _, body = http_request(f"{node.url}/status", timeout=5.0)
    assert status == 200, body
    address = peer.raft_address
    return bool(json.loads(body)["raft"]["peers"][address]["connected"])


@dataclass
class Scenario:
    tracker: str
    stale: StorageProcess
    others: list[StorageProcess]  # the rest of the group: killed while the stale node is read
    a: dict[str, Any]  # the deleted files' entries (two slices, one slice)
    a1: dict[str, Any]
    b: dict[str, Any]  # the files that reused their slots
    b1: dict[str, Any]
    old2: bytes
    old1: bytes
    new2: bytes
    new1: bytes
    b_gen: int  # the generation of B's head slice

    @property
    def head(self) -> int:
        return int(self.b["head"][1])


def stale_scenario(c: LocalCluster) -> Scenario:
    """The scenario of the module's docstring on the fresh one-group cluster ``c``; returns
    with the stale node running alone in its group."""
    t = c.tracker_url
    leader = c.wait_leader(1)
    stale = next(n for n in c.group(1) if n is not leader)
    others = [n for n in c.group(1) if n is not stale]
    old2, old1 = random_bytes(SIZE2, 1), random_bytes(SIZE1, 2)
    new2, new1 = random_bytes(SIZE2, 3), random_bytes(SIZE1, 4)
    a, a1 = put(t, "/stale/a", old2), put(t, "/stale/a1", old1)
    head = int(a["head"][1])
    old_slots = [(head, a["file_id"]), (head + 1, a["file_id"]), (a1["head"][1], a1["file_id"])]
    for slot, fid in old_slots:  # a fresh group fills its slots in order
        wait_for(
            lambda slot=slot, fid=fid: (
                holds(stale.url, slot, fid, c.secret)
                and listed(leader.url, slot, stale.name, c.secret)
            ),
            timeout=30,
            what=f"the follower to hold slot {slot}, as the table says",
        )

    stale.kill(signal.SIGSTOP)  # frozen: its table stays where it was, in memory
    # Commands sent to it now would wait in its socket buffer and be applied when it resumes:
    # wait until the leader has given up its Raft link (a new one needs the frozen node's
    # answer to its handshake, so nothing more is sent to it).
    wait_for(
        lambda: not raft_linked(leader, stale),
        timeout=30,
        what="the leader to drop its Raft link to the frozen node",
    )
    # Likewise the leader's pushes of B's slices must not land when it resumes: once its idle
    # HTTP connections to the frozen node are closed, a push needs a new connection, whose
    # small receive buffer (never read, so never grown) holds only the start of a slice.
    wait_for(
        lambda: open_connections(stale.http_port) == 0,
        timeout=60,
        what="the idle HTTP connections to the frozen node to close",
        interval=0.5,
    )
    delete(t, "/stale/a")
    delete(t, "/stale/a1")
    # The tracker's reclaimer frees their slots (through the leader) and forgets them.
    wait_for(
        lambda: http_json(t + "/meta/trash", headers=c.auth_headers())[1]["trash"] == [],
        timeout=60,
        what="the reclaimer to free A's and A1's slices",
    )
    b, b1 = put(t, "/stale/b", new2), put(t, "/stale/b1", new1)
    # B and B1 reuse the slots of A and A1, with the same sizes and slice counts.
    assert b["head"] == a["head"] and b1["head"] == a1["head"], (a, a1, b, b1)
    assert (b["slices"], b1["slices"]) == (2, 1)
    current = meta(leader.url, head, c.secret)
    assert current is not None and current["file_id"] == b["file_id"]

    # The rest of the group goes away (B is durable on both: guarantee 1), so nothing can
    # bring the stale node up to date while it is read.
    for node in others:
        node.kill()
    stale.kill(signal.SIGCONT)
    for slot, fid in old_slots:
        assert holds(stale.url, slot, fid, c.secret), meta(stale.url, slot, c.secret)
    return Scenario(t, stale, others, a, a1, b, b1, old2, old1, new2, new1, current["generation"])


def files_url(node: StorageProcess, entry: dict[str, Any], secret: str) -> str:
    """``GET /files`` on ``node`` with ``entry`` in the query, as the tracker's 307 gives it
    (with a read grant for the file)."""
    return (
        f"{node.url}/files/stale/x?head=1:{entry['head'][1]}&size={entry['size']}"
        f"&slices={entry['slices']}&file={entry['file_id']}&version={entry['version']}"
        f"&grant={grants.issue_for(secret, 'read', 3600, file_id=entry['file_id'])}"
    )


CASES: list[tuple[str, tuple[int, ...]]] = [
    ("/stale/b", ()),
    ("/stale/b", (10, 1000)),
    ("/stale/b", (SLICE - 10, 100)),
    ("/stale/b1", ()),
    ("/stale/b1", (7, 100)),
]


def test_a_stale_node_never_returns_another_files_bytes(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    c = make_cluster(groups=1)
    s = stale_scenario(c)
    stale, t, b, head = s.stale, s.tracker, s.b, s.head

    # Grants for A and for B, as the tracker hands them out with each file's entry.
    grant_a = grants.issue_for(c.secret, "read", 3600, file_id=s.a["file_id"])
    as_a = {grants.GRANT_HEADER: grant_a}
    as_b = {grants.GRANT_HEADER: grants.issue_for(c.secret, "read", 3600, file_id=b["file_id"])}

    # --- the scenario is real: asked as a reader of A, the stale node serves A at B's head ----
    status, _, body = http_request(f"{stale.url}/chain/{head}?max=2", headers=as_a)
    entries = json.loads(body)["entries"]
    assert status == 200 and [e["file_id"] for e in entries] == [s.a["file_id"]] * 2
    assert sum(e["length"] for e in entries) == b["size"]  # passes the entry's size check
    status, headers, body = http_request(f"{stale.url}/slices/{head}", headers=as_a)
    assert status == 200 and body == s.old2[:SLICE]
    assert headers["x-mydfs-file"] == s.a["file_id"]  # what lets a reader refuse it

    async def unchecked(client: AsyncClient) -> bytes:
        """The read path without the reader's owner check (no file id; A's grant, which the
        node binds the answers to): what readers did before."""
        info = await client.stat("/stale/b")
        locs = await client._read.chain(info.head, info.slices, info.size, grant=grant_a)
        stream = client._read.stream(locs, 0, info.size, grant=grant_a)
        return b"".join([p async for p in stream])

    assert sdk(t, unchecked, only=stale.url) == s.old2

    # --- the node's own answers, told what the reader expects: a redirect or a refusal -------
    expect = {"X-Mydfs-File": b["file_id"], "X-Mydfs-Index": "0", **as_b}
    status, _, body = http_request(f"{stale.url}/chain/{head}?max=2", headers=expect)
    assert status in (307, 503), (status, body[:300])
    for query, hdrs in (
        ("", expect),
        ("", dict(expect, Range="bytes=10-99")),
        (f"?gen={s.b_gen}", as_b),
        (f"?gen={s.b_gen}", dict(as_b, Range="bytes=10-99")),
    ):
        status, _, body = http_request(f"{stale.url}/slices/{head}{query}", headers=hdrs)
        assert status in (307, 503), (query, hdrs, status, body[:300])

    # --- the SDK through the stale node: a retryable error, never A's bytes -------------------
    for path, args in CASES:

        async def read(client: AsyncClient, path: str = path, args: Any = args) -> bytes:
            return await client.read(path, *args)

        with pytest.raises(Unavailable):
            got = sdk(t, read, only=stale.url)
            raise AssertionError(f"read {path}{args} through the stale node gave {got[:40]!r}")

    # --- /files streaming on the stale node: a retryable error, never A's bytes ---------------
    for entry in (b, s.b1):
        for rng in ({}, {"Range": "bytes=100-5000"}):
            status, headers, body = http_request(
                files_url(stale, entry, c.secret), headers=rng, timeout=60
            )
            assert status == 503 and "retry-after" in headers, (status, body[:300])
    status, _, body = http_request(
        f"{stale.url}/files/stale/x?head=1:{head}&size={b['size']}&slices=2",
        headers=as_b,
    )
    assert status == 400 and b"file" in body  # the file id is required

    # --- the group back: B's bytes, whichever node is asked -----------------------------------
    for node in s.others:
        node.start()
    c.wait_leader(1, timeout=60)

    async def reads(client: AsyncClient) -> list[bytes]:
        out = []
        for _ in range(3):
            client._chains.clear()
            for path, args in CASES:
                out.append(await client.read(path, *args))
        return out

    want = [s.new2, s.new2[10:1010], s.new2[SLICE - 10 : SLICE + 90], s.new1, s.new1[7:107]]
    assert sdk(t, reads) == want * 3
    for entry, data in ((b, s.new2), (s.b1, s.new1)):
        done = curl("--fail-with-body", files_url(stale, entry, c.secret), timeout=60)
        assert done.returncode == 0 and done.stdout == data, done.stderr
        last = min(len(data), SLICE + 100) - 1
        done = curl(
            "--fail-with-body", "-r", f"100-{last}", files_url(stale, entry, c.secret), timeout=60
        )
        assert done.returncode == 0 and done.stdout == data[100 : last + 1], done.stderr
