"""Plain-HTTP edits and creates (``PATCH|POST|PUT /files/{path}``): the tracker's 307.

curl drops the ``Authorization`` header on a redirect to another port, so the tracker does not
edit anything itself here: it checks the caller's key (role ``write``, ``tracker/auth.py``) and
answers 307 to a random up storage node (any group) with the caller's query plus a **write
grant bound to the path** (``grant``, valid ``grant_ttl``), without asking for the body
(:func:`no_continue`). That node spools the body and runs
the SDK for the caller (``storage/http_edit_files.py``, ``docs/client.md``, "Plain HTTP").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, urlencode

from aiohttp import web

from mydfs.common import grants
from mydfs.common.errors import InvalidArgument, Unavailable
from mydfs.common.paths import from_url, url_quote
from mydfs.tracker.service import Tracker

#: Longest query string passed on (the edit's parameters are a handful of numbers).
MAX_QUERY_CHARS = 4096


def edit_location(tracker: Tracker, path: str, query: str, now: float) -> str:
    """The storage node URL a plain-HTTP edit of ``path`` goes to: a random up node (one heard
    from within the last heartbeat or so, if any), the caller's ``query`` without any
    ``grant`` of its own, and a write grant for ``path``."""
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidArgument(f"the query is longer than {MAX_QUERY_CHARS} characters")
    views = tracker.registry.groups(now)
    up = [node for view in views for node in view.up]
    if not up:
        raise Unavailable("no storage node is up", path=path)
    fresh_within = 1.5 * tracker.config.heartbeat_interval
    fresh = [n for n in up if now - n.last_seen <= fresh_within]
    node = tracker._rng.choice(fresh or up)
    params = [
        (k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != grants.GRANT_PARAM
    ]
    token = grants.issue_for(
        tracker.config.secret, "write", tracker.config.grant_ttl, path=path, now=tracker.wall()
    )
    params.append((grants.GRANT_PARAM, token))
    return f"{node.hb.url}/files{url_quote(path)}?{urlencode(params)}"


async def no_continue(request: web.Request) -> None:
    """The routes' ``Expect: 100-continue`` handler: no 100 is sent, so a client that waits for
    one (curl, for a body over 1 MiB) gets the 307 (or the 401/403) first and sends its body
    only to the storage node; a client that sends the body anyway has it drained unread."""
    return None


def handler(tracker_key: web.AppKey[Tracker]) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The handler of ``PATCH|POST|PUT /files/{path}``: a 307 (the body is not read)."""

    async def redirect(request: web.Request) -> web.Response:
        tracker = request.app[tracker_key]
        raw, _, query = request.raw_path.partition("?")
        if not raw.startswith("/files/"):
            raise InvalidArgument(f"bad request path {raw!r}")
        path = from_url(raw[len("/files/") :])
        url = edit_location(tracker, path, query, tracker._clock())
        return web.Response(status=307, headers={"Location": url, "Cache-Control": "no-store"})

    return redirect
