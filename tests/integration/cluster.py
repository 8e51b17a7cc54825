"""The integration tests' storage groups: the package's launcher plus the faults tests need.

:class:`Cluster` is a :class:`~mydfs.client.local_cluster.LocalCluster` without a tracker, under
one temporary root, whose processes die with pytest (``PR_SET_PDEATHSIG``). On top of the
launcher it adds what only tests do: waits that are ``async`` (the blocking HTTP polls run in a
worker thread, so the test's event loop keeps serving other tasks meanwhile), moving a group
whose ports were taken before its first start, kill -9 / SIGSTOP / SIGCONT / restart / wipe of
single nodes, tmpfs mounts, and the offline volume tools. :meth:`Cluster.close` ends every
process and removes every folder and mount it made; use the cluster as a context manager (or
call ``close`` in ``finally``) so that happens on failure too.

Processes are always started from the calling thread (the main one under pytest), so the
kernel's parent-death signal reaches them even when pytest is killed hard.

The module also has the small HTTP client helpers the tests share (:func:`put_slice`,
:func:`get_slice`, :func:`upload`, :func:`wait_served` ...), all on ``aiohttp`` with
explicit timeouts and ``allow_redirects=False``, so a test sees every 307 itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from helpers import free_ports, signed_headers, wait_until

from mydfs.client.local_cluster import LocalCluster
from mydfs.client.process import StorageProcess, entry_point
from mydfs.common.errors import Timeout

#: Generous deadlines: the machine is shared and busy (never assert exact speed).
START_TIMEOUT = 60.0
LEADER_TIMEOUT = 30.0
#: How long a node of a group's first start may take before its ports are suspected taken.
PORT_GRACE = 20.0
#: Payload capacity of one slice (4 MiB slot minus the 4 KiB header area).
SLICE_CAPACITY = 4_190_208

#: The file every slice a test uploads without naming a file belongs to (the ``http`` fixture
#: of ``conftest.py`` adds a grant for it to such requests).
TEST_FILE = "0" * 32

#: A storage node of the cluster (the launcher's process class).
StorageNode = StorageProcess


class Cluster(LocalCluster):
    """``groups`` storage groups of 3 ``mydfs-storage`` processes under one temporary root.

    Its ``start``, ``leader`` and ``status`` are the async counterparts of the launcher's
    blocking ``start_sync``, ``wait_leader`` and ``node_status``."""

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
        root = Path(tempfile.mkdtemp(prefix=f"mydfs-it-{name}-")) if root is None else root
        super().__init__(
            root,
            groups=groups,
            # A secret of its own, so no other cluster on this machine passes its identity check.
            secret=secret or "it-" + os.urandom(16).hex(),
            tracker=False,
            storage_args=["--log-level", log_level, *storage_args],
            env=env,
            log_dir=root / "logs",
            die_with_parent=True,
        )
        self.mounts: list[Path] = []
        self._closed = False

    def followers(self, leader: StorageNode) -> list[StorageNode]:
        return self.others(leader)

    # -- life cycle -------------------------------------------------------------------------------

    def start_sync(self, *args: Any, **kwargs: Any) -> None:
        """:meth:`start` for synchronous callers (fixture set-up); must not run inside an
        event loop."""
        asyncio.run(self.start(*args, **kwargs))

    async def start(  # type: ignore[override]
        self,
        nodes: Iterable[StorageNode] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = START_TIMEOUT,
        wait_leader: bool = True,
    ) -> None:
        """Start ``nodes`` (default: all), wait until each answers as itself, and (with
        ``wait_leader``) until every group of theirs has a leader.

        The machine is shared: a port found free can be taken by another process before the
        node binds it. A group started for the first time with all 3 nodes is then moved to
        fresh ports and started again (up to 3 attempts)."""
        chosen = list(self.nodes() if nodes is None else nodes)
        deadline = time.monotonic() + timeout
        for gid in sorted({n.group_id for n in chosen}):
            members = [n for n in chosen if n.group_id == gid]
            fresh = len(members) == len(self.nodes(gid)) and not any(n.starts for n in members)
            for attempt in range(1, 4):
                for node in members:
                    node.start(env)
                left = max(1.0, deadline - time.monotonic())
                problem = await asyncio.to_thread(
                    self.wait_answering, members, left, PORT_GRACE if fresh else left
                )
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

    def _move_group(self, group_id: int, reason: str) -> None:
        """Give a group that failed its first start new ports and empty data folders."""
        nodes = self.nodes(group_id)
        ports = free_ports(2 * len(nodes))
        for node in nodes:
            node.http_port, node.raft_port = ports.pop(), ports.pop()
            with open(node.log_path, "ab") as log:
                first_line = reason.splitlines()[0]
                log.write(f"=== harness: start failed ({first_line}); new ports ===\n".encode())
            self.wipe(node)

    async def wait_up(self, node: StorageNode, *, timeout: float = START_TIMEOUT) -> None:
        """Wait until ``node`` answers as itself; fails at once if the process exits."""
        problem = await asyncio.to_thread(self.wait_answering, [node], timeout)
        if problem is not None:
            raise AssertionError(problem)

    def kill(self, node: StorageNode) -> None:
        """kill -9 (and reap)."""
        node.kill()

    def pause(self, node: StorageNode) -> None:
        node.pause()

    def resume(self, node: StorageNode) -> None:
        node.resume()

    def stop_all(self) -> dict[str, int | None]:
        """Stop every process cleanly (SIGTERM); name → exit code."""
        return self.stop()

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
        node.start(env)
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
                proc.signal(signal.SIGCONT)
                proc.kill()
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

    async def status(self, node: StorageNode, timeout: float = 1.5) -> dict[str, Any] | None:
        """``GET /status`` of ``node``; None if it is down, paused or does not answer in time."""
        return await asyncio.to_thread(self.node_status, node, timeout)

    async def leader(self, group_id: int = 1, *, timeout: float = LEADER_TIMEOUT) -> StorageNode:
        """Wait (bounded) for the group's established leader and return it."""
        node: StorageNode = await wait_until(
            lambda: asyncio.to_thread(self.leader_now, group_id),
            timeout=timeout,
            what=f"a leader of group {group_id}",
            interval=0.1,
        )
        return node

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
            [entry_point("mydfs-storage"), "verify", str(node.volume_file)],
            capture_output=True,
            text=True,
            timeout=120,
        )

    def stat_volume(self, node: StorageNode) -> dict[str, Any]:
        assert not node.running, f"stop {node.node_id} before reading its volume"
        done = subprocess.run(
            [entry_point("mydfs-storage"), "stat", str(node.volume_file)],
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


async def delete_slice(
    session: aiohttp.ClientSession,
    cluster: Cluster,
    base: str,
    slot: int,
    generation: int,
    *,
    file_id: str = TEST_FILE,
    timeout: float = 15.0,
) -> Reply:
    """``DELETE /internal/slices/{slot}?gen&file``, signed with the cluster's secret (what the
    tracker's reclaimer sends; clients have no delete)."""
    path_qs = f"/internal/slices/{slot}?gen={generation}&file={file_id}"
    headers = signed_headers(cluster.secret, "DELETE", path_qs)
    return await request(session, "DELETE", base + path_qs, headers=headers, timeout=timeout)


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
    retrying 503/504/409, a 507 from a leader whose journal disk is full, and connection errors
    with the same upload id until ``deadline``. Returns the 201/200 JSON body; any other answer
    fails the test."""
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
        # 409: the same upload still in flight. 507 naming the leader's journal: a node whose
        # disk is full won an election; it refuses to log and hands leadership over.
        journal_full = reply.status == 507 and b"leader's journal" in reply.body
        if reply.status in (503, 504, 409) or journal_full:
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
        result: Reply = await wait_until(
            served, timeout=timeout, what=f"{node.node_id} to serve slot {slot}", interval=0.1
        )
    except Timeout as exc:
        raise Timeout(f"{exc}; last answer {last[0]!r}") from None
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
