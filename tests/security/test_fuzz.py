"""A bounded fuzz over every route of a real tracker and a real storage node.

A few thousand random requests (``MYDFS_FUZZ_LONG=1``: many more) go to the tracker and the
three nodes of a group: random methods on every route, hostile parameters (Unicode digits,
5000-digit numbers, ``nan``, ``1e300``, CR/LF, over-long and ill-encoded paths), random
headers (bad ``Range``, ``X-Mydfs-*``, forged signatures), random bodies up to several MiB,
and, over raw sockets, malformed request lines, lying ``Content-Length`` headers, oversized
heads and clients that stall. Every request must be answered within 10 s (or, for a raw
request the server cannot answer, its connection closed), no answer may be a 5xx, every
process must still run, no process may log a traceback, and the files stored before must
read back byte-identical.

Routes that can destroy data without credentials as long as nothing checks grants or keys on
them (``DELETE /slices``, relink, ``PUT`` and ``DELETE /meta/files``) are aimed away from the
stored files' slots and paths, and a relink only ever cuts a chain (``next=none``), so the
comparison at the end checks the servers, not what an unchecked route allows. When the cluster
object has a ``token`` attribute, half of the requests carry it as a bearer token, so the fuzz
reaches past the tracker's key check too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import yarl
from security_helpers import auth_headers

from mydfs.client import Client
from mydfs.client.local_cluster import LocalCluster
from mydfs.common import grants

LONG = os.environ.get("MYDFS_FUZZ_LONG") == "1"
#: Requests of the run (HTTP client) and of the raw-socket part.
REQUESTS = 20_000 if LONG else 2_000
RAW_REQUESTS = 2_000 if LONG else 200
#: Every request is answered (or its connection closed) within this many seconds.
ANSWER_WITHIN = 10.0
CONCURRENCY = 6
SLICE = 4_190_208
SEED = int(os.environ.get("MYDFS_FUZZ_SEED", "0")) or random.randrange(1 << 30)

#: Paths the fuzz never writes or deletes; stored before and compared after.
KEEP = "/fuzz-keep"

NUMBERS = [
    "",
    "0",
    "1",
    "7",
    "-1",
    "+1",
    " 1",
    "1 ",
    "0x10",
    "1_000",
    "1.5",
    "\u00b2",
    "\u0663",
    "\uff11",
    "9" * 5000,
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "nan",
    "inf",
    "-inf",
    "1e300",
    "1e-300",
    "abc",
    "1\r\nX-Injected: 1",
    "%00",
    "\x00",
]
TEXTS = [
    "",
    "a",
    "none",
    "1:2",
    "1:0",
    "0:0",
    "9:1",
    "1:\u00b2",
    "a" * 300,
    "\u00e9",
    "e\u0301",
    "..",
    "../../etc/passwd",
    "%2e%2e",
    "%2F",
    "x\r\ny",
    "\x00",
    "\ud800",
    "0" * 32,
    "f" * 32,
    "F" * 32,
    "g" * 32,
]
PATHS = [
    "a",
    "a/b",
    "fuzz/x",
    "fuzz/%2e%2e/x",
    "fuzz/../x",
    "..",
    ".",
    "%2e",
    "%2e%2e",
    "a%2fb",
    "a%2Fb",
    "a//b",
    "a/",
    "a%00b",
    "%ff%fe",
    "%",
    "%zz",
    "x" * 300,
    "/".join(["d"] * 3000),
    "caf%C3%A9",
    "cafe%CC%81",
    "fuzz/\u00e9",
    "fuzz/%0d%0a",
    "fuzz-keep/small",
    "fuzz-keep/big",
]
RANGES = [
    "bytes=0-0",
    "bytes=0-",
    "bytes=-1",
    "bytes=5-2",
    "bytes=0-1,3-4",
    "bytes=\u00b2-3",
    "bytes=" + "9" * 5000 + "-",
    "bytes=-0",
    "items=0-1",
    "bytes=",
    "bytes=99999999999999999999-",
    "garbage",
]


def _pick(rng: random.Random, values: list[str]) -> str:
    if rng.random() < 0.15:
        return str(rng.randrange(0, 1 << rng.choice([3, 8, 16, 33, 64])))
    return rng.choice(values)


def _json_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return rng.choice([0, 1, -1, 2**63, 2**64, 10**30, 7])
    if kind == 1:
        return rng.choice([1.5, 1e300, -0.0])
    if kind == 2:
        return _pick(rng, TEXTS + NUMBERS)
    if kind == 3:
        return rng.choice([True, False])
    if kind == 4:
        return None
    if kind == 5:
        return [rng.randrange(0, 4), rng.randrange(0, 1 << 20)]
    if kind == 6:
        return [_json_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(FIELDS): _json_value(rng, depth + 1) for _ in range(rng.randrange(1, 8))}


FIELDS = [
    "slices",
    "file_id",
    "path",
    "size",
    "head",
    "hash",
    "upload_id",
    "index",
    "length",
    "crc32c",
    "next",
    "node_id",
    "group_id",
    "url",
    "role",
    "term",
    "free_slots",
    "used_slots",
    "bytes_live",
    "load",
    "stats",
    "name",
    "ttl",
]


def _body(rng: random.Random) -> bytes | None:
    roll = rng.random()
    if roll < 0.35:
        return None
    if roll < 0.75:
        obj = _json_value(rng)
        if rng.random() < 0.5 and not isinstance(obj, dict):
            obj = {rng.choice(FIELDS): obj}
        try:
            return json.dumps(obj).encode()
        except (ValueError, UnicodeEncodeError):
            return b"{}"
    if roll < 0.85:
        return rng.choice([b"{", b"[]", b"null", b"\xff\xfe", b"{" * 10_000, b'"' + b"a" * 999])
    if roll < 0.97:
        return rng.randbytes(rng.randrange(0, 70_000))
    return rng.randbytes(rng.choice([SLICE - 1, SLICE + 1, 6 << 20]))


@dataclass
class Target:
    tracker: str
    nodes: list[str]
    protected_slots: set[int]
    headers: dict[str, str]


@dataclass
class Tally:
    sent: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    slowest: float = 0.0
    #: Why requests ended without a status (the library refused to send them, or the server
    #: closed the connection while the body was still going out, e.g. after an early 413).
    unanswered: dict[str, int] = field(default_factory=dict)

    def record(self, what: str, status: int, elapsed: float, detail: str = "") -> None:
        self.sent += 1
        self.by_status[status] = self.by_status.get(status, 0) + 1
        self.slowest = max(self.slowest, elapsed)
        if status >= 500 or elapsed > ANSWER_WITHIN:
            self.failures.append(f"{what} -> {status} in {elapsed:.1f}s {detail[:300]}")


def _slot(rng: random.Random) -> str:
    return quote(_pick(rng, NUMBERS), safe="") if rng.random() < 0.4 else str(rng.randrange(64))


def _tracker_request(rng: random.Random) -> tuple[str, str]:
    path = _pick(rng, PATHS)
    fid = _pick(rng, TEXTS)
    q = _query(rng)
    routes = [
        ("POST", "/heartbeat"),
        ("GET", "/cluster"),
        ("GET", "/cluster/view"),
        ("GET", "/ui"),
        ("GET", "/health"),
        ("GET", "/metrics"),
        ("POST", "/placements"),
        ("PUT", f"/meta/files/fuzz/{path}{q}"),
        ("GET", f"/meta/files/{path}{q}"),
        ("DELETE", f"/meta/files/fuzz/{path}"),
        ("GET", f"/meta/list/{path}{q}"),
        ("GET", f"/meta/list{q}"),
        ("POST", "/meta/intents"),
        ("GET", "/meta/intents"),
        ("DELETE", f"/meta/intents/{fid}"),
        ("GET", "/meta/trash"),
        ("DELETE", f"/meta/trash/{fid}"),
        ("POST", "/meta/trash/undelete"),
        ("POST", "/meta/trash/purge"),
        ("GET", f"/files/{path}{q}"),
        ("HEAD", f"/files/{path}"),
        ("POST", "/share"),
        ("GET", "/admin/keys"),
        ("POST", "/admin/keys"),
        ("DELETE", f"/admin/keys/{fid}"),
        ("GET", f"/{path}"),
    ]
    method, url = rng.choice(routes)
    if rng.random() < 0.1:
        method = rng.choice(["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"])
    if method in ("PUT", "DELETE") and url.startswith("/meta/files/") and KEEP[1:] in url:
        method = "GET"
    return method, url


def _query(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return ""
    names = [
        "limit",
        "after",
        "overwrite",
        "gen",
        "next",
        "max",
        "upload",
        "head",
        "size",
        "slices",
        "file",
        "mtime",
        "version",
        "crc",
        "index",
        "grant",
    ]
    parts = []
    for _ in range(rng.randrange(1, 5)):
        value = _pick(rng, NUMBERS + TEXTS)
        parts.append(f"{rng.choice(names)}={quote(value, safe='', errors='replace')}")
    return "?" + "&".join(parts)


def _storage_request(rng: random.Random, protected: set[int]) -> tuple[str, str]:
    slot = _slot(rng)
    q = _query(rng)
    routes = [
        ("PUT", f"/slices{q}"),
        ("POST", "/slices/reserve"),
        ("PUT", f"/slices/{slot}{q}"),
        ("POST", f"/slices/{slot}/relink{q}"),
        ("GET", f"/chain/{slot}{q}"),
        ("GET", f"/files/{_pick(rng, PATHS)}{q}"),
        ("HEAD", f"/files/{_pick(rng, PATHS)}{q}"),
        ("GET", f"/slices/{slot}{q}"),
        ("HEAD", f"/slices/{slot}{q}"),
        ("GET", f"/slices/{slot}/meta"),
        ("DELETE", f"/slices/{slot}{q}"),
        ("PUT", f"/internal/slices/{slot}{q}"),
        ("GET", f"/internal/slices/{slot}{q}"),
        ("DELETE", f"/internal/slices/{slot}{q}"),
        ("GET", f"/internal/holds/{slot}{q}"),
        ("GET", "/health"),
        ("GET", "/status"),
        ("GET", "/metrics"),
    ]
    method, url = rng.choice(routes)
    if rng.random() < 0.1:
        method = rng.choice(["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"])
    destructive = method == "DELETE" or "/relink" in url
    if (
        destructive
        and slot.isascii()
        and slot.isdigit()
        and len(slot) < 20
        and int(slot) in protected
    ):
        method = "GET"
    if "/relink" in url and method == "POST":
        # A relink to another slot could make the stored files' chains pass through it.
        url = url.split("?", 1)[0] + rng.choice(["?next=none", "?next=", "?next=x", "?gen=\u00b2"])
    return method, url


def _headers(rng: random.Random, base: dict[str, str]) -> dict[str, str]:
    headers: dict[str, str] = dict(base) if base and rng.random() < 0.5 else {}
    for _ in range(rng.randrange(0, 4)):
        name = rng.choice(
            [
                "Range",
                "X-Mydfs-Index",
                "X-Mydfs-Crc32c",
                "X-Mydfs-File",
                "X-Mydfs-Next",
                "X-Mydfs-Auth",
                "X-Mydfs-Grant",
                "If-Range",
                "Content-Type",
                "Authorization",
            ]
        )
        value = rng.choice(RANGES) if name == "Range" else _pick(rng, NUMBERS + TEXTS)
        if name == "X-Mydfs-Next" and rng.random() < 0.7:
            value = "none"  # a next pointer into nowhere would make a chain the fuzz itself broke
        value = "".join(c for c in value if c.isprintable() and c.isascii())
        headers[name] = value
    return headers


async def _one(
    session: aiohttp.ClientSession,
    tally: Tally,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes | None,
) -> None:
    started = time.monotonic()
    status, detail = -1, ""
    try:
        async with session.request(
            method,
            yarl.URL(url, encoded=True),
            headers=headers,
            data=body,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=ANSWER_WITHIN + 5),
        ) as resp:
            status = resp.status
            if status >= 500:
                detail = (await resp.content.read(2000)).decode(errors="replace")
            else:
                await resp.content.read(1 << 20)
    except (aiohttp.ClientError, ValueError) as exc:
        # A client-side refusal (an invalid URL or header the library will not send) or a
        # connection the server closed after answering: not an unanswered request.
        status, detail = 0, repr(exc)
        kind = type(exc).__name__
        tally.unanswered[kind] = tally.unanswered.get(kind, 0) + 1
    except TimeoutError:
        status, detail = 599, "no answer"
    tally.record(f"{method} {url[:200]}", status, time.monotonic() - started, detail)


async def _raw(host: str, port: int, data: bytes, *, stall: bool, tally: Tally) -> None:
    """One request written byte for byte; the answer's status line (or the server closing the
    connection) must come within the bound."""
    started = time.monotonic()
    status, detail = 0, ""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        tally.record("raw connect", 598, time.monotonic() - started, repr(exc))
        return
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(ANSWER_WITHIN):
            line = await reader.readline()
        if line.startswith(b"HTTP/1."):
            status = int(line.split()[1])
            if status >= 500:
                detail = (await asyncio.wait_for(reader.read(2000), 2)).decode(errors="replace")
    except TimeoutError:
        status, detail = 599, "no answer and connection still open"
    except (ConnectionError, OSError, ValueError, IndexError):
        status = 0
    finally:
        writer.close()
    what = f"raw{' (stalled)' if stall else ''} {data[:120]!r}"
    tally.record(what, status, time.monotonic() - started, detail)


def _raw_request(rng: random.Random, host: str, port: int) -> tuple[bytes, bool]:
    hostline = f"Host: {host}:{port}\r\n".encode()
    kind = rng.randrange(9)
    target = rng.choice(
        [b"/meta/intents", b"/placements", b"/slices/reserve", b"/heartbeat", b"/slices"]
    )
    method = b"PUT" if target == b"/slices" else b"POST"
    if kind == 0:  # Content-Length that is not a number
        cl = rng.choice([b"abc", b"-1", b"1,2", "\u00b2".encode(), b"9" * 5000, b"0x10", b""])
        return (
            method
            + b" "
            + target
            + b" HTTP/1.1\r\n"
            + hostline
            + b"Content-Length: "
            + cl
            + b"\r\n\r\n{}",
            False,
        )
    if kind == 1:  # a huge Content-Length: refused before reading
        return (
            method
            + b" "
            + target
            + b" HTTP/1.1\r\n"
            + hostline
            + b"Content-Length: 1099511627776\r\n\r\n{",
            False,
        )
    if kind == 2:  # a body shorter than announced, then nothing: 408 after body_timeout
        return (
            method
            + b" "
            + target
            + b" HTTP/1.1\r\n"
            + hostline
            + b'Content-Length: 1000\r\n\r\n{"a":',
            True,
        )
    if kind == 3:  # a head that never ends: 408 after header_timeout
        return b"GET /health HTTP/1.1\r\n" + hostline + b"X-Slow: 1\r\n", True
    if kind == 4:  # nothing at all
        return b"", True
    if kind == 5:  # a request line or header over the limits
        if rng.random() < 0.5:
            return b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n" + hostline + b"\r\n", False
        return (
            b"GET /health HTTP/1.1\r\n" + hostline + b"X-Big: " + b"b" * 70_000 + b"\r\n\r\n",
            False,
        )
    if kind == 6:  # too many headers
        many = b"".join(b"X-H%d: 1\r\n" % i for i in range(500))
        return b"GET /health HTTP/1.1\r\n" + hostline + many + b"\r\n", False
    if kind == 7:  # not HTTP
        return rng.randbytes(rng.randrange(1, 300)) + b"\r\n\r\n", False
    # CR/LF and NUL inside a request line or header value
    return rng.choice(
        [
            b"GET /meta/files/a\x00b HTTP/1.1\r\n" + hostline + b"\r\n",
            b"GET /files/a b HTTP/1.1\r\n" + hostline + b"\r\n",
            b"GET /slices/1 HTTP/1.1\r\n" + hostline + b"Range: bytes=\xb2-\r\n\r\n",
            b"GET /health HTTP/1.1\r\n" + hostline + b"X-A: a\rb\r\n\r\n",
            b"PUT /slices HTTP/1.1\r\n"
            + hostline
            + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ]
    ), False


async def _stored(
    cluster: LocalCluster, headers: dict[str, str]
) -> tuple[dict[str, str], set[int]]:
    """Store the files the fuzz must leave alone; their digests and slots (group 1)."""
    files = {f"{KEEP}/empty": b"", f"{KEEP}/small": b"s" * 1000}
    files[f"{KEEP}/big"] = random.Random(7).randbytes(SLICE + 12_345)

    def put_all() -> None:
        with Client(cluster.tracker_url, deadline=60.0) as c:
            for path, data in files.items():
                c.put(path, data)

    await asyncio.to_thread(put_all)
    slots: set[int] = set()
    async with aiohttp.ClientSession() as session:
        for path in files:
            async with session.get(f"{cluster.tracker_url}/meta/files{path}", headers=headers) as r:
                entry = await r.json()
            if entry.get("head"):
                group, slot = entry["head"]
                node = cluster.nodes(group)[0].url
                # The read grant of the entry, where the tracker hands one out.
                reader = {**headers, "X-Mydfs-File": entry["file_id"]}
                if entry.get("grant"):
                    reader[grants.GRANT_HEADER] = entry["grant"]
                url = f"{node}/chain/{slot}?max=10"
                async with session.get(url, headers=reader) as r:
                    assert r.status == 200, await r.text()
                    slots |= {e["slot"] for e in (await r.json())["entries"]}
    return {p: hashlib.sha256(d).hexdigest() for p, d in files.items()}, slots


def _read_back(cluster: LocalCluster, paths: list[str]) -> dict[str, str]:
    with Client(cluster.tracker_url, deadline=60.0) as c:
        return {p: hashlib.sha256(c.read(p)).hexdigest() for p in paths}


@pytest.mark.timeout(1800 if LONG else 900)
async def test_fuzz_every_route(hostile_cluster: LocalCluster) -> None:
    cluster = hostile_cluster
    headers = auth_headers(cluster)
    digests, protected = await _stored(cluster, headers)
    target = Target(cluster.tracker_url, [n.url for n in cluster.nodes()], protected, headers)
    rng = random.Random(SEED)
    tally = Tally()
    jobs: list[Callable[[aiohttp.ClientSession], Any]] = []
    for _ in range(REQUESTS):
        if rng.random() < 0.4:
            method, path = _tracker_request(rng)
            base = target.tracker
        else:
            method, path = _storage_request(rng, protected)
            base = rng.choice(target.nodes)
        hdrs = _headers(rng, headers)
        body = _body(rng) if method in ("POST", "PUT", "PATCH") or rng.random() < 0.05 else None
        jobs.append(lambda s, m=method, u=base + path, h=hdrs, b=body: _one(s, tally, m, u, h, b))
    raw: list[tuple[str, int, bytes, bool]] = []
    for _ in range(RAW_REQUESTS):
        proc = rng.choice([cluster.tracker_process, *cluster.nodes()])
        assert proc is not None
        data, stall = _raw_request(rng, "127.0.0.1", proc.http_port)
        raw.append(("127.0.0.1", proc.http_port, data, stall))

    queue: asyncio.Queue[Callable[[aiohttp.ClientSession], Any]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    for host, port, data, stall in raw:
        queue.put_nowait(
            lambda s, h=host, p=port, d=data, st=stall: _raw(h, p, d, stall=st, tally=tally)
        )
    connector = aiohttp.TCPConnector(limit=CONCURRENCY, force_close=False)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:

        async def worker() -> None:
            while not queue.empty():
                job = queue.get_nowait()
                await job(session)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    crashed = [p.name for p in cluster.processes() if not p.alive()]
    summary = (
        f"seed {SEED}: {tally.sent} requests, statuses {dict(sorted(tally.by_status.items()))},"
        f" slowest {tally.slowest:.1f}s, without a status: {tally.unanswered}"
    )
    print(summary)
    assert not crashed, f"processes died: {crashed}; {summary}"
    assert not tally.failures, f"{len(tally.failures)} bad answers ({summary}):\n" + "\n".join(
        tally.failures[:30]
    )
    after = await asyncio.to_thread(_read_back, cluster, list(digests))
    assert after == digests, summary
    # Every refusal was the client's fault: none may have logged a traceback.
    for proc in cluster.processes():
        text = proc.log_text()
        assert "Traceback" not in text, f"{proc.name} logged a traceback:\n{text[-3000:]}"
