"""A harness of real ``mydfs-storage`` processes on 127.0.0.1 for the integration tests.

:class:`Cluster` allocates free loopback ports, starts ``groups`` storage groups of 3 processes
each (every node with its own data folder under one temporary root), waits with deadlines for
each group's leader, and can kill -9, SIGSTOP, SIGCONT, stop, restart or wipe single nodes.
:meth:`Cluster.close` ends every process and removes every folder and mount it made; use the
cluster as a context manager (or call ``close`` in ``finally``) so that happens on failure too.

Process control (spawn, signals) is synchronous and instant. Waits are ``async`` and bounded
(the blocking HTTP polls run in a worker thread, so the test's event loop keeps serving other
tasks meanwhile); :meth:`Cluster.start_sync` wraps :meth:`Cluster.start` for fixture set-up.
Processes are always spawned from the calling thread (the main one under pytest): each child
gets ``PR_SET_PDEATHSIG`` = SIGKILL, so even a hard-killed pytest leaves no node behind.

Every cluster has a secret of its own, and a node counts as up only once it answers a call
signed with it under its own node id: other test runs on the same machine (same node names,
maybe a port this harness also picked) can neither be mistaken for a node nor join a group.

Other roles (the tracker) can be added as further process kinds: :class:`Proc` holds what is
common (command line, log file, signals); :class:`StorageNode` adds the storage specifics.

The module also has the small HTTP client helpers the tests share (:func:`put_slice`,
:func:`get_slice`, :func:`upload`, :func:`wait_served` ...), all on ``aiohttp`` with
explicit timeouts and ``allow_redirects=False``, so a test sees every 307 itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from mydfs.common.auth import AUTH_HEADER, sign

T = TypeVar("T")

#: Generous deadlines: the machine is shared and busy (never assert exact speed).
START_TIMEOUT = 60.0
LEADER_TIMEOUT = 30.0
#: How long a node of a group's first start may take before its ports are suspected taken.
PORT_GRACE = 20.0
#: Payload capacity of one slice (4 MiB slot minus the 4 KiB header area).
SLICE_CAPACITY = 4_190_208

_BIN = Path(sys.executable).parent


def storage_command() -> str:
    """The ``mydfs-storage`` entry point of the venv running the tests."""
    exe = _BIN / "mydfs-storage"
    if exe.exists():
        return str(exe)
    found = shutil.which("mydfs-storage")
    if found is None:
        raise RuntimeError("mydfs-storage is not installed in this environment")
    return found


# --- ports, polling ------------------------------------------------------------------------------


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now.

    They are picked below the kernel's ephemeral range (so an outgoing connection cannot take
    one while its node is down for a restart) and checked by binding them all at once.
    """
    low, high = 20000, _ephemeral_low() - 1
    rng = random.Random()
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        attempts = 0
        while len(ports) < count:
            attempts += 1
            if attempts > 50 * count:
                raise RuntimeError(f"could not find {count} free ports")
            port = rng.randint(low, high) if high - low > 1000 else 0
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            if s.getsockname()[1] in ports:
                s.close()
                continue
            socks.append(s)
            ports.append(s.getsockname()[1])
        return ports
    finally:
        for s in socks:
            s.close()


class WaitTimeout(AssertionError):
    """A bounded wait ran out (an ``AssertionError``, so pytest reports it as a failure)."""


