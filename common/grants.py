"""Grants: short-lived capabilities the tracker signs for exactly what it hands out.

SeaweedFS's master signs a JWT for the file id it assigns and its volume servers check it; a
mydfs grant is the same idea without a JWT library: the tracker, which knows the cluster
secret, signs a small JSON claim, and a storage node (which knows the secret too) checks it
before it changes or serves anything of that file. A grant names one operation on one object
and expires; a stolen grant is worth that object for that long and nothing else.

Token layout (``docs/security.md``)::

    v1.<base64url(JSON claims)>.<base64url(HMAC-SHA256(key, "v1." + base64url(claims)))>

``key`` is derived from the cluster secret (``HMAC(secret, "mydfs grant v1")``), so a grant's
MAC can never be confused with the ``X-Mydfs-Auth`` signature of internal calls. Claims:

    op     "read" | "write"      what the bearer may do
    file   32 hex digits or ""   the file id the grant is bound to ("" only with ``path``)
    path   "" or a file path     a shared download URL (``mydfs share``) names a path instead
    groups [int, ...]            the groups a write grant may reserve in ([] = any group)
    n      int                   at most this many slices per group (0 = no bound)
    exp    int                   unix seconds after which the grant is refused

Decision tokens (an edit's two-phase commit, ``op`` "commit" or "abort") add three claims:

    txn    32 hex digits         the edit transaction decided
    ver    int                   the file's version the commit gives it (0 for an abort)
    prev   [[group, prev], ...]  per participant group, the version the commit follows

A decision token is no grant for anything else: :func:`check` accepts it only for its own op,
and a read or write grant never passes as a decision (:func:`decision_of`).

Checking is pure (no clock unless ``now`` is omitted): :func:`check` raises
:class:`~mydfs.common.errors.Unauthorized` (401) for a missing, malformed or forged token and
:class:`~mydfs.common.errors.Forbidden` (403) for a genuine one that is expired or for another
operation, file, path or group.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from mydfs.common.errors import Forbidden, Unauthorized

#: Request header carrying a grant to a storage node.
GRANT_HEADER = "X-Mydfs-Grant"
#: Query parameter carrying a grant (URLs handed to curl, wget and aria2c).
GRANT_PARAM = "grant"
#: Longest token accepted before any decoding (a grant is about 200 characters).
MAX_TOKEN_CHARS = 2048

OPS = ("read", "write", "commit", "abort")
#: The ops of decision tokens (an edit's outcome, signed by the tracker).
DECISIONS = ("commit", "abort")
_VERSION = "v1"


@dataclass(frozen=True)
class Grant:
    """What a grant allows. ``file_id`` or ``path`` names the object."""

    op: str
    expires: int
    file_id: str = ""
    path: str = ""
    groups: tuple[int, ...] = field(default=())
    slices: int = 0
    txn: str = ""
    """Decision tokens only: the edit transaction."""
    ver: int = 0
    """Decision tokens only: the version a commit gives the file (0 for an abort)."""
    prev: tuple[tuple[int, int], ...] = ()
    """Decision tokens only: ``(group, prev)`` per participant group."""

    def prev_for(self, group: int) -> int:
        """The version ``group`` must be at for this commit to apply there (0 if unnamed)."""
        return next((p for g, p in self.prev if g == group), 0)

    def to_claims(self) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "op": self.op,
            "file": self.file_id,
            "path": self.path,
            "groups": list(self.groups),
            "n": self.slices,
            "exp": self.expires,
        }
        if self.op in DECISIONS:
            claims.update(txn=self.txn, ver=self.ver, prev=[list(p) for p in self.prev])
        return claims

    @classmethod
    def from_claims(cls, data: Any) -> Grant:
        if not isinstance(data, dict):
            raise ValueError("claims are not an object")
        op, file_id, path = data.get("op"), data.get("file", ""), data.get("path", "")
        groups, slices, expires = data.get("groups", []), data.get("n", 0), data.get("exp")
        if op not in OPS or not isinstance(file_id, str) or not isinstance(path, str):
            raise ValueError("bad op, file or path")
        if not isinstance(groups, list) or not all(type(g) is int for g in groups):
            raise ValueError("bad groups")
        if type(slices) is not int or type(expires) is not int:
            raise ValueError("bad n or exp")
        txn, ver, prev = data.get("txn", ""), data.get("ver", 0), data.get("prev", [])
        if not isinstance(txn, str) or type(ver) is not int or not isinstance(prev, list):
            raise ValueError("bad txn, ver or prev")
        pairs = []
        for item in prev:
            if (
                not isinstance(item, list)
                or len(item) != 2
                or not all(type(v) is int for v in item)
            ):
                raise ValueError("bad prev")
            pairs.append((item[0], item[1]))
        return cls(op, expires, file_id, path, tuple(groups), slices, txn, ver, tuple(pairs))


def issue(secret: str, grant: Grant) -> str:
    """The token for ``grant``, signed with the cluster secret."""
    if grant.op not in OPS:
        raise ValueError(f"unknown grant op {grant.op!r}")
    if not grant.file_id and not grant.path:
        raise ValueError("a grant names a file id or a path")
    body = _b64(orjson.dumps(grant.to_claims()))
    signed = f"{_VERSION}.{body}"
    return f"{signed}.{_b64(_mac(secret, signed))}"


def issue_for(
    secret: str,
    op: str,
    ttl: float,
    *,
    file_id: str = "",
    path: str = "",
    groups: tuple[int, ...] = (),
    slices: int = 0,
    now: float | None = None,
) -> str:
    """Shorthand: a grant for ``op`` expiring ``ttl`` seconds from ``now``."""
    current = time.time() if now is None else now
    expires = int(current + ttl)
    return issue(secret, Grant(op, expires, file_id, path, groups, slices))


def decode(secret: str, token: str | None) -> Grant:
    """The grant a token carries, if its MAC verifies (expiry and object are not checked)."""
    if not token:
        raise Unauthorized("no grant: this request needs a grant from the tracker")
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        raise Unauthorized("malformed grant")
    version, body, mac = token.split(".")
    if version != _VERSION:
        raise Unauthorized(f"unknown grant version {version[:8]!r}")
    try:
        given = _unb64(mac)
    except ValueError:
        raise Unauthorized("malformed grant") from None
    if not hmac.compare_digest(given, _mac(secret, f"{version}.{body}")):
        raise Unauthorized("grant signature does not verify")
    try:
        return Grant.from_claims(orjson.loads(_unb64(body)))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise Unauthorized(f"malformed grant claims: {exc}") from None


def check(
    secret: str,
    token: str | None,
    *,
    op: str,
    file_id: str | None = None,
    path: str | None = None,
    group: int | None = None,
    now: float | None = None,
) -> Grant:
    """The grant in ``token`` if it allows ``op`` on this file id / path / group now.

    Raises :class:`Unauthorized` (401) when the token is missing or does not verify and
    :class:`Forbidden` (403) when it verifies but is expired or names something else. A read
    is allowed by a read or a write grant; a write only by a write grant.
    """
    grant = decode(secret, token)
    current = time.time() if now is None else now
    if current > grant.expires:
        raise Forbidden("grant expired", expired_at=grant.expires)
    if (op in ("write", *DECISIONS) or grant.op in DECISIONS) and grant.op != op:
        raise Forbidden(f"a {grant.op} grant does not allow {op}")
    if file_id is not None and grant.file_id != file_id:
        raise Forbidden("grant is for another file", file=file_id)
    if path is not None and grant.path != path:
        raise Forbidden("grant is for another path", path=path)
    if group is not None and grant.groups and group not in grant.groups:
        raise Forbidden("grant is for other groups", group=group)
    return grant


def decision_of(secret: str, token: str | None, txn: str, *, now: float | None = None) -> Grant:
    """The decision (op "commit" or "abort") a token carries for edit ``txn``: 401 for a
    missing, malformed or forged token, 403 for an expired one, another txn, or a token that
    is no decision (a read or write grant)."""
    grant = decode(secret, token)
    current = time.time() if now is None else now
    if current > grant.expires:
        raise Forbidden("decision expired", expired_at=grant.expires)
    if grant.op not in DECISIONS:
        raise Forbidden(f"a {grant.op} grant is no edit decision")
    if grant.txn != txn:
        raise Forbidden("the decision is for another edit", txn=txn)
    return grant


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"mydfs grant v1", hashlib.sha256).digest()


def _mac(secret: str, signed: str) -> bytes:
    return hmac.new(_key(secret), signed.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text or not all(c.isascii() and (c.isalnum() or c in "-_") for c in text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(str(exc)) from None
