"""An in-process fake of the routes an edit uses (the contract of ``EDIT_PLAN.md``), to test
the SDK's coordinator (``client/editor.py``) and read path without real processes.

* :class:`FakeGroup`: one node that leads its group: ``/health``, ``/slices/reserve``,
  ``PUT /slices/{slot}`` (fill), ``/chain/{slot}`` (with ``via`` and ``version``),
  ``GET /slices/{slot}``, ``/edits/{txn}/prepare|commit|rollback`` (locks, 301 moves, drops,
  ``file_version`` applied in the tracker's order).
* :class:`FakeTracker`: ``/cluster``, ``/meta/files`` (stat), ``/placements``, ``/meta/edits``
  and the decision routes (``commit``: version + 1, prevs, versions, layout; ``abort``).

Decision tokens are plain JSON here (no signature): what matters is what they carry.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from mydfs.common.checksum import crc32c
from mydfs.common.errors import (
    AlreadyExists,
    Conflict,
    Corrupt,
    InvalidArgument,
    MydfsError,
    NotFound,
    SliceDeleted,
    Unavailable,
)
from mydfs.common.httprange import parse_range
from mydfs.common.web import error_response, json_response


@dataclass
class Slot:
    state: str  # "reserved" | "live" | "moved" | "deleted"
    gen: int
    file_id: str
    index: int
    data: bytes = b""
    next: tuple[int, int] | None = None
    target: tuple[int, int] | None = None
    upload: str = ""


@dataclass
class Txn:
    state: str
    file_id: str
    lock: list[tuple[int, int]]
    move: tuple[int, int, tuple[int, int]] | None
    new: list[tuple[int, int]]


def _wrap(handler: Any) -> Any:
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except MydfsError as exc:
            return error_response(exc)

    return run


@dataclass
class FakeGroup:
    group: int
    url: str = ""
    slots: dict[int, Slot] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    txns: dict[str, Txn] = field(default_factory=dict)
    locks: dict[int, str] = field(default_factory=dict)
    uploads: dict[str, int] = field(default_factory=dict)
    refuse_next_prepare: str = ""  # a reason to refuse the next prepare with, once
    free: list[int] = field(default_factory=list)  # settled slots, reused lowest first
    #: Awaited with (group, upload id, body or None) before a reserve (a body) or a fill (None):
    #: a test's way to interleave a settlement.
    hooks: list[Any] = field(default_factory=list)
    _next_slot: int = 1
    _gen: int = 1

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        r = app.router
        r.add_get("/health", _wrap(self.health))
        r.add_post("/slices/reserve", _wrap(self.reserve))
        r.add_put("/slices/{slot}", _wrap(self.fill))
        r.add_post("/slices/{slot}/relink", _wrap(self.relink))
        r.add_get("/chain/{slot}", _wrap(self.chain))
        r.add_get("/slices/{slot}", _wrap(self.read))
        r.add_post("/edits/{txn}/prepare", _wrap(self.prepare))
        r.add_post("/edits/{txn}/commit", _wrap(self.commit))
        r.add_post("/edits/{txn}/rollback", _wrap(self.rollback))
        return app

    async def health(self, request: web.Request) -> web.Response:
        return json_response({"leader": True, "group_id": self.group})

    def settle(self, upload: str) -> int:
        """The leader's settlement of a pending reservation: the slot is freed, the upload id
        forgotten (a retry reserves afresh); the slot."""
        slot = self.uploads.pop(upload)
        self.slots[slot].state = "deleted"
        heapq.heappush(self.free, slot)
        return slot

    def _owned(self, request: web.Request) -> Slot:
        """The slot of the URL at the generation of its ``gen`` query (else SliceDeleted)."""
        slot = self.slots.get(int(request.match_info["slot"]))
        gen = request.query.get("gen")
        if slot is None or slot.state == "deleted" or (gen and int(gen) != slot.gen):
            raise SliceDeleted("the reservation was dropped; reserve again")
        return slot

    def _next_of(self, request: web.Request) -> tuple[int, int] | None:
        text = request.query["next"]
        nxt = None if text == "none" else tuple(int(x) for x in text.split(":"))
        if nxt == (self.group, int(request.match_info["slot"])):
            raise InvalidArgument("a slice cannot be its own next slice", reason="self_link")
        return nxt  # type: ignore[return-value]

    async def relink(self, request: web.Request) -> web.Response:
        s = self._owned(request)
        s.next = self._next_of(request)  # type: ignore[assignment]
        return json_response({"ok": True})

    async def reserve(self, request: web.Request) -> web.Response:
        body = await request.json()
        upload = body["upload_id"]
        for hook in self.hooks:
            await hook(self, upload, body)
        if upload not in self.uploads:
            if self.free:
                slot = heapq.heappop(self.free)
            else:
                slot, self._next_slot = self._next_slot, self._next_slot + 1
            self._gen += 1
            self.slots[slot] = Slot("reserved", self._gen, body["file_id"], body["index"])
            self.uploads[upload] = slot
        slot = self.uploads[upload]
        return json_response({"slot": slot, "generation": self.slots[slot].gen})

    async def fill(self, request: web.Request) -> web.Response:
        for hook in self.hooks:
            await hook(self, request.query.get("upload", ""), None)
        s = self._owned(request)
        data = await request.read()
        if crc32c(data) != int(request.headers["X-Mydfs-Crc32c"]):
            raise Corrupt("bad crc")
        s.next = self._next_of(request)  # type: ignore[assignment]
        s.data, s.state = data, "live"
        return json_response({"ok": True})

    def walk(self, start: int, limit: int) -> tuple[list[dict[str, Any]], tuple[int, int] | None]:
        entries: list[dict[str, Any]] = []
        cur: tuple[int, int] | None = (self.group, start)
        while cur is not None and cur[0] == self.group and len(entries) < limit:
            slot, via = cur[1], []
            s = self.slots.get(slot)
            while s is not None and s.state == "moved":
                assert s.target is not None and s.target[0] == self.group
                via.append([slot, s.gen])
                slot = s.target[1]
                s = self.slots.get(slot)
            if s is None or s.state != "live":
                raise Corrupt("chain of a live file hits a deleted slice", slot=slot)
            entries.append(
                {
                    "group": self.group,
                    "slot": slot,
                    "generation": s.gen,
                    "length": len(s.data),
                    "crc32c": crc32c(s.data),
                    "file_id": s.file_id,
                    "index": s.index,
                    "replicas": [self.url],
                    "via": via,
                }
            )
            cur = s.next
        return entries, cur

    async def chain(self, request: web.Request) -> web.Response:
        entries, nxt = self.walk(int(request.match_info["slot"]), int(request.query["max"]))
        version = self.versions.get(request.headers.get("X-Mydfs-File", ""), 0)
        return json_response(
            {"entries": entries, "next": None if nxt is None else list(nxt), "version": version}
        )

    async def read(self, request: web.Request) -> web.StreamResponse:
        s = self.slots.get(int(request.match_info["slot"]))
        if s is None or s.state != "live":
            raise NotFound("no such slice")
        headers = {
            "X-Mydfs-File": s.file_id,
            "X-Mydfs-Index": str(s.index),
            "X-Mydfs-Generation": str(s.gen),
        }
        rng = parse_range(request.headers.get("Range"), len(s.data))
        if rng is None:
            return web.Response(body=s.data, headers=headers)
        lo, n = rng
        headers["Content-Range"] = f"bytes {lo}-{lo + n - 1}/{len(s.data)}"
        return web.Response(body=s.data[lo : lo + n], status=206, headers=headers)

    async def prepare(self, request: web.Request) -> web.Response:
        txn = request.match_info["txn"]
        body = await request.json()
        if self.refuse_next_prepare:
            reason, self.refuse_next_prepare = self.refuse_next_prepare, ""
            raise Conflict("refused (test)", reason=reason)
        lock = [(int(a), int(b)) for a, b in body["lock"]]
        new = [(int(a), int(b)) for a, b in body["new"]]
        m = body["move"]
        move = None if m is None else (int(m[0]), int(m[1]), (int(m[2][0]), int(m[2][1])))
        known = self.txns.get(txn)
        if known is not None:
            if known.state == "rolled_back":
                raise Conflict("rolled back", reason="rolled_back")
            return json_response({"ok": True, "txn": txn, "state": known.state, "duplicate": True})
        for slot, gen in lock:
            s = self.slots.get(slot)
            if s is None or s.gen != gen or s.state not in ("live", "moved"):
                raise Conflict("lock slot not live at that generation", reason="gone", slot=slot)
            if s.file_id != body["file_id"]:
                raise Conflict("another file", reason="file", slot=slot)
        for slot, gen in new:
            s = self.slots.get(slot)
            if s is None or s.gen != gen or s.state != "live":
                raise Conflict("new slot not live", reason="gone", slot=slot)
        for slot, _ in lock + new:
            if slot in self.locks:
                raise Conflict("locked", reason="locked", txn=self.locks[slot])
        assert move is None or (move[0], move[1]) in lock
        assert move is None or move[2][0] == self.group
        for slot, _ in lock + new:
            self.locks[slot] = txn
        self.txns[txn] = Txn("prepared", body["file_id"], lock, move, new)
        return json_response({"ok": True, "txn": txn, "state": "prepared", "duplicate": False})

    def _unlock(self, txn: str) -> None:
        for slot in [s for s, t in self.locks.items() if t == txn]:
            del self.locks[slot]

    async def commit(self, request: web.Request) -> web.Response:
        txn = request.match_info["txn"]
        token = json.loads((await request.json())["decision"])
        assert token["op"] == "commit" and token["txn"] == txn
        t = self.txns.get(txn)
        if t is None:
            raise NotFound("unknown txn", reason="unknown_txn")
        if t.state == "committed":
            return json_response({"ok": True, "txn": txn, "state": "committed", "duplicate": True})
        prev = dict((g, p) for g, p in token["prev"]).get(self.group, 0)
        have = self.versions.get(t.file_id, 0)
        if have < prev:
            raise Conflict("out of order", reason="out_of_order")
        assert have == prev, (have, prev)
        for slot, _ in t.lock:
            s = self.slots[slot]
            if t.move is not None and slot == t.move[0]:
                s.state, s.target = "moved", t.move[2]
            else:
                s.state = "deleted"
        self._unlock(txn)
        self.versions[t.file_id] = int(token["ver"])
        t.state = "committed"
        return json_response({"ok": True, "txn": txn, "state": "committed", "duplicate": False})

    async def rollback(self, request: web.Request) -> web.Response:
        txn = request.match_info["txn"]
        t = self.txns.get(txn)
        if t is None:
            self.txns[txn] = Txn("rolled_back", "", [], None, [])
        elif t.state == "prepared":
            for slot, _ in t.new:
                self.slots[slot].state = "deleted"
            self._unlock(txn)
            t.state = "rolled_back"
        elif t.state == "committed":
            raise Conflict("committed", reason="committed")
        return json_response({"ok": True, "txn": txn, "state": "rolled_back", "duplicate": False})


@dataclass
class FakeTracker:
    groups: list[FakeGroup]
    url: str = ""
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    commits: int = 0
    placed: int = 0
    lose_answers: int = 0  # commit answers to lose (503 after recording the decision)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        r = app.router
        r.add_get("/cluster", _wrap(self.cluster))
        r.add_get("/meta/files/{path:.*}", _wrap(self.stat))
        r.add_post("/placements", _wrap(self.placements))
        r.add_post("/meta/intents", _wrap(self.intent))
        r.add_put("/meta/files/{path:.*}", _wrap(self.register))
        r.add_post("/meta/edits", _wrap(self.begin))
        r.add_post("/meta/edits/{txn}/commit", _wrap(self.commit))
        r.add_post("/meta/edits/{txn}/abort", _wrap(self.abort))
        return app

    def create(self, path: str) -> None:
        self.files[path] = {
            "path": path,
            "file_id": "ab" * 16,
            "size": 0,
            "slices": 0,
            "head": None,
            "hash": None,
            "version": 1,
            "versions": [],
            "layout": 0,
        }

    async def cluster(self, request: web.Request) -> web.Response:
        groups = [
            {"group_id": g.group, "leader": g.url, "nodes": [{"url": g.url, "up": True}]}
            for g in self.groups
        ]
        return json_response({"groups": groups})

    async def stat(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        if path not in self.files:
            raise NotFound("no such file", path=path)
        return json_response({**self.files[path], "grant": "g"})

    async def intent(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("exclusive") and body["path"] in self.files:
            raise AlreadyExists("a file already exists at this path", path=body["path"])
        out = {"file_id": body["file_id"], "path": body["path"], "time": 0.0, "grant": "g"}
        if "slices" in body:
            out["placement"] = self._place(int(body["slices"]))
        return json_response(out, status=201)

    async def register(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        body = await request.json()
        entry = {**body, "path": path, "version": 1, "versions": [], "layout": 0}
        entry.update(ctime=0.0, mtime=0.0)
        self.files[path] = entry
        return json_response(entry, status=201)

    async def placements(self, request: web.Request) -> web.Response:
        return json_response(self._place(int((await request.json())["slices"])))

    def _place(self, n: int) -> dict[str, Any]:
        runs = []
        for k in range(n):  # one slice per run, the groups in turn: chains cross groups
            g = self.groups[(self.placed + k) % len(self.groups)]
            runs.append({"group": g.group, "count": 1, "leader": g.url, "replicas": [g.url]})
        self.placed += n
        return {"runs": runs}

    async def begin(self, request: web.Request) -> web.Response:
        path = (await request.json())["path"]
        if path not in self.files:
            raise NotFound("no such file", path=path)
        return json_response({"entry": self.files[path], "grant": "g"})

    def _token(self, outcome: str, txn: str, ver: int, prev: list[list[int]]) -> str:
        return json.dumps({"op": outcome, "txn": txn, "ver": ver, "prev": prev})

    def _abort(self, txn: str) -> dict[str, Any]:
        d = {"decision": "abort", "txn": txn, "token": self._token("abort", txn, 0, [])}
        self.decisions[txn] = d
        return d

    async def commit(self, request: web.Request) -> web.Response:
        txn = request.match_info["txn"]
        body = await request.json()
        known = self.decisions.get(txn)
        if known is not None:
            if known["decision"] == "commit":
                return json_response(known)
            raise Conflict("aborted", reason="aborted", decision=known["token"])
        entry = self.files.get(body["path"])
        if entry is None or entry["file_id"] != body["file_id"]:
            self._abort(txn)
            raise NotFound("no such file")
        if body.get("if_version") is not None and body["if_version"] != entry["version"]:
            self._abort(txn)
            raise Conflict("version", reason="version")
        if entry["layout"] > body["base"]:
            self._abort(txn)
            raise Conflict("layout changed", reason="layout_changed")
        if "head" in body and entry["head"] is not None and body["head"] is not None:
            raise InvalidArgument("head")
        version = entry["version"] + 1
        versions = dict((g, v) for g, v in entry["versions"])
        prevs = [[g, versions.get(g, 0)] for g in body["groups"]]
        for g in body["groups"]:
            versions[g] = version
        entry.update(
            size=body["size"],
            slices=body["slices"],
            version=version,
            versions=sorted([g, v] for g, v in versions.items()),
            layout=version if body["layout_change"] else entry["layout"],
            hash=None,
        )
        if "head" in body:
            entry["head"] = body["head"]
        self.commits += 1
        d = {
            "decision": "commit",
            "txn": txn,
            "version": version,
            "token": self._token("commit", txn, version, prevs),
            "entry": dict(entry),
            "offset": body.get("offset"),
        }
        self.decisions[txn] = d
        if self.lose_answers:
            self.lose_answers -= 1
            raise Unavailable("the answer was lost (test)")
        return json_response(d)

    async def abort(self, request: web.Request) -> web.Response:
        txn = request.match_info["txn"]
        known = self.decisions.get(txn)
        if known is not None and known["decision"] == "commit":
            raise Conflict("committed", reason="committed", decision=known["token"])
        return json_response(known or self._abort(txn))


async def start_fake(groups: int = 2) -> tuple[FakeTracker, list[TestServer]]:
    """A fake tracker and ``groups`` one-node groups, served on loopback."""
    servers = []
    fakes = [FakeGroup(g + 1) for g in range(groups)]
    for fake in fakes:
        server = TestServer(fake.app(), host="127.0.0.1")
        await server.start_server()
        fake.url = str(server.make_url("")).rstrip("/")
        servers.append(server)
    tracker = FakeTracker(fakes)
    server = TestServer(tracker.app(), host="127.0.0.1")
    await server.start_server()
    tracker.url = str(server.make_url("")).rstrip("/")
    servers.append(server)
    return tracker, servers
