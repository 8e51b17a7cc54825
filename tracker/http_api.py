"""The HTTP face of the tracker (aiohttp). Routes, bodies and status codes: ``docs/tracker.md``.

Cluster:   POST /heartbeat                 a storage node's report              (signed)
           GET  /cluster                   groups, nodes, liveness, K
           POST /placements                runs of slices for a new file
Namespace: PUT|GET|DELETE /meta/files/{path}
           GET  /meta/list/{path}          a directory ("" or "/" = the root)
           POST /meta/intents, GET /meta/intents, DELETE /meta/intents/{file_id}
           GET  /meta/trash, DELETE /meta/trash/{file_id}
           POST /meta/trash/undelete, POST /meta/trash/purge     (docs/space.md, Trash)
Edits:     POST /meta/edits, POST /meta/edits/{txn}/commit|abort, GET /meta/edits/{txn}
           POST /internal/edits/{txn}/resolve   a participant's question     (signed)
Reads:     GET|HEAD /files/{path}          307 to a storage node of the head's group
Edits:     PATCH|POST|PUT /files/{path}    307 to any up storage node, with a write grant for
                                           the path (tracker/edit_redirect.py)
Ops:       GET  /health, /metrics
Space:     GET  /space                     slots and bytes per group: mydfs df (tracker/space.py)
Monitor:   GET  /cluster/view, /ui             live cluster view, dashboard (tracker/ui.py)
Access:    GET|POST /admin/keys, DELETE /admin/keys/{name}, POST /share     (tracker/auth.py)

Every route but /health, /metrics, /ui, /heartbeat and /internal/edits/{txn}/resolve (signed)
needs an API key with a role (``Authorization: Bearer``); the table is
:data:`mydfs.tracker.auth.ROUTES`.

Paths in URLs are percent-quoted per component (:func:`mydfs.common.paths.url_quote`); the tracker
decodes the raw URL itself, so nothing is normalised on the way and a bad path gets a 400.
"""

from __future__ import annotations

import email.utils
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from mydfs.common.auth import AUTH_HEADER, verify
from mydfs.common.errors import InvalidArgument, Unauthorized
from mydfs.common.limits import read_body
from mydfs.common.params import parse_flag, parse_uint
from mydfs.common.paths import MAX_COMPONENT_BYTES, from_url
from mydfs.common.tracing import request_id_middleware
from mydfs.common.web import error_middleware, json_response
from mydfs.tracker import edit_redirect
from mydfs.tracker.auth import SIGNED_BODY, auth_middleware
from mydfs.tracker.auth import install as install_auth
from mydfs.tracker.keys import KeyStore
from mydfs.tracker.records import check_file_id
from mydfs.tracker.service import Tracker
from mydfs.tracker.space import get_space
from mydfs.tracker.ui import install as install_monitoring

TRACKER_KEY = web.AppKey("tracker", Tracker)

#: Largest ``limit`` of a directory listing page.
MAX_LIST_LIMIT = 100_000


async def _json_body(request: web.Request) -> Any:
    signed: bytes | None = request.get(SIGNED_BODY)  # read by the middleware to verify it
    if signed is not None:
        return _decode_json(signed)
    config = request.app[TRACKER_KEY].config
    data = await read_body(request, config.max_body_bytes, config.limits.body_timeout)
    return _decode_json(data)


def _decode_json(data: bytes) -> Any:
    if not data:
        raise InvalidArgument("a JSON body is required")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"the body is not valid JSON: {exc}") from None


def _raw_tail(request: web.Request, prefix: str) -> str:
    """The still-quoted part of the URL path after ``prefix``."""
    raw = request.raw_path.split("?", 1)[0]
    if not raw.startswith(prefix):
        raise InvalidArgument(f"bad request path {raw!r}")
    return raw[len(prefix) :]


def _file_path(request: web.Request, prefix: str) -> str:
    return from_url(_raw_tail(request, prefix))


def _flag(request: web.Request, name: str) -> bool:
    return parse_flag(request.query.get(name), name)


# --- cluster -------------------------------------------------------------------------------------


