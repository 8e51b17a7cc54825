"""What the security tests share besides fixtures."""

from __future__ import annotations

from typing import Any

from mydfs.common import grants

#: Seconds a client may take to send a request head or body before it gets a 408.
CLIENT_TIMEOUT = 4.0


#: The file id the hostile requests name (no file has it).
ZERO_FILE = "0" * 32


def auth_headers(cluster: Any) -> dict[str, str]:
    """``Authorization: Bearer <token>`` when ``cluster`` has a ``token`` attribute (the admin
    key the tracker makes at its first start), and a write grant for :data:`ZERO_FILE` (storage
    nodes check it before anything else), so hostile requests reach the checks behind them."""
    token = getattr(cluster, "token", None)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    secret = getattr(cluster, "secret", None)
    if secret:
        headers[grants.GRANT_HEADER] = grants.issue_for(secret, "write", 3600, file_id=ZERO_FILE)
    return headers
