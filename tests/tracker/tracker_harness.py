"""Helpers for tests that run a real ``mydfs-tracker`` process on a free loopback port."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import aiohttp
import orjson
import pytest

from mydfs.common.auth import AUTH_HEADER, sign

SECRET = "tracker-test-secret-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(
    predicate: Callable[[], Awaitable[bool]] | Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.02,
) -> float:
    """Poll ``predicate`` until it is true; fail the test at the deadline."""
    start = time.monotonic()
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - start
        if time.monotonic() - start >= timeout:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


class TrackerProc:
    """One ``mydfs-tracker`` process; its stdout/stderr go to ``log_path``."""

    def __init__(self, data_dir: Path, log_path: Path, **options: Any) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = free_port()
        self.options = {"heartbeat_timeout": 1.0, "checkpoint_interval": 3600.0, **options}
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def args(self) -> list[str]:
        args = [
            sys.executable,
            "-m",
            "mydfs.tracker.main",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--data-dir",
            str(self.data_dir),
            "--secret",
            SECRET,
            "--log-level",
            "debug",
        ]
        for key, value in self.options.items():
            args += ["--" + key.replace("_", "-"), str(value)]
        return args

    async def start(self, session: aiohttp.ClientSession, timeout: float = 20.0) -> None:
        if self._log is not None:
            self._log.close()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.args(), stdout=self._log, stderr=subprocess.STDOUT)

        async def healthy() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"tracker exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                async with session.get(self.url + "/health") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await wait_until(healthy, timeout=timeout, what="the tracker to answer /health")

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
            code = self.proc.returncode
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


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
    if signed:
        path_qs = url.split("://", 1)[1]
        path_qs = path_qs[path_qs.index("/") :]
        headers[AUTH_HEADER] = sign(secret, method, path_qs)
    data = None if body is None else orjson.dumps(body)
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
