"""HTTP plumbing of the SDK: JSON calls with typed errors, and retries with backoff.

Every call the SDK makes goes through :class:`Transport`: it maps HTTP answers to the mydfs
error hierarchy (the JSON body carries the code), follows 307 redirects for writes by hand
(so the body is sent again to the new leader), and retries what is retryable — connection
errors, 503, timeouts — with exponential backoff up to a deadline.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import orjson
from yarl import URL

from mydfs.common.errors import MydfsError, NotLeader, Timeout, Unavailable
from mydfs.common.http_errors import error_of

T = TypeVar("T")
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff from ``first`` doubling to ``cap`` seconds, for at most ``deadline`` seconds."""

    deadline: float = 30.0
    first: float = 0.05
    cap: float = 1.0


class Transport:
    """One aiohttp session plus the retry and error rules of the SDK."""

    def __init__(self, session: aiohttp.ClientSession, policy: RetryPolicy) -> None:
        self.session = session
        self.policy = policy

    async def retry(self, what: str, attempt: Callable[[], Awaitable[T]], **context: Any) -> T:
        """Run ``attempt`` until it succeeds, fails for good, or the deadline passes."""
        deadline = time.monotonic() + self.policy.deadline
        delay = self.policy.first
        last: BaseException | None = None
        while True:
            try:
                return await attempt()
            except MydfsError as exc:
                if not exc.retryable:
                    for key, value in context.items():
                        if value is not None:
                            exc.context.setdefault(key, value)
                    raise
                last = exc
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
                last = exc
            if time.monotonic() + delay > deadline:
                break
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.policy.cap)
        # The last error's text without its context, which joins the Timeout's (said once).
        detail = last.message if isinstance(last, MydfsError) else last
        where = dict(last.context) if isinstance(last, MydfsError) else {}
        where.update(context)
        raise Timeout(f"{what} did not succeed within {self.policy.deadline:g}s: {detail}", **where)

    async def json(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        ok: tuple[int, ...] = (200, 201),
        timeout: float = 30.0,
        **context: Any,
    ) -> Any:
        """One JSON call (no retry): the decoded body, or the typed error."""
        data = None if body is None else orjson.dumps(body)
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            async with self.session.request(
                method,
                url,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as resp:
                if resp.status in (301, 302, 307, 308) and "Location" in resp.headers:
                    raise NotLeader("redirected", leader=_origin(resp.headers["Location"]))
                if resp.status not in ok:
                    raise await error_of(resp, **context)
                return orjson.loads(await resp.read())
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise Unavailable(
                f"{method} {url} failed: {exc or type(exc).__name__}", **context
            ) from exc

    async def put_bytes(
        self,
        url: str,
        data: bytes,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
        **context: Any,
    ) -> Any:
        """PUT a body, re-sending it to the target of a 307 (a follower pointing at the leader)."""
        for _ in range(MAX_REDIRECTS):
            try:
                async with self.session.put(
                    url,
                    data=data,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                    allow_redirects=False,
                ) as resp:
                    if resp.status in (307, 308) and "Location" in resp.headers:
                        url = str(resp.url.join(URL(resp.headers["Location"])))
                        continue
                    if resp.status not in (200, 201):
                        raise await error_of(resp, **context)
                    return orjson.loads(await resp.read())
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                raise Unavailable(
                    f"PUT {url} failed: {exc or type(exc).__name__}", **context
                ) from exc
        raise Unavailable("too many redirects", url=url, **context)


def _origin(location: str) -> str:
    """``http://host:port`` of a redirect target."""
    from urllib.parse import urlsplit

    parts = urlsplit(location)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else location