async def _signed_body(request: web.Request, what: str) -> Any:
    """The JSON body of a call signed with the cluster secret, body included (401 otherwise;
    without the header at all, before the body is read)."""
    config = request.app[TRACKER_KEY].config
    signature = request.headers.get(AUTH_HEADER)
    if not signature:
        raise Unauthorized(f"{what} without a {AUTH_HEADER} signature")
    data = await read_body(request, config.max_body_bytes, config.limits.body_timeout)
    if not verify(config.secret, "POST", request.path_qs, signature, body=data):
        raise Unauthorized(f"{what} without a valid {AUTH_HEADER} signature (body included)")
    return _decode_json(data)


async def heartbeat(request: web.Request) -> web.Response:
    body = await _signed_body(request, "heartbeat")
    return json_response(request.app[TRACKER_KEY].heartbeat(body))


async def cluster(request: web.Request) -> web.Response:
    return json_response(request.app[TRACKER_KEY].cluster())


async def placements(request: web.Request) -> web.Response:
    return json_response(request.app[TRACKER_KEY].place(await _json_body(request)))


# --- namespace -----------------------------------------------------------------------------------


async def put_file(request: web.Request) -> web.Response:
    tracker = request.app[TRACKER_KEY]
    path = _file_path(request, "/meta/files/")
    overwrite = _flag(request, "overwrite")
    status, body = await tracker.put_file(path, await _json_body(request), overwrite=overwrite)
    return json_response(body, status=status)


async def get_file(request: web.Request) -> web.Response:
    path = _file_path(request, "/meta/files/")
    tracker = request.app[TRACKER_KEY]
    entry = await tracker.stat(path)
    # The read grant storage nodes ask for before serving a slice of this file.
    return json_response(dict(entry.to_dict(path), grant=tracker.grant("read", entry.file_id)))


async def delete_file(request: web.Request) -> web.Response:
    path = _file_path(request, "/meta/files/")
    purge = _flag(request, "purge")  # ?purge=1: free at once (mydfs rm --now)
    return json_response(await request.app[TRACKER_KEY].delete_file(path, purge=purge))


