"""The wire form of mydfs answers over HTTP, both ways: the JSON replies every aiohttp server
of mydfs (tracker and storage nodes) sends, and the typed error a caller reads back from one."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from aiohttp import web

from mydfs.common.errors import MydfsError, NotFound, Unavailable, error_from_dict


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


async def error_of(resp: aiohttp.ClientResponse, **context: Any) -> MydfsError:
    """The typed error of a non-2xx answer: from its JSON body when it has one, else from the
    status (503 Unavailable, 404 NotFound, anything else a plain MydfsError)."""
    text = await resp.text()
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and "error" in body:
        err = error_from_dict(body)
    elif resp.status == 503:
        err = Unavailable(f"HTTP 503 from {resp.url.host}:{resp.url.port}")
    elif resp.status == 404:
        err = NotFound("not found")
    else:
        err = MydfsError(f"HTTP {resp.status}: {text[:200]}")
    for key, value in context.items():
        if value is not None:
            err.context.setdefault(key, value)
    return err
