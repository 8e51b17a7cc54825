"""Limits every mydfs HTTP server applies to its clients: config keys, defaults, and the runner
that enforces the connection-level ones.

* Header size: a request line longer than ``max_request_line`` bytes, a header line longer than
  ``max_header_bytes`` or more than ``max_headers`` header lines get a 400 from the HTTP parser.
  The default request line (16 KiB) fits the longest valid path (4096 bytes, every byte
  percent-quoted) with its query.
* Header time: a connection that has not sent a complete request head within
  ``header_timeout`` seconds of opening gets a 408 and is closed; an idle keep-alive
  connection is closed a second later. So a slow client cannot hold a connection open.
* Body time: a request body not received within ``body_timeout`` seconds answers 408
  (:func:`read_body`).
* Body size: a body route refuses a ``Content-Length`` over its bound with 413 before reading
  a byte (:func:`read_body`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from mydfs.common.config import ConfigError, Option
from mydfs.common.errors import InvalidArgument, PayloadTooLarge, RequestTimeout

LIMIT_OPTIONS: tuple[Option, ...] = (
    Option(
        "max_request_line", "int", 16384, "longest HTTP request line (method, path, query), bytes"
    ),
    Option("max_header_bytes", "int", 8190, "longest HTTP header line, bytes"),
    Option("max_headers", "int", 100, "most header lines in one request"),
    Option(
        "header_timeout",
        "float",
        30.0,
        "seconds to send a request head (else 408, closed); idle keep-alive: this + 1 s",
    ),
    Option("body_timeout", "float", 60.0, "seconds to send a request body (else 408)"),
)


@dataclass(frozen=True)
class Limits:
    max_request_line: int = 16384
    max_header_bytes: int = 8190
    max_headers: int = 100
    header_timeout: float = 30.0
    body_timeout: float = 60.0

    def handler_args(self) -> dict[str, Any]:
        """Keyword arguments for aiohttp's request handler (``web.AppRunner(app, **...)``)."""
        return {
            "max_line_size": self.max_request_line,
            "max_field_size": self.max_header_bytes,
            "max_headers": self.max_headers,
            # A second more than the head deadline, so a slow first head gets its 408 from the
            # sweep (_GuardedServer) before aiohttp's keep-alive check closes it silently.
            "keepalive_timeout": self.header_timeout + 1.0,
        }


def limits_from_values(v: dict[str, Any]) -> Limits:
    """Check the limit keys of a merged config; a bad one raises a one-line ConfigError."""
    for key, lo, hi in (
        ("max_request_line", 1024, 1 << 20),
        ("max_header_bytes", 1024, 1 << 20),
        ("max_headers", 8, 10_000),
    ):
        if not lo <= v[key] <= hi:
            raise ConfigError(f"config key {key}: must be between {lo} and {hi}")
    for key in ("header_timeout", "body_timeout"):
        if not 0.1 <= v[key] <= 86400:
            raise ConfigError(f"config key {key}: must be between 0.1 and 86400 seconds")
    return Limits(
        max_request_line=v["max_request_line"],
        max_header_bytes=v["max_header_bytes"],
        max_headers=v["max_headers"],
        header_timeout=v["header_timeout"],
        body_timeout=v["body_timeout"],
    )


def check_length(request: web.Request, limit: int, what: str = "request body") -> int | None:
    """The declared ``Content-Length`` (None for a chunked body); 413 when it exceeds ``limit``,
    before anything is read."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"{what} of {length} bytes exceeds {limit}", limit=limit)
    return length


async def read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    """The whole body, at most ``limit`` bytes (413, checked on Content-Length first), received
    within ``timeout`` seconds (408)."""
    length = check_length(request, limit)
    try:
        async with asyncio.timeout(timeout):
            if length is not None:
                return await request.content.readexactly(length)
            data = bytearray()
            while chunk := await request.content.readany():
                data += chunk
                if len(data) > limit:
                    raise PayloadTooLarge(f"request body exceeds {limit} bytes", limit=limit)
            return bytes(data)
    except asyncio.IncompleteReadError as exc:
        raise InvalidArgument(f"body ended after {len(exc.partial)} of {length} bytes") from None
    except TimeoutError:
        raise RequestTimeout(f"request body not received within {timeout:g} s") from None


_TIMEOUT_BODY = orjson.dumps(
    {"error": "request_timeout", "message": "request head not received in time", "context": {}}
)
_TIMEOUT_REPLY = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n"
) + _TIMEOUT_BODY


class _GuardedServer:
    """aiohttp's protocol factory, plus a deadline for each new connection's first request head
    (later ones are covered by the keep-alive timeout). One sweep every fraction of the timeout
    checks the connections still waiting, so a closed connection is let go at the next sweep
    rather than held until its deadline."""

    def __init__(self, server: web.Server, timeout: float) -> None:
        self._server = server
        self._timeout = timeout
        self._period = min(0.5, timeout / 4)
        self._waiting: dict[RequestHandler, float] = {}  # connection -> deadline (loop time)
        self._sweeping = False

    def __call__(self) -> RequestHandler:
        proto = self._server()
        loop = asyncio.get_running_loop()
        self._waiting[proto] = loop.time() + self._timeout
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(self._period, self._sweep, loop)
        return proto

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for proto, deadline in list(self._waiting.items()):
            transport = proto.transport
            # aiohttp counts a request once its head is parsed; none yet: a slow or silent client.
            started: int = getattr(proto, "_request_count", 1)
            if transport is None or transport.is_closing() or started:
                del self._waiting[proto]
            elif now >= deadline:
                transport.write(_TIMEOUT_REPLY)
                transport.close()
                del self._waiting[proto]
        if self._waiting:
            loop.call_later(self._period, self._sweep, loop)
        else:
            self._sweeping = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


class _ClientErrorsQuiet(logging.Filter):
    """aiohttp logs a malformed request (bad request line, header too long, ...) with a
    traceback at ERROR; it is the client's fault and already answered 400, so it becomes one
    DEBUG line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 500) < 500:
            record.msg = f"{record.getMessage()}: {exc.code} {exc.message}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_QUIET = _ClientErrorsQuiet()


class LimitedRunner(web.AppRunner):
    """``web.AppRunner`` with :class:`Limits` applied to every connection (and no tracebacks
    logged for requests the HTTP parser refuses)."""

    def __init__(self, app: web.Application, limits: Limits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs, **limits.handler_args())
        self._limits = limits
        server_log = logging.getLogger("aiohttp.server")
        if _QUIET not in server_log.filters:
            server_log.addFilter(_QUIET)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        guarded: Any = _GuardedServer(server, self._limits.header_timeout)
        return guarded  # type: ignore[no-any-return]
