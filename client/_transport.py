"""HTTP plumbing of the SDK: JSON calls with typed errors, per-request deadlines, liveness
probes, and retries with backoff.

Every call the SDK makes goes through :class:`Transport`: it maps HTTP answers to the mydfs
error hierarchy (the JSON body carries the code), follows 307 redirects for writes by hand
(so the body is sent again to the new leader), and retries what is retryable — connection
errors, 503, timeouts — with exponential backoff up to the operation's deadline.

Deadlines (:class:`RetryPolicy`, documented in ``docs/client.md``): each request has its own
connect and idle deadlines, and a request that stays silent for ``suspect`` seconds makes the
transport ask the node's ``/health`` (one probe per node at a time, shared by every waiting
request). A node that does not answer that probe within ``probe`` seconds — a paused process
whose kernel still accepts connections, a partitioned host — is marked *suspected* for
``suspect_for`` seconds and the request fails at once as :class:`Unavailable` (retryable), so
the caller can go elsewhere (the SDK then looks for the group's new leader). A node that
answers its probe is merely busy: the request goes on waiting, up to ``idle`` seconds of
silence.
"""

from __future__ import annotations

import asyncio
import random
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import orjson
from yarl import URL

from mydfs.common.auth import AUTH_HEADER, sign
from mydfs.common.errors import MydfsError, NotLeader, Timeout, Unavailable
from mydfs.common.http_errors import error_of

T = TypeVar("T")
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class RetryPolicy:
    """Retry and deadline rules of the SDK, in seconds.

    ``deadline`` bounds one operation (every attempt and backoff pause included); the backoff
    starts at ``first`` and doubles up to ``cap``, or up to ``cap_away`` while the last failure
    says a node or a leader is away (:class:`Unavailable`, a connection error): a group elects
    a new leader within about a second, and a long pause then only adds to the failover.

    Each request gets ``connect`` seconds to connect and may stay silent (no byte of the answer)
    for at most ``idle`` seconds; after ``suspect`` seconds of silence its node is probed
    (``GET /health``, ``probe`` seconds), and a node that fails the probe is skipped for
    ``suspect_for`` seconds.
    """

    deadline: float = 30.0
    first: float = 0.05
    cap: float = 1.0
    cap_away: float = 0.25
    connect: float = 2.0
    idle: float = 20.0
    suspect: float = 1.0
    probe: float = 1.0
    suspect_for: float = 2.0

    def pause(self, delay: float, last: BaseException | None) -> float:
        """The backoff pause (before jitter) after a failure ``last`` at backoff ``delay``."""
        away = not isinstance(last, MydfsError) or isinstance(last, Unavailable)
        return min(delay, self.cap_away) if away else delay


