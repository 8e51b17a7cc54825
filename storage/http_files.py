"""Whole-file download over plain HTTP: ``GET|HEAD /files/{path}`` on any storage node.

The tracker answers ``GET /files/<path>`` with a 307 to a node of the file's head group, adding
the file entry in the query (``head``, ``size``, ``slices``, ``file``, ``mtime``, ``version``).
The node reads through the shared read path (``storage/file_reader.py`` around
``common/readpath.py``): it walks the chain (its own group's runs in its table, ``/chain`` on
other groups) and streams the slices in order, reading its own from disk and the others from
their groups' replicas, one slice ahead. ``file`` (the file id) is required for a non-empty
file: every run of the chain and every slice served must name it as owner (the reader's rule
in ``docs/client.md``), so a stale table never streams another file's bytes. The request must
carry a read grant for that file (the ``grant`` query parameter the tracker's 307 adds, or the
``X-Mydfs-Grant`` header); the node forwards it to the other nodes it reads from. Content-Length,
ETag, Last-Modified, HEAD and one Range work, so curl, ``wget -c`` and multi-connection
downloaders do.
"""

from __future__ import annotations

import contextlib
import email.utils

from aiohttp import web

from mydfs.common.errors import InvalidArgument
from mydfs.common.httprange import parse_range
from mydfs.common.location import Location
from mydfs.common.readpath import SliceLoc
from mydfs.storage.http_common import NODE_KEY
from mydfs.storage.http_grants import require, token_of


def _file_id(request: web.Request) -> str:
    text = request.query.get("file", "")
    if len(text) != 32 or any(c not in "0123456789abcdef" for c in text):
        raise InvalidArgument("query parameter file must be the file id (32 lowercase hex digits)")
    return text


def _query_int(request: web.Request, name: str) -> int:
    text = request.query.get(name, "")
    if not text.isdigit():
        raise InvalidArgument(f"query parameter {name} must be a non-negative integer")
    return int(text)


async def stream_file(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    token = token_of(request)
    grant = require(node.config.secret, token, "read", file_id=request.query.get("file") or None)
    size = _query_int(request, "size")
    slices = _query_int(request, "slices")
    version = request.query.get("version", "1")
    file_id = request.query.get("file", "")
    mtime_text = request.query.get("mtime", "0")
    try:
        mtime = float(mtime_text)
    except ValueError:
        raise InvalidArgument(f"query parameter mtime={mtime_text!r} is not a number") from None
    head_text = request.query.get("head", "none")
    head = None if head_text in ("", "none") else Location.parse(head_text)
    headers = {
        "ETag": f'"{file_id}-{version}"',
        "Last-Modified": email.utils.formatdate(mtime, usegmt=True),
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
    }
    rng = parse_range(request.headers.get("Range"), size) if size else None
    if request.headers.get("If-Range") not in (None, headers["ETag"]):
        rng = None  # the client holds another version: send the whole file
    offset, length = rng if rng is not None else (0, size)
    reader = node.file_reader()
    locs: list[SliceLoc] = []
    if size:
        if head is None:
            raise InvalidArgument("a non-empty file needs head=GROUP:SLOT")
        file_id = _file_id(request)
        if file_id != grant.file_id:
            raise InvalidArgument("query parameter file must name the grant's file")
        locs = await reader.chain(
            head, slices, size, file_id=file_id, grant=token or "", file=file_id
        )
    response = web.StreamResponse(status=206 if rng else 200, headers=headers)
    response.content_length = length
    if rng is not None:
        response.headers["Content-Range"] = f"bytes {offset}-{offset + length - 1}/{size}"
    await response.prepare(request)
    if request.method == "HEAD" or length == 0:
        await response.write_eof()
        return response
    stream = reader.stream(locs, offset, offset + length, grant=token or "")
    async with contextlib.aclosing(stream) as pieces:
        async for data in pieces:
            await response.write(data)
    await response.write_eof()
    return response


def add_file_routes(app: web.Application) -> None:
    app.router.add_get("/files/{path:.*}", stream_file)
