"""The package's launcher (:class:`~mydfs.client.local_cluster.LocalCluster`) with every
process in its own network namespace of a :class:`~netns.TestNet`.

Each process binds and advertises its own 10.77.0.x address (``Process.host``) and is started
through ``ip netns exec`` (``Process.wrap``); ports are the launcher's. Every status poll runs
from the client namespace (:class:`~netns.NetnsExecutor`), never from the root namespace.
Some nodes' data folders can sit on a small tmpfs (the disk-full fault). :meth:`close` ends every
process and unmounts; the net itself is destroyed by its owner.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from cluster import umount  # the integration tests' harness
from helpers import http_json, signed_headers
from netns import NetnsExecutor, TestNet

from mydfs.client.local_cluster import LocalCluster
from mydfs.client.process import Process, StorageProcess, entry_point
from mydfs.common.errors import Timeout, Unavailable

CLIENT = "client"


def hosts_for(groups: int) -> dict[str, int]:
    """Host name → last octet: the tracker .2, node i of group g .(10g + i), the clients .100."""
    hosts = {"tracker": 2}
    for g in range(1, groups + 1):
        for i in (1, 2, 3):
            hosts[f"g{g}n{i}"] = 10 * g + i
    hosts[CLIENT] = 100
    return hosts


class NetCluster(LocalCluster):
    """A tracker and ``groups`` groups of 3 nodes, each process in its own namespace."""

    def __init__(
        self,
        root: Path,
        net: TestNet,
        *,
        groups: int = 2,
        small_disks: tuple[tuple[str, ...], str] = ((), "256m"),
        storage_args: tuple[str, ...] = (),
        tracker_options: dict[str, Any] | None = None,
    ) -> None:
        self.net = net
        super().__init__(
            root,
            groups=groups,
            secret="nemesis-" + os.urandom(12).hex(),
            storage_args=storage_args,
            log_dir=root / "logs",
            die_with_parent=True,
        )
        for proc in self.processes():
            proc.host = net.ip(proc.name)
            proc.wrap = net.wrap(proc.name)
        if self.tracker_process is not None:
            self.tracker_process.options.update(tracker_options or {})
        self.ctl = NetnsExecutor(net.ns(CLIENT))
        self.mounts: list[Path] = []
        names, size = small_disks
        self.small_disks: list[StorageProcess] = [self.node(name) for name in names]
        for node in self.small_disks:
            self.mount_tmpfs(node.data_dir, size)
        self.unexpected_exits: list[str] = []

    @property
    def tracker_url(self) -> str:
        return f"http://{self.net.ip('tracker')}:{self.base_port}"

    # -- life cycle (processes start from the calling thread; waits run in the client ns) ------

    def start_all(self, timeout: float = 90.0) -> None:
        procs = [p for p in self.processes() if not p.running]
        for proc in procs:
            proc.start()
        end = time.monotonic() + timeout
        problem = self.ctl.call(self.wait_answering, procs, timeout, timeout=timeout + 10)
        if problem is not None:
            raise Unavailable(problem)
        self.ctl.call(self.wait_ready, procs, end, timeout=timeout + 10)

    def revive(self) -> list[str]:
        """Start every process that is down (killed, or exited on its own), SIGCONT the paused
        ones; the names of those that had exited on their own."""
        exited = []
        for proc in self.processes():
            if proc.paused:
                proc.resume()
            if not proc.running:
                if proc.proc is not None and proc.returncode not in (None, -9):
                    exited.append(f"{proc.name} (exit {proc.returncode})")
                proc.start()
        self.unexpected_exits += exited
        return exited

    def leader_of(self, group_id: int) -> StorageProcess | None:
        """The group's established leader right now, or None (asked from the client ns)."""
        try:
            return self.ctl.call(self.leader_now, group_id, timeout=15)
        except Exception:
            return None

    def status_of(self, proc: Process) -> dict[str, Any] | None:
        try:
            return self.ctl.call(self.node_status, proc, 2.0, timeout=15)
        except Exception:
            return None

    def converged(self, group_id: int) -> str | None:
        """None once every member answers with the same group table statistics and applied
        index, and its volume holds every live slice; else what still differs."""
        answers = {n.node_id: self.status_of(n) for n in self.nodes(group_id)}
        missing = [k for k, v in answers.items() if v is None]
        if missing:
            return f"no /status from {missing}"
        tables = {k: v["group"] for k, v in answers.items() if v is not None}
        applied = {k: (v.get("raft") or {}).get("last_applied") for k, v in answers.items() if v}
        if len({repr(sorted(t.items())) for t in tables.values()}) != 1:
            fields = sorted({f for t in tables.values() for f in t})
            differ = {
                f: {k: t.get(f) for k, t in tables.items()}
                for f in fields
                if len({repr(t.get(f)) for t in tables.values()}) != 1
            }
            raft = {
                k: {f: (v.get("raft") or {}).get(f) for f in ("role", "term", "commit_index")}
                for k, v in answers.items()
                if v
            }
            return f"group tables differ: {differ}; applied {applied}; raft {raft}"
        if len(set(applied.values())) != 1:
            return f"applied indexes differ: {applied}"
        for k, v in answers.items():
            if v is None:
                continue
            held, live = (v.get("volume") or {}).get("live"), v["group"].get("live")
            if held != live:
                return f"{k}'s volume holds {held} live slices of {live}"
        return None

    def wait_converged(self, timeout: float) -> dict[int, str | None]:
        """Wait (bounded) until every group converged; group → what still differs (None)."""
        end = time.monotonic() + timeout
        result: dict[int, str | None] = {}
        for g in range(1, self.groups + 1):
            while True:
                result[g] = self.converged(g)
                if result[g] is None or time.monotonic() >= end:
                    break
                time.sleep(0.5)
        return result

    def table_of(self, node: StorageProcess) -> dict[int, Any]:
        """``node``'s group table, slot by slot (``GET /slices/{slot}/meta`` for every slot
        below the table's end, without what only this node knows), asked from the client ns."""

        def fetch() -> dict[int, Any]:
            _, st = node.get_json("/status", 5.0) or (0, None)
            end = int(((st or {}).get("group") or {}).get("end", 0))
            table: dict[int, Any] = {}
            for slot in range(end):
                path = f"/slices/{slot}/meta"  # signed: the slot records are for operators
                try:
                    got = http_json(
                        node.url + path,
                        timeout=5.0,
                        headers=signed_headers(node.secret, "GET", path),
                    )
                except OSError:
                    got = None
                body = got[1] if got is not None else None
                if isinstance(body, dict):
                    body.pop("held_here", None)
                table[slot] = body if got is None or got[0] == 200 else got[0]
            return table

        return self.ctl.call(fetch, timeout=600)

    def tables_differ(self) -> list[str]:
        """Where the members' group tables differ (each compared with the group's first)."""
        differ = []
        for g in range(1, self.groups + 1):
            members = self.nodes(g)
            tables = {n.name: self.table_of(n) for n in members}
            first = members[0].name
            for name, table in tables.items():
                slots = sorted(
                    s
                    for s in set(table) | set(tables[first])
                    if table.get(s) != tables[first].get(s)
                )
                if slots:
                    s = slots[0]
                    differ.append(
                        f"{name} vs {first}: {len(slots)} slots differ, e.g. {s}: "
                        f"{table.get(s)} vs {tables[first].get(s)}"
                    )
        return differ

    def log_lines(self, needle: str) -> dict[str, int]:
        """How many lines of each process's log contain ``needle``."""
        counts = {}
        for proc in self.processes():
            n = sum(1 for line in proc.log_text().splitlines() if needle in line)
            if n:
                counts[proc.name] = n
        return counts

    def wait_healthy(self, timeout: float) -> None:
        """Every process answers, every group has a leader, the tracker sees them writable."""
        procs = self.processes()
        end = time.monotonic() + timeout
        problem = self.ctl.call(self.wait_answering, procs, timeout, timeout=timeout + 10)
        if problem is not None:
            raise Timeout(problem)
        self.ctl.call(self.wait_ready, procs, end, timeout=timeout + 10)

    # -- disks -------------------------------------------------------------------------------

    def mount_tmpfs(self, path: Path, size: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
            check=True,
            capture_output=True,
            timeout=20,
        )
        self.mounts.append(path)

    def verify_volume(self, node: StorageProcess) -> subprocess.CompletedProcess[str]:
        """``mydfs-storage verify`` of a stopped node's volume."""
        return subprocess.run(
            [entry_point("mydfs-storage"), "verify", str(node.volume_file)],
            capture_output=True,
            text=True,
            timeout=180,
        )

    def live_slices(self, node: StorageProcess) -> dict[int, tuple[int, int, int]]:
        """Offline: slot → (generation, length, CRC32C) of every LIVE slice header."""
        from mydfs.storage.format import SlotState
        from mydfs.storage.volume import Volume

        with Volume.open(node.volume_file) as volume:
            return {
                h.slot: (h.generation, h.length, h.payload_crc)
                for h in volume.scan()
                if h.state == SlotState.LIVE
            }

    def close(self) -> list[str]:
        """SIGCONT + SIGKILL every process, unmount; the problems met (idempotent)."""
        problems = []
        for proc in self.processes():
            try:
                proc.kill()
            except Exception as exc:
                problems.append(f"{proc.name}: {exc!r}")
        self.ctl.close()
        for mount in reversed(self.mounts):
            try:
                umount(mount)
            except Exception as exc:
                problems.append(f"umount {mount}: {exc!r}")
        self.mounts.clear()
        return problems
