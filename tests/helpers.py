"""Helpers every test folder shares (``tests/conftest.py`` puts this folder on ``sys.path``).

The process launcher and its small helpers are the package's own
(:mod:`mydfs.client.process`, :mod:`mydfs.client.local_cluster`): free loopback ports, a
blocking JSON GET and a bounded wait are re-exported here, beside what only tests need: a
bounded wait for async (or plain) predicates, "did this test fail?" for fixtures, and
:class:`ClusterUp`, ``mydfs cluster up`` run as a subprocess with its children watched by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from mydfs.client import credentials
from mydfs.client.local_cluster import LocalCluster
from mydfs.client.process import (
    Deadline,
    entry_point,
    free_base,
    free_ports,
    http_json,
    wait_for,
)

__all__ = [
    "ClusterUp",
    "auth_headers",
    "child_pids",
    "dispose",
    "entry_point",
    "failed",
    "free_base",
    "free_ports",
    "grant_headers",
    "http_json",
    "pid_gone",
    "signed_headers",
    "tracker_token",
    "wait_for",
    "wait_until",
]


def grant_headers(
    secret: str,
    op: str,
    file_id: str,
    *,
    ttl: float = 3600.0,
    groups: tuple[int, ...] = (),
    now: float | None = None,
) -> dict[str, str]:
    """The ``X-Mydfs-Grant`` header of a grant for ``op`` ("read" or "write") on ``file_id``,
    minted with the cluster secret as the tracker would (tests calling storage routes raw)."""
    from mydfs.common import grants

    token = grants.issue_for(secret, op, ttl, file_id=file_id, groups=groups, now=now)
    return {grants.GRANT_HEADER: token}


def signed_headers(secret: str, method: str, path_qs: str) -> dict[str, str]:
    """The ``X-Mydfs-Auth`` header of an internal call (``/internal/...``, ``/slices/N/meta``)."""
    from mydfs.common.auth import AUTH_HEADER, sign

    return {AUTH_HEADER: sign(secret, method, path_qs)}


async def wait_until(
    predicate: Callable[[], Awaitable[Any]] | Callable[[], Any],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> Any:
    """Like :func:`wait_for` for an async (or plain) predicate; never blocks the event loop.
    Returns the first truthy value; raises :class:`~mydfs.common.errors.Timeout` at the
    deadline."""
    deadline = Deadline(timeout, what)
    while not (value := await _value_of(predicate)):
        deadline.check()
        await asyncio.sleep(interval)
    return value


async def _value_of(predicate: Callable[[], Any]) -> Any:
    value = predicate()
    return (await value) if inspect.isawaitable(value) else value


def tracker_token(tracker: str) -> str | None:
    """The API key saved for ``tracker`` in the session's credentials file (a started
    ``LocalCluster`` saves its admin key there)."""
    return credentials.token_for(tracker)


def auth_headers(token: str | None) -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}`` (empty without a token) for raw tracker calls."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def dispose(cluster: LocalCluster, root: Path) -> None:
    """Stop ``cluster`` cleanly, SIGKILL whatever survived that, and remove ``root`` (its data):
    the teardown of every test that runs its own cluster."""
    try:
        cluster.stop()
    finally:
        for proc in cluster.processes():
            if proc.alive():
                proc.kill()
        shutil.rmtree(root, ignore_errors=True)


def failed(request: pytest.FixtureRequest) -> bool:
    """Did the test that owns this fixture fail (or not get to run its body)?"""
    report = getattr(request.node, "rep_call", None)
    return report is None or bool(report.failed)


# --- ``mydfs cluster up`` as a subprocess -----------------------------------------------------


def child_pids(pid: int) -> set[int]:
    """Direct children of ``pid`` (from /proc)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.add(int(entry.name))
    return out


def pid_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie awaiting its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


class ClusterUp:
    """``mydfs cluster up ...`` (``mydfs`` of this environment, or the one given) running in its
    own session, its stdout read line by line."""

    def __init__(self, *args: str, cwd: Path, mydfs: str | None = None) -> None:
        self.proc = subprocess.Popen(
            [mydfs or entry_point("mydfs"), "cluster", "up", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.children: set[int] = set()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def wait_line(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern.pattern!r} in: {self.seen}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"cluster up exited ({self.proc.poll()}): {self.seen}")
            self.seen.append(line)
            m = pattern.match(line)
            if m:
                return m

    def rest_of_output(self, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        out = []
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                continue
            if line is None:
                break
            out.append(line)
        self.seen += out
        return out

    def terminate(self, timeout: float = 90.0) -> int:
        """SIGTERM, wait for the exit, and check every process it started is gone."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        wait_for(
            lambda: all(pid_gone(p) for p in self.children),
            timeout=30,
            what=f"children {sorted(self.children)} of cluster up to be gone",
        )
        return code

    def kill_everything(self) -> None:
        """Last-resort clean-up: the processes this test started, by pid."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for pid in self.children:
            if not pid_gone(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
