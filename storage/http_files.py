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
downloaders do. ``gv=g:v,g:v`` (absent for a never-edited file) carries the entry's versions by
group: every run of the chain must come from a table at exactly that version (the reader's
rule); a read that finds the entry stale fails 409 ``stale_entry`` before the first byte (the
client asks the tracker again) and is cut short after it.
"""

from __future__ import annotations

import contextlib
import email.utils

from aiohttp import web

from mydfs.common.errors import Corrupt, InvalidArgument, NotFound, Unavailable
from mydfs.common.httprange import parse_range
from mydfs.common.location import Location
from mydfs.common.params import parse_finite, parse_hex_id, parse_uint, require_uint
from mydfs.common.readpath import SliceLoc
from mydfs.common.slices import PAYLOAD_CAPACITY
from mydfs.storage.http_common import NODE_KEY, broken_chain
from mydfs.storage.http_grants import require, token_of

#: Most slices a file may have (as many as the tracker places for one file at most).
MAX_FILE_SLICES = 1_000_000
#: Latest ``mtime`` accepted (year 5138; ``email.utils.formatdate`` fails past year 9999).
MAX_MTIME = 1e11


def _file_id(request: web.Request) -> str:
    text = parse_hex_id(request.query.get("file"), "query parameter file")
    assert text is not None
    return text


#: Most groups ``gv`` may name.
MAX_GV_GROUPS = 4096


def parse_gv(text: str | None) -> dict[int, int]:
    """``g:v,g:v`` (the entry's versions by group) as a mapping; empty when absent.
    :class:`InvalidArgument` for anything else."""
    if not text:
        return {}
    out: dict[int, int] = {}
    parts = text.split(",")
    if len(parts) > MAX_GV_GROUPS:
        raise InvalidArgument(f"gv names more than {MAX_GV_GROUPS} groups")
    for part in parts:
        group, sep, version = part.partition(":")
        if not sep or not (group.isascii() and group.isdigit()):
            raise InvalidArgument(f"bad gv entry {part[:40]!r}: use GROUP:VERSION", gv=text[:80])
        if not (version.isascii() and version.isdigit()) or len(group) > 9 or len(version) > 18:
            raise InvalidArgument(f"bad gv entry {part[:40]!r}: use GROUP:VERSION", gv=text[:80])
        if int(group) in out:
            raise InvalidArgument(f"gv names group {int(group)} twice", gv=text[:80])
        out[int(group)] = int(version)
    return out


def _shape(request: web.Request) -> tuple[int, int]:
    """``size`` and ``slices``, consistent with each other: every slice holds 1 byte to one
    slice's capacity, so a bad pair is a 400 here rather than a failed walk later."""
    size = require_uint(request.query.get("size"), "size", hi=MAX_FILE_SLICES * PAYLOAD_CAPACITY)
    slices = require_uint(request.query.get("slices"), "slices", hi=MAX_FILE_SLICES)
    if size > slices * PAYLOAD_CAPACITY or slices > size:
        raise InvalidArgument(
            f"size {size} does not fit {slices} slices of 1..{PAYLOAD_CAPACITY} bytes",
            size=size,
            slices=slices,
        )
    return size, slices


async def stream_file(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    token = token_of(request)
    size, slices = _shape(request)
    versions = parse_gv(request.query.get("gv"))
    version = parse_uint(request.query.get("version"), "version", default=1)
    file_id = parse_hex_id(request.query.get("file"), "file", required=False) or ""
    grant = require(node.config.secret, token, "read", file_id=file_id or None)
    mtime = parse_finite(request.query.get("mtime"), "mtime", lo=0, hi=MAX_MTIME, default=0.0)
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
        try:
            locs = await reader.chain(
                head,
                slices,
                size,
                file_id=file_id,
                grant=token or "",
                versions=versions,
                file=file_id,
            )
        except Corrupt as exc:
            raise broken_chain(exc) from None
        except Unavailable as exc:
            known = {node.group_id} | (set(node.tracker.groups) if node.tracker else set())
            if exc.context.get("group") in known:
                raise
            raise NotFound(
                f"the chain leads to group {exc.context.get('group')}, unknown to this cluster",
                **{**exc.context, "reason": "unknown_group"},
            ) from None
    response = web.StreamResponse(status=206 if rng else 200, headers=headers)
    response.content_length = length
    if rng is not None:
        response.headers["Content-Range"] = f"bytes {offset}-{offset + length - 1}/{size}"
    await response.prepare(request)
    if request.method == "HEAD" or length == 0:
        await response.write_eof()
        return response
    stream = reader.stream(locs, offset, offset + length, grant=token or "", edited=bool(versions))
    async with contextlib.aclosing(stream) as pieces:
        async for data in pieces:
            await response.write(data)
    await response.write_eof()
    return response


def add_file_routes(app: web.Application) -> None:
    app.router.add_get("/files/{path:.*}", stream_file)
