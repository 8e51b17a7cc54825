"""Faults against a storage group of real processes.

On the module's shared group (left healthy): internal calls without a valid signature get 401
and no data; malformed requests get a 4xx with a JSON reason (never a 500 or a hang).

On fresh groups: a leader that dies mid-upload (``MYDFS_FAULTS=crash_after_reserve`` /
``crash_before_seal``) leaves a PENDING slot that the next leader settles (abort → 404 and
reused / seal → a retry is a duplicate), and one that dies before ``assign``
(``crash_before_assign``) a slot reserved ahead that the next leader aborts; a follower whose
disk (a small tmpfs) fills up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cluster import (
    SLICE_CAPACITY,
    TEST_FILE,
    Cluster,
    StorageNode,
    get_slice,
    metric,
    parse_metrics,
    payload,
    put_slice,
    request,
    sha256,
    upload,
    wait_served,
)
from helpers import grant_headers, wait_until

from mydfs.common.auth import AUTH_HEADER, sign
from mydfs.common.checksum import crc32c
from mydfs.common.grants import GRANT_HEADER

pytestmark = pytest.mark.timeout(240)


def _uid(tag: str) -> str:
    return f"{tag}-{os.urandom(6).hex()}"


async def _status(cluster: Cluster, node: StorageNode) -> dict[str, Any]:
    st = await cluster.status(node, timeout=5.0)
    assert st is not None, f"{node.node_id} did not answer /status"
    return st


def _assert_json_error(reply: Any, statuses: set[int], code: str | None = None) -> None:
    assert reply.status in statuses, reply
    assert reply.headers.get("Content-Type", "").startswith("application/json"), reply
    body = reply.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    if code is not None:
        assert body["error"] == code, body


async def raw_http(
    node: StorageNode, head: bytes, body: bytes = b"", *, half_close: bool, timeout: float = 15.0
) -> tuple[int, dict[str, str], bytes]:
    """Send exactly these bytes (for requests no proper client would make); parse the reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.http_port)
    try:
        writer.write(head + body)
        await writer.drain()
        if half_close:
            writer.write_eof()
        async with asyncio.timeout(timeout):
            status_line = await reader.readline()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().title()] = value.strip()
            length = int(headers.get("Content-Length", "0"))
            data = await reader.readexactly(length) if length else b""
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    if not status_line:
        return 0, headers, data  # the node closed the connection without an answer
    return int(status_line.split()[1]), headers, data


# --- authentication ------------------------------------------------------------------------------


