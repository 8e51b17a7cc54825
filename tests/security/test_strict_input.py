"""Strict input and limits on a real tracker and storage group: each bad number, oversized or
slow request gets its own clear 4xx (400, 404, 408, 413, 429), never a 500 or a hang."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
import yarl
from security_helpers import CLIENT_TIMEOUT, auth_headers

from mydfs.client.local_cluster import LocalCluster
from mydfs.common import grants

BAD_NUMBERS = ["\u00b2", "\u0663", "9" * 5000, "nan", "1e300", "-1", "+1", "0x10", " 1"]


async def _call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> tuple[int, Any]:
    async with session.request(
        method,
        yarl.URL(url, encoded=True),
        headers=headers,
        data=data,
        allow_redirects=False,
        timeout=aiohttp.ClientTimeout(total=20),
    ) as resp:
        raw = await resp.read()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw


async def _raw(port: int, data: bytes, *, wait: float = 20.0) -> tuple[int, bytes, float]:
    """Write ``data``, then wait for the status line; (status, the rest read, seconds)."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(wait):
            line = await reader.readline()
            rest = await reader.read(4096)
        return int(line.split()[1]), rest, time.monotonic() - started
    finally:
        writer.close()


def _q(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_bad_numbers_are_400_with_a_reason(
    hostile_cluster: LocalCluster, session: aiohttp.ClientSession
) -> None:
    c = hostile_cluster
    h = auth_headers(c)
    node = c.nodes(1)[0].url
    for bad in BAD_NUMBERS:
        q = _q(bad)
        cases = [
            ("GET", f"{node}/slices/{q}", {}),
            ("GET", f"{node}/slices/0?gen={q}", {}),
            ("GET", f"{node}/chain/{q}", {}),
            ("GET", f"{node}/chain/0?max={q}", {}),
            ("GET", f"{node}/slices/0", {"X-Mydfs-File": "0" * 32, "X-Mydfs-Index": bad}),
            ("GET", f"{node}/files/x?head=1:0&size={q}&slices=1&file={'0' * 32}", {}),
            ("GET", f"{node}/files/x?head=1:0&size=5&slices={q}&file={'0' * 32}", {}),
            ("GET", f"{node}/files/x?head=1:0&size=5&slices=1&gv=1:{q}", {}),
            ("GET", f"{c.tracker_url}/meta/list/?limit={q}", {}),
        ]
        if bad not in ("-1", "+1", "0x10", " 1"):
            cases.append(("GET", f"{node}/files/x?head=1:0&size=5&slices=1&mtime={q}", {}))
        for method, url, extra in cases:
            headers = {**h, **{k: v for k, v in extra.items() if v.isascii()}}
            if any(not v.isascii() for v in extra.values()):
                continue  # aiohttp refuses to send non-ASCII headers; the raw test covers them
            status, body = await _call(session, method, url, headers=headers)
            assert status in (400, 404, 307), (url[:200], status, body)
            if status == 400:
                assert body["error"] in ("invalid_argument", "slot_out_of_range"), body
                assert body["message"], body
    # A Unicode digit in a header value, sent byte by byte.
    port = c.nodes(1)[0].http_port
    for header in ("X-Mydfs-Index: \u00b2", "Range: bytes=\u00b2-", "X-Mydfs-Crc32c: \u0663"):
        request = (
            f"GET /slices/0 HTTP/1.1\r\nHost: x\r\nX-Mydfs-File: {'0' * 32}\r\n{header}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        status, _, _ = await _raw(port, request)
        assert status == 307 or 400 <= status < 500, (header, status)  # 307: to a holder


async def test_version_with_cr_lf_and_inconsistent_shapes_are_400(
    hostile_cluster: LocalCluster, session: aiohttp.ClientSession
) -> None:
    c = hostile_cluster
    node = c.nodes(1)[0].url
    fid = "0" * 32
    for query, field in [
        (f"head=1:0&size=5&slices=1&file={fid}&version=1%0d%0aX-Evil:%201", "version"),
        (f"head=1:0&size=5&slices=1&file={fid}&mtime=1e300", "mtime"),
        (f"head=1:0&size=5&slices=1&file={'Z' * 32}", "file"),
        (f"head=1:0&size=10000000&slices=1&file={fid}", None),  # size over one slice
        (f"head=1:0&size=1&slices=5&file={fid}", None),  # more slices than bytes
        (f"head=1:0&size=5&slices=2000000&file={fid}", "slices"),  # over the bound
    ]:
        status, body = await _call(
            session, "GET", f"{node}/files/x?{query}", headers=auth_headers(c)
        )
        assert status == 400, (query, status, body)
        if field:
            assert body["context"].get("field") == field, body


async def test_chain_of_a_never_written_slot_is_404_and_max_is_capped(
    hostile_cluster: LocalCluster, session: aiohttp.ClientSession
) -> None:
    c = hostile_cluster
    for node in c.nodes(1):
        status, body = await _call(
            session, "GET", f"{node.url}/chain/999999?max=1000000000", headers=auth_headers(c)
        )
        assert status in (404, 307), (status, body)
        if status == 404:
            assert body["error"] == "not_found", body
    # A file entry whose head names a slot that holds no chain: 404, not "500 corrupt".
    node = c.nodes(1)[0].url
    status, body = await _call(
        session,
        "GET",
        f"{node}/files/x?head=1:999999&size=5&slices=1&file={'0' * 32}",
        headers=auth_headers(c),
    )
    assert status in (404, 307), (status, body)


async def test_huge_content_length_is_413_before_the_body(hostile_cluster: LocalCluster) -> None:
    c = hostile_cluster
    assert c.tracker_process is not None
    leader = c.wait_leader(1)
    targets = [
        (c.tracker_process.http_port, "POST /meta/intents"),
        (c.tracker_process.http_port, "POST /placements"),
        (c.tracker_process.http_port, "PUT /meta/files/a/b"),
        (c.tracker_process.http_port, "POST /heartbeat"),
        (leader.http_port, "POST /slices/reserve"),
        (leader.http_port, "PUT /slices"),
    ]
    for port, line in targets:
        head = f"{line} HTTP/1.1\r\nHost: x\r\nContent-Length: 1099511627776\r\n"
        if "heartbeat" in line:
            head += "X-Mydfs-Auth: 1:00\r\n"
        status, rest, took = await _raw(port, (head + "\r\n").encode() + b"{", wait=CLIENT_TIMEOUT)
        assert status in (401, 413), (line, status, rest)  # 401: a route that needs a key first
        assert took < CLIENT_TIMEOUT, (line, took)


async def test_slow_clients_get_408(hostile_cluster: LocalCluster) -> None:
    c = hostile_cluster
    assert c.tracker_process is not None
    leader = c.wait_leader(1)
    for port in (c.tracker_process.http_port, leader.http_port):
        # a head that never ends
        status, _, took = await _raw(port, b"GET /health HTTP/1.1\r\nHost: x\r\n")
        assert status == 408 and took < 3 * CLIENT_TIMEOUT, (port, status, took)
        # nothing at all
        status, _, took = await _raw(port, b"")
        assert status == 408 and took < 3 * CLIENT_TIMEOUT, (port, status, took)
    # a body that stops coming
    for port, line in (
        (c.tracker_process.http_port, "POST /placements"),
        (leader.http_port, "POST /slices/reserve"),
    ):
        head = f"{line} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        status, rest, took = await _raw(port, head.encode() + b'{"slices":')
        assert status in (401, 408), (line, status, rest)
        assert took < 3 * CLIENT_TIMEOUT, (line, took)


async def test_oversized_heads_are_400(hostile_cluster: LocalCluster) -> None:
    c = hostile_cluster
    assert c.tracker_process is not None
    for port in (c.tracker_process.http_port, c.nodes(1)[0].http_port):
        for request in (
            b"GET /" + b"a" * 40_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 40_000 + b"\r\n\r\n",
            b"GET /health HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: 1\r\n" % i for i in range(500))
            + b"\r\n",
        ):
            status, _, _ = await _raw(port, request)
            assert status in (400, 413, 414, 431), (port, request[:40], status)


async def test_placements_are_bounded_per_request(
    hostile_cluster: LocalCluster, session: aiohttp.ClientSession
) -> None:
    c = hostile_cluster
    url = f"{c.tracker_url}/placements"
    for slices in (262_145, 10**12, "1", 1.5, "\u00b2"):
        body = json.dumps({"slices": slices}).encode()
        status, reply = await _call(session, "POST", url, headers=auth_headers(c), data=body)
        assert status == 400, (slices, status, reply)


async def test_pending_reservations_per_group_are_bounded(
    hostile_cluster: LocalCluster, session: aiohttp.ClientSession
) -> None:
    """Past ``max_pending_reservations`` (16 here) reserved, unsealed slices, a reserve is
    429 until the group settles some; reads keep working."""
    c = hostile_cluster
    leader = c.wait_leader(1)
    file_id = "ab" * 16
    # A write grant for the file (what the tracker hands out with an intent), for nodes that
    # check grants; ignored by nodes that do not.
    grant = grants.issue_for(c.secret, "write", 600, file_id=file_id)
    headers = {**auth_headers(c), grants.GRANT_HEADER: grant}
    statuses = []
    for i in range(40):
        body = json.dumps(
            {"upload_id": f"pending-{i}", "file_id": file_id, "index": i, "length": 10, "crc32c": 0}
        ).encode()
        status, reply = await _call(
            session, "POST", f"{leader.url}/slices/reserve", headers=headers, data=body
        )
        statuses.append(status)
        if status == 429:
            assert reply["error"] == "too_many_requests", reply
            break
    assert statuses[-1] == 429, statuses
    status, _ = await _call(session, "GET", f"{leader.url}/health")
    assert status == 200
