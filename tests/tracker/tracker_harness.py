"""Helpers for tests that run a real ``mydfs-tracker`` process on a free loopback port: the
launcher's :class:`~mydfs.client.process.TrackerProcess` with test defaults, and calls: signed
with the cluster secret (``signed=True``), and carrying the tracker's admin API key (read from
its ``admin.token`` once it answers) unless ``anonymous=True`` or an ``Authorization`` header is
given."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import orjson
from helpers import free_ports, wait_until

from mydfs.client.process import TrackerProcess
from mydfs.common.auth import AUTH_HEADER, sign
from mydfs.common.errors import Unavailable

SECRET = "tracker-test-secret-0123456789"
#: Tracker URL → its admin API key (set when a :class:`TrackerProc` has started).
TOKENS: dict[str, str] = {}


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
        self.token = (self.data_dir / "admin.token").read_text().strip()
        TOKENS[self.url] = self.token

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

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
    anonymous: bool = False,
    **kw: Any,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """One request; returns (status, decoded JSON or None, response)."""
    headers = dict(kw.pop("headers", {}))
    origin = "/".join(str(url).split("/", 3)[:3])
    if not anonymous and "Authorization" not in headers and origin in TOKENS:
        headers["Authorization"] = f"Bearer {TOKENS[origin]}"
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


async def register(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], **kw: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """Register a file as the SDK does: ``POST /meta/intents`` for the body's file id and the
    path of ``url`` (``.../meta/files/<path>[?...]``), then ``PUT url``. The tracker registers
    only a file id with a live intent. Returns the intent's answer when it is refused."""
    base, _, tail = url.partition("/meta/files")
    path = unquote(urlsplit(tail).path)
    status, err, resp = await call(
        session, "POST", base + "/meta/intents", {"file_id": body["file_id"], "path": path}
    )
    if status != 201:
        return status, err, resp
    return await call(session, "PUT", url, body, **kw)


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
