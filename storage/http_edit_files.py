"""Plain-HTTP edits and creates on a storage node: ``PATCH|POST|PUT /files/{path}``.

The tracker answers these routes with a 307 to a node (``tracker/edit_redirect.py``) whose URL
carries a **write grant bound to the path** (``grant``): curl drops ``Authorization`` on a
redirect to another port, so the grant is the caller's credential here. The route table
(``storage/http_routes.py``, protection ``path-write``) checks that it verifies, is a write
grant and is not expired before the body is read; :func:`_path_and_grant` binds it to the URL's
path (403 for another path or a file-id grant).

The node then acts for the caller: it parses the query (one operation; bad numbers, several
operations or unknown parameters are a 400 before anything is read), spools the body to a
temporary file under its data folder (bounded memory; removed afterwards, even on failure),
checks its length (a ``Content-Range`` body of another length is a 400 before the edit starts)
and runs the SDK (:class:`~mydfs.client.aio.AsyncClient`) against the tracker, signing every
tracker call with the cluster secret (the tracker takes that as role ``write``,
``tracker/auth.py``). So the guarantees are the SDK's: an edit is atomic, a ``PUT`` leaves no
file unless it completes.

| request | SDK call | answer |
| --- | --- | --- |
| ``PATCH`` + ``Content-Range: bytes a-b/*`` (or ``/N``) | ``write(path, a, body)`` | 200 entry |
| ``POST ?append`` | ``append(path, body)`` | 200 ``{"offset", "entry"}`` |
| ``POST ?truncate=N`` | ``truncate(path, N)`` | 200 entry |
| ``POST ?insert=N`` | ``insert(path, N, body)`` | 200 entry |
| ``POST ?cut=N&length=L`` | ``cut(path, N, L)`` | 200 entry |
| ``PUT [?overwrite=1]`` | ``put(path, body, overwrite=)`` | 201 entry |

Every route takes ``if_version=V``: an edit is then a compare-and-swap (409 ``conflict``
``reason=version``, nothing changed); a ``PUT`` checks the version before it starts (the
check and the replacement are two steps, not one).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from mydfs.client.aio import AsyncClient
from mydfs.client.editor import _Editor
from mydfs.common import grants
from mydfs.common.errors import Conflict, InvalidArgument, NotLeader, Unavailable
from mydfs.common.params import MAX_U64, is_uint_text, parse_flag, parse_uint
from mydfs.common.paths import from_url
from mydfs.common.web import json_response
from mydfs.storage.http_common import NODE_KEY
from mydfs.storage.http_grants import token_of

#: The operations ``POST`` takes (exactly one per request) and the parameters each allows.
POST_OPS = {"append": (), "truncate": (), "insert": (), "cut": ("length",)}
#: Parameters every route takes besides its operation's.
COMMON = ("if_version", grants.GRANT_PARAM)
#: Deadline of one SDK operation run for a caller (seconds).
DEADLINE = 120.0
_RANGE = re.compile(r"bytes ([0-9]+)-([0-9]+)/([0-9]+|\*)")
#: Holds the node's one SDK client toward the tracker, made at the first plain-HTTP edit and
#: kept (its session, the groups and leaders it has learnt), closed with the app.
SDK_KEY = web.AppKey("edit_sdk", list)


def parse_content_range(header: str | None) -> tuple[int, int]:
    """``bytes a-b/*`` or ``bytes a-b/N`` → (offset a, length b-a+1). :class:`InvalidArgument`
    for anything else (no header, another unit, b < a, numbers too long)."""
    if header is None:
        raise InvalidArgument("PATCH needs a Content-Range: bytes a-b/* header")
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        raise InvalidArgument(
            f"Content-Range must be 'bytes a-b/*' or 'bytes a-b/N', got {header[:64]!r}",
            field="Content-Range",
        )
    first, last, total = match.groups()
    if not (is_uint_text(first) and is_uint_text(last)) or (
        total != "*" and not is_uint_text(total)
    ):
        raise InvalidArgument("Content-Range numbers are too long", field="Content-Range")
    a, b = int(first), int(last)
    if b < a or b > MAX_U64:
        raise InvalidArgument(f"Content-Range {a}-{b} is empty or too large", field="Content-Range")
    if total != "*" and int(total) <= b:
        raise InvalidArgument(f"Content-Range total {total} is not past {b}", field="Content-Range")
    return a, b - a + 1


def _check_keys(query: Any, allowed: tuple[str, ...]) -> None:
    extra = sorted(k for k in query if k not in allowed)
    if extra:
        raise InvalidArgument(f"unexpected query parameters: {', '.join(extra)}", params=extra)
    for key in query:
        if len(query.getall(key)) > 1:
            raise InvalidArgument(f"query parameter {key} given more than once", field=key)


def post_op(query: Any) -> tuple[str, int, int]:
    """A ``POST``'s one operation: (kind, offset or size, length). 400 for none, several, an
    unknown parameter or a bad number."""
    ops = [k for k in POST_OPS if k in query]
    if len(ops) != 1:
        raise InvalidArgument(
            "POST /files takes exactly one of ?append, ?truncate=N, ?insert=N, ?cut=N&length=L",
            given=ops,
        )
    kind = ops[0]
    _check_keys(query, (kind, *POST_OPS[kind], *COMMON))
    if kind == "append":
        if query["append"] not in ("", "1"):
            raise InvalidArgument("append takes no value", field="append")
        return kind, 0, 0
    number = parse_uint(query[kind], kind, required=True)
    assert number is not None
    length = parse_uint(query.get("length"), "length", required=True) if kind == "cut" else 0
    return kind, number, length or 0


def _path_and_grant(request: web.Request) -> str:
    """The file path of the URL; 403 unless the request's write grant names exactly it."""
    raw = request.raw_path.split("?", 1)[0]
    if not raw.startswith("/files/"):
        raise InvalidArgument(f"bad request path {raw!r}")
    path = from_url(raw[len("/files/") :])
    secret = request.app[NODE_KEY].config.secret
    grants.check(secret, token_of(request), op="write", path=path)
    return path


async def _spool(request: web.Request, into: Path, most: int | None) -> int:
    """Copy the body into ``into``; its length. Stops (400) past ``most`` bytes, when given;
    each chunk must arrive within the node's ``body_timeout``."""
    timeout = request.app[NODE_KEY].config.limits.body_timeout
    size = 0
    with into.open("wb") as out:
        while True:
            try:
                async with asyncio.timeout(timeout):
                    chunk = await request.content.readany()
            except TimeoutError:
                raise InvalidArgument(f"request body stalled for {timeout:g} s") from None
            if not chunk:
                return size
            size += len(chunk)
            if most is not None and size > most:
                raise InvalidArgument(f"the body is longer than {most} bytes", length=most)
            out.write(chunk)


def _expect_length(request: web.Request, want: int | None) -> None:
    """A ``Content-Length`` that contradicts the expected length is a 400 before reading."""
    given = request.headers.get("Content-Length")
    if want is None or given is None:
        return
    if not is_uint_text(given) or int(given) != want:
        raise InvalidArgument(f"the body has {given} bytes, Content-Range says {want}", length=want)


async def _run(request: web.Request, *, want: int | None, body: bool, call: Any) -> Any:
    """Spool the body (``body``; else none is allowed) and run ``call(client, spool_path)``."""
    node = request.app[NODE_KEY]
    if not node.config.tracker:
        raise Unavailable("this storage node knows no tracker")
    _expect_length(request, want)
    folder = Path(node.config.data_dir) / "http-spool"
    folder.mkdir(mode=0o700, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="body-", dir=folder)
    os.close(fd)
    spool = Path(name)
    try:
        size = await _spool(request, spool, want if want is not None else (None if body else 0))
        if want is not None and size != want:
            raise InvalidArgument(f"the body has {size} bytes, Content-Range says {want}")
        try:
            return await call(_sdk(request.app), str(spool))
        except NotLeader as exc:  # never a redirect of the caller's request
            raise Unavailable(f"a group leader moved: {exc.message}") from None
    finally:
        with contextlib.suppress(OSError):
            spool.unlink()


def _sdk(app: web.Application) -> AsyncClient:
    """The node's SDK client (made on first use; see :data:`SDK_KEY`)."""
    held: list[AsyncClient] = app[SDK_KEY]
    if not held:
        node = app[NODE_KEY]
        held.append(
            AsyncClient(
                node.config.tracker,
                secret=node.config.secret,
                ca=node.config.tls_ca,
                deadline=DEADLINE,
            )
        )
    return held[0]


async def _close_sdk(app: web.Application) -> None:
    for client in app[SDK_KEY]:
        await client.close()


def _if_version(request: web.Request) -> int | None:
    return parse_uint(request.query.get("if_version"), "if_version")


async def patch_file(request: web.Request) -> web.Response:
    """``PATCH /files/{path}`` + ``Content-Range``: overwrite at an offset."""
    path = _path_and_grant(request)
    _check_keys(request.query, COMMON)
    version = _if_version(request)
    offset, length = parse_content_range(request.headers.get("Content-Range"))

    async def call(c: AsyncClient, src: str) -> Any:
        return await c.write(path, offset, src, if_version=version)

    entry = await _run(request, want=length, body=True, call=call)
    return json_response(entry.to_dict())


async def post_file(request: web.Request) -> web.Response:
    """``POST /files/{path}?append|truncate=N|insert=N|cut=N&length=L``."""
    path = _path_and_grant(request)
    kind, number, length = post_op(request.query)
    version = _if_version(request)

    async def call(c: AsyncClient, src: str) -> Any:
        if kind == "truncate":
            return await c.truncate(path, number, if_version=version)
        if kind == "cut":
            return await c.cut(path, number, length, if_version=version)
        if kind == "insert":
            return await c.insert(path, number, src, if_version=version)
        # The entry and the offset of this very append (append() returns the offset only).
        entry, offset = await _Editor(c).run(path, "append", 0, src, version)
        return {"offset": offset, "entry": entry.to_dict()}

    answer = await _run(request, want=None, body=kind in ("append", "insert"), call=call)
    return json_response(answer if isinstance(answer, dict) else answer.to_dict())


async def put_file(request: web.Request) -> web.Response:
    """``PUT /files/{path}[?overwrite=1]``: create (or replace) the whole file."""
    path = _path_and_grant(request)
    _check_keys(request.query, ("overwrite", *COMMON))
    overwrite = parse_flag(request.query.get("overwrite"), "overwrite")
    version = _if_version(request)

    async def call(c: AsyncClient, src: str) -> Any:
        if version is not None:
            current = await c.stat(path)
            if current.version != version:
                raise Conflict(
                    f"the file is at version {current.version}, not {version}",
                    path=path,
                    reason="version",
                    version=current.version,
                )
        return await c.put(path, src, overwrite=overwrite or version is not None)

    entry = await _run(request, want=None, body=True, call=call)
    return json_response(entry.to_dict(), status=201)


def add_edit_file_routes(app: web.Application) -> None:
    """Register ``PATCH|POST|PUT /files/{path}`` (protection ``path-write``)."""
    app.router.add_patch("/files/{path:[\\s\\S]*}", patch_file)
    app.router.add_post("/files/{path:[\\s\\S]*}", post_file)
    app.router.add_put("/files/{path:[\\s\\S]*}", put_file)
    app[SDK_KEY] = []
    app.on_cleanup.append(_close_sdk)
