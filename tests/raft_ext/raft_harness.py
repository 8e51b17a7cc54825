"""Test harness for raft_ext: free ports, bounded waits, an in-process group, a 3-process group.

Imported by the raft_ext tests and fixtures (``conftest.py`` puts this directory on sys.path).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import free_ports, wait_until
from raft_toy import KVMachine

from mydfs.raft_ext import RaftNode, RaftSettings

HERE = Path(__file__).resolve().parent
PASSWORD = "raft-test-secret"
HELPER = HERE / "raft_node_proc.py"


# -- in-process group ---------------------------------------------------------------------


@dataclass
class InprocCluster:
    root: Path
    addresses: list[str]
    urls: dict[str, str]
    nodes: list[RaftNode[KVMachine]] = field(default_factory=list)
    events: list[list[str]] = field(default_factory=list)
    fatals: list[list[BaseException]] = field(default_factory=list)

    def settings(self, i: int, **overrides: Any) -> RaftSettings:
        me = self.addresses[i]
        values: dict[str, Any] = dict(
            self_address=me,
            peers=tuple(a for a in self.addresses if a != me),
            http_urls=self.urls,
            data_dir=self.root / f"node{i}",
            password=PASSWORD,
            log_compaction_split=False,
        )
        values.update(overrides)
        return RaftSettings(**values)

    async def start(self) -> None:
        for i in range(len(self.addresses)):
            events: list[str] = []
            fatals: list[BaseException] = []
            node = RaftNode(
                self.settings(i),
                KVMachine(),
                on_become_leader=lambda ev=events: ev.append("leader"),
                on_lose_leadership=lambda ev=events: ev.append("lost"),
                on_fatal=fatals.append,
            )
            self.events.append(events)
            self.fatals.append(fatals)
            self.nodes.append(node)
            await node.start()

    async def leader(self, timeout: float = 15.0) -> RaftNode[KVMachine]:
        found: list[RaftNode[KVMachine]] = []

        def one_leader() -> bool:
            leaders = [n for n in self.nodes if n.is_leader() and n.has_quorum]
            found[:] = leaders
            return len(leaders) == 1

        await wait_until(one_leader, timeout=timeout, what="a single leader")
        return found[0]

    def followers(self, leader: RaftNode[KVMachine]) -> list[RaftNode[KVMachine]]:
        return [n for n in self.nodes if n is not leader]

    async def close(self) -> None:
        for node in self.nodes:
            for machine_gate in (node.machine.gate,):
                machine_gate.set()
        for node in self.nodes:
            with contextlib.suppress(Exception):
                await node.close()


# -- 3 real processes ---------------------------------------------------------------------


class ProcCluster:
    """Three ``raft_node_proc.py`` processes on 127.0.0.1 plus an HTTP client to drive them."""

    def __init__(self, root: Path, session: aiohttp.ClientSession) -> None:
        self.root = root
        self.session = session
        ports = free_ports(6)
        self.raft_ports = ports[:3]
        self.http_ports = ports[3:]
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.log_files: dict[int, Path] = {}

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.http_ports[i]}"

    def data_dir(self, i: int) -> Path:
        return self.root / f"node{i}"

    async def start(self, i: int, timeout: float = 30.0) -> None:
        assert i not in self.procs, f"node {i} already running"
        log_path = self.root / f"node{i}.log"
        self.log_files[i] = log_path
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["MYDFS_RAFT_TEST_PASSWORD"] = PASSWORD
        with open(log_path, "ab") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(HELPER),
                "--index",
                str(i),
                "--raft-ports",
                *map(str, self.raft_ports),
                "--http-ports",
                *map(str, self.http_ports),
                "--data-dir",
                str(self.data_dir(i)),
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=env,
            )
        self.procs[i] = proc
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        except TimeoutError:
            pytest.fail(f"node {i} did not start within {timeout}s")
        assert line.strip() == b"READY", f"node {i} failed to start: {line!r}"

    async def start_all(self) -> None:
        await asyncio.gather(*(self.start(i) for i in range(3)))

    async def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(i)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        await proc.wait()

    def signal(self, i: int, sig: int) -> None:
        self.procs[i].send_signal(sig)

    async def _get(self, i: int, path: str) -> Any:
        async with self.session.get(self.url(i) + path) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def status(self, i: int) -> dict[str, Any] | None:
        try:
            return await asyncio.wait_for(self._get(i, "/status"), 2.0)  # type: ignore[no-any-return]
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None

    async def state(self, i: int) -> dict[str, Any]:
        return await self._get(i, "/state")  # type: ignore[no-any-return]

    async def compact(self, i: int) -> None:
        async with self.session.post(self.url(i) + "/compact") as resp:
            resp.raise_for_status()

    async def submit(
        self, i: int, command: dict[str, Any], *, timeout: float = 2.0, leader_only: bool = False
    ) -> tuple[int, dict[str, Any]]:
        body = {"command": command, "timeout": timeout, "leader_only": leader_only}
        async with self.session.post(self.url(i) + "/submit", json=body) as resp:
            return resp.status, await resp.json()

    async def leader_among(self, nodes: list[int], timeout: float) -> int:
        found: list[int] = []

        async def one_leader() -> bool:
            leaders = []
            for i in nodes:
                st = await self.status(i)
                if st and st.get("is_leader") and st.get("has_quorum"):
                    leaders.append(i)
            found[:] = leaders
            return len(leaders) == 1

        await wait_until(
            one_leader, timeout=timeout, what=f"one leader among {nodes}", interval=0.05
        )
        return found[0]

    async def close(self) -> None:
        for i in list(self.procs):
            proc = self.procs.pop(i)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 10)

    def dump_logs(self) -> None:
        for i, path in sorted(self.log_files.items()):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace")
                print(f"----- node {i} log (last 60 lines) -----")
                print("\n".join(text.splitlines()[-60:]))