def wait_sync(
    predicate: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> T:
    """Poll ``predicate`` until it returns something truthy; return that. Bounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


async def wait_async(
    predicate: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> Any:
    """Like :func:`wait_sync` for an async (or plain) predicate; never blocks the loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


def http_json(
    url: str, timeout: float = 2.0, headers: Mapping[str, str] | None = None
) -> tuple[int, Any]:
    """A blocking GET returning (status, parsed JSON or None); raises OSError when unreachable."""
    req = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


# --- processes ---------------------------------------------------------------------------------


def _pdeathsig() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass(eq=False)
class Proc:
    """One server process: command line, environment, log file, signals."""

    name: str
    http_port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def command(self) -> list[str]:
        raise NotImplementedError

    def spawn(self, env: Mapping[str, str] | None = None) -> None:
        """Start the process (no waiting). ``env`` adds to / overrides this start's environment."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        run_env = dict(os.environ, PYTHONUNBUFFERED="1")
        run_env.pop("MYDFS_FAULTS", None)
        run_env.update(self.env)
        if env:
            run_env.update(env)
        self.starts += 1
        extra = {k: v for k, v in run_env.items() if k.startswith("MYDFS_")}
        with open(self.log_path, "ab") as log:
            log.write(f"=== harness: start #{self.starts} of {self.name} {extra} ===\n".encode())
            log.flush()
            main = threading.current_thread() is threading.main_thread()
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=run_env,
                preexec_fn=_pdeathsig if main else None,
            )
        self.paused = False

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """kill -9 and reap."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.paused = False

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (a clean shutdown) and reap; SIGKILL if it does not exit in ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if self.paused:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.paused = False
        return self.proc.returncode

    def pause(self) -> None:
        """SIGSTOP: the process freezes; new TCP connects still succeed, requests hang."""
        assert self.running, f"{self.name} is not running"
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT."""
        self.signal(signal.SIGCONT)
        self.paused = False

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def health_sync(self, timeout: float = 1.0) -> bool:
        """Does the process answer HTTP at all (any status)?"""
        try:
            http_json(self.url + "/health", timeout=timeout)
        except (OSError, urllib.error.URLError):
            return False
        return True


@dataclass(eq=False)
class StorageNode(Proc):
    """One ``mydfs-storage`` process of a group."""

    group_id: int = 0
    index: int = 0
    raft_port: int = 0
    data_dir: Path = Path()
    volume_path: Path | None = None
    secret: str = ""
    peers: list[StorageNode] = field(default_factory=list)
    extra_args: list[str] = field(default_factory=list)

    @property
    def node_id(self) -> str:
        return self.name

    @property
    def raft_address(self) -> str:
        return f"127.0.0.1:{self.raft_port}"

    @property
    def volume_file(self) -> Path:
        return self.volume_path or self.data_dir / "volume.dat"

    def command(self) -> list[str]:
        args = [
            storage_command(),
            "--node-id", self.node_id,
            "--group-id", str(self.group_id),
            "--data-dir", str(self.data_dir),
            "--listen", f"127.0.0.1:{self.http_port}",
            "--raft", self.raft_address,
            "--secret", self.secret,
        ]  # fmt: skip
        if self.volume_path is not None:
            args += ["--volume-path", str(self.volume_path)]
        for peer in self.peers:
            args += ["--peers", f"{peer.node_id},{peer.raft_address},{peer.url}"]
        return args + list(self.extra_args)

    def __repr__(self) -> str:
        state = "paused" if self.paused else ("up" if self.running else "down")
        return f"<{self.node_id} {self.url} {state}>"


@dataclass(eq=False)
class Group:
    group_id: int
    nodes: list[StorageNode]

    def by_id(self, node_id: str) -> StorageNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def by_url(self, url: str) -> StorageNode:
        return next(n for n in self.nodes if n.url == url.rstrip("/"))


# --- the cluster -------------------------------------------------------------------------------


class Cluster:
    """``groups`` storage groups of 3 ``mydfs-storage`` processes under one temporary root."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        groups: int = 1,
        secret: str | None = None,
        env: Mapping[str, str] | None = None,
        storage_args: Iterable[str] = (),
        log_level: str = "info",
        name: str = "cluster",
    ) -> None:
        self.name = name
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix=f"mydfs-it-{name}-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        #: A secret of its own, so no other cluster on this machine passes its identity check.
        self.secret = secret or "it-" + os.urandom(16).hex()
        self.mounts: list[Path] = []
        self.groups: dict[int, Group] = {}
        #: Further processes the cluster owns (a tracker, later); close() ends them too.
        self.services: list[Proc] = []
        self._closed = False
        args = ["--log-level", log_level, *storage_args]
        ports = free_ports(6 * groups)
        for g in range(1, groups + 1):
            nodes = []
            for i in range(1, 4):
                node_id = f"g{g}n{i}"
                http_port, raft_port = ports.pop(), ports.pop()
                nodes.append(
                    StorageNode(
                        name=node_id,
                        http_port=http_port,
                        log_path=self.root / "logs" / f"{node_id}.log",
                        env=dict(env or {}),
                        group_id=g,
                        index=i,
                        raft_port=raft_port,
                        data_dir=self.root / node_id,
                        secret=self.secret,
                        extra_args=list(args),
                    )
                )
            for node in nodes:
                node.peers = [p for p in nodes if p is not node]
            self.groups[g] = Group(g, nodes)

    # -- lookup ------------------------------------------------------------------------------------

    def group(self, group_id: int = 1) -> Group:
        return self.groups[group_id]

    def nodes(self, group_id: int | None = None) -> list[StorageNode]:
        if group_id is not None:
            return list(self.groups[group_id].nodes)
        return [n for g in self.groups.values() for n in g.nodes]

    def node(self, node_id: str) -> StorageNode:
        return next(n for n in self.nodes() if n.node_id == node_id)

    def by_url(self, url: str) -> StorageNode:
        return next(n for n in self.nodes() if n.url == url.rstrip("/"))

    def others(self, node: StorageNode) -> list[StorageNode]:
        return [n for n in self.nodes(node.group_id) if n is not node]

    def processes(self) -> list[Proc]:
        """Every process of the cluster: the services first, then the storage nodes."""
        return [*self.services, *self.nodes()]

    # -- life cycle -------------------------------------------------------------------------------

    def start_sync(
        self,
        nodes: Iterable[StorageNode] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = START_TIMEOUT,
        wait_leader: bool = True,
    ) -> None:
        """:meth:`start` for synchronous callers (fixture set-up); must not run inside an
        event loop."""
        asyncio.run(self.start(nodes, env=env, timeout=timeout, wait_leader=wait_leader))

    async def start(
        self,
        nodes: Iterable[StorageNode] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = START_TIMEOUT,
        wait_leader: bool = True,
    ) -> None:
        """Spawn ``nodes`` (default: all), wait until each answers as itself, and (with
        ``wait_leader``) until every group of theirs has a leader.

        The machine is shared: a port found free can be taken by another process before the
        node binds it. A group started for the first time with all 3 nodes is then moved to
        fresh ports and started again (up to 3 attempts)."""
        chosen = list(self.nodes() if nodes is None else nodes)
        deadline = time.monotonic() + timeout
        for gid in sorted({n.group_id for n in chosen}):
            members = [n for n in chosen if n.group_id == gid]
            fresh = len(members) == len(self.groups[gid].nodes) and not any(
                n.starts for n in members
            )
            for attempt in range(1, 4):
                for node in members:
                    node.spawn(env)
                left = max(1.0, deadline - time.monotonic())
                problem = await self._wait_members_up(members, left, PORT_GRACE if fresh else left)
                if problem is None:
                    break
                if not fresh or attempt == 3:
                    raise AssertionError(problem)
                for node in members:
                    node.kill()
                self._move_group(gid, problem)
        if wait_leader:
            for gid in sorted({n.group_id for n in chosen}):
                await self.leader(gid, timeout=max(1.0, deadline - time.monotonic()))

    async def _wait_members_up(
        self, members: list[StorageNode], timeout: float, grace: float
    ) -> str | None:
        """None once every member answers as itself; else what went wrong (a node exited, or
        did not answer within ``grace``)."""
        end = time.monotonic() + min(timeout, grace)
        waiting = list(members)
        while waiting:
            for node in list(waiting):
                if not node.running:
                    return (
                        f"{node.node_id} exited with code {node.returncode} during start-up:\n"
                        + node.log_tail(30)
                    )
                if await asyncio.to_thread(self.identity_ok, node):
                    waiting.remove(node)
            if waiting and time.monotonic() >= end:
                names = ", ".join(n.node_id for n in waiting)
                return f"{names} did not answer within {min(timeout, grace):.0f}s"
            if waiting:
                await asyncio.sleep(0.05)
        return None

    def _move_group(self, group_id: int, reason: str) -> None:
        """Give a group that failed its first start new ports and empty data folders."""
        nodes = self.groups[group_id].nodes
        ports = free_ports(2 * len(nodes))
        for node in nodes:
            node.http_port, node.raft_port = ports.pop(), ports.pop()
            with open(node.log_path, "ab") as log:
                first_line = reason.splitlines()[0]
                log.write(f"=== harness: start failed ({first_line}); new ports ===\n".encode())
            self.wipe(node)

    def identity_ok(self, node: StorageNode) -> bool:
        """Does ``node``'s port answer as that node of this cluster? (A signed internal call
        only this cluster's secret passes, naming the node; not a stranger on a reused port.)"""
        if not node.running or node.paused:
            return False
        path = "/internal/holds/0?gen=1"
        headers = {AUTH_HEADER: sign(self.secret, "GET", path)}
        try:
            status, body = http_json(node.url + path, timeout=1.0, headers=headers)
        except (OSError, urllib.error.URLError):
            return False
        return status == 200 and isinstance(body, dict) and body.get("node") == node.node_id

    async def wait_up(self, node: StorageNode, *, timeout: float = START_TIMEOUT) -> None:
        """Wait until ``node`` answers as itself; fails at once if the process exits."""
        problem = await self._wait_members_up([node], timeout, timeout)
        if problem is not None:
            raise AssertionError(problem)

    def kill(self, node: StorageNode) -> None:
        """kill -9 (and reap)."""
        node.kill()

    def pause(self, node: StorageNode) -> None:
        node.pause()

    def resume(self, node: StorageNode) -> None:
        node.resume()

    def stop(self, node: StorageNode) -> int | None:
        """A clean stop (SIGTERM); returns the exit code."""
        return node.terminate()

    def stop_all(self) -> dict[str, int | None]:
        """Stop every process cleanly (SIGTERM); name → exit code."""
        return {p.name: p.terminate() for p in self.processes() if p.proc is not None}

    async def restart(
        self,
        node: StorageNode,
        *,
        env: Mapping[str, str] | None = None,
        clean: bool = False,
        timeout: float = START_TIMEOUT,
    ) -> None:
        """Stop ``node`` (kill -9, or SIGTERM with ``clean``) if it runs, start it again, and
        wait until it answers as itself."""
        if node.running:
            node.terminate() if clean else node.kill()
        node.spawn(env)
        await self.wait_up(node, timeout=timeout)

    def wipe(self, node: StorageNode) -> None:
        """Delete the node's data folder and volume (the node must be stopped)."""
        assert not node.running, f"stop {node.node_id} before wiping it"
        shutil.rmtree(node.data_dir, ignore_errors=True)
        if node.volume_path is not None:
            for path in (
                node.volume_path,
                node.volume_path.with_name(node.volume_path.name + ".creating"),
            ):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def close(self) -> None:
        """End every process (SIGCONT + SIGKILL), unmount, remove the root. Idempotent."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for proc in self.processes():
            try:
                if proc.proc is not None and proc.proc.poll() is None:
                    proc.proc.send_signal(signal.SIGCONT)
                    proc.proc.send_signal(signal.SIGKILL)
                if proc.proc is not None:
                    proc.proc.wait(timeout=30)
            except Exception as exc:  # keep going: everything else must still be cleaned up
                errors.append(f"{proc.name}: {exc!r}")
        for mount in reversed(self.mounts):
            try:
                umount(mount)
            except Exception as exc:
                errors.append(f"umount {mount}: {exc!r}")
        self.mounts.clear()
        if self._own_root and not os.environ.get("MYDFS_IT_KEEP"):
            shutil.rmtree(self.root, ignore_errors=True)
        if errors:
            raise RuntimeError("cluster clean-up problems: " + "; ".join(errors))

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- status and leadership -----------------------------------------------------------------

    def status_sync(self, node: StorageNode, timeout: float = 1.5) -> dict[str, Any] | None:
        """``GET /status`` of ``node``; None if it is down, paused or does not answer in time."""
        if not node.running or node.paused:
            return None
        try:
            status, body = http_json(node.url + "/status", timeout=timeout)
        except (OSError, urllib.error.URLError):
            return None
        return body if status == 200 and isinstance(body, dict) else None

    async def status(self, node: StorageNode, timeout: float = 1.5) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.status_sync, node, timeout)

    def leader_now(self, group_id: int = 1) -> StorageNode | None:
        """The group's leader if one is established right now: exactly one running node says
        it leads with a quorum and is ready, and every other answering node names it."""
        group = self.groups[group_id]
        answers = {n: self.status_sync(n) for n in group.nodes if n.running and not n.paused}
        leaders = [
            n
            for n, st in answers.items()
            if st is not None
            and st.get("role") == "leader"
            and (st.get("raft") or {}).get("has_quorum")
            and (st.get("raft") or {}).get("ready")
        ]
        if len(leaders) != 1:
            return None
        leader = leaders[0]
        agree = 0
        for n, st in answers.items():
            if st is None or n is leader:
                continue
            if st.get("leader") != leader.url:
                return None
            agree += 1
        return leader if agree >= 1 else None

    def leader_sync(self, group_id: int = 1, *, timeout: float = LEADER_TIMEOUT) -> StorageNode:
        return wait_sync(
            lambda: self.leader_now(group_id),
            timeout=timeout,
            what=f"a leader of group {group_id}",
            interval=0.1,
        )

    async def leader(self, group_id: int = 1, *, timeout: float = LEADER_TIMEOUT) -> StorageNode:
        """Wait (bounded) for the group's established leader and return it."""
        node: StorageNode = await wait_async(
            lambda: asyncio.to_thread(self.leader_now, group_id),
            timeout=timeout,
            what=f"a leader of group {group_id}",
            interval=0.1,
        )
        return node

    def followers(self, leader: StorageNode) -> list[StorageNode]:
        return self.others(leader)

    # -- disks --------------------------------------------------------------------------------

    def mount_tmpfs(self, path: Path, size: str) -> Path:
        """Mount a tmpfs of ``size`` (e.g. ``"24m"``) at ``path``; unmounted by close()."""
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
            check=True,
            capture_output=True,
        )
        self.mounts.append(path)
        return path

    @staticmethod
    def resize_tmpfs(path: Path, size: str) -> None:
        subprocess.run(
            ["mount", "-o", f"remount,size={size}", str(path)], check=True, capture_output=True
        )

    # -- offline volume tools (the node must be stopped) ------------------------------------------

    def verify_volume(self, node: StorageNode) -> subprocess.CompletedProcess[str]:
        assert not node.running, f"stop {node.node_id} before verifying its volume"
        return subprocess.run(
            [storage_command(), "verify", str(node.volume_file)],
            capture_output=True,
            text=True,
            timeout=120,
        )

    def stat_volume(self, node: StorageNode) -> dict[str, Any]:
        assert not node.running, f"stop {node.node_id} before reading its volume"
        done = subprocess.run(
            [storage_command(), "stat", str(node.volume_file)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def volume_digest(self, node: StorageNode) -> dict[int, tuple[int, int, str]]:
        """Offline: slot → (generation, length, sha256 of the payload) of every LIVE slice in
        the node's volume, each read with its block checksums verified."""
        assert not node.running, f"stop {node.node_id} before reading its volume"
        from mydfs.storage.format import SlotState
        from mydfs.storage.volume import Volume

        out: dict[int, tuple[int, int, str]] = {}
        with Volume.open(node.volume_file) as volume:
            for header in volume.scan():
                if header.state == SlotState.LIVE:
                    got = volume.read(header.slot)
                    out[header.slot] = (header.generation, header.length, sha256(got.data))
        return out

    # -- logs ---------------------------------------------------------------------------------

    def dump_logs(self, lines: int = 60, out: Any = None) -> None:
        stream = out or sys.stdout
        for proc in self.processes():
            if proc.starts:
                print(f"----- {proc.name} ({proc.url}) last {lines} log lines -----", file=stream)
                print(proc.log_tail(lines), file=stream)


def umount(path: Path) -> None:
    done = subprocess.run(["umount", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)


def can_mount_tmpfs() -> str | None:
    """None if this process can mount a tmpfs, else the reason it cannot."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "mount/umount are not installed"
    probe = Path(tempfile.mkdtemp(prefix="mydfs-it-probe-"))
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            return f"mount -t tmpfs failed: {done.stderr.strip()}"
        umount(probe)
        return None
    finally:
        shutil.rmtree(probe, ignore_errors=True)


# --- HTTP client helpers -------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def sha256(self) -> str:
        return sha256(self.body)

    def __repr__(self) -> str:
        shown = (
            self.body[:300]
            if self.headers.get("Content-Type", "").startswith(("application/json", "text/"))
            else f"<{len(self.body)} bytes>"
        )
        return f"<Reply {self.status} {shown!r}>"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(size: int, seed: int) -> bytes:
    """Deterministic pseudo-random bytes."""
    return random.Random(seed).randbytes(size)


async def request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    timeout: float = 30.0,
    **kwargs: Any,
) -> Reply:
    kwargs.setdefault("allow_redirects", False)
    async with session.request(
        method, url, timeout=aiohttp.ClientTimeout(total=timeout), **kwargs
    ) as resp:
        body = await resp.read()
        return Reply(resp.status, body, dict(resp.headers))


async def put_slice(
    session: aiohttp.ClientSession,
    base: str,
    data: bytes,
    *,
    upload_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Reply:
    url = base + "/slices" + (f"?upload={upload_id}" if upload_id else "")
    return await request(
        session, "PUT", url, data=data, headers=dict(headers or {}), timeout=timeout
    )


async def get_slice(
    session: aiohttp.ClientSession,
    base: str,
    slot: int | str,
    *,
    gen: int | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 15.0,
) -> Reply:
    url = f"{base}/slices/{slot}" + (f"?gen={gen}" if gen is not None else "")
    return await request(session, "GET", url, headers=dict(headers or {}), timeout=timeout)


async def upload(
    cluster: Cluster,
    session: aiohttp.ClientSession,
    data: bytes,
    *,
    group_id: int = 1,
    upload_id: str | None = None,
    deadline: float = 60.0,
    headers: Mapping[str, str] | None = None,
    base: str | None = None,
) -> dict[str, Any]:
    """Upload like a client: to ``base`` (default: the group's leader), following 307s,
    retrying 503/504/409 and connection errors with the same upload id until ``deadline``.
    Returns the 201/200 JSON body; any other answer fails the test."""
    upload_id = upload_id or os.urandom(16).hex()
    end = time.monotonic() + deadline
    last: object = None
    while time.monotonic() < end:
        if base is None:
            leader = await cluster.leader(group_id, timeout=max(1.0, end - time.monotonic()))
            base = leader.url
        try:
            reply = await put_slice(
                session, base, data, upload_id=upload_id, headers=headers, timeout=30.0
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            last, base = exc, None
            await asyncio.sleep(0.2)
            continue
        if reply.status in (200, 201):
            body: dict[str, Any] = reply.json()
            return body
        last = reply
        if reply.status == 307:
            base = reply.headers["Location"].split("/slices")[0]
            continue
        if reply.status in (503, 504, 409):  # 409: the same upload still in flight
            base = None
            await asyncio.sleep(0.2)
            continue
        raise AssertionError(f"upload failed: {reply!r}")
    raise AssertionError(f"upload did not succeed within {deadline}s; last answer: {last!r}")


async def wait_served(
    session: aiohttp.ClientSession,
    node: StorageNode,
    slot: int,
    digest: str,
    *,
    timeout: float = 30.0,
) -> Reply:
    """Wait until ``node`` itself serves ``slot`` (200, no redirect) with the given sha256."""
    last: list[object] = [None]

    async def served() -> Reply | None:
        if not node.running:
            raise AssertionError(f"{node.node_id} is not running:\n{node.log_tail(20)}")
        try:
            reply = await get_slice(session, node.url, slot, timeout=5.0)
        except (aiohttp.ClientError, TimeoutError) as exc:
            last[0] = exc
            return None
        last[0] = reply
        return reply if reply.status == 200 and reply.sha256 == digest else None

    try:
        result: Reply = await wait_async(
            served, timeout=timeout, what=f"{node.node_id} to serve slot {slot}", interval=0.1
        )
    except WaitTimeout as exc:
        raise WaitTimeout(f"{exc}; last answer {last[0]!r}") from None
    return result


async def served_digests(
    session: aiohttp.ClientSession, node: StorageNode, slots: Iterable[int]
) -> dict[int, str]:
    """slot → sha256 of what ``node`` itself serves (status code instead when not 200)."""
    out: dict[int, str] = {}
    for slot in slots:
        reply = await get_slice(session, node.url, slot)
        out[slot] = reply.sha256 if reply.status == 200 else f"HTTP {reply.status}"
    return out


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text → {(sample name, sorted labels): value} (strict parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(
    samples: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))
