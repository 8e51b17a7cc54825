"""An HTTP server that does nothing: the round-trip limit for the benchmark's client loop.

    python -m mydfs.bench.nullserver --port PORT

Run in its own process on 127.0.0.1 by :class:`~mydfs.bench.systems.NullSystem`. Every answer is
ready-made, so what the client loop measures against it is the cost of one aiohttp request and
response on this machine (client and server both in Python, on the same cores as everything):

* ``PUT /f/<path>``: reads the body, drops it, answers 201;
* ``GET /f/<path>?size=N``: answers N zero bytes;
* ``GET /stat/<path>``: answers a small JSON entry, shaped like a file's;
* ``GET /list/<path>?n=N``: answers a JSON listing of N such entries.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson
from aiohttp import web

_ZEROS: dict[int, bytes] = {}


def _entry(path: str) -> dict[str, Any]:
    return {
        "path": path,
        "file_id": "0" * 32,
        "size": 65536,
        "slices": 1,
        "head": [1, 42],
        "hash": "crc32c:00000000",
        "ctime": 1.0,
        "mtime": 1.0,
        "version": 1,
    }


async def _put(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=201, body=b'{"ok":true}', content_type="application/json")


async def _get(request: web.Request) -> web.Response:
    size = min(int(request.query.get("size", "0")), 64 << 20)
    body = _ZEROS.get(size)
    if body is None:
        body = _ZEROS[size] = bytes(size)
    return web.Response(body=body, content_type="application/octet-stream")


async def _stat(request: web.Request) -> web.Response:
    return web.Response(
        body=orjson.dumps(_entry("/" + request.match_info["tail"])),
        content_type="application/json",
    )


async def _list(request: web.Request) -> web.Response:
    n = min(int(request.query.get("n", "50")), 10_000)
    base = "/" + request.match_info["tail"]
    entries = [
        {"name": f"f{i:06d}", "type": "file", **_entry(f"{base}/f{i:06d}")} for i in range(n)
    ]
    return web.Response(body=orjson.dumps({"entries": entries}), content_type="application/json")


def make_app() -> web.Application:
    app = web.Application(client_max_size=1 << 30)
    app.router.add_put("/f/{tail:.*}", _put)
    app.router.add_get("/f/{tail:.*}", _get)
    app.router.add_get("/stat/{tail:.*}", _stat)
    app.router.add_get("/list/{tail:.*}", _list)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mydfs.bench.nullserver", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    web.run_app(make_app(), host="127.0.0.1", port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
