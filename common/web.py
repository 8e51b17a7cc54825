"""JSON replies shared by every aiohttp server of mydfs (tracker and storage nodes)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from mydfs.common.errors import MydfsError


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def error_response(exc: MydfsError) -> web.Response:
    """The wire form of an error: its JSON body, its HTTP status, Retry-After when retryable,
    and for a 416 the ``Content-Range: bytes */size`` RFC 9110 asks for."""
    headers = {"Retry-After": "1"} if exc.retryable else None
    status = exc.status if 400 <= exc.status < 600 else 500
    if status == 416 and "size" in exc.context:
        headers = {"Content-Range": f"bytes */{exc.context['size']}"}
    return json_response(exc.to_dict(), status=status, headers=headers)