async def list_dir(request: web.Request) -> web.Response:
    raw = request.raw_path.split("?", 1)[0]
    tail = "" if raw == "/meta/list" else _raw_tail(request, "/meta/list/")
    path = "/" if tail in ("", "/") else from_url(tail, directory=True)
    limit = parse_uint(request.query.get("limit"), "limit", lo=1, hi=MAX_LIST_LIMIT)
    after = request.query.get("after")
    if after is not None and len(after.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
        raise InvalidArgument(f"after must be a name of at most {MAX_COMPONENT_BYTES} bytes")
    body = await request.app[TRACKER_KEY].listdir(path, after=after, limit=limit)
    return json_response(body)


async def add_intent(request: web.Request) -> web.Response:
    tracker = request.app[TRACKER_KEY]
    return json_response(await tracker.add_intent(await _json_body(request)), status=201)


async def list_intents(request: web.Request) -> web.Response:
    return json_response(await request.app[TRACKER_KEY].intents())


async def drop_intent(request: web.Request) -> web.Response:
    file_id = check_file_id(request.match_info["file_id"])
    return json_response(await request.app[TRACKER_KEY].drop_intent(file_id))


async def list_trash(request: web.Request) -> web.Response:
    return json_response(await request.app[TRACKER_KEY].trash())


async def undelete(request: web.Request) -> web.Response:
    return json_response(await request.app[TRACKER_KEY].undelete(await _json_body(request)))


async def purge_trash(request: web.Request) -> web.Response:
    return json_response(await request.app[TRACKER_KEY].purge(await _json_body(request)))


async def drop_trash(request: web.Request) -> web.Response:
    file_id = check_file_id(request.match_info["file_id"])
    return json_response(await request.app[TRACKER_KEY].drop_trash(file_id))


# --- edits ---------------------------------------------------------------------------------------


async def begin_edit(request: web.Request) -> web.Response:
    edits = request.app[TRACKER_KEY].edits
    return json_response(await edits.begin(await _json_body(request)))


async def commit_edit(request: web.Request) -> web.Response:
    edits = request.app[TRACKER_KEY].edits
    txn = request.match_info["txn"]
    return json_response(await edits.commit(txn, await _json_body(request)))


async def abort_edit(request: web.Request) -> web.Response:
    edits = request.app[TRACKER_KEY].edits
    txn = request.match_info["txn"]
    return json_response(await edits.abort(txn, await _json_body(request)))


async def resolve_edit(request: web.Request) -> web.Response:
    body = await _signed_body(request, "resolve")
    edits = request.app[TRACKER_KEY].edits
    return json_response(await edits.resolve(request.match_info["txn"], body))


async def get_edit(request: web.Request) -> web.Response:
    edits = request.app[TRACKER_KEY].edits
    return json_response(await edits.get(request.match_info["txn"]))


# --- reads ---------------------------------------------------------------------------------------


async def read_file(request: web.Request) -> web.StreamResponse:
    path = _file_path(request, "/files/")
    found = await request.app[TRACKER_KEY].locate(path)
    entry = found.entry
    headers = {
        "X-Mydfs-File": entry.file_id,
        "X-Mydfs-Size": str(entry.size),
        "X-Mydfs-Version": str(entry.version),
        "Cache-Control": "no-store",
    }
    if found.url is None:
        # An empty file is answered here, with the headers a storage node gives a whole file
        # (an explicit Content-Length: aiohttp leaves out an implicit 0 on HEAD).
        headers["ETag"] = f'"{entry.file_id}-{entry.version}"'
        headers["Last-Modified"] = email.utils.formatdate(entry.mtime, usegmt=True)
        headers["Accept-Ranges"] = "bytes"
        headers["Content-Length"] = "0"
        return web.Response(
            body=b"", status=200, headers=headers, content_type="application/octet-stream"
        )
    headers["Location"] = found.url
    return web.Response(status=307, headers=headers)


# --- ops -----------------------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    body = request.app[TRACKER_KEY].health()
    return json_response(body, status=200 if body["ok"] else 503)


async def metrics(request: web.Request) -> web.Response:
    tracker = request.app[TRACKER_KEY]
    tracker.refresh_gauges()
    return web.Response(
        body=generate_latest(tracker.metrics.registry),
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )


def make_app(tracker: Tracker, keys: KeyStore) -> web.Application:
    max_body = tracker.config.max_body_bytes
    errors = error_middleware(tracker.metrics.requests, tracker.metrics.latency, max_body=max_body)
    app = web.Application(
        middlewares=[request_id_middleware, errors, auth_middleware], client_max_size=max_body
    )
    app[TRACKER_KEY] = tracker
    config = tracker.config
    limits = (config.max_body_bytes, config.limits.body_timeout)
    install_auth(app, keys, config.secret, config.public_prefixes, limits)
    r = app.router
    r.add_post("/heartbeat", heartbeat)
    r.add_get("/cluster", cluster)
    r.add_post("/placements", placements)
    r.add_put("/meta/files/{path:[\\s\\S]*}", put_file)
    r.add_get("/meta/files/{path:[\\s\\S]*}", get_file)
    r.add_delete("/meta/files/{path:[\\s\\S]*}", delete_file)
    r.add_get("/meta/list", list_dir)
    r.add_get("/meta/list/{path:[\\s\\S]*}", list_dir)
    r.add_post("/meta/intents", add_intent)
    r.add_get("/meta/intents", list_intents)
    r.add_delete("/meta/intents/{file_id}", drop_intent)
    r.add_get("/meta/trash", list_trash)
    r.add_delete("/meta/trash/{file_id}", drop_trash)
    r.add_post("/meta/trash/undelete", undelete)
    r.add_post("/meta/trash/purge", purge_trash)
    r.add_post("/meta/edits", begin_edit)
    r.add_post("/meta/edits/{txn}/commit", commit_edit)
    r.add_post("/meta/edits/{txn}/abort", abort_edit)
    r.add_get("/meta/edits/{txn}", get_edit)
    r.add_post("/internal/edits/{txn}/resolve", resolve_edit)
    r.add_get("/files/{path:[\\s\\S]*}", read_file)
    edit = edit_redirect.handler(TRACKER_KEY)
    for method in ("PATCH", "POST", "PUT"):
        r.add_route(
            method, "/files/{path:[\\s\\S]*}", edit, expect_handler=edit_redirect.no_continue
        )
    r.add_get("/health", health)
    r.add_get("/metrics", metrics)
    r.add_get("/space", get_space)  # mydfs df (tracker/space.py, docs/collector.md)
    install_monitoring(app, tracker)  # /cluster/view, /ui (tracker/ui.py)
    return app
