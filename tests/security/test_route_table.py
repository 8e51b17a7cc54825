"""Every route of both processes is in one code table and in ``docs/security.md``, and every
protected route refuses a caller without the right credential, changing nothing.

* The apps are built in-process through the processes' own ``make_app`` (no cluster): the routes
  they register must be exactly the keys of the tracker's table (:data:`mydfs.tracker.auth.ROUTES`)
  and of the storage node's (:data:`mydfs.storage.http_routes.ROUTES`), and exactly the rows of
  the route table in ``docs/security.md``, whose authentication column must say what the code
  table says. A route added without an entry fails here; a route of the storage node missing
  from its table is refused (401) by the node's middleware even with every credential.
* On a live cluster (a tracker and one group), every non-open route of both processes is called
  without credentials, with forged ones (a bearer token that is no key, a revoked key, a grant
  or signature made with another secret), with an expired grant or signature for the right
  object, with a grant for another file, a read grant on a write route, and (tracker) a key whose
  role is too low. Each call gets the status the doc promises (401 / 403), and afterwards every
  stored file reads back byte-identical through the SDK, and the tracker's file list, key list
  and cluster map are unchanged. The requests are real attacks when they pass: a relink that
  cuts a chain, an internal delete and an internal replica push of a live slice, a forged
  heartbeat naming another URL, deletes and overwrites of entries, key creation.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from aiohttp import test_utils, web
from helpers import auth_headers, dispose, free_base, grant_headers, signed_headers

from mydfs.client import Client
from mydfs.client.local_cluster import LocalCluster
from mydfs.common import grants
from mydfs.common.auth import AUTH_HEADER, sign
from mydfs.storage import config as storage_config
from mydfs.storage import http_routes
from mydfs.storage.http_api import make_app as storage_app
from mydfs.storage.node import StorageNode
from mydfs.tracker import auth
from mydfs.tracker import config as tracker_config
from mydfs.tracker.http_api import make_app as tracker_app
from mydfs.tracker.keys import open_store
from mydfs.tracker.metrics import TrackerMetrics
from mydfs.tracker.service import Tracker
from mydfs.tracker.store import MetaStore

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
SECRET = "route-table-secret-0123456789abcdef"
WRONG_SECRET = "another-secret-0123456789abcdef"
TRACKER, STORAGE = "tracker", "storage node"
#: Tracker routes open in the table whose handlers check the cluster signature (body included).
SIGNED_TRACKER_ROUTES = ("/heartbeat", "/internal/edits/{txn}/resolve")


# --- the tables ----------------------------------------------------------------------------------


def registered(app: web.Application) -> set[tuple[str, str]]:
    """(method, canonical route) of every route of ``app``; HEAD is checked as GET."""
    out = set()
    for route in app.router.routes():
        if route.resource is not None and route.method != "HEAD":
            out.add((route.method, route.resource.canonical))
    return out


@pytest.fixture
async def tracker_web(tmp_path: Path) -> AsyncIterator[web.Application]:
    values = {opt.key: opt.default for opt in tracker_config.OPTIONS}
    values.update(data_dir=tmp_path / "tracker", secret=SECRET)
    config = tracker_config.from_values(values)
    store = await MetaStore.open(tmp_path / "tracker", checkpoint_interval=3600)
    try:
        keys, _ = open_store(tmp_path / "tracker")
        yield tracker_app(Tracker(config, store, TrackerMetrics()), keys)
    finally:
        await store.close()


@pytest.fixture
def storage_web(tmp_path: Path) -> Iterator[web.Application]:
    values = {opt.key: opt.default for opt in storage_config.OPTIONS}
    values.update(
        node_id="n1",
        group_id=1,
        data_dir=tmp_path / "n1",
        raft="127.0.0.1:7001",
        peers=[
            "n2,127.0.0.1:7002,http://127.0.0.1:8002",
            "n3,127.0.0.1:7003,http://127.0.0.1:8003",
        ],
        secret=SECRET,
    )
    node = StorageNode(storage_config.from_values(values))  # not started: no port, no disk
    try:
        yield storage_app(node)
    finally:
        node.ctx.executor.shutdown()


_CELL = re.compile(r"(?<!\\)\|")


def doc_routes() -> dict[tuple[str, str, str], list[str]]:
    """(process, method, route) → the other cells of its row, from the doc's "Routes" table."""
    text = DOC.read_text()
    assert "\n## Routes\n" in text, f"{DOC} has no '## Routes' section"
    section = text.split("\n## Routes\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[tuple[str, str, str], list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in _CELL.split(line.strip())[1:-1]]
        if len(cells) != 6 or cells[0] not in (TRACKER, STORAGE):
            continue
        process, methods, route = cells[0], cells[1], cells[2]
        if not route.startswith("`/"):
            continue  # the Raft port's row
        for method in (m.strip() for m in methods.split(",")):
            if method == "HEAD":
                continue
            key = (process, method, route.strip("`"))
            assert key not in rows, f"{key} twice in {DOC.name}"
            rows[key] = cells[3:]
    return rows


def _doc_says(process: str, need: str | None, route: str) -> list[str]:
    """Words the authentication cell of a route must contain, from the code table."""
    if process == TRACKER:
        if route in SIGNED_TRACKER_ROUTES:
            return ["X-Mydfs-Auth"]
        return ["open"] if need is None else [f"bearer `{need}`"]
    return {
        http_routes.OPEN: ["open"],
        http_routes.READ: ["read grant"],
        http_routes.WRITE: ["write grant"],
        http_routes.SIGNED: ["X-Mydfs-Auth"],
        http_routes.SIGNED_OR_READ: ["X-Mydfs-Auth", "read grant"],
        http_routes.DECISION: ["decision token"],
        http_routes.PATH_WRITE: ["write grant", "path"],
    }[str(need)]


def test_every_route_is_in_the_code_tables_and_the_doc(
    tracker_web: web.Application, storage_web: web.Application
) -> None:
    tracker_routes, storage_routes = registered(tracker_web), registered(storage_web)
    assert tracker_routes == set(auth.ROUTES), (
        f"tracker routes without an entry in tracker/auth.py ROUTES: "
        f"{sorted(tracker_routes - set(auth.ROUTES))}; entries naming no route: "
        f"{sorted(set(auth.ROUTES) - tracker_routes)}"
    )
    assert storage_routes == set(http_routes.ROUTES), (
        f"storage routes without an entry in storage/http_routes.py ROUTES: "
        f"{sorted(storage_routes - set(http_routes.ROUTES))}; entries naming no route: "
        f"{sorted(set(http_routes.ROUTES) - storage_routes)}"
    )
    documented = doc_routes()
    code = {(TRACKER, m, r) for m, r in tracker_routes} | {
        (STORAGE, m, r) for m, r in storage_routes
    }
    assert code == set(documented), (
        f"routes missing from docs/security.md: {sorted(code - set(documented))}; "
        f"documented routes that do not exist: {sorted(set(documented) - code)}"
    )
    for (process, method, route), (_who, how, _change) in documented.items():
        table = auth.ROUTES if process == TRACKER else http_routes.ROUTES
        for word in _doc_says(process, table[(method, route)], route):
            assert word in how, (
                f"docs/security.md: {process} {method} {route}: {how!r} lacks {word!r}"
            )


async def test_a_storage_route_missing_from_the_table_is_refused(
    storage_web: web.Application,
) -> None:
    """Born closed: a route nobody listed answers 401, even to a signed call with a grant."""
    served: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        served.append(request.path)
        return web.Response(text="served")

    storage_web.router.add_get("/unlisted/{slot}", handler)
    assert http_routes.protection("GET", "/unlisted/{slot}") is None
    async with test_utils.TestClient(test_utils.TestServer(storage_web)) as client:
        path = "/unlisted/1"
        headers = {
            **signed_headers(SECRET, "GET", path),
            **grant_headers(SECRET, "write", "ab" * 16),
        }
        resp = await client.get(path, headers=headers)
        assert resp.status == 401, await resp.text()
        assert (await resp.json())["error"] == "unauthorized"
        resp = await client.get("/no/such/route")
        assert resp.status == 404
        resp = await client.get("/health")  # open routes still answer (503: not started)
        assert resp.status in (200, 503)
    assert served == []


async def test_a_tracker_route_missing_from_the_table_needs_admin(
    tracker_web: web.Application,
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="served")

    tracker_web.router.add_get("/unlisted", handler)
    assert auth.required_role("GET", "/unlisted") == "admin"
    async with test_utils.TestClient(test_utils.TestServer(tracker_web)) as client:
        assert (await client.get("/unlisted")).status == 401
        forged = auth_headers("mydfs-" + secrets.token_urlsafe(32))
        assert (await client.get("/unlisted", headers=forged)).status == 401


# --- a live cluster --------------------------------------------------------------------------


def call(
    base: str,
    method: str,
    path_qs: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, bytes]:
    """One request, no redirect followed; the path is sent as written."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
    try:
        conn.request(method, path_qs, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def admin_json(c: LocalCluster, method: str, path_qs: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    status, raw = call(c.tracker_url, method, path_qs, c.auth_headers(), data)
    assert status in (200, 201), (method, path_qs, status, raw)
    return json.loads(raw)


@dataclass
class World:
    """The live cluster and what the checks need to know about it."""

    cluster: LocalCluster
    digests: dict[str, str]
    entries: dict[str, dict[str, Any]]
    generations: dict[str, int]
    keys: dict[str, str] = field(default_factory=dict)  # name → token

    def snapshot(self) -> dict[str, Any]:
        """What no refused call may change, as the tracker and the SDK see it."""
        c = self.cluster
        with Client(c.tracker_url, deadline=60.0) as sdk:
            digests = {p: hashlib.sha256(sdk.read(p)).hexdigest() for p in self.digests}
        listing = admin_json(c, "GET", "/meta/list/rt")
        cluster = admin_json(c, "GET", "/cluster")
        nodes = sorted((n["node_id"], n["url"]) for g in cluster["groups"] for n in g["nodes"])
        keys = sorted((k["name"], k["role"]) for k in admin_json(c, "GET", "/admin/keys")["keys"])
        return {"digests": digests, "listing": listing, "nodes": nodes, "keys": keys}


FILES = {
    "/rt/big.bin": 5 << 20,  # two slices: a relink of its head would cut it
    "/rt/small.bin": 300_000,
    "/rt/other.bin": 70_000,
}
TARGET, OTHER = "/rt/big.bin", "/rt/other.bin"


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    root = Path(tempfile.mkdtemp(prefix="mydfs-route-table-"))
    c = LocalCluster(root, groups=1, base_port=free_base(1), secret=SECRET, die_with_parent=True)
    try:
        c.start(timeout=120.0)
        digests = {}
        with Client(c.tracker_url, deadline=60.0) as sdk:
            for path, size in FILES.items():
                data = os.urandom(size)
                sdk.put(path, data)
                digests[path] = hashlib.sha256(data).hexdigest()
        entries = {p: admin_json(c, "GET", "/meta/files" + p) for p in FILES}
        leader = c.wait_leader(1)
        generations = {}
        for path, entry in entries.items():
            meta = f"/slices/{entry['head'][1]}/meta"
            status, raw = call(leader.url, "GET", meta, signed_headers(SECRET, "GET", meta))
            assert status == 200, raw
            generations[path] = json.loads(raw)["generation"]
        w = World(c, digests, entries, generations)
        for name, role in (("reader", "read"), ("writer", "write"), ("revoked", "admin")):
            w.keys[name] = admin_json(c, "POST", "/admin/keys", {"name": name, "role": role})[
                "token"
            ]
        admin_json(c, "DELETE", "/admin/keys/revoked")
        yield w
    finally:
        dispose(c, root)


@dataclass
class Sample:
    """One concrete request for a route: method, path and query, headers, body."""

    method: str
    path_qs: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


def _json(body: Any) -> bytes:
    return json.dumps(body).encode()


def tracker_samples(w: World) -> dict[tuple[str, str], Sample]:
    """A request for every route of the tracker's table, naming real objects."""
    t, o = w.entries[TARGET], w.entries[OTHER]
    forged_entry = {k: o[k] for k in ("file_id", "size", "slices", "head", "hash")}
    heartbeat = {
        "node_id": "g1n1",
        "group_id": 1,
        "url": "http://127.0.0.1:9",
        "role": "leader",
        "term": 10**6,
        "free_slots": 10**9,
        "used_slots": 0,
        "bytes_live": 0,
        "load": 0.0,
    }
    json_type = {"Content-Type": "application/json"}
    txn = secrets.token_hex(16)
    return {
        ("POST", "/heartbeat"): Sample("POST", "/heartbeat", json_type, _json(heartbeat)),
        ("GET", "/cluster"): Sample("GET", "/cluster"),
        ("GET", "/cluster/view"): Sample("GET", "/cluster/view"),
        ("GET", "/space"): Sample("GET", "/space"),
        ("GET", "/meta/files/{path}"): Sample("GET", "/meta/files" + TARGET),
        ("GET", "/meta/list"): Sample("GET", "/meta/list"),
        ("GET", "/meta/list/{path}"): Sample("GET", "/meta/list/rt"),
        ("GET", "/files/{path}"): Sample("GET", "/files" + TARGET),
        # Plain-HTTP edits: a 307 carrying a write grant for the path when allowed.
        ("PATCH", "/files/{path}"): Sample(
            "PATCH", "/files" + TARGET, {"Content-Range": "bytes 0-0/*"}, b"x"
        ),
        ("POST", "/files/{path}"): Sample("POST", f"/files{TARGET}?truncate=0"),
        ("PUT", "/files/{path}"): Sample("PUT", f"/files{TARGET}?overwrite=1", {}, b"x"),
        ("POST", "/share"): Sample("POST", "/share", json_type, _json({"path": TARGET, "ttl": 60})),
        ("POST", "/placements"): Sample("POST", "/placements", json_type, _json({"slices": 4})),
        ("PUT", "/meta/files/{path}"): Sample(
            "PUT", f"/meta/files{TARGET}?overwrite=1", json_type, _json(forged_entry)
        ),
        ("DELETE", "/meta/files/{path}"): Sample("DELETE", "/meta/files" + TARGET),
        ("POST", "/meta/intents"): Sample(
            "POST",
            "/meta/intents",
            json_type,
            _json({"file_id": secrets.token_hex(16), "path": "/rt/new.bin"}),
        ),
        ("DELETE", "/meta/intents/{file_id}"): Sample("DELETE", f"/meta/intents/{t['file_id']}"),
        ("GET", "/meta/intents"): Sample("GET", "/meta/intents"),
        ("GET", "/meta/trash"): Sample("GET", "/meta/trash"),
        ("DELETE", "/meta/trash/{file_id}"): Sample("DELETE", f"/meta/trash/{t['file_id']}"),
        ("POST", "/meta/trash/undelete"): Sample(
            "POST", "/meta/trash/undelete", json_type, _json({"path": TARGET, "new_path": "/rt/u"})
        ),
        ("POST", "/meta/trash/purge"): Sample(
            "POST", "/meta/trash/purge", json_type, _json({"all": True})
        ),
        ("POST", "/meta/edits"): Sample("POST", "/meta/edits", json_type, _json({"path": TARGET})),
        ("POST", "/meta/edits/{txn}/commit"): Sample(
            "POST",
            f"/meta/edits/{txn}/commit",
            json_type,
            _json(
                {
                    "path": TARGET,
                    "file_id": t["file_id"],
                    "base": t["version"],
                    "layout_change": True,
                    "size": 0,
                    "slices": 0,
                    "head": None,
                    "groups": [1],
                }
            ),
        ),
        ("POST", "/meta/edits/{txn}/abort"): Sample(
            "POST",
            f"/meta/edits/{txn}/abort",
            json_type,
            _json({"path": TARGET, "file_id": t["file_id"]}),
        ),
        ("GET", "/meta/edits/{txn}"): Sample("GET", f"/meta/edits/{txn}"),
        ("POST", "/internal/edits/{txn}/resolve"): Sample(
            "POST",
            f"/internal/edits/{txn}/resolve",
            json_type,
            _json({"file_id": t["file_id"], "group": 1, "prepared_at_ms": 0}),
        ),
        ("GET", "/admin/keys"): Sample("GET", "/admin/keys"),
        ("POST", "/admin/keys"): Sample(
            "POST", "/admin/keys", json_type, _json({"name": "intruder", "role": "admin"})
        ),
        ("DELETE", "/admin/keys/{name}"): Sample("DELETE", "/admin/keys/admin"),
    }


def storage_samples(w: World) -> dict[tuple[str, str], Sample]:
    """A request for every route of the storage node's table, aimed at the target's head."""
    t = w.entries[TARGET]
    slot, gen, fid = t["head"][1], w.generations[TARGET], t["file_id"]
    file_query = urlencode(
        {
            "head": f"{t['head'][0]}:{slot}",
            "size": t["size"],
            "slices": t["slices"],
            "file": fid,
            "mtime": repr(t["mtime"]),
            "version": t["version"],
        },
        safe=":",
    )
    owner = {"X-Mydfs-File": fid}
    reserve = {"upload_id": "rt-forged", "index": 0, "length": 10, "crc32c": 0, "file_id": fid}
    return {
        ("PUT", "/slices"): Sample("PUT", "/slices?upload=rt-forged", owner, b"x" * 100),
        ("POST", "/slices/reserve"): Sample("POST", "/slices/reserve", {}, _json(reserve)),
        ("PUT", "/slices/{slot}"): Sample(
            "PUT", f"/slices/{slot}?upload=rt-forged&gen={gen}&next=none", {}, b"x" * 10
        ),
        ("POST", "/slices/{slot}/relink"): Sample(
            "POST", f"/slices/{slot}/relink?gen={gen}&next=none"
        ),
        ("GET", "/chain/{slot}"): Sample("GET", f"/chain/{slot}", owner),
        ("GET", "/files/{path}"): Sample("GET", f"/files{TARGET}?{file_query}"),
        ("GET", "/slices/{slot}"): Sample("GET", f"/slices/{slot}?gen={gen}", owner),
        ("GET", "/slices/{slot}/meta"): Sample("GET", f"/slices/{slot}/meta"),
        ("PUT", "/internal/slices/{slot}"): Sample(
            "PUT",
            f"/internal/slices/{slot}?gen={gen}&crc=0&file={fid}&index=0&next=none",
            {},
            b"x" * 10,
        ),
        ("GET", "/internal/slices/{slot}"): Sample("GET", f"/internal/slices/{slot}?gen={gen}"),
        ("GET", "/internal/holds/{slot}"): Sample("GET", f"/internal/holds/{slot}?gen={gen}"),
        ("GET", "/internal/report"): Sample("GET", "/internal/report"),
        ("DELETE", "/internal/slices/{slot}"): Sample(
            "DELETE", f"/internal/slices/{slot}?gen={gen}&file={fid}"
        ),
        # Would lock the target's head (and its 301 through a move), freezing the file.
        ("POST", "/edits/{txn}/prepare"): Sample(
            "POST",
            f"/edits/{EDIT_TXN}/prepare",
            {},
            _json({"file_id": fid, "lock": [[slot, gen]], "move": None, "new": []}),
        ),
        ("POST", "/edits/{txn}/commit"): Sample(
            "POST", f"/edits/{EDIT_TXN}/commit", {}, _json({"decision": ""})
        ),
        # Plain-HTTP edits of the target: each would change it if let through.
        ("PATCH", "/files/{path}"): Sample(
            "PATCH", "/files" + TARGET, {"Content-Range": "bytes 0-0/*"}, b"x"
        ),
        ("POST", "/files/{path}"): Sample("POST", f"/files{TARGET}?truncate=0"),
        ("PUT", "/files/{path}"): Sample("PUT", f"/files{TARGET}?overwrite=1", {}, b"x"),
        ("POST", "/edits/{txn}/rollback"): Sample(
            "POST", f"/edits/{EDIT_TXN}/rollback", {}, _json({"decision": ""})
        ),
    }


#: The edit transaction the edit route samples name.
EDIT_TXN = "e7" * 16


def decision_samples(sample: Sample, fid: str) -> list[tuple[Sample, int, str]]:
    """Variants of a commit or rollback sample whose body carries a bad decision token, with
    the status each must get."""
    op = "commit" if sample.path_qs.endswith("/commit") else "abort"
    other = "abort" if op == "commit" else "commit"

    def token(secret: str, *, outcome: str = op, txn: str = EDIT_TXN, ttl: int = 600) -> str:
        exp = int(time.time()) + ttl
        decision = grants.Grant(outcome, exp, file_id=fid, txn=txn, version=1, prevs=((1, 0),))
        return grants.issue(secret, decision)

    def body(tok: str) -> Sample:
        return Sample(sample.method, sample.path_qs, sample.headers, _json({"decision": tok}))

    return [
        (body(token(WRONG_SECRET)), 401, "a decision signed with another secret"),
        (body(token(SECRET, ttl=-10)), 403, "an expired decision"),
        (body(token(SECRET, txn="e8" * 16)), 403, "a decision for another txn"),
        (body(token(SECRET, outcome=other)), 403, "the other outcome's decision"),
        (body(grants.issue_for(SECRET, "write", 600, file_id=fid)), 403, "a write grant"),
    ]


def _expired_signature(secret: str, method: str, path_qs: str) -> dict[str, str]:
    return {AUTH_HEADER: sign(secret, method, path_qs, now=time.time() - 3600)}


class Checker:
    """Sends variants of samples and collects every answer that is not the expected one."""

    def __init__(self) -> None:
        self.wrong: list[str] = []
        self.sent = 0

    def expect(
        self,
        base: str,
        sample: Sample,
        credential: dict[str, str],
        status: int,
        what: str,
    ) -> None:
        headers = {**sample.headers, **credential}
        got, body = call(base, sample.method, sample.path_qs, headers, sample.body)
        self.sent += 1
        if got != status:
            self.wrong.append(
                f"{base} {sample.method} {sample.path_qs} {what}: {got} (expected {status}) "
                f"{body[:200]!r}"
            )


def test_protected_routes_refuse_and_change_nothing(world: World) -> None:
    w, c = world, world.cluster
    before = w.snapshot()
    check = Checker()
    tracker, samples = c.tracker_url, tracker_samples(w)
    protected = {k for k, need in auth.ROUTES.items() if need is not None} | {
        ("POST", route) for route in SIGNED_TRACKER_ROUTES
    }
    assert set(samples) == protected, "every protected tracker route needs a sample here"
    forged_key = auth_headers("mydfs-" + secrets.token_urlsafe(32))
    reader, writer = auth_headers(w.keys["reader"]), auth_headers(w.keys["writer"])
    revoked = auth_headers(w.keys["revoked"])
    for (method, route), sample in samples.items():
        check.expect(tracker, sample, {}, 401, "without credentials")
        check.expect(tracker, sample, forged_key, 401, "with a bearer token that is no key")
        check.expect(tracker, sample, revoked, 401, "with a revoked key")
        # Grants are not keys: one in the X-Mydfs-Grant header opens no tracker route.
        fid = w.entries[TARGET]["file_id"]
        check.expect(tracker, sample, grant_headers(SECRET, "write", fid), 401, "a grant header")
        need = auth.ROUTES[(method, route)]
        good_signature = {
            AUTH_HEADER: sign(SECRET, method, sample.path_qs, body=sample.body or b"")
        }
        if (method, route) in auth.SIGNED_WRITE_ROUTES:
            # What a storage node acting for an HTTP caller sends: only a valid one passes.
            wrong = {
                AUTH_HEADER: sign(WRONG_SECRET, method, sample.path_qs, body=sample.body or b"")
            }
            check.expect(tracker, sample, wrong, 401, "signed with another secret")
            stale = _expired_signature(SECRET, method, sample.path_qs)
            check.expect(tracker, sample, stale, 401, "with an expired signature")
            other_body = {AUTH_HEADER: sign(SECRET, method, sample.path_qs, body=b"other")}
            if sample.body:
                check.expect(tracker, sample, other_body, 401, "signed for another body")
        elif route not in SIGNED_TRACKER_ROUTES:
            # A cluster signature counts only on the routes the SDK's put and edits need.
            check.expect(tracker, sample, good_signature, 401, "with a cluster signature")
        if route in SIGNED_TRACKER_ROUTES:
            signature = {AUTH_HEADER: sign(WRONG_SECRET, method, sample.path_qs)}
            check.expect(tracker, sample, signature, 401, "signed with another secret")
            stale = _expired_signature(SECRET, method, sample.path_qs)
            check.expect(tracker, sample, stale, 401, "with an expired signature")
            check.expect(tracker, sample, writer, 401, "with a key instead of a signature")
        if need in ("write", "admin"):
            check.expect(tracker, sample, reader, 403, "with a read key")
        if need == "admin":
            check.expect(tracker, sample, writer, 403, "with a write key")
    # Share URLs: a path grant on GET|HEAD /files, and only there.
    read_file = samples[("GET", "/files/{path}")]
    for token, what in (
        (grants.issue_for(SECRET, "read", -10, path=TARGET), "an expired share grant"),
        (grants.issue_for(SECRET, "read", 600, path=OTHER), "a share grant for another path"),
        (grants.issue_for(WRONG_SECRET, "read", 600, path=TARGET), "a forged share grant"),
        (grants.issue_for(SECRET, "read", 600, file_id="ab" * 16), "a file-id grant"),
    ):
        shared = Sample("GET", f"{read_file.path_qs}?{grants.GRANT_PARAM}={token}")
        check.expect(tracker, shared, {}, 403, f"with {what}")
        check.expect(tracker, Sample("HEAD", shared.path_qs), {}, 403, f"HEAD with {what}")

    # Storage nodes: every node of the group; the other-file cases on the leader, which is
    # where writes get past the leader check.
    leader = c.wait_leader(1)
    nodes = [n.url for n in c.nodes(1)]
    fid, other = w.entries[TARGET]["file_id"], w.entries[OTHER]["file_id"]
    admin = c.auth_headers()
    ssamples = storage_samples(w)
    protected_storage = {k for k, p in http_routes.ROUTES.items() if p != http_routes.OPEN}
    assert set(ssamples) == protected_storage, "every protected storage route needs a sample here"
    for key, sample in ssamples.items():
        need = http_routes.ROUTES[key]
        grant_op = "write" if need == http_routes.WRITE else "read"
        for node in nodes:
            check.expect(node, sample, {}, 401, "without credentials")
            check.expect(node, sample, admin, 401, "with the admin API key (nodes take no keys)")
            forged = grant_headers(WRONG_SECRET, "write", fid)
            bad_signature = {AUTH_HEADER: sign(WRONG_SECRET, sample.method, sample.path_qs)}
            stale = _expired_signature(SECRET, sample.method, sample.path_qs)
            if need in (http_routes.SIGNED, http_routes.SIGNED_OR_READ):
                check.expect(node, sample, bad_signature, 401, "signed with another secret")
                check.expect(node, sample, stale, 401, "with an expired signature")
            if need == http_routes.SIGNED:
                # A grant, even a write grant for this very file, is no signature.
                check.expect(node, sample, grant_headers(SECRET, "write", fid), 401, "grant")
                continue
            if need == http_routes.DECISION:
                # A grant header is no decision; a bad decision token in the body is refused.
                check.expect(node, sample, grant_headers(SECRET, "write", fid), 401, "grant")
                for variant, status, what in decision_samples(sample, fid):
                    check.expect(node, variant, {}, status, f"with {what}")
                continue
            check.expect(node, sample, forged, 401, "with a grant signed with another secret")
            expired = grant_headers(SECRET, grant_op, fid, ttl=-10)
            check.expect(node, sample, expired, 403, f"with an expired {grant_op} grant")
            if need == http_routes.WRITE:
                read_grant = grant_headers(SECRET, "read", fid)
                check.expect(node, sample, read_grant, 403, "with a read grant on a write route")
            if need == http_routes.PATH_WRITE:
                # Bound to the path: another path's, a read one, a file id's are refused.
                for token, what in (
                    (grants.issue_for(SECRET, "write", 600, path=OTHER), "another path's grant"),
                    (grants.issue_for(SECRET, "read", 600, path=TARGET), "a read path grant"),
                    (grants.issue_for(SECRET, "write", -10, path=TARGET), "an expired one"),
                    (grants.issue_for(SECRET, "write", 600, file_id=fid), "a file-id grant"),
                ):
                    given = {grants.GRANT_HEADER: token}
                    check.expect(node, sample, given, 403, f"with {what}")
                continue
            path_grant = {grants.GRANT_HEADER: grants.issue_for(SECRET, "write", 600, path=TARGET)}
            check.expect(node, sample, path_grant, 403, "with a path (share) grant")
        if need not in (http_routes.SIGNED, http_routes.DECISION):
            others = grant_headers(SECRET, grant_op, other)
            check.expect(leader.url, sample, others, 403, "with a grant for another file")
            if need == http_routes.WRITE:
                group = grant_headers(SECRET, "write", fid, groups=(2,))
                check.expect(leader.url, sample, group, 403, "with a grant for another group")
    assert not check.wrong, f"{len(check.wrong)} of {check.sent} answers wrong:\n" + "\n".join(
        check.wrong
    )
    assert w.snapshot() == before
