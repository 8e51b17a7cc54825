"""Who may call which tracker route: API keys with roles, share URLs, public folders.

One table (:data:`ROUTES`) says what each route needs: ``None`` (open: health, metrics, the
dashboard's static files, and ``/heartbeat`` and ``/internal/edits/{txn}/resolve``, whose
handlers check the cluster signature), or a role, ``read < write < admin``
(:mod:`mydfs.tracker.keys`). A caller names its key with ``Authorization: Bearer <token>``;
no token or an unknown one is a 401 (:class:`Unauthorized`), a key whose role is too low a 403
(:class:`Forbidden`). A route missing from the table needs ``admin``, so a new route is closed
until it is listed.

Two ways to read without a key:

* ``GET|HEAD /files/<path>?grant=<token>``: a share URL (``POST /share``, ``mydfs share``), a
  read grant for that path (:mod:`mydfs.common.grants`) signed with the cluster secret. A grant
  that does not verify, is expired or names another path is a 403.
* ``public_prefixes`` (config): anonymous ``GET`` of ``/files/…``, ``/meta/files/…`` and
  ``/meta/list/…`` at or under one of those folders.

A storage node acting for a caller of the plain-HTTP edit routes (``PATCH|POST|PUT /files``,
``storage/http_edit_files.py``) has no key: on the routes the SDK needs for ``put`` and the
edits (:data:`SIGNED_WRITE_ROUTES`), a request without a key but with an ``X-Mydfs-Auth``
signature of the cluster secret over method, path, query and body counts as role ``write``
(never more). The body it read is kept in ``request[SIGNED_BODY]`` for the handler. A node
holds the secret, which can mint any grant, so this adds no power (``docs/security.md``).

This module also holds the routes that manage keys (``/admin/keys``) and ``POST /share``.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from mydfs.common import grants
from mydfs.common.auth import AUTH_HEADER, verify
from mydfs.common.errors import (
    Forbidden,
    InvalidArgument,
    MydfsError,
    Unauthorized,
)
from mydfs.common.limits import read_body
from mydfs.common.paths import check_file_path, from_url, url_quote
from mydfs.common.web import json_response
from mydfs.tracker.keys import Key, KeyStore, allows

log = logging.getLogger("mydfs.tracker.auth")

KEYS_KEY = web.AppKey("keys", KeyStore)
SECRET_KEY = web.AppKey("secret", str)
PUBLIC_KEY = web.AppKey("public_prefixes", tuple)
#: (most bytes, seconds) for the body of a signed request (the tracker's JSON body limits).
BODY_LIMITS_KEY = web.AppKey("body_limits", tuple)
#: The body of a request the middleware read to check its signature (handlers use it).
SIGNED_BODY = "mydfs_signed_body"
#: The key that made the request (absent for open routes, grants and public reads).
CALLER = "mydfs_key"

#: Longest lifetime of a share URL (seconds): 7 days.
MAX_SHARE_TTL = 7 * 24 * 3600

OPEN = None
#: (method, route) → the role it needs, or None for an open route. HEAD is checked as GET.
ROUTES: dict[tuple[str, str], str | None] = {
    ("POST", "/heartbeat"): OPEN,  # signed with the cluster secret (X-Mydfs-Auth)
    ("POST", "/internal/edits/{txn}/resolve"): OPEN,  # signed like /heartbeat (body included)
    ("GET", "/health"): OPEN,
    ("GET", "/metrics"): OPEN,
    ("GET", "/ui"): OPEN,
    ("GET", "/ui/{name}"): OPEN,
    ("GET", "/cluster"): "read",
    ("GET", "/cluster/view"): "read",
    ("GET", "/space"): "read",
    ("GET", "/meta/files/{path}"): "read",
    ("GET", "/meta/list"): "read",
    ("GET", "/meta/list/{path}"): "read",
    ("GET", "/files/{path}"): "read",
    ("PATCH", "/files/{path}"): "write",
    ("POST", "/files/{path}"): "write",
    ("PUT", "/files/{path}"): "write",
    ("POST", "/share"): "read",
    ("GET", "/meta/edits/{txn}"): "read",
    ("POST", "/placements"): "write",
    ("PUT", "/meta/files/{path}"): "write",
    ("DELETE", "/meta/files/{path}"): "write",
    ("POST", "/meta/intents"): "write",
    ("DELETE", "/meta/intents/{file_id}"): "write",
    ("POST", "/meta/edits"): "write",
    ("POST", "/meta/edits/{txn}/commit"): "write",
    ("POST", "/meta/edits/{txn}/abort"): "write",
    ("GET", "/meta/intents"): "admin",
    ("GET", "/meta/trash"): "read",  # trash ls: paths and sizes, as /meta/list shows
    ("POST", "/meta/trash/undelete"): "write",  # like a put: adds a file
    ("POST", "/meta/trash/purge"): "write",  # like a delete: frees files earlier
    ("DELETE", "/meta/trash/{file_id}"): "admin",
    ("GET", "/admin/keys"): "admin",
    ("POST", "/admin/keys"): "admin",
    ("DELETE", "/admin/keys/{name}"): "admin",
}
#: Routes a request signed with the cluster secret (``X-Mydfs-Auth``, body included) may call
#: as role ``write``: what the SDK's ``put`` and edits need, for a storage node acting for a
#: caller of ``PATCH|POST|PUT /files/{path}``.
SIGNED_WRITE_ROUTES = frozenset(
    {
        ("GET", "/cluster"),
        ("GET", "/meta/files/{path}"),
        ("PUT", "/meta/files/{path}"),
        ("POST", "/placements"),
        ("POST", "/meta/intents"),
        ("DELETE", "/meta/intents/{file_id}"),
        ("POST", "/meta/edits"),
        ("POST", "/meta/edits/{txn}/commit"),
        ("POST", "/meta/edits/{txn}/abort"),
        ("GET", "/meta/edits/{txn}"),
    }
)
#: Routes a public prefix opens to anonymous GETs: route → the URL prefix before the path.
PUBLIC_ROUTES = {
    "/files/{path}": "/files/",
    "/meta/files/{path}": "/meta/files/",
    "/meta/list": "/meta/list",
    "/meta/list/{path}": "/meta/list/",
}


def required_role(method: str, route: str) -> str | None:
    """What ``method route`` needs (``admin`` for a route not in the table)."""
    return ROUTES.get(("GET" if method == "HEAD" else method, route), "admin")


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def under(path: str, prefixes: tuple[str, ...]) -> bool:
    """Is ``path`` one of ``prefixes`` or inside one of them?"""
    for prefix in prefixes:
        if prefix == "/" or path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            return True
    return False


def _request_path(request: web.Request, route: str) -> str | None:
    """The file or folder path a public route names; None if it is not a valid path."""
    prefix = PUBLIC_ROUTES[route]
    raw = request.raw_path.split("?", 1)[0]
    tail = raw[len(prefix) :] if raw.startswith(prefix) else ""
    try:
        if route.startswith("/meta/list"):
            tail = tail.lstrip("/")
            return "/" if not tail else from_url(tail, directory=True)
        return from_url(tail)
    except MydfsError:
        return None


def _check_share(request: web.Request, token: str) -> None:
    """A ``grant`` query parameter on ``/files``: a read grant for exactly this path."""
    path = _request_path(request, "/files/{path}")
    if path is None:
        raise InvalidArgument("bad file path in a share URL")
    try:
        grants.check(request.app[SECRET_KEY], token, op="read", path=path)
    except Unauthorized as exc:
        # A link that does not verify is refused like one for another path: the caller
        # presented something, and it does not open this file.
        raise Forbidden(f"share URL refused: {exc.message}", path=path) from None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    resource = request.match_info.route.resource
    if resource is None:  # no such route: let the router answer 404 / 405
        return await handler(request)
    route = resource.canonical
    need = required_role(request.method, route)
    if need is None:
        return await handler(request)
    token = bearer(request)
    if token is None and request.method in ("GET", "HEAD") and route in PUBLIC_ROUTES:
        if route == "/files/{path}" and grants.GRANT_PARAM in request.query:
            _check_share(request, request.query[grants.GRANT_PARAM])
            return await handler(request)
        path = _request_path(request, route)
        if path is not None and under(path, request.app[PUBLIC_KEY]):
            return await handler(request)
    if token is None and AUTH_HEADER in request.headers:
        await _check_signed(request, route)
        return await handler(request)
    if token is None:
        raise Unauthorized(
            "this request needs an API key: send 'Authorization: Bearer <token>' "
            "(mydfs token prints yours)",
            route=route,
        )
    key = request.app[KEYS_KEY].lookup(token)
    if key is None:
        raise Unauthorized("unknown or revoked API key", route=route)
    if not allows(key.role, need):
        raise Forbidden(
            f"key {key.name!r} has role {key.role}; {request.method} {route} needs {need}",
            key=key.name,
            role=key.role,
            required=need,
        )
    request[CALLER] = key
    return await handler(request)


async def _check_signed(request: web.Request, route: str) -> None:
    """A request signed with the cluster secret (a storage node acting for an HTTP caller):
    allowed as role ``write`` on :data:`SIGNED_WRITE_ROUTES` only; 401 unless the signature
    verifies over method, raw path and query, and the body (read here, kept for the handler)."""
    method = "GET" if request.method == "HEAD" else request.method
    if (method, route) not in SIGNED_WRITE_ROUTES:
        raise Unauthorized(
            f"{request.method} {route} takes no cluster signature: send an API key", route=route
        )
    limit, timeout = request.app[BODY_LIMITS_KEY]
    data = await read_body(request, limit, timeout)
    secret = request.app[SECRET_KEY]
    if not verify(
        secret, request.method, request.raw_path, request.headers[AUTH_HEADER], body=data
    ):
        raise Unauthorized(f"no valid {AUTH_HEADER} signature (body included)", route=route)
    request[SIGNED_BODY] = data


# --- /admin/keys and /share ----------------------------------------------------------------------


async def _body(request: web.Request) -> dict[str, Any]:
    data = await request.read()
    try:
        body = orjson.loads(data) if data else None
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidArgument("the body must be a JSON object")
    return body


async def create_key(request: web.Request) -> web.Response:
    body = await _body(request)
    key, token = request.app[KEYS_KEY].create(body.get("name"), body.get("role"))
    log.info("key %r (role %s) created by %s", key.name, key.role, _who(request))
    return json_response({"name": key.name, "role": key.role, "token": token}, status=201)


async def list_keys(request: web.Request) -> web.Response:
    return json_response({"keys": [k.public() for k in request.app[KEYS_KEY].keys.names()]})


async def delete_key(request: web.Request) -> web.Response:
    key = request.app[KEYS_KEY].remove(request.match_info["name"])
    log.info("key %r (role %s) removed by %s", key.name, key.role, _who(request))
    return json_response({"removed": key.public()})


async def share(request: web.Request) -> web.Response:
    """``POST /share {"path", "ttl"}`` → a signed ``/files`` URL (path and query) for that file."""
    body = await _body(request)
    given: Any = body.get("path")
    path = check_file_path(given)
    ttl = body.get("ttl", 3600)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 1 <= ttl <= MAX_SHARE_TTL:
        raise InvalidArgument(f"ttl must be 1..{MAX_SHARE_TTL} seconds", field="ttl")
    token = grants.issue_for(request.app[SECRET_KEY], "read", ttl, path=path)
    expires = grants.decode(request.app[SECRET_KEY], token).expires
    path_qs = f"/files{url_quote(path)}?{grants.GRANT_PARAM}={token}"
    return json_response({"path": path, "path_qs": path_qs, "expires": expires})


def _who(request: web.Request) -> str:
    key: Key | None = request.get(CALLER)
    return f"key {key.name!r}" if key is not None else "?"


def install(
    app: web.Application,
    keys: KeyStore,
    secret: str,
    public: tuple[str, ...],
    body_limits: tuple[int, float] = (1 << 20, 60.0),
) -> None:
    """Add the key-management and share routes and what the middleware reads
    (``body_limits``: most bytes and seconds of a signed request's body)."""
    app[KEYS_KEY] = keys
    app[SECRET_KEY] = secret
    app[PUBLIC_KEY] = tuple(public)
    app[BODY_LIMITS_KEY] = tuple(body_limits)
    app.router.add_get("/admin/keys", list_keys)
    app.router.add_post("/admin/keys", create_key)
    app.router.add_delete("/admin/keys/{name}", delete_key)
    app.router.add_post("/share", share)
