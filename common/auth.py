"""Authentication of internal HTTP calls with the cluster secret.

A caller signs ``METHOD\\nPATH?QUERY\\nUNIX-SECONDS`` (path and query in one canonical
spelling, so re-encoding by an HTTP library does not matter) with HMAC-SHA256 under the shared
secret and sends ``X-Mydfs-Auth: <seconds>:<hex mac>``. The receiver recomputes it and accepts
it within a time window, so the secret itself never travels and a captured header expires.

A request whose body is the message (a heartbeat) is signed with ``body``: the SHA-256 of the
body (hex) becomes a fourth line of the signed string, so a captured header is good for that
one body only. Payload bodies of internal calls are protected by their CRC32C instead, which
the receiver checks against the signed query.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from mydfs.common.params import is_uint_text

AUTH_HEADER = "X-Mydfs-Auth"
WINDOW_SECONDS = 300


def sign(
    secret: str, method: str, path_qs: str, now: float | None = None, *, body: bytes | None = None
) -> str:
    """The header value authenticating one request (and its ``body``, when given)."""
    ts = int(time.time() if now is None else now)
    return f"{ts}:{_mac(secret, method, path_qs, ts, body)}"


def verify(
    secret: str,
    method: str,
    path_qs: str,
    value: str | None,
    now: float | None = None,
    *,
    body: bytes | None = None,
) -> bool:
    """True if ``value`` is a valid signature of this request (and ``body``, when given)
    within the time window."""
    if not value or ":" not in value or len(value) > 128:
        return False
    ts_text, _, mac = value.partition(":")
    if not is_uint_text(ts_text):
        return False
    ts = int(ts_text)
    current = time.time() if now is None else now
    if abs(current - ts) > WINDOW_SECONDS:
        return False
    return hmac.compare_digest(mac.encode(), _mac(secret, method, path_qs, ts, body).encode())


def canonical(path_qs: str) -> str:
    """One spelling of a path and query, whatever percent-encoding a client or proxy chose:
    the path unquoted, the query parameters decoded, sorted and re-quoted."""
    parts = urlsplit(path_qs)
    query = sorted(parse_qsl(parts.query, keep_blank_values=True))
    encoded = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)
    return unquote(parts.path) + ("?" + encoded if encoded else "")


def _mac(secret: str, method: str, path_qs: str, ts: int, body: bytes | None) -> str:
    msg = f"{method.upper()}\n{canonical(path_qs)}\n{ts}".encode()
    if body is not None:
        msg += b"\n" + hashlib.sha256(body).hexdigest().encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()