def origin(url: str) -> str:
    """``http://host:port`` of a URL (the node it addresses)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url


class Transport:
    """One aiohttp session plus the deadline, liveness and retry rules of the SDK."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        policy: RetryPolicy,
        clock: Callable[[], float] = time.monotonic,
        ssl: ssl_module.SSLContext | None = None,
        *,
        tracker: str | None = None,
        token: str | None = None,
        secret: str | None = None,
    ) -> None:
        self.session = session
        self._ssl = ssl  # trust for the control session (the SDK's ``ca``)
        self.policy = policy
        self._clock = clock
        # The API key goes to the tracker only (never to storage nodes).
        self._auth_origin = origin(tracker) if tracker and token else None
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        # ``secret`` (a storage node acting for an HTTP caller): every tracker call is signed
        # with the cluster secret, body included, instead of carrying an API key.
        self._secret = secret
        if tracker and secret:
            self._auth_origin, self._auth = origin(tracker), {}
        self._suspects: dict[str, float] = {}  # node origin -> suspected until (clock)
        self._probes: dict[str, asyncio.Future[bool]] = {}  # node origin -> probe in flight
        # Probes and leader searches get connections of their own: never queued behind the
        # data requests that fill the main session's pool.
        self._control: aiohttp.ClientSession | None = None

    def control_session(self) -> aiohttp.ClientSession:
        if self._control is None or self._control.closed:
            self._control = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ssl=self._ssl or True)
            )
        return self._control

    async def close(self) -> None:
        """Close the control session (the main session belongs to the caller)."""
        if self._control is not None:
            await self._control.close()
            self._control = None

    # --- liveness --------------------------------------------------------------------------------

    def suspected(self, url: str) -> bool:
        """Did the node of ``url`` fail a liveness probe in the last ``suspect_for`` seconds?"""
        node = origin(url)
        until = self._suspects.get(node)
        if until is None:
            return False
        if self._clock() >= until:
            del self._suspects[node]
            return False
        return True

    def suspect(self, url: str) -> None:
        self._suspects[origin(url)] = self._clock() + self.policy.suspect_for

    def _absolve(self, url: str) -> None:
        self._suspects.pop(origin(url), None)

    async def alive(self, url: str) -> bool:
        """Does the node of ``url`` answer ``GET /health`` (any status) within ``probe``
        seconds? Concurrent callers share one probe per node."""
        node = origin(url)
        probe = self._probes.get(node)
        if probe is None:
            probe = asyncio.ensure_future(self._probe(node))
            self._probes[node] = probe
            probe.add_done_callback(lambda _: self._probes.pop(node, None))
        return await asyncio.shield(probe)

    async def _probe(self, node: str) -> bool:
        timeout = aiohttp.ClientTimeout(total=self.policy.probe)
        try:
            async with self.control_session().get(f"{node}/health", timeout=timeout) as resp:
                await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            self.suspect(node)
            return False
        self._absolve(node)
        return True

    async def watched(self, url: str, request: Coroutine[Any, Any, T]) -> T:
        """Run ``request`` (addressed to ``url``'s node); while it stays silent, probe the node
        every ``suspect`` seconds and give up with :class:`Unavailable` once it fails a probe."""
        task = asyncio.ensure_future(request)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.policy.suspect)
                if done:
                    return task.result()
                if not await self.alive(url) and not task.done():
                    raise Unavailable(
                        f"{origin(url)} does not answer (no reply to its health probe within "
                        f"{self.policy.probe:g}s)",
                        node=origin(url),
                        reason="not_answering",
                    )
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def _timeout(self, total: float | None) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=total, sock_connect=self.policy.connect, sock_read=self.policy.idle
        )

    # --- retries ---------------------------------------------------------------------------------

    async def retry(self, what: str, attempt: Callable[[], Awaitable[T]], **context: Any) -> T:
        """Run ``attempt`` until it succeeds, fails for good, or the deadline passes (an attempt
        still running at the deadline is cut short)."""
        deadline = self._clock() + self.policy.deadline
        delay = self.policy.first
        last: BaseException | None = None
        while True:
            try:
                async with asyncio.timeout(max(0.0, deadline - self._clock())):
                    return await attempt()
            except MydfsError as exc:
                if not exc.retryable:
                    for key, value in context.items():
                        if value is not None:
                            exc.context.setdefault(key, value)
                    raise
                last = exc
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
                last = exc if str(exc) or last is None else last
            pause = self.policy.pause(delay, last)
            if self._clock() + pause > deadline:
                break
            await asyncio.sleep(pause * (0.5 + random.random()))
            delay = min(delay * 2, self.policy.cap)
        # The last error's text without its context, which joins the Timeout's (said once).
        detail = last.message if isinstance(last, MydfsError) else (last or "no answer in time")
        where = dict(last.context) if isinstance(last, MydfsError) else {}
        where.update(context)
        raise Timeout(f"{what} did not succeed within {self.policy.deadline:g}s: {detail}", **where)

    # --- one request -----------------------------------------------------------------------------

    async def json(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        ok: tuple[int, ...] = (200, 201),
        timeout: float | None = None,
        control: bool = False,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> Any:
        """One JSON call (no retry): the decoded body, or the typed error. ``timeout`` caps the
        whole call on top of the policy's per-request deadlines; ``control`` sends it on the
        control session (a leader search, which must not queue behind data requests);
        ``headers`` are sent as well (a grant)."""
        data = None if body is None else orjson.dumps(body)
        headers = dict(headers or {})
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self._auth_origin is not None and origin(url) == self._auth_origin:
            headers.update(self._auth)
            if self._secret:
                parts = urlsplit(url)
                path_qs = parts.path + (f"?{parts.query}" if parts.query else "")
                headers[AUTH_HEADER] = sign(self._secret, method, path_qs, body=data or b"")
        session = self.control_session() if control else self.session

        async def call() -> Any:
            async with session.request(
                method,
                url,
                data=data,
                headers=headers,
                timeout=self._timeout(timeout),
                allow_redirects=False,
            ) as resp:
                if resp.status in (301, 302, 307, 308) and "Location" in resp.headers:
                    raise NotLeader("redirected", leader=origin(resp.headers["Location"]))
                if resp.status not in ok:
                    raise await error_of(resp, **context)
                return orjson.loads(await resp.read())

        try:
            return await self.watched(url, call())
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
        **context: Any,
    ) -> Any:
        """PUT a body, re-sending it to the target of a 307 (a follower pointing at the leader)."""
        for _ in range(MAX_REDIRECTS):
            if self.suspected(url):
                raise Unavailable(
                    "redirected to a node that does not answer", node=origin(url), **context
                )

            async def call(url: str = url) -> tuple[str | None, Any]:
                async with self.session.put(
                    url,
                    data=data,
                    headers=headers,
                    timeout=self._timeout(None),
                    allow_redirects=False,
                ) as resp:
                    if resp.status in (307, 308) and "Location" in resp.headers:
                        return str(resp.url.join(URL(resp.headers["Location"]))), None
                    if resp.status not in (200, 201):
                        raise await error_of(resp, **context)
                    return None, orjson.loads(await resp.read())

            try:
                moved, answer = await self.watched(url, call())
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                raise Unavailable(
                    f"PUT {url} failed: {exc or type(exc).__name__}", **context
                ) from exc
            if moved is None:
                return answer
            url = moved
        raise Unavailable("too many redirects", url=url, **context)