async def test_internal_calls_without_valid_signature_get_401_and_no_data(
    shared_cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    c = shared_cluster
    leader = await c.leader()
    data = payload(50_000, seed=5)
    stored = (await put_slice(http, leader.url, data, upload_id=_uid("auth"))).json()
    slot, gen = stored["slot"], stored["generation"]
    follower = c.followers(leader)[0]
    await wait_served(http, follower, slot, sha256(data))
    before = {n.node_id: (await _status(c, n))["volume"] for n in c.nodes()}

    # A push of a payload into an unused slot, with no / bad / replayed / expired / foreign
    # signatures: 401 each time, nothing stored.
    target = slot + 1000
    crc = crc32c(data)
    path = f"/internal/slices/{target}?gen={gen + 1000}&file={'0' * 32}&index=0&next=none&crc={crc}"
    now = time.time()
    bad_headers: list[dict[str, str]] = [
        {},
        {AUTH_HEADER: "garbage"},
        {AUTH_HEADER: f"{int(now)}:{'0' * 64}"},
        {AUTH_HEADER: sign(c.secret, "PUT", f"/internal/slices/{target + 1}?gen=1")},
        {AUTH_HEADER: sign(c.secret, "GET", path)},
        {AUTH_HEADER: sign(c.secret, "PUT", path, now=now - 3600)},
        {AUTH_HEADER: sign("some-other-secret-0123456789", "PUT", path)},
    ]
    for headers in bad_headers:
        for node in c.nodes():
            reply = await request(http, "PUT", node.url + path, data=data, headers=headers)
            _assert_json_error(reply, {401}, "unauthorized")

    # Reads of a live payload and of "holds" without a valid signature: 401, no payload bytes.
    for node in c.nodes():
        for p in (f"/internal/slices/{slot}?gen={gen}", f"/internal/holds/{slot}?gen={gen}"):
            for headers in ({}, {AUTH_HEADER: sign(c.secret, "GET", p + "0")}):
                reply = await request(http, "GET", node.url + p, headers=headers)
                _assert_json_error(reply, {401}, "unauthorized")
                assert data[:64] not in reply.body and len(reply.body) < 1000

    # Control: the same calls correctly signed work, and the pushes above stored nothing.
    for node in c.nodes():
        p = f"/internal/slices/{slot}?gen={gen}"
        reply = await request(
            http, "GET", node.url + p, headers={AUTH_HEADER: sign(c.secret, "GET", p)}
        )
        assert reply.status == 200 and reply.body == data
        p = f"/internal/holds/{target}?gen={gen + 1000}"
        reply = await request(
            http, "GET", node.url + p, headers={AUTH_HEADER: sign(c.secret, "GET", p)}
        )
        assert reply.status == 200 and reply.json()["holds"] is False, reply
        assert (await _status(c, node))["volume"] == before[node.node_id]


# --- malformed requests --------------------------------------------------------------------------


async def test_malformed_requests_get_4xx_with_a_json_reason(
    shared_cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    c = shared_cluster
    leader = await c.leader()
    data = payload(100_000, seed=6)
    stored = (await put_slice(http, leader.url, data, upload_id=_uid("malformed"))).json()
    slot = stored["slot"]
    for node in c.nodes():
        await wait_served(http, node, slot, sha256(data))
    group_before = (await _status(c, leader))["group"]
    end_before, ahead_before = group_before["end"], group_before["ahead"]
    good = payload(10_000, seed=8)

    # (method, path, headers, body, acceptable statuses, error code or None)
    cases: list[tuple[str, str, dict[str, str], bytes | None, set[int], str | None]] = [
        ("GET", "/slices/abc", {}, None, {400}, "slot_out_of_range"),
        ("GET", "/slices/-1", {}, None, {400}, "slot_out_of_range"),
        ("GET", "/slices/18446744073709551615", {}, None, {400}, "slot_out_of_range"),
        ("GET", "/slices/99999999999999999999999", {}, None, {400}, "slot_out_of_range"),
        ("GET", "/slices/abc/meta", {}, None, {400}, "slot_out_of_range"),
        ("DELETE", "/internal/slices/x1", {}, None, {401}, "unauthorized"),
        ("GET", f"/slices/{slot}?gen=abc", {}, None, {400}, "invalid_argument"),
        ("GET", f"/slices/{slot}", {"Range": "bytes=999999999-"}, None, {416}, None),
        ("GET", f"/slices/{slot}", {"Range": "bytes=500-20"}, None, {400}, None),
        ("GET", f"/slices/{slot}", {"Range": "bytes=0-1,5-6"}, None, {400}, None),
        ("GET", f"/slices/{slot}", {"Range": "lines=0-5"}, None, {400}, None),
        ("GET", f"/slices/{slot}", {"Range": "bytes=x-y"}, None, {400}, None),
        ("PUT", "/slices", {"X-Mydfs-Crc32c": str((crc32c(good) + 1) % 2**32)}, good, {400}, None),
        ("PUT", "/slices", {"X-Mydfs-Crc32c": "not-a-number"}, good, {400}, None),
        ("PUT", "/slices", {"X-Mydfs-Crc32c": "-5"}, good, {400}, None),
        ("PUT", "/slices", {"X-Mydfs-File": "zz"}, good, {400}, None),
        ("PUT", "/slices", {"X-Mydfs-File": "g" * 32}, good, {400}, None),
        ("PUT", "/slices", {"X-Mydfs-Index": "-1"}, good, {400}, None),
        ("PUT", "/slices", {"X-Mydfs-Next": "nowhere"}, good, {400}, None),
        ("PUT", "/slices?upload=bad%20id%2F..", {}, good, {400}, None),
        ("PUT", "/slices?upload=" + "u" * 200, {}, good, {400}, None),
        ("PUT", "/slices", {}, payload(SLICE_CAPACITY + 1, seed=9), {413}, "payload_too_large"),
    ]
    for method, path, headers, body, statuses, code in cases:
        reply = await request(
            http, method, leader.url + path, headers=headers, data=body, timeout=20
        )
        if reply.status == 307:  # a write that reached a follower would be fine too
            continue
        try:
            _assert_json_error(reply, statuses, code)
        except AssertionError as exc:
            raise AssertionError(f"{method} {path} {headers}: {exc}") from None

    # A slot never allocated: 404 from the leader (which knows every acknowledged seal).
    reply = await get_slice(http, leader.url, 10**9)
    _assert_json_error(reply, {404}, "not_found")

    # Requests no well-behaved client sends, written byte by byte.
    # (The grant header rides along with Host: the node checks it before anything else.)
    grant = grant_headers(c.secret, "write", TEST_FILE)[GRANT_HEADER]
    host = f"Host: 127.0.0.1:{leader.http_port}\r\n{GRANT_HEADER}: {grant}\r\n".encode()
    # no Content-Length at all
    status, headers, body = await raw_http(
        leader, b"PUT /slices HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n", half_close=False
    )
    assert status == 411, (status, body)
    assert headers.get("Content-Type", "").startswith("application/json"), headers
    assert b'"error"' in body
    # chunked body, so no Content-Length either
    chunked = (
        b"PUT /slices HTTP/1.1\r\n"
        + host
        + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    status, headers, body = await raw_http(
        leader, chunked, b"5\r\nhello\r\n0\r\n\r\n", half_close=False
    )
    assert status == 411, (status, body)
    assert headers.get("Content-Type", "").startswith("application/json"), headers
    # Content-Length larger than the body that comes, then the client half-closes: the node
    # drops the connection (or answers 4xx); never a 5xx, and nothing is stored.
    short = (
        b"PUT /slices HTTP/1.1\r\n" + host + b"Content-Length: 100000\r\nConnection: close\r\n\r\n"
    )
    status, headers, body = await raw_http(leader, short, b"x" * 1000, half_close=True)
    assert status == 0 or 400 <= status < 500, (status, body)
    # A body cut short of the payload its checksum header describes (a client that got the
    # length wrong): the checksum no longer matches, 400.
    cut = (
        b"PUT /slices HTTP/1.1\r\n"
        + host
        + b"Content-Length: 5000\r\n"
        + f"X-Mydfs-Crc32c: {crc32c(good)}\r\nConnection: close\r\n\r\n".encode()
    )
    status, headers, body = await raw_http(leader, cut, good[:5000], half_close=False)
    assert status == 400, (status, body)
    assert headers.get("Content-Type", "").startswith("application/json"), headers
    # a declared body over the slice capacity is refused before it is read
    big = (
        b"PUT /slices HTTP/1.1\r\n"
        + host
        + f"Content-Length: {SLICE_CAPACITY + 1}\r\n".encode()
        + b"Connection: close\r\n\r\n"
    )
    status, headers, body = await raw_http(leader, big, b"y" * 1000, half_close=False)
    assert status == 413, (status, body)
    assert headers.get("Content-Type", "").startswith("application/json"), headers

    # Nothing above reserved a slot (nor took one the leader reserved ahead), and the group
    # still takes and serves uploads.
    group_after = (await _status(c, leader))["group"]
    assert (group_after["end"], group_after["ahead"]) == (end_before, ahead_before)
    assert group_after["pending"] == group_before["pending"]
    stored = (await put_slice(http, leader.url, good, upload_id=_uid("after"))).json()
    assert stored["slot"] <= end_before  # reserved ahead, or the next at the end

    # Two-step upload: a body whose length differs from the reservation is refused (400),
    # the right body is then accepted.
    uid = _uid("twostep")
    reply = await request(
        http,
        "POST",
        leader.url + "/slices/reserve",
        data=json.dumps({"upload_id": uid, "length": len(good), "crc32c": crc32c(good)}),
    )
    assert reply.status == 201, reply
    slot2, gen2 = reply.json()["slot"], reply.json()["generation"]
    fill = f"{leader.url}/slices/{slot2}?upload={uid}&gen={gen2}"
    for wrong in (good[:-1], good + b"z"):
        _assert_json_error(await request(http, "PUT", fill, data=wrong), {400})
    reply = await request(http, "PUT", fill, data=good)
    assert reply.status == 201, reply
    for node in c.nodes():
        await wait_served(http, node, stored["slot"], sha256(good))
        await wait_served(http, node, slot, sha256(data))


# --- a leader dying in the middle of an upload ----------------------------------------------------


async def _upload_that_kills_the_leader(
    http: aiohttp.ClientSession, leader: StorageNode, data: bytes, uid: str, point: str
) -> None:
    try:
        reply = await put_slice(http, leader.url, data, upload_id=uid, timeout=60)
    except (aiohttp.ClientError, TimeoutError):
        pass  # the connection died with the process: the expected outcome
    else:
        raise AssertionError(f"the upload was answered although the leader should die: {reply!r}")
    await wait_until(lambda: not leader.running, timeout=30, what=f"{leader.node_id} to exit")
    assert f"exiting at {point}" in leader.log_text()


async def _slot_of(
    c: Cluster, http: aiohttp.ClientSession, node: StorageNode, uid: str
) -> dict[str, Any]:
    """The table record (on ``node``) of the slot reserved for upload ``uid``; waits until
    ``node`` has applied that reservation."""

    async def find() -> dict[str, Any] | None:
        st = await c.status(node)
        for slot in range(st["group"]["end"] if st else 0):
            reply = await request(http, "GET", f"{node.url}/slices/{slot}/meta", timeout=5)
            if reply.status == 200 and reply.json()["upload_id"] == uid:
                info: dict[str, Any] = reply.json()
                return info
        return None

    found: dict[str, Any] = await wait_until(
        find, timeout=30, what=f"{node.node_id} to know the slot of upload {uid}"
    )
    return found


async def test_leader_dies_after_reserve_next_leader_aborts_and_slot_is_reused(
    make_cluster: Any, http: aiohttp.ClientSession
) -> None:
    c: Cluster = make_cluster(name="crash-after-reserve")
    fault = {"MYDFS_FAULTS": "crash_after_reserve"}
    await c.start(env=fault)  # every node carries the fault; only a leader uploading hits it
    old = await c.leader()
    data, uid = payload(200_000, seed=21), _uid("dies")
    await _upload_that_kills_the_leader(http, old, data, uid, "crash_after_reserve")

    new = await c.leader()
    assert new is not old
    survivors = [n for n in c.nodes() if n is not old]
    info = await _slot_of(c, http, new, uid)
    slot = info["slot"]

    async def aborted_everywhere() -> bool:
        for node in survivors:
            meta = await request(http, "GET", f"{node.url}/slices/{slot}/meta", timeout=5)
            if meta.status != 200 or meta.json()["state"] != "deleted":
                return False
        return True

    await wait_until(aborted_everywhere, timeout=30, what=f"slot {slot} to be aborted")
    for node in survivors:
        reply = await get_slice(http, node.url, slot)
        _assert_json_error(reply, {404})
    assert (await _status(c, new))["group"]["pending"] == 0

    # The two survivors still run with the fault armed. Bring every node back without it
    # (the old leader; then the follower; then the current leader, whose kill makes one of
    # the two fault-free nodes the leader) and upload again: the aborted slot is reused.
    await c.restart(old)
    other = next(n for n in survivors if n is not new)
    await c.restart(other)
    await c.leader()
    c.kill(new)
    leader = await c.leader()
    assert leader is not new
    fresh = payload(123_456, seed=22)
    stored = await upload(c, http, fresh)
    assert stored["slot"] == slot, f"the free slot {slot} was not reused: {stored}"
    assert stored["generation"] > info["generation"]
    await c.restart(new)
    for node in c.nodes():
        await wait_served(http, node, slot, sha256(fresh))
        reply = await get_slice(http, node.url, slot, gen=info["generation"])
        _assert_json_error(reply, {404}, "slice_deleted")


async def test_leader_dies_before_seal_next_leader_seals_and_retry_is_duplicate(
    make_cluster: Any, http: aiohttp.ClientSession
) -> None:
    c: Cluster = make_cluster(name="crash-before-seal")
    await c.start(env={"MYDFS_FAULTS": "crash_before_seal"})
    old = await c.leader()
    keep, frozen = c.followers(old)
    # Freeze one follower, so that when the leader dies the payload is durable on exactly
    # two nodes: the leader itself and ``keep``.
    c.pause(frozen)
    data, uid = payload(300_000, seed=31), _uid("seal")
    await _upload_that_kills_the_leader(http, old, data, uid, "crash_before_seal")

    # Hold ``keep`` too while the old leader restarts (without the fault, the payload on its
    # disk): only once both holders answer HTTP can they form a majority and elect a leader,
    # and that leader then settles the pending slot with 2 holders in view: sealed.
    c.pause(keep)
    await c.restart(old)
    c.resume(keep)
    leader = await c.leader()
    assert leader in (old, keep)
    info = await _slot_of(c, http, leader, uid)
    slot = info["slot"]

    async def sealed() -> dict[str, Any] | None:
        meta = await request(http, "GET", f"{leader.url}/slices/{slot}/meta", timeout=5)
        return meta.json() if meta.status == 200 and meta.json()["state"] == "live" else None

    live = await wait_until(sealed, timeout=30, what=f"slot {slot} to be sealed")
    assert set(live["holders"]) >= {old.node_id, keep.node_id}, live

    # The client retries with the same upload id: the same slice, not a second copy.
    reply = await put_slice(http, leader.url, data, upload_id=uid)
    assert reply.status == 200, reply
    dup = reply.json()
    assert dup["duplicate"] is True
    assert (dup["slot"], dup["generation"]) == (slot, info["generation"])
    st = await _status(c, leader)
    assert st["group"]["live"] == 1 and st["group"]["pending"] == 0, st["group"]

    c.resume(frozen)
    for node in c.nodes():
        await wait_served(http, node, slot, sha256(data))
    # exactly one slot carries this upload, on every node
    end = (await _status(c, leader))["group"]["end"]
    for node in c.nodes():
        carrying = []
        for s in range(end):
            meta = await request(http, "GET", f"{node.url}/slices/{s}/meta", timeout=5)
            if meta.status == 200 and meta.json()["upload_id"] == uid:
                carrying.append((s, meta.json()["state"]))
        assert carrying == [(slot, "live")], (node.node_id, carrying)


# --- a follower's disk fills up -----------------------------------------------------------------


async def test_follower_disk_full_then_space_returns(
    make_cluster: Any, http: aiohttp.ClientSession, tmpfs_available: None
) -> None:
    c: Cluster = make_cluster(name="disk-full")
    a, b, full = c.nodes()
    mount = c.mount_tmpfs(c.root / "small-disk", "22m")  # 5 full slots fit, the 6th does not
    full.volume_path = mount / "volume.dat"
    # Elect the leader among the two big-disk nodes first, so the small disk is a follower's.
    await c.start([a, b])
    leader = await c.leader()
    await c.start([full], wait_leader=False)

    async def following() -> bool:
        st = await c.status(full)
        return bool(st and st["leader"] == leader.url and st["raft"].get("ready"))

    await wait_until(following, timeout=30, what=f"{full.node_id} to follow {leader.node_id}")

    sizes = [SLICE_CAPACITY] * 8 + [65_536, 1 << 20]
    stored: list[tuple[dict[str, Any], bytes]] = []
    for i, size in enumerate(sizes):
        data = payload(size, seed=400 + i)
        body = await upload(c, http, data, upload_id=_uid(f"full{i}"), base=leader.url)
        assert body["length"] == size  # the two other nodes carry the group
        stored.append((body, data))

    # The small disk refused pushes with 507 disk_full, which its metrics record.
    async def refused() -> float:
        text = (await request(http, "GET", full.url + "/metrics", timeout=10)).body.decode()
        return metric(
            parse_metrics(text),
            "mydfs_storage_http_requests_total",
            route="/internal/slices/{slot}",
            status="507",
        )

    assert await refused() >= 1
    leader_metrics = parse_metrics(
        (await request(http, "GET", leader.url + "/metrics", timeout=10)).body.decode()
    )
    assert metric(leader_metrics, "mydfs_storage_replication_total", kind="push", outcome="failed")
    assert "no space left on device" in (leader.log_text() + full.log_text())

    # Every slice is readable, byte for byte, from the two big disks, and from the full node as
    # far as it holds them (it redirects for the rest).
    held, lacking = 0, 0
    for body, data in stored:
        for node in (a, b):
            await wait_served(http, node, body["slot"], sha256(data))
        reply = await get_slice(http, full.url, body["slot"])
        if reply.status == 200:
            assert reply.body == data
            held += 1
        else:
            assert reply.status == 307, reply
            assert reply.headers["Location"].split("/slices")[0] in (a.url, b.url)
            lacking += 1
    assert lacking >= 1, "the small disk should have run out of space"

    # A correctly signed push of one of the slices it lacks, straight to the full node:
    # refused with 507 and the JSON reason disk_full, retryable.
    for body, data in stored:
        if len(data) == SLICE_CAPACITY and (
            (await get_slice(http, full.url, body["slot"])).status == 307
        ):
            break
    else:
        raise AssertionError("the full node lacks no full-size slice")
    path = (
        f"/internal/slices/{body['slot']}?gen={body['generation']}&file={'0' * 32}"
        f"&index=0&next=none&crc={crc32c(data)}"
    )
    reply = await request(
        http, "PUT", full.url + path, data=data, headers={AUTH_HEADER: sign(c.secret, "PUT", path)}
    )
    _assert_json_error(reply, {507}, "disk_full")
    assert reply.headers.get("Retry-After"), reply.headers

    # Space returns: the node catches up on its own and ends up holding every live slice.
    c.resize_tmpfs(mount, "96m")
    for body, data in stored:
        got = await wait_served(http, full, body["slot"], sha256(data), timeout=60)
        assert got.body == data

    async def all_confirmed() -> bool:
        st = await c.status(full)
        return bool(st and st["volume"]["live"] == len(stored) == st["group"]["live"])

    await wait_until(all_confirmed, timeout=30, what="the full node to hold every slice")

    # Nothing stored was damaged: every volume verifies and holds the same live slices.
    c.stop_all()
    expected = {
        body["slot"]: (body["generation"], len(data), sha256(data)) for body, data in stored
    }
    for node in c.nodes():
        done = c.verify_volume(node)
        assert done.returncode == 0, (node.node_id, done.stdout, done.stderr)
        assert c.stat_volume(node)["stats"]["live"] == len(stored)
        assert c.volume_digest(node) == expected, node.node_id


# --- the harness itself ------------------------------------------------------------------------


async def test_harness_leaves_nothing_behind_when_a_test_fails(
    tmpfs_available: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MYDFS_IT_KEEP", raising=False)
    c = Cluster(name="teardown")
    root, pids = c.root, []
    mount = c.root / "disk"
    # Another process grabs one node's HTTP port before it starts: the group moves to new ports.
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", c.nodes()[1].http_port))
    squatter.listen()
    taken = c.nodes()[1].http_port
    with pytest.raises(RuntimeError, match="a test failing mid-way"), c, squatter:
        await c.start()
        assert c.nodes()[1].http_port != taken
        assert "new ports" in c.nodes()[1].log_text()
        c.mount_tmpfs(mount, "1m")
        leader = await c.leader()
        c.pause(c.followers(leader)[0])  # a frozen process must be ended too
        pids = [n.pid for n in c.nodes()]
        raise RuntimeError("a test failing mid-way")
    assert len(pids) == 3
    for pid in pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert str(mount) not in Path("/proc/mounts").read_text()
    assert not root.exists()


async def test_leader_dies_before_assign_next_leader_aborts_what_it_reserved_ahead(
    make_cluster: Any, http: aiohttp.ClientSession
) -> None:
    """A one-request upload written on 2 of 3 nodes into a slot reserved ahead, and the leader
    dies before ``assign``: nobody was told of it, so the new leader aborts the slot (never
    seals it, whoever holds copies), and the client's retry stores the slice once."""
    c: Cluster = make_cluster(name="crash-before-assign")
    await c.start(env={"MYDFS_FAULTS": "crash_before_assign"})
    old = await c.leader()
    first = payload(50_000, seed=41)
    await upload(c, http, first)  # two rounds (the pool is empty): it fills the pool

    async def reserved_ahead() -> bool:
        return (await _status(c, old))["group"]["ahead"] > 0

    await wait_until(reserved_ahead, timeout=30, what="slots reserved ahead")
    data, uid = payload(200_000, seed=42), _uid("assign")
    await _upload_that_kills_the_leader(http, old, data, uid, "crash_before_assign")

    new = await c.leader()
    assert new is not old

    async def settled() -> bool:
        group = (await _status(c, new))["group"]
        return group["pending"] == 0 and group["ahead"] <= 16 and group["live"] == 1

    await wait_until(settled, timeout=30, what="the dead leader's slots aborted")
    stored = await upload(c, http, data, upload_id=uid)  # the retry: two rounds on `new`
    again = await upload(c, http, data, upload_id=uid)
    assert again["duplicate"] is True and again["slot"] == stored["slot"]
    assert (await _status(c, new))["group"]["live"] == 2
    await c.restart(old)  # without the fault
    for node in c.nodes():
        await wait_served(http, node, stored["slot"], sha256(data))
