"""The HTTP face of a storage node (aiohttp). Routes, status codes and headers are in
``docs/replication.md``; the work is done by :class:`~mydfs.storage.node.StorageNode`.

Public (each needs a grant for the file, ``storage/http_grants.py``; W = write, R = read):
          PUT /slices?upload=ID          upload one slice (leader; followers answer 307)     W
          POST /slices/reserve           step 1 of a linked upload: pick the slot (leader)   W
          PUT /slices/{slot}?upload&gen&next  step 2: write the reserved slice and seal it   W
          POST /slices/{slot}/relink?gen&next  change a slice's next pointer (leader)       W
          GET /chain/{slot}?max=N        walk a file's chain through this group's table     R
                                         (X-Mydfs-File/-Index: the owner the reader expects;
                                         X-Mydfs-Version: the file version it expects here)
          GET|HEAD /files/{path}?head=G:S&size&slices&file&mtime&version&grant  a whole file R
          GET|HEAD /slices/{slot}[?gen=G] read a slice, whole or one Range                   R
          GET /slices/{slot}/meta        the slot's record (signed, or R for its owner)
          GET /health, /status, /metrics                                                  open
Internal: PUT /internal/slices/{slot}    a payload pushed by the leader      (signed)
          GET /internal/slices/{slot}    a payload fetched by a peer          (signed)
          GET /internal/holds/{slot}     does this node hold it durably?      (signed)
          GET /internal/report           the group's slot report (collector, df)  (signed, leader)
          DELETE /internal/slices/{slot}?gen&file  leave a 404 if file owns it (signed, leader;
                                         a 301 slot is released, a locked one is 409;
                                         with fv=V, 409 unless the file's version here is V)
Plain-HTTP edits (any node; ``storage/http_edit_files.py``, a write grant for the path):
          PATCH|POST|PUT /files/{path}   edit or create a file for the caller, via the SDK
Edits (leader; ``storage/http_edits.py``):
          POST /edits/{txn}/prepare      lock an edit's slots                                W
          POST /edits/{txn}/commit|rollback  apply the tracker's decision     (decision token)

Each route's protection is in one table, ``storage/http_routes.py``, checked by its middleware
before the handler (a route missing from it is refused); the handlers bind grants to objects.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from mydfs.common.auth import AUTH_HEADER, verify
from mydfs.common.errors import (
    Corrupt,
    InvalidArgument,
    LengthRequired,
    NotFound,
    Redirect,
    SlotOutOfRange,
    TooManyRequests,
    Unauthorized,
)
from mydfs.common.grants import Grant
from mydfs.common.httprange import parse_range
from mydfs.common.limits import read_body
from mydfs.common.location import MAX_SLOT, Location
from mydfs.common.params import MAX_U64, parse_hex_id, parse_uint, require_uint
from mydfs.common.tracing import request_id_middleware
from mydfs.common.web import error_middleware
from mydfs.storage.format import PAYLOAD_CAPACITY, SliceOwner
from mydfs.storage.group_commands import (
    MAX_CRC32C,
    MAX_GENERATION,
    MAX_SLICE_INDEX,
    Delete,
    Release,
    Relink,
)
from mydfs.storage.group_state import SlotInfo, SlotState
from mydfs.storage.http_common import NODE_KEY, broken_chain, json_response
from mydfs.storage.http_edit_files import add_edit_file_routes
from mydfs.storage.http_edits import add_edit_routes
from mydfs.storage.http_files import add_file_routes
from mydfs.storage.http_grants import (
    check_file_version,
    check_slot_owner,
    delete_verdict,
    require,
    token_of,
)
from mydfs.storage.http_report import add_report_routes
from mydfs.storage.http_routes import route_guard
from mydfs.storage.node import StorageNode
from mydfs.storage.peers import location_text
from mydfs.storage.writer import new_upload_id

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request for the load figure of heartbeats and the live counters."""
    node = request.app[NODE_KEY]
    node.count_request()
    node.ctx.access.begin(request.method, request.path, request.content_length)
    try:
        return await handler(request)
    finally:
        node.ctx.access.end()


def _slot(request: web.Request) -> int:
    text = request.match_info["slot"]
    try:
        return require_uint(text, "slot", hi=MAX_SLOT)
    except InvalidArgument as exc:
        raise SlotOutOfRange(exc.message, slot=text[:40]) from None


