"""The systems a workload is aimed at, behind one small interface.

Every workload drives every system through the same client loop: a :class:`Session` per
concurrent client, with ``put``, ``get``, ``stat`` and ``listdir``. The systems are

* :class:`MydfsSystem`: a real tracker and storage group(s) on loopback
  (:class:`~mydfs.client.local_cluster.LocalCluster`), driven by
  :class:`~mydfs.client.aio.AsyncClient`, exactly as a user's program would;
* ``SeaweedSystem`` (in :mod:`mydfs.bench.seaweed`): the peer, over HTTP through its filer;
* :class:`NullSystem`: an HTTP server that does nothing (:mod:`mydfs.bench.nullserver`), in its
  own process. Driven by the same client loop, it measures what one HTTP request per operation
  costs on this machine: the limit for operations that need at least one round trip.

Each system says what an operation means on it (:meth:`System.measured`): bytes per operation,
copies, whether the write is fsync'ed before it is acknowledged, and by which path.
"""

from __future__ import annotations

import abc
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO, cast

import aiohttp

from mydfs.client.local_cluster import LocalCluster
from mydfs.client.process import Process, free_ports

#: Files at least this big are streamed to a sink on reads instead of returned whole.
STREAM_THRESHOLD = 8 << 20


class Sink:
    """A binary file object that throws away what is written to it (and counts it)."""

    def __init__(self) -> None:
        self.count = 0

    def write(self, data: bytes) -> int:
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        pass


class Session(abc.ABC):
    """One client of one system."""

    @abc.abstractmethod
    async def put(self, path: str, data: bytes) -> None: ...

    @abc.abstractmethod
    async def get(self, path: str, size: int) -> int:
        """Read the whole file; returns the number of bytes read (``size`` is what was written)."""

    @abc.abstractmethod
    async def stat(self, path: str) -> None: ...

    @abc.abstractmethod
    async def listdir(self, path: str) -> int:
        """List a directory; returns the number of entries."""

    @abc.abstractmethod
    async def delete_tree(self, prefix: str, paths: list[str]) -> None:
        """Remove ``paths`` (all under ``prefix``); best effort."""

    @abc.abstractmethod
    async def close(self) -> None: ...


