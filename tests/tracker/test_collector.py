"""One collector pass (``tracker/collector.py``) against a stand-in group leader: it frees the
orphans only (301 slots first, each delete signed and carrying the owner, the generation and the
file version of the report), never a slice of a live file, a trash record or an upload in
progress, and forgets the intents that expired. ``GET /space`` figures from the same survey."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mydfs.client.cli_df import KINDS, human, rows
from mydfs.common.auth import AUTH_HEADER, verify
from mydfs.common.errors import NotFound
from mydfs.common.location import Location
from mydfs.tracker.collector import Collector, Sources
from mydfs.tracker.orphans import Roots

SECRET = "collector-test-secret-0123456789"
NOW_MS = 1_000_000_000
NOW = 50_000.0
OLD = NOW_MS - 10_000_000  # reserved long before the grace


def fid(n: int) -> str:
    return f"{n:032x}"


def slot(n: int, owner: int, *, state: str = "live", nxt: Any = None, target: Any = None,
         at: int = OLD, locked: bool = False, fv: int = 0) -> dict[str, Any]:  # fmt: skip
    return {
        "slot": n,
        "generation": n + 1,
        "state": state,
        "file_id": fid(owner),
        "index": 0,
        "next": nxt,
        "target": target,
        "length": 100,
        "locked": locked,
        "reserved_at_ms": at,
        "file_version": fv,
    }


SLOTS = [
    slot(0, 1, nxt=[1, 1]),  # live file 1: 0 -> 1
    slot(1, 1),
    slot(2, 2),  # trash record of file 2
    slot(3, 3),  # an old slice of upload 3, whose intent is young
    slot(4, 4, fv=7),  # an orphan (an edited file's id, version 7 here)
    slot(5, 5, at=NOW_MS - 1_000),  # unreferenced but young
    slot(6, 4, state="moved", target=[1, 4]),  # an orphan 301 leading to the orphan 4
    slot(7, 6, locked=True, nxt=[1, 8]),  # locked by an edit, and what it leads to
    slot(8, 6),
    slot(9, 9, state="pending"),  # an upload's reservation: never freed here
    slot(10, 10),  # an old slice of upload 10, whose intent expired
]


class Leader:
    def __init__(self) -> None:
        self.deletes: list[str] = []

    async def report(self, request: web.Request) -> web.Response:
        assert verify(SECRET, "GET", request.path_qs, request.headers.get(AUTH_HEADER))
        body = {"format": 1, "group": 1, "now_ms": NOW_MS, "available": 100, "slots": SLOTS}
        return web.json_response(body)

    async def delete(self, request: web.Request) -> web.Response:
        assert verify(SECRET, "DELETE", request.path_qs, request.headers.get(AUTH_HEADER))
        self.deletes.append(request.path_qs)
        return web.json_response({"slot": int(request.match_info["slot"])})


@pytest.mark.parametrize("registered", [False, True])
async def test_a_pass_frees_exactly_the_orphans(registered: bool) -> None:
    """``registered``: upload 10 registered its file after the survey (its intent is gone):
    its slices are spared."""
    leader = Leader()
    app = web.Application()
    app.router.add_get("/internal/report", leader.report)
    app.router.add_delete("/internal/slices/{slot}", leader.delete)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    dropped: list[str] = []

    async def drop(file_id: str) -> None:
        if registered:
            raise NotFound("no such intent", file_id=file_id)
        dropped.append(file_id)

    roots = Roots(files=[(fid(1), Location(1, 0))], trash=[(fid(2), Location(1, 2))])
    intents = [(fid(3), NOW - 1.0), (fid(10), NOW - 10_000.0)]
    url = str(server.make_url("")).rstrip("/")
    collector = Collector(
        Sources(SECRET, lambda: [1], lambda g: [url], lambda: roots, lambda: intents, drop),
        grace=60.0,
        intent_ttl=600.0,
        rate=1000.0,
        interval=1.0,
        wall=lambda: NOW,
    )
    try:
        freed = await collector.pass_once()
        expected = [
            f"/internal/slices/6?gen=7&file={fid(4)}&fv=0",
            f"/internal/slices/4?gen=5&file={fid(4)}&fv=7",
            f"/internal/slices/10?gen=11&file={fid(10)}&fv=0",
        ]
        assert leader.deletes == expected[:2] if registered else expected
        assert freed == len(leader.deletes)
        assert dropped == ([] if registered else [fid(10)])
        space = await collector.space()
        group = space["groups"][0]
        assert group["files"] == {"slots": 2, "bytes": 200}
        assert group["trash"] == {"slots": 1, "bytes": 100}
        assert group["orphan"] == {"slots": 3, "bytes": 300}
        assert group["free"]["slots"] == 100
        assert space["cluster"]["live"]["slots"] == 9
    finally:
        await collector.close()
        await server.close()


async def test_a_group_without_a_leader_answering_is_left_alone() -> None:
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"error": "not_leader"}, status=503)

    app = web.Application()
    app.router.add_get("/internal/report", refuse)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")

    async def drop(file_id: str) -> None:
        raise AssertionError("nothing to drop")

    collector = Collector(
        Sources(SECRET, lambda: [1], lambda g: [url], Roots, lambda: [], drop),
        grace=60.0,
        intent_ttl=600.0,
        rate=1000.0,
        interval=1.0,
    )
    try:
        assert await collector.pass_once() == 0
        space = await collector.space()
        assert space["groups"] == [{"group": 1, "report": False}]
    finally:
        await collector.close()
        await server.close()


def test_df_table() -> None:
    fig = {"slots": 2, "bytes": 3 * 1024 * 1024}
    space = {
        "groups": [
            {"group": 1, "report": True, **dict.fromkeys(KINDS, fig)},
            {"group": 2, "report": False},
        ],
        "cluster": dict.fromkeys(KINDS, fig),
    }
    table = rows(space)
    assert table[0] == ("GROUP", "FREE", "LIVE", "301", "PENDING", "FILES", "TRASH", "ORPHAN")
    assert table[1] == ("1", *("2 (3.0M)" for _ in KINDS))
    assert table[2] == ("2", *("?" for _ in KINDS))
    assert table[3][0] == "all"
    assert human(512) == "512"
