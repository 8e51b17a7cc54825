"""Request ids: made once per operation, carried on every HTTP call, written on every log line.

The SDK makes one id per public operation (:func:`traced`), or takes the caller's
(:func:`use_request_id`), and sends it as ``X-Request-Id`` on every request of that operation
(:func:`client_trace_config`). A server takes the header when it is a sane token, else makes a
new id, and keeps it in :data:`REQUEST_ID` while the request is handled
(:func:`request_id_middleware`); a storage node's calls to its peers carry it on. Every log line
written meanwhile names it (:func:`configure_logging`: `` rid=<id>`` in text, ``request_id``
in JSON). See ``docs/monitoring.md``.
"""

from __future__ import annotations

import functools
import logging
import re
import secrets
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, ParamSpec, TypeVar

import aiohttp
import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

HEADER = "X-Request-Id"
#: The id of the request being handled (server) or of the operation running (SDK), if any.
REQUEST_ID: ContextVar[str | None] = ContextVar("mydfs_request_id", default=None)
#: What a request id taken from the wire may look like; anything else is replaced.
_SANE = re.compile(r"[A-Za-z0-9._-]{1,64}")
LOG_FORMATS = ("text", "json")

_P = ParamSpec("_P")
_T = TypeVar("_T")
log = logging.getLogger("mydfs.http")


def new_request_id() -> str:
    """A fresh id: 16 random hex digits."""
    return secrets.token_hex(8)


def sane_request_id(value: str | None) -> str | None:
    """``value`` if it is 1-64 of ``[A-Za-z0-9._-]``, else None."""
    return value if value is not None and _SANE.fullmatch(value) else None


@contextmanager
def use_request_id(request_id: str | None = None) -> Iterator[str]:
    """Run the block under ``request_id`` (a new one if None); yields the id."""
    rid = request_id or new_request_id()
    token = REQUEST_ID.set(rid)
    try:
        yield rid
    finally:
        REQUEST_ID.reset(token)


def traced(
    fn: Callable[_P, Coroutine[Any, Any, _T]],
) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """Run the coroutine function under a new request id, unless one is already set."""

    @functools.wraps(fn)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        if REQUEST_ID.get() is not None:
            return await fn(*args, **kwargs)
        with use_request_id():
            return await fn(*args, **kwargs)

    return wrapper


# --- HTTP --------------------------------------------------------------------------------------


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Handle the request under its id (the sane ``X-Request-Id`` it carries, else a new one),
    echo the id in the response's ``X-Request-Id``, and log the request at DEBUG."""
    rid = sane_request_id(request.headers.get(HEADER)) or new_request_id()
    with use_request_id(rid):
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers[HEADER] = rid
            log.debug("%s %s -> %d", request.method, request.path, exc.status)
            raise
        if not response.prepared:
            response.headers[HEADER] = rid
        log.debug("%s %s -> %d", request.method, request.path, response.status)
        return response


async def _add_header(
    session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestStartParams
) -> None:
    rid = REQUEST_ID.get()
    if rid is not None and HEADER not in params.headers:
        params.headers[HEADER] = rid


def client_trace_config() -> aiohttp.TraceConfig:
    """For a client session: every request made under a request id carries it."""
    config = aiohttp.TraceConfig()
    config.on_request_start.append(_add_header)
    return config


# --- logging -----------------------------------------------------------------------------------


class RequestIdFilter(logging.Filter):
    """Puts ``request_id`` (the id or None) and ``rid`` (`` rid=<id>`` or "") on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = REQUEST_ID.get()
        record.request_id = rid
        record.rid = f" rid={rid}" if rid else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, node, logger, message, request_id when
    set, exc when the record carries an exception."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "node": self.node,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            entry["request_id"] = rid
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str, fmt: str, node: str) -> None:
    """Log to stderr at ``level`` in ``fmt`` (text or json), every line naming ``node`` (a node
    id, or ``tracker``) and the request id when there is one."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter(node))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {node} %(name)s%(rid)s: %(message)s")
        )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