class System(abc.ABC):
    """A system under test (or the null server): started once per run, then many sessions."""

    key: str = ""
    label: str = ""

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop every process this system started; safe to call twice and after a failed start."""

    @abc.abstractmethod
    async def session(self) -> Session: ...

    @abc.abstractmethod
    def measured(self, op: str, size: int) -> dict[str, Any]:
        """What ``op`` (write, read, stat, listdir, failover) of ``size`` bytes means here."""

    def describe(self) -> dict[str, Any]:
        """Version and topology, for the report."""
        return {}

    # Failover: only systems with more than one server implement these.
    def can_fail_over(self) -> bool:
        return False

    async def kill_one(self) -> str:
        """SIGKILL the server whose loss hurts writes most; returns which one."""
        raise NotImplementedError

    async def restore(self) -> None:
        """Restart what :meth:`kill_one` killed and wait until the system is whole again."""
        raise NotImplementedError

    def pids(self) -> dict[str, int]:
        """Server process ids by name (for profilers)."""
        return {}


# --- mydfs ---------------------------------------------------------------------------------------


class MydfsSession(Session):
    def __init__(self, tracker: str, deadline: float) -> None:
        from mydfs.client.aio import AsyncClient

        self.client = AsyncClient(tracker, deadline=deadline)

    async def put(self, path: str, data: bytes) -> None:
        await self.client.put(path, data)

    async def get(self, path: str, size: int) -> int:
        if size >= STREAM_THRESHOLD:
            sink = Sink()
            await self.client.get(path, cast(BinaryIO, sink))  # only .write is used
            return sink.count
        return len(await self.client.read(path))

    async def stat(self, path: str) -> None:
        await self.client.stat(path)

    async def listdir(self, path: str) -> int:
        return len(await self.client.listdir(path))

    async def delete_tree(self, prefix: str, paths: list[str]) -> None:
        sem = asyncio.Semaphore(8)

        async def one(p: str) -> None:
            async with sem:
                await self.client.delete(p)

        await asyncio.gather(*(one(p) for p in paths), return_exceptions=True)

    async def close(self) -> None:
        await self.client.close()


class MydfsSystem(System):
    """A tracker and ``groups`` groups of 3 storage nodes on loopback, under ``root``."""

    key = "mydfs"
    label = "mydfs"

    def __init__(self, root: Path, groups: int = 1, deadline: float = 120.0) -> None:
        self.root = root
        self.groups = groups
        self.deadline = deadline
        self.cluster: LocalCluster | None = None
        self._killed: Process | None = None

    def start(self) -> None:
        self.cluster = LocalCluster(self.root, groups=self.groups)
        self.cluster.start(timeout=90)

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()

    @property
    def _c(self) -> LocalCluster:
        assert self.cluster is not None, "mydfs is not started"
        return self.cluster

    async def session(self) -> Session:
        return MydfsSession(self._c.tracker_url, self.deadline)

    def measured(self, op: str, size: int) -> dict[str, Any]:
        base: dict[str, Any] = {"bytes_per_op": size, "copies": 3}
        if op in ("write", "failover"):
            return base | {
                "fsync": True,
                "acknowledged_when": "durable (fsync'ed) on 2 of 3 nodes and committed through "
                "Raft; the file entry is in the tracker's fsync'ed edit log",
                "via": "mydfs AsyncClient: tracker placements, the group leader, tracker register",
                "checksums": "CRC32C per 64 KiB block, per slice and per file",
            }
        if op == "read":
            return base | {
                "via": "mydfs AsyncClient: tracker stat, chain walk, slices from random replicas",
                "checksums": "CRC32C of every slice and of the whole file verified",
                "cache": "page cache (data just written)",
            }
        return {"bytes_per_op": 0, "via": f"tracker {op}"}

    def describe(self) -> dict[str, Any]:
        from mydfs.common import __version__

        return {
            "version": __version__,
            "topology": f"1 tracker + {self.groups} group(s) x 3 mydfs-storage processes",
            "slice": "4 MiB slots (4,190,208 payload bytes)",
        }

    def can_fail_over(self) -> bool:
        return True

    async def kill_one(self) -> str:
        leader = await asyncio.to_thread(self._c.wait_leader, 1, 30.0)
        leader.kill(signal.SIGKILL)
        self._killed = leader
        return f"group 1 leader {leader.name}"

    async def restore(self) -> None:
        killed, self._killed = self._killed, None
        if killed is not None:
            killed.start()
        await asyncio.to_thread(self._wait_whole)

    def _wait_whole(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for g in range(1, self.groups + 1):
            while True:
                nodes = self._c.group(g)
                healths = [n.health() for n in nodes]
                if all(healths) and any(h and h.get("leader") for h in healths):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mydfs group {g} did not come back whole in {timeout} s")
                time.sleep(0.1)
        self._c.wait_tracker(timeout=max(1.0, deadline - time.monotonic()))

    def pids(self) -> dict[str, int]:
        return {
            p.name: p.proc.pid
            for p in self._c.processes()
            if p.proc is not None and p.proc.poll() is None
        }


# --- the null server -----------------------------------------------------------------------------


class HttpSession(Session):
    """An aiohttp session with the connection limits every HTTP-driven system shares."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=32),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        )

    async def close(self) -> None:
        await self.http.close()


class NullSession(HttpSession):
    def __init__(self, base: str, list_entries: int) -> None:
        super().__init__(base)
        self.list_entries = list_entries

    async def put(self, path: str, data: bytes) -> None:
        async with self.http.put(f"{self.base}/f{path}", data=data) as resp:
            await resp.read()
            if resp.status != 201:
                raise RuntimeError(f"null PUT: HTTP {resp.status}")

    async def get(self, path: str, size: int) -> int:
        async with self.http.get(f"{self.base}/f{path}", params={"size": str(size)}) as resp:
            return len(await resp.read())

    async def stat(self, path: str) -> None:
        async with self.http.get(f"{self.base}/stat{path}") as resp:
            await resp.json()

    async def listdir(self, path: str) -> int:
        async with self.http.get(
            f"{self.base}/list{path}", params={"n": str(self.list_entries)}
        ) as resp:
            return len((await resp.json())["entries"])

    async def delete_tree(self, prefix: str, paths: list[str]) -> None:
        pass


class NullSystem(System):
    """``python -m mydfs.bench.nullserver`` in its own process: answers and does nothing."""

    key = "null"
    label = "null HTTP server"

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        #: How many entries a listing answers (the meta workload sets it to its directory size).
        self.list_entries = 50

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_ports(1)[0]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mydfs.bench.nullserver", "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )
        wait_http(f"{self.url}/stat/ready", 20.0, self.proc)

    def stop(self) -> None:
        stop_process(self.proc)

    async def session(self) -> Session:
        return NullSession(self.url, self.list_entries)

    def measured(self, op: str, size: int) -> dict[str, Any]:
        return {
            "bytes_per_op": size if op in ("write", "read") else 0,
            "copies": 0,
            "fsync": False,
            "via": "one HTTP request to a Python aiohttp server that does nothing",
        }

    def pids(self) -> dict[str, int]:
        return {"null": self.proc.pid} if self.proc is not None else {}


# --- process helpers -----------------------------------------------------------------------------


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``url`` answers HTTP (any status), the process dies, or ``timeout`` passes."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; never raises for a dead process."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
