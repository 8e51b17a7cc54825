"""The reclaimer's decisions (pure) and one pass against stand-in storage nodes."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mydfs.common import grants
from mydfs.common.auth import AUTH_HEADER, verify
from mydfs.common.errors import (
    Conflict,
    Corrupt,
    Forbidden,
    MydfsError,
    NotFound,
    SliceDeleted,
    Timeout,
    Unavailable,
)
from mydfs.common.location import Location
from mydfs.tracker.reclaim import (
    Cluster,
    Delete,
    Found,
    RateLimit,
    Reclaimer,
    Walk,
    delete_outcome,
    deletion_order,
    walk_outcome,
)
from mydfs.tracker.records import TrashReason, TrashRecord

SECRET = "reclaim-test-secret-0123456789"
MINE = "aa" * 16
OTHER = "bb" * 16


def test_walk_stops_at_anything_definitive_and_retries_the_rest() -> None:
    for err in (NotFound("x"), SliceDeleted("x"), Corrupt("x"), Conflict("x")):
        assert walk_outcome(err) is Walk.STOP, err
    for err in (Unavailable("x"), Timeout("x"), Forbidden("x"), MydfsError("HTTP 500")):
        assert walk_outcome(err) is Walk.RETRY, err


def test_delete_outcomes() -> None:
    assert delete_outcome(200, None) is Delete.DONE
    assert delete_outcome(409, Conflict("another owner")) is Delete.NOT_OURS
    assert delete_outcome(404, NotFound("gone")) is Delete.DONE
    assert delete_outcome(503, Unavailable("no leader")) is Delete.RETRY
    assert delete_outcome(401, None) is Delete.RETRY


def test_deletion_order_is_last_slice_first() -> None:
    found = [Found(1, 5, 1), Found(1, 6, 2), Found(2, 0, 1)]
    assert deletion_order(found) == [Found(2, 0, 1), Found(1, 6, 2), Found(1, 5, 1)]


def test_rate_limit_spaces_events() -> None:
    limit = RateLimit(rate=2.0, burst=1.0)
    assert limit.wait(100.0) == 0.0  # the first event goes at once
    assert limit.wait(100.0) == pytest.approx(0.5)  # then one every 1/rate seconds
    assert limit.wait(100.5) == pytest.approx(0.5)
    assert limit.wait(110.0) == 0.0  # idle time refills at most ``burst``
    assert limit.wait(110.0) == pytest.approx(0.5)


class Group:
    """A stand-in group leader: a table slot -> (file id, index, generation, next, deleted)."""

    def __init__(self, group: int, table: dict[int, tuple[str, int, int, Location | None]]):
        self.group = group
        self.table = {slot: [*row, False] for slot, row in table.items()}
        self.deletes: list[tuple[int, str]] = []
        self.url = ""

    async def chain(self, request: web.Request) -> web.Response:
        slot = int(request.match_info["slot"])
        want = request.headers["X-Mydfs-File"], int(request.headers["X-Mydfs-Index"])
        grants.check(SECRET, request.headers.get(grants.GRANT_HEADER), op="read", file_id=want[0])
        row = self.table.get(slot)
        if row is None or row[4]:
            return web.json_response({"error": "corrupt", "message": "deleted"}, status=500)
        if (row[0], row[1]) != want:
            return web.json_response({"error": "not_found", "message": "other"}, status=404)
        nxt = row[3]
        entry = {"group": self.group, "slot": slot, "generation": row[2]}
        return web.json_response({"entries": [entry], "next": None if nxt is None else list(nxt)})

    async def delete(self, request: web.Request) -> web.Response:
        if not verify(SECRET, "DELETE", request.path_qs, request.headers.get(AUTH_HEADER)):
            return web.json_response({"error": "unauthorized", "message": "no"}, status=401)
        slot = int(request.match_info["slot"])
        row = self.table[slot]
        if (row[0], row[2]) != (request.query["file"], int(request.query["gen"])):
            return web.json_response({"error": "conflict", "message": "not yours"}, status=409)
        self.deletes.append((slot, request.query["file"]))
        duplicate, row[4] = row[4], True
        return web.json_response({"duplicate": duplicate})


async def _serve(group: Group) -> TestServer:
    app = web.Application()
    app.router.add_get("/chain/{slot}", group.chain)
    app.router.add_delete("/internal/slices/{slot}", group.delete)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    group.url = str(server.make_url("")).rstrip("/")
    return server


def _record(file_id: str, head: Location, slices: int, when: float = 1.0) -> TrashRecord:
    return TrashRecord(file_id, f"/{file_id[:4]}", 10, slices, head, when, TrashReason.DELETED)


async def test_a_pass_frees_the_files_slices_and_never_anothers() -> None:
    # MINE: 1:5 -> 1:6 -> 2:0 ; OTHER: 1:7 (a forged entry of a third file points at it).
    g1 = Group(1, {5: (MINE, 0, 3, Location(1, 6)), 6: (MINE, 1, 4, Location(2, 0))})
    g1.table[7] = [OTHER, 0, 9, None, False]
    g2 = Group(2, {0: (MINE, 2, 1, None)})
    servers = [await _serve(g1), await _serve(g2)]
    forged = "cc" * 16
    trash = [_record(MINE, Location(1, 5), 3), _record(forged, Location(1, 7), 1, when=2.0)]
    dropped: list[str] = []

    async def get_trash() -> list[TrashRecord]:
        return [r for r in trash if r.file_id not in dropped]

    async def drop(file_id: str) -> dict[str, Any]:
        dropped.append(file_id)
        return {}

    urls = {1: [g1.url], 2: [g2.url]}
    reclaimer = Reclaimer(
        Cluster(SECRET, lambda g: urls.get(g, []), get_trash, drop), rate=1000.0, interval=0.01
    )
    reclaimer._session = aiohttp.ClientSession()
    try:
        assert await reclaimer.pass_once() == 2
        assert dropped == [MINE, forged]
        assert g2.deletes == [(0, MINE)] and g1.deletes == [(6, MINE), (5, MINE)]
        assert g1.table[7][4] is False  # the other file's slice is untouched
        assert reclaimer.freed == 3

        # A group that does not answer: the record waits (not dropped), then finishes.
        trash.append(_record("dd" * 16, Location(3, 0), 1, when=3.0))
        assert await reclaimer.pass_once() == 0
        assert "dd" * 16 not in dropped
        urls[3] = [g1.url]  # group 3 "comes back" (its slot 0 holds nothing of that file)
        assert await reclaimer.pass_once() == 1
    finally:
        await reclaimer._session.close()
        for server in servers:
            await server.close()


async def test_a_pass_resumes_a_half_deleted_file() -> None:
    # The tail (1:6) was deleted by a pass that was cut short; the head is still there.
    g1 = Group(1, {5: (MINE, 0, 3, Location(1, 6)), 6: (MINE, 1, 4, None)})
    g1.table[6][4] = True
    server = await _serve(g1)
    dropped: list[str] = []

    async def get_trash() -> list[TrashRecord]:
        return [] if dropped else [_record(MINE, Location(1, 5), 2)]

    async def drop(file_id: str) -> dict[str, Any]:
        dropped.append(file_id)
        return {}

    reclaimer = Reclaimer(
        Cluster(SECRET, lambda g: [g1.url], get_trash, drop), rate=1000.0, interval=0.01
    )
    reclaimer._session = aiohttp.ClientSession()
    try:
        assert await reclaimer.pass_once() == 1
        assert g1.deletes == [(5, MINE)] and dropped == [MINE]
    finally:
        await reclaimer._session.close()
        await server.close()


def test_deletion_order_frees_301_slots_after_their_live_slot() -> None:
    found = [Found(1, 8, 1, ((5, 2),)), Found(1, 12, 1, ((10, 3), (11, 4)))]
    assert deletion_order(found) == [
        Found(1, 12, 1),
        Found(1, 11, 4),
        Found(1, 10, 3),
        Found(1, 8, 1),
        Found(1, 5, 2),
    ]


class EditedGroup(Group):
    """A stand-in leader whose chain has 301 slots (slot -> (generation, target slot)); it
    checks the index only when the walker sends one (the reclaimer sends none for an edited
    file)."""

    def __init__(self, group: int, table: dict[int, tuple[str, int, int, Location | None]]):
        super().__init__(group, table)
        self.moved: dict[int, list[Any]] = {}  # slot -> [generation, target, released]
        self.indexes_sent: list[str | None] = []

    async def chain(self, request: web.Request) -> web.Response:
        slot = int(request.match_info["slot"])
        fid = request.headers["X-Mydfs-File"]
        self.indexes_sent.append(request.headers.get("X-Mydfs-Index"))
        via = []
        while slot in self.moved and not self.moved[slot][2]:
            via.append([slot, self.moved[slot][0]])
            slot = self.moved[slot][1]
        row = self.table.get(slot)
        if row is None or row[4] or slot in self.moved:
            return web.json_response({"error": "corrupt", "message": "deleted"}, status=500)
        if row[0] != fid:
            return web.json_response({"error": "not_found", "message": "other"}, status=404)
        nxt = row[3]
        entry = {"group": self.group, "slot": slot, "generation": row[2], "via": via}
        return web.json_response({"entries": [entry], "next": None if nxt is None else list(nxt)})

    async def delete(self, request: web.Request) -> web.Response:
        slot = int(request.match_info["slot"])
        if slot in self.moved:
            assert verify(SECRET, "DELETE", request.path_qs, request.headers.get(AUTH_HEADER))
            assert int(request.query["gen"]) == self.moved[slot][0]
            self.deletes.append((slot, request.query["file"]))
            self.moved[slot][2] = True
            return web.json_response({"duplicate": False})
        return await super().delete(request)


async def test_an_edited_file_is_walked_by_file_id_and_its_301_slots_are_freed() -> None:
    # head 1:5 -301-> 1:8 (index 9: indexes of an edited file do not count) -> 1:6 ->
    # 1:10 -301-> 1:11 -301-> 1:12
    g1 = EditedGroup(
        1,
        {
            8: (MINE, 9, 1, Location(1, 6)),
            6: (MINE, 1, 1, Location(1, 10)),
            12: (MINE, 0, 5, None),
        },
    )
    g1.moved = {5: [2, 8, False], 10: [3, 11, False], 11: [4, 12, False]}
    server = await _serve(g1)
    record = TrashRecord(
        MINE, "/e", 10, 3, Location(1, 5), 1.0, TrashReason.DELETED, versions=((1, 4),)
    )
    dropped: list[str] = []

    async def get_trash() -> list[TrashRecord]:
        return [] if dropped else [record]

    async def drop(file_id: str) -> dict[str, Any]:
        dropped.append(file_id)
        return {}

    reclaimer = Reclaimer(
        Cluster(SECRET, lambda g: [g1.url], get_trash, drop), rate=1000.0, interval=0.01
    )
    reclaimer._session = aiohttp.ClientSession()
    try:
        assert await reclaimer.pass_once() == 1
        assert [slot for slot, _ in g1.deletes] == [12, 11, 10, 6, 8, 5]
        assert set(g1.indexes_sent) == {None} and dropped == [MINE]
        assert reclaimer.freed == 6
    finally:
        await reclaimer._session.close()
        await server.close()


async def test_the_mark_comes_before_the_first_delete_and_a_refused_mark_frees_nothing() -> None:
    g1 = Group(1, {5: (MINE, 0, 3, Location(1, 6)), 6: (MINE, 1, 4, None)})
    server = await _serve(g1)
    dropped: list[str] = []
    marks: list[tuple[str, int]] = []  # (file id, deletes done when it was marked)
    refuse = [True]

    async def get_trash() -> list[TrashRecord]:
        return [] if dropped else [_record(MINE, Location(1, 5), 2)]

    async def drop(file_id: str) -> dict[str, Any]:
        dropped.append(file_id)
        return {}

    async def mark(record: TrashRecord) -> None:
        if refuse[0]:
            raise NotFound("undeleted meanwhile", file_id=record.file_id)
        marks.append((record.file_id, len(g1.deletes)))

    reclaimer = Reclaimer(
        Cluster(SECRET, lambda g: [g1.url], get_trash, drop, mark), rate=1000.0, interval=0.01
    )
    reclaimer._session = aiohttp.ClientSession()
    try:
        assert await reclaimer.pass_once() == 0  # the mark was refused: nothing deleted
        assert g1.deletes == [] and dropped == []
        refuse[0] = False
        assert await reclaimer.pass_once() == 1
        assert marks == [(MINE, 0)] and g1.deletes == [(6, MINE), (5, MINE)]
        assert dropped == [MINE]
    finally:
        await reclaimer._session.close()
        await server.close()
