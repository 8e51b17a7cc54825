"""What every aiohttp server of mydfs (tracker and storage nodes) shares: JSON replies, the one
error body, and the one error middleware."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import Counter, Histogram

from mydfs.common.errors import MydfsError, NotLeader, PayloadTooLarge, Redirect, SliceMoved

log = logging.getLogger(__name__)


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


def moved_response(exc: SliceMoved, group_id: int | None) -> web.Response:
    """A 301 marker: the error body, ``X-Mydfs-Target: group:slot``, and ``Location`` when the
    target is in this server's group."""
    response = error_response(exc)
    response.set_status(301)
    response.headers["X-Mydfs-Target"] = f"{exc.target[0]}:{exc.target[1]}"
    if group_id is not None and exc.target[0] == group_id:
        response.headers["Location"] = f"/slices/{exc.target[1]}"
    return response


def error_middleware(
    requests: Counter,
    latency: Histogram,
    *,
    max_body: int,
    group_id: int | None = None,
    context: Mapping[str, Any] | None = None,
) -> Middleware:
    """The error middleware of every mydfs server.

    A :class:`MydfsError` becomes its wire form (:func:`error_response`); a
    :class:`~mydfs.common.errors.Redirect`, or a ``NotLeader`` naming the leader, a 307 to that
    URL with the same path and query; a ``SliceMoved`` a 301 (:func:`moved_response`, ``group_id``
    being this server's group, if any); a body over ``max_body`` a 413 ``payload_too_large``;
    anything unexpected a logged 500 ``error`` carrying ``context``. Every request is counted in
    ``requests`` (route, method, status) and timed in ``latency`` (route)."""
    internal = dict(context or {})

    @web.middleware
    async def errors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "?"
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except Redirect as exc:
            status = 307
            raise web.HTTPTemporaryRedirect(exc.url + request.path_qs) from None
        except NotLeader as exc:
            if exc.leader:
                status = 307
                raise web.HTTPTemporaryRedirect(exc.leader + request.path_qs) from None
            status = exc.status
            return error_response(exc)
        except SliceMoved as exc:
            status = 301
            return moved_response(exc, group_id)
        except MydfsError as exc:
            status = exc.status
            if status >= 500 and not exc.retryable:
                log.error("%s %s: %s", request.method, request.path, exc)
            return error_response(exc)
        except web.HTTPException as exc:
            status = exc.status
            if exc.status == 413:
                return error_response(
                    PayloadTooLarge(f"request body larger than {max_body} bytes", limit=max_body)
                )
            raise
        except (ConnectionResetError, asyncio.CancelledError):
            status = 499
            raise
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return error_response(MydfsError("internal error", **internal))
        finally:
            requests.labels(route, request.method, str(status)).inc()
            latency.labels(route).observe(time.perf_counter() - started)

    return errors_and_metrics
