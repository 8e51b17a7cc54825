"""Helpers for tests that run a real ``mydfs-tracker`` process on a free loopback port: the
launcher's :class:`~mydfs.client.process.TrackerProcess` with test defaults, and signed calls."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from helpers import free_ports, wait_until

from mydfs.client.process import TrackerProcess
from mydfs.common.auth import AUTH_HEADER, sign
from mydfs.common.errors import Unavailable

SECRET = "tracker-test-secret-0123456789"


class TrackerProc(TrackerProcess):
    """One ``mydfs-tracker`` process; its stdout/stderr go to ``log_path``."""

    def __init__(self, data_dir: Path, log_path: Path, **options: Any) -> None:
        super().__init__(
            name="tracker",
            http_port=free_ports(1)[0],
            log_path=log_path,
            die_with_parent=True,
            data_dir=data_dir,
            secret=SECRET,
            options={
                "log_level": "debug",
                "heartbeat_timeout": 1.0,
                "checkpoint_interval": 3600.0,
                **options,
            },
        )

    async def start(  # type: ignore[override]
        self, session: aiohttp.ClientSession, timeout: float = 20.0
    ) -> None:
        """Start the tracker and wait until it answers ``/health``; fail if it exits."""
        super().start()

        async def healthy() -> bool:
            if not self.running:
                raise Unavailable(f"tracker exited with {self.returncode}:\n{self.logs()}")
            try:
                async with session.get(self.url + "/health") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await wait_until(healthy, timeout=timeout, what="the tracker to answer /health")

    def kill9(self) -> None:
        self.kill()

    def stop(self) -> int | None:
        return self.terminate()

    def logs(self) -> str:
        return self.log_text()


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any = None,
    *,
    signed: bool = False,
    secret: str = SECRET,
    **kw: Any,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """One request; returns (status, decoded JSON or None, response)."""
    headers = dict(kw.pop("headers", {}))
    data = None if body is None else orjson.dumps(body)
    if signed:
        path_qs = url.split("://", 1)[1]
        path_qs = path_qs[path_qs.index("/") :]
        headers[AUTH_HEADER] = sign(secret, method, path_qs, body=data or b"")
    if data is not None:
        headers["Content-Type"] = "application/json"
    async with session.request(method, url, data=data, headers=headers, **kw) as resp:
        raw = await resp.read()
        payload = None
        if raw and resp.content_type == "application/json":
            payload = orjson.loads(raw)
        return resp.status, payload, resp


TrackerFactory = Callable[..., TrackerProc]


def heartbeat_body(
    node: str, group: int, port: int, role: str = "follower", **kw: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "node_id": node,
        "group_id": group,
        "url": f"http://127.0.0.1:{port}",
        "role": role,
        "term": 1,
        "free_slots": 1000,
        "used_slots": 0,
        "bytes_live": 0,
        "load": 0.0,
    }
    body.update(kw)
    return body


async def heartbeat_group(
    session: aiohttp.ClientSession,
    tracker: str,
    group: int,
    *,
    skip: tuple[str, ...] = (),
    **kw: Any,
) -> None:
    """Send one signed heartbeat for each node of a fake 3-node group (node 1 leads)."""
    for i in (1, 2, 3):
        node = f"g{group}n{i}"
        if node in skip:
            continue
        body = heartbeat_body(
            node, group, 9000 + group * 10 + i, "leader" if i == 1 else "follower"
        )
        body.update(kw)
        status, data, _ = await call(session, "POST", tracker + "/heartbeat", body, signed=True)
        assert status == 200, data