#: Upper bounds of the integer query parameters and headers, by name.
_INT_BOUNDS = {
    "gen": MAX_GENERATION,
    "crc": MAX_CRC32C,
    "index": MAX_SLICE_INDEX,
    "max": MAX_U64,
    "X-Mydfs-Index": MAX_SLICE_INDEX,
    "X-Mydfs-Crc32c": MAX_CRC32C,
}


def _int_arg(request: web.Request, name: str, *, required: bool = False) -> int | None:
    hi = _INT_BOUNDS.get(name, MAX_U64)
    return parse_uint(request.query.get(name), name, hi=hi, required=required)


def _location(text: str | None, what: str) -> Location | None:
    if text is None or text == "" or text == "none":
        return None
    try:
        return Location.parse(text)
    except InvalidArgument:
        raise InvalidArgument(f"{what} {text!r} is not GROUP:SLOT") from None


def _owner(file_hex: str | None, index: int | None) -> SliceOwner:
    if file_hex is None:
        return SliceOwner(bytes(16), index or 0)
    if not isinstance(file_hex, str) or parse_hex_id(file_hex.lower(), "file id") is None:
        raise InvalidArgument(f"file id {file_hex!r} must be 32 hex digits")
    if index is not None and (isinstance(index, bool) or not 0 <= index <= MAX_SLICE_INDEX):
        raise InvalidArgument(f"index {index!r} is out of range 0..{MAX_SLICE_INDEX}")
    return SliceOwner(bytes.fromhex(file_hex), index or 0)


async def _body(request: web.Request, *, limit: int = PAYLOAD_CAPACITY) -> bytes:
    """Read the whole body (at most one slice), enforcing Content-Length."""
    if request.content_length is None:
        raise LengthRequired("Content-Length is required for slice bodies")
    config = request.app[NODE_KEY].config
    return await read_body(request, limit, config.limits.body_timeout)


def _check_auth(request: web.Request) -> None:
    node = request.app[NODE_KEY]
    if not verify(
        node.config.secret, request.method, request.path_qs, request.headers.get(AUTH_HEADER)
    ):
        raise Unauthorized("internal call without a valid cluster signature")


def _grant(request: web.Request, op: str, file_id: str | None = None) -> Grant:
    """The request's grant for ``op`` on ``file_id`` (None: its own file), in this group."""
    node = request.app[NODE_KEY]
    group = node.group_id if op == "write" else None
    return require(node.config.secret, token_of(request), op, file_id=file_id, group=group)


def _slice_headers(node: StorageNode, info: SlotInfo) -> dict[str, str]:
    return {
        "X-Mydfs-Group": str(node.group_id),
        "X-Mydfs-Slot": str(info.slot),
        "X-Mydfs-Generation": str(info.generation),
        "X-Mydfs-Length": str(info.length),
        "X-Mydfs-Crc32c": str(info.crc32c),
        "X-Mydfs-Next": location_text(info.next),
        "X-Mydfs-File": info.file_id,
        "X-Mydfs-Index": str(info.slice_index),
        "ETag": f'"{info.generation}-{info.crc32c:08x}"',
        "Accept-Ranges": "bytes",
    }


# --- public ----------------------------------------------------------------------------------


