"""What the security tests share besides fixtures."""

from __future__ import annotations

from typing import Any

#: Seconds a client may take to send a request head or body before it gets a 408.
CLIENT_TIMEOUT = 4.0


def auth_headers(cluster: Any) -> dict[str, str]:
    """``Authorization: Bearer <token>`` when ``cluster`` has a ``token`` attribute (the admin
    key the tracker makes at its first start), else nothing."""
    token = getattr(cluster, "token", None)
    return {"Authorization": f"Bearer {token}"} if token else {}
