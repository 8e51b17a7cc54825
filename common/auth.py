"""Authentication of internal HTTP calls with the cluster secret.

A caller signs ``METHOD\\nPATH?QUERY\\nUNIX-SECONDS`` (path and query in one canonical
spelling, so re-encoding by an HTTP library does not matter) with HMAC-SHA256 under the shared
secret and sends ``X-Mydfs-Auth: <seconds>:<hex mac>``. The receiver recomputes it and accepts
it within a time window, so the secret itself never travels and a captured header expires.
Payload bodies are protected by their CRC32C, which the receiver checks against the signed
query.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import parse_qsl, quote, unquote, urlsplit

AUTH_HEADER = "X-Mydfs-Auth"
WINDOW_SECONDS = 300


def sign(secret: str, method: str, path_qs: str, now: float | None = None) -> str:
    """The header value authenticating one request."""
    ts = int(time.time() if now is None else now)
    return f"{ts}:{_mac(secret, method, path_qs, ts)}"


def verify(
    secret: str, method: str, path_qs: str, value: str | None, now: float | None = None
) -> bool:
    """True if ``value`` is a valid signature of this request within the time window."""
    if not value or ":" not in value:
        return False
    ts_text, _, mac = value.partition(":")
    if not ts_text.isdigit():
        return False
    ts = int(ts_text)
    current = time.time() if now is None else now
    if abs(current - ts) > WINDOW_SECONDS:
        return False
    return hmac.compare_digest(mac, _mac(secret, method, path_qs, ts))


def canonical(path_qs: str) -> str:
    """One spelling of a path and query, whatever percent-encoding a client or proxy chose:
    the path unquoted, the query parameters decoded, sorted and re-quoted."""
    parts = urlsplit(path_qs)
    query = sorted(parse_qsl(parts.query, keep_blank_values=True))
    encoded = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)
    return unquote(parts.path) + ("?" + encoded if encoded else "")


def _mac(secret: str, method: str, path_qs: str, ts: int) -> str:
    msg = f"{method.upper()}\n{canonical(path_qs)}\n{ts}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()
