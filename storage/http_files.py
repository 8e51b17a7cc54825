"""Whole-file download over plain HTTP: ``GET|HEAD /files/{path}`` on any storage node.

The tracker answers ``GET /files/<path>`` with a 307 to a node of the file's head group, adding
the file entry in the query (``head``, ``size``, ``slices``, ``file``, ``mtime``, ``version``).
The node walks the chain (one walk per group run, ``/chain`` on other groups) and streams the
slices in order, reading its own from disk and the others from their groups' replicas, one
slice ahead. Content-Length, ETag, Last-Modified, HEAD and one Range work, so curl,
``wget -c`` and multi-connection downloaders do.
"""

from __future__ import annotations

import asyncio
import email.utils
from typing import Any

from aiohttp import web

from mydfs.common.errors import Corrupt, InvalidArgument
from mydfs.common.httprange import parse_range
from mydfs.common.location import Location
from mydfs.storage.http_common import NODE_KEY


def _query_int(request: web.Request, name: str) -> int:
    text = request.query.get(name, "")
    if not text.isdigit():
        raise InvalidArgument(f"query parameter {name} must be a non-negative integer")
    return int(text)


async def stream_file(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
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
    entries: list[dict[str, Any]] = []
    if size:
        if head is None:
            raise InvalidArgument("a non-empty file needs head=GROUP:SLOT")
        entries = await node.chain(head, slices)
        total = sum(int(e["length"]) for e in entries)
        if len(entries) != slices or total != size:
            raise Corrupt(
                f"chain has {len(entries)} slices / {total} bytes, file entry says "
                f"{slices} / {size}",
                file=file_id,
            )
    response = web.StreamResponse(status=206 if rng else 200, headers=headers)
    response.content_length = length
    if rng is not None:
        response.headers["Content-Range"] = f"bytes {offset}-{offset + length - 1}/{size}"
    await response.prepare(request)
    if request.method == "HEAD" or length == 0:
        await response.write_eof()
        return response
    # The pieces of each slice that overlap [offset, offset + length), fetched one ahead.
    pieces: list[tuple[dict[str, Any], int, int]] = []
    pos = 0
    for entry in entries:
        start, end = pos, pos + int(entry["length"])
        pos = end
        lo, hi = max(offset, start), min(offset + length, end)
        if lo < hi:
            pieces.append((entry, lo - start, hi - lo))
    ahead: asyncio.Task[bytes] | None = None
    try:
        for i, (entry, lo, n) in enumerate(pieces):
            current = ahead or asyncio.ensure_future(node.slice_bytes(entry, lo, n))
            ahead = None
            if i + 1 < len(pieces):
                nxt = pieces[i + 1]
                ahead = asyncio.ensure_future(node.slice_bytes(*nxt))
            data = await current
            await response.write(data)
    finally:
        if ahead is not None:
            ahead.cancel()
    await response.write_eof()
    return response


def add_file_routes(app: web.Application) -> None:
    app.router.add_get("/files/{path:.*}", stream_file)
