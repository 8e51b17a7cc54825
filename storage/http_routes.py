"""Which protection each route of a storage node has: one table, checked before any handler.

Like the tracker's :data:`mydfs.tracker.auth.ROUTES`, a route is born closed: :func:`route_guard`
(a middleware) answers 401 to any request for a registered route that :data:`ROUTES` does not
name, so a route added without an entry serves nobody. The protections (``docs/security.md``):

* ``open``: anyone. ``/health``, ``/status`` and ``/metrics``: identity, role, Raft and table
  counters, no file data and no slot contents.
* ``read``: a grant (``X-Mydfs-Grant`` header or ``grant`` query parameter,
  :mod:`mydfs.common.grants`) that verifies with the cluster secret and is not expired; a read
  or a write grant passes. 401 without one or for a forged one, 403 for an expired one.
* ``write``: the same with a write grant (a read grant is a 403).
* ``path-write``: a write grant as ``write`` asks, bound to a path rather than a file id (the
  tracker's 307 of ``PATCH|POST|PUT /files/{path}``); the handler
  (:mod:`mydfs.storage.http_edit_files`) then checks that it names exactly the URL's path (403)
  before it reads the body.
* ``signed``: an ``X-Mydfs-Auth`` signature of the method, path and query with the cluster
  secret (:mod:`mydfs.common.auth`), else 401: the calls nodes and the tracker make to each other.
* ``signed-or-read``: a valid signature, else what ``read`` asks.
* ``decision``: the tracker's signed decision token of an edit (op ``commit`` or ``abort``,
  :func:`mydfs.common.grants.decision_of`) in the JSON body; the guard lets the request through
  and the handler (:mod:`mydfs.storage.http_edits`) verifies the token before anything else:
  401 without one or for a forged one, 403 for an expired one, another txn or the other outcome.

The guard checks only that much; the handlers still bind the grant to its object
(:mod:`mydfs.storage.http_grants`: the file, the group, the slot's owner), and the internal
handlers still check the signature themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from mydfs.common import grants
from mydfs.common.auth import AUTH_HEADER, verify
from mydfs.common.errors import Unauthorized
from mydfs.storage.http_common import NODE_KEY
from mydfs.storage.http_grants import token_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OPEN = "open"
READ = "read"
WRITE = "write"
SIGNED = "signed"
SIGNED_OR_READ = "signed-or-read"
DECISION = "decision"
PATH_WRITE = "path-write"
PROTECTIONS = (OPEN, READ, WRITE, SIGNED, SIGNED_OR_READ, DECISION, PATH_WRITE)

#: (method, route) → its protection. HEAD is checked as GET.
ROUTES: dict[tuple[str, str], str] = {
    ("PUT", "/slices"): WRITE,
    ("POST", "/slices/reserve"): WRITE,
    ("PUT", "/slices/{slot}"): WRITE,
    ("POST", "/slices/{slot}/relink"): WRITE,
    ("GET", "/chain/{slot}"): READ,
    ("GET", "/files/{path}"): READ,
    ("PATCH", "/files/{path}"): PATH_WRITE,
    ("POST", "/files/{path}"): PATH_WRITE,
    ("PUT", "/files/{path}"): PATH_WRITE,
    ("GET", "/slices/{slot}"): READ,
    ("GET", "/slices/{slot}/meta"): SIGNED_OR_READ,
    ("PUT", "/internal/slices/{slot}"): SIGNED,
    ("GET", "/internal/slices/{slot}"): SIGNED,
    ("GET", "/internal/holds/{slot}"): SIGNED,
    ("DELETE", "/internal/slices/{slot}"): SIGNED,
    ("GET", "/internal/report"): SIGNED,
    ("POST", "/edits/{txn}/prepare"): WRITE,
    ("POST", "/edits/{txn}/commit"): DECISION,
    ("POST", "/edits/{txn}/rollback"): DECISION,
    ("GET", "/health"): OPEN,
    ("GET", "/status"): OPEN,
    ("GET", "/metrics"): OPEN,
}


def protection(method: str, route: str) -> str | None:
    """The protection of ``method route``; None for a route the table does not name."""
    return ROUTES.get(("GET" if method == "HEAD" else method, route))


def signed(request: web.Request, secret: str) -> bool:
    """Does the request carry a valid cluster signature?"""
    return verify(secret, request.method, request.path_qs, request.headers.get(AUTH_HEADER))


@web.middleware
async def route_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse what :data:`ROUTES` does not allow before the handler runs."""
    resource = request.match_info.route.resource
    if resource is None:  # no such route: the router answers 404 / 405
        return await handler(request)
    route = resource.canonical
    need = protection(request.method, route)
    if need is None:
        raise Unauthorized(
            f"{request.method} {route} has no entry in the node's route table: refused",
            route=route,
        )
    if need in (OPEN, DECISION):  # a decision token is verified by its handler
        return await handler(request)
    secret = request.app[NODE_KEY].config.secret
    if need in (SIGNED, SIGNED_OR_READ) and signed(request, secret):
        return await handler(request)
    if need == SIGNED:
        raise Unauthorized("internal call without a valid cluster signature", route=route)
    # 401: no grant or a forged one; 403: expired, or a read grant on a write route.
    grants.check(secret, token_of(request), op=WRITE if need in (WRITE, PATH_WRITE) else READ)
    return await handler(request)


__all__ = [
    "DECISION",
    "OPEN",
    "PATH_WRITE",
    "PROTECTIONS",
    "READ",
    "ROUTES",
    "SIGNED",
    "SIGNED_OR_READ",
    "WRITE",
]
