"""Reading a mydfs error back from an HTTP answer: the caller's side of the error body that
every mydfs server sends (``common/web.py``)."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from mydfs.common.errors import MydfsError, NotFound, Unavailable, error_from_dict


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