async def upload(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    h = request.headers
    grant = _grant(request, "write", h.get("X-Mydfs-File"))
    if not node.is_leader():
        raise node.not_leader_error()
    upload_id = request.query.get("upload") or new_upload_id()
    owner = _owner(grant.file_id, _header_int(h.get("X-Mydfs-Index"), "X-Mydfs-Index"))
    nxt = _location(h.get("X-Mydfs-Next"), "X-Mydfs-Next")
    expect = _header_int(h.get("X-Mydfs-Crc32c"), "X-Mydfs-Crc32c")
    data = await _body(request)
    stored = await node.writer.upload(
        data, upload_id=upload_id, owner=owner, next=nxt, expect_crc=expect
    )
    return json_response(
        dict(stored.to_dict(), upload_id=upload_id), status=200 if stored.duplicate else 201
    )


async def reserve(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    _grant(request, "write")  # before the body is read; its file is checked below
    if not node.is_leader():
        raise node.not_leader_error()
    config = node.config
    if node.group.read(lambda g: g.stats().pending) >= config.max_pending_reservations:
        raise TooManyRequests(
            f"group {node.group_id} has {config.max_pending_reservations} reservations pending;"
            " retry later",
            limit=config.max_pending_reservations,
        )
    data = await read_body(request, config.max_json_bytes, config.limits.body_timeout)
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise InvalidArgument("reserve body must be JSON") from None
    if not isinstance(body, dict):
        raise InvalidArgument("reserve body must be a JSON object")
    upload_id = body.get("upload_id") or ""
    if not isinstance(upload_id, str) or not upload_id:
        raise InvalidArgument("upload_id is required (a string)")
    index = body.get("index", 0)
    length = body.get("length")
    crc = body.get("crc32c")
    for name, value in (("index", index), ("length", length), ("crc32c", crc)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidArgument(f"{name} must be a non-negative integer, got {value!r}")
    assert isinstance(length, int) and isinstance(crc, int) and isinstance(index, int)
    nxt = body.get("next")  # [group, slot], "group:slot" or null
    if isinstance(nxt, list) and len(nxt) == 2 and all(type(v) is int for v in nxt):
        nxt = f"{nxt[0]}:{nxt[1]}"
    if nxt is not None and not isinstance(nxt, str):
        raise InvalidArgument(f"next must be [group, slot], 'group:slot' or null, got {nxt!r}")
    next_loc = None if nxt is None else _location(nxt, "next")
    if crc > MAX_CRC32C:
        raise InvalidArgument(f"crc32c {crc} is out of range 0..{MAX_CRC32C}")
    file_id = body.get("file_id")
    if file_id is not None and not isinstance(file_id, str):
        raise InvalidArgument(f"file_id must be a string, got {file_id!r}")
    owner = _owner(_grant(request, "write", file_id).file_id, index)
    got = await node.writer.reserve(
        upload_id=upload_id, owner=owner, length=length, crc=crc, next=next_loc
    )
    return json_response(got.to_dict(node.group_id), status=200 if got.duplicate else 201)


async def fill(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    grant = _grant(request, "write")
    if not node.is_leader():
        raise node.not_leader_error()
    slot = _slot(request)
    upload_id = request.query.get("upload")
    if not upload_id:
        raise InvalidArgument("query parameter upload is required")
    generation = _int_arg(request, "gen", required=True)
    assert generation is not None
    info = node.info(slot)
    if info is not None and info.generation == generation:
        # The caller's reservation: it must be the grant's file. A slot reused since (another
        # generation) is refused by the writer as a lost reservation (404), which the uploader
        # answers by reserving again; it is never written either way.
        check_slot_owner(info, grant, slot)
    nxt = _location(request.query.get("next"), "next")
    expect = _header_int(request.headers.get("X-Mydfs-Crc32c"), "X-Mydfs-Crc32c")
    data = await _body(request)
    stored = await node.writer.fill(
        data, upload_id=upload_id, slot=slot, generation=generation, next=nxt, expect_crc=expect
    )
    return json_response(
        dict(stored.to_dict(), upload_id=upload_id), status=200 if stored.duplicate else 201
    )


async def relink(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    grant = _grant(request, "write")
    if not node.is_leader():
        raise node.not_leader_error()
    slot = _slot(request)
    info = node.info(slot)
    if info is None:
        raise NotFound("no such slice", slot=slot)
    check_slot_owner(info, grant, slot)
    command = Relink(
        slot=slot,
        next=_location(request.query.get("next"), "next"),
        generation=_int_arg(request, "gen"),
    )
    return json_response(dict(await node.writer.command(command.to_dict())))


def _read_owner(request: web.Request) -> tuple[str, int | None]:
    """The owner a reader may read: the file of its read grant (which ``X-Mydfs-File``, when
    sent, must name) and the slice index it expects (``X-Mydfs-Index``; None: any)."""
    h = request.headers
    grant = _grant(request, "read", h.get("X-Mydfs-File"))
    return grant.file_id, _header_int(h.get("X-Mydfs-Index"), "X-Mydfs-Index")


async def chain(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    file_id, first = _read_owner(request)
    slot = _slot(request)
    most = node.config.max_chain
    limit = min(_int_arg(request, "max") or most, most)
    expected = _header_int(request.headers.get(VERSION_HEADER), VERSION_HEADER)
    named = "X-Mydfs-File" in request.headers  # the version is that of the file named
    try:
        entries, nxt, version = await node.reads.walk_versioned(
            slot, limit, (file_id, first), expected if named else None
        )
    except Corrupt as exc:
        raise broken_chain(exc) from None
    return json_response(
        {
            "entries": [e.to_dict(node.urls) for e in entries],
            "next": None if nxt is None else [nxt.group, nxt.slot],
            "version": version if named else 0,
        }
    )


#: Request header of ``GET /chain``: the file version the reader's entry expects in this group.
VERSION_HEADER = "X-Mydfs-Version"


def _header_int(text: str | None, name: str) -> int | None:
    return parse_uint(text, f"header {name}", hi=_INT_BOUNDS.get(name, MAX_U64), strip=True)


async def read_slice(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    owner = _read_owner(request)
    slot = _slot(request)
    generation = _int_arg(request, "gen")
    info = await node.reads.resolve(slot, generation, owner)
    rng = parse_range(request.headers.get("Range"), info.length)
    offset, length = rng if rng is not None else (0, None)
    got = await node.reads.read_local(info, offset, length)
    if got.header.owner.file_id.hex() != owner[0]:
        raise NotFound("the slot holds another file now", slot=slot, reason="another_owner")
    headers = _slice_headers(node, info)
    # The owner and generation of the bytes served, as their own header on disk says.
    headers["X-Mydfs-File"] = got.header.owner.file_id.hex()
    headers["X-Mydfs-Index"] = str(got.header.owner.index)
    headers["X-Mydfs-Generation"] = str(got.header.generation)
    if rng is not None:
        end = offset + len(got.data) - 1
        headers["Content-Range"] = f"bytes {offset}-{end}/{info.length}"
        return web.Response(
            body=got.data, status=206, headers=headers, content_type="application/octet-stream"
        )
    return web.Response(body=got.data, headers=headers, content_type="application/octet-stream")


async def slice_meta(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    signed = verify(
        node.config.secret, request.method, request.path_qs, request.headers.get(AUTH_HEADER)
    )
    grant = None if signed else _grant(request, "read")
    slot = _slot(request)
    info = node.info(slot)
    if grant is not None:
        check_slot_owner(info, grant, slot)
    if info is None:
        if not node.is_leader() and node.leader_url():
            raise Redirect(node.leader_url() or "")
        raise NotFound("no such slot", slot=slot)
    body = info.to_dict()
    body["held_here"] = node.replica.holds(slot, info.generation)
    body["group"] = node.group_id
    return json_response(body)


async def delete_slice(request: web.Request) -> web.Response:
    """``DELETE /internal/slices/{slot}?gen=G&file=F`` (signed; the tracker's reclaimer): leave
    a 404 in the slot if it holds file F at generation G; 409 (nothing deleted) otherwise."""
    _check_auth(request)
    node = request.app[NODE_KEY]
    slot = _slot(request)
    generation = _int_arg(request, "gen", required=True)
    assert generation is not None
    file_text = request.query.get("file")
    if not file_text:
        raise InvalidArgument("query parameter file is required (the owner the slot must have)")
    file_id = _owner(file_text, 0).file_id.hex()
    if not node.is_leader():
        raise node.not_leader_error()
    info = node.info(slot)
    if not delete_verdict(info, slot, generation, file_id):
        return json_response({"slot": slot, "generation": generation, "duplicate": True})
    expect = _int_arg(request, "fv")  # the collector: no edit of the file here since its report
    if expect is not None:
        check_file_version(node.group.read(lambda g: g.file_version(file_id)), expect, slot)
    # The command carries the generation: a slot reused meanwhile refuses it in the log. A 301
    # slot (an edited file's entry point) is released; a slot an edit holds locked is refused
    # (409 reason=locked) by the table, and the reclaimer retries on its next pass.
    moved = info is not None and info.state is SlotState.MOVED
    command = Release if moved else Delete
    result = await node.writer.command(command(slot=slot, generation=generation).to_dict())
    return json_response(dict(result))


async def health(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    ok = node.raft is not None and node.volume is not None
    return json_response(
        {"ok": ok, "node_id": node.node_id, "group_id": node.group_id, "leader": node.is_leader()},
        status=200 if ok else 503,
    )


async def status(request: web.Request) -> web.Response:
    return json_response(request.app[NODE_KEY].status())


async def metrics(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    m = node.metrics
    st = node.status()
    raft = st.get("raft") or {}
    for role in ("leader", "follower", "candidate"):
        m.raft_role.labels(role).set(1 if st["role"] == role else 0)
    m.raft_term.set(raft.get("term", 0) or 0)
    m.raft_commit.set(raft.get("commit_index", 0) or 0)
    m.raft_applied.set(raft.get("last_applied", 0) or 0)
    m.registration_entries.set(len(node.registration))
    m.registration_bytes.set(node.registration.bytes)
    for key in ("live", "pending", "moved", "deleted"):
        m.slots.labels("group", key).set(st["group"].get(key, 0))
        if st["volume"] is not None:
            m.slots.labels("volume", key).set(st["volume"].get(key, 0))
    m.slots.labels("group", "ahead").set(st["group"].get("ahead", 0))
    m.bytes_live.set(st["group"].get("bytes_live", 0))
    m.bytes_inline.set(st["group"].get("bytes_inline", 0))
    return web.Response(
        body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


# --- internal ----------------------------------------------------------------------------------


async def accept_replica(request: web.Request) -> web.Response:
    _check_auth(request)
    node = request.app[NODE_KEY]
    slot = _slot(request)
    generation = _int_arg(request, "gen", required=True)
    crc = _int_arg(request, "crc", required=True)
    assert generation is not None and crc is not None
    owner = _owner(request.query.get("file"), _int_arg(request, "index"))
    nxt = _location(request.query.get("next"), "next")
    lease = await node.replica.charge(slot, request.content_length or 0)
    try:
        data = await _body(request)
        await node.replica.accept(slot, data, generation=generation, owner=owner, next=nxt, crc=crc)
    finally:
        lease.release()
    return json_response({"durable": True, "node": node.node_id})


async def fetch_replica(request: web.Request) -> web.Response:
    _check_auth(request)
    node = request.app[NODE_KEY]
    slot = _slot(request)
    generation = _int_arg(request, "gen", required=True)
    assert generation is not None
    data = await node.replica.read(slot, generation)
    node.metrics.bytes_out.inc(len(data))
    return web.Response(body=data, content_type="application/octet-stream")


async def holds(request: web.Request) -> web.Response:
    _check_auth(request)
    node = request.app[NODE_KEY]
    slot = _slot(request)
    generation = _int_arg(request, "gen", required=True)
    assert generation is not None
    return json_response({"holds": node.replica.holds(slot, generation), "node": node.node_id})


def make_app(node: StorageNode) -> web.Application:
    max_body = PAYLOAD_CAPACITY + (1 << 20)
    errors = error_middleware(
        node.metrics.requests,
        node.metrics.latency,
        max_body=max_body,
        group_id=node.group_id,
        context={"node": node.node_id},
    )
    app = web.Application(
        # route_guard: each route's protection, from one table (storage/http_routes.py).
        middlewares=[request_id_middleware, count_requests, errors, route_guard],
        client_max_size=max_body,
    )
    app[NODE_KEY] = node
    app.router.add_put("/slices", upload)
    app.router.add_post("/slices/reserve", reserve)
    app.router.add_put("/slices/{slot}", fill)
    app.router.add_post("/slices/{slot}/relink", relink)
    app.router.add_get("/chain/{slot}", chain)
    add_file_routes(app)
    add_edit_file_routes(app)
    add_edit_routes(app)
    app.router.add_get("/slices/{slot}", read_slice)
    app.router.add_get("/slices/{slot}/meta", slice_meta)
    app.router.add_put("/internal/slices/{slot}", accept_replica)
    app.router.add_get("/internal/slices/{slot}", fetch_replica)
    app.router.add_get("/internal/holds/{slot}", holds)
    app.router.add_delete("/internal/slices/{slot}", delete_slice)
    add_report_routes(app)
    app.router.add_get("/health", health)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    return app
