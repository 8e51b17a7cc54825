"""Start and stop a mydfs cluster of real processes on loopback (the embedded default).

Used by ``mydfs cluster up``, the benchmarks and the end-to-end tests. A cluster is a tracker
and N groups of three ``mydfs-storage`` processes, each with its own data folder under the
cluster's folder. The layout (ports, secret) is saved in ``cluster.json`` there, so starting
again on the same folder brings back the same cluster with every file.

Ports, from a base B: the tracker listens on B; node i (1..3) of group g listens for HTTP on
B + 10g + i and for Raft on B + 10g + 3 + i.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mydfs.common.errors import InvalidArgument, Unavailable

LAYOUT_FILE = "cluster.json"


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that are free right now on ``host``."""
    socks, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def free_base(groups: int) -> int:
    """A port base B such that B .. B + 10 * (groups + 1) look free.

    Picked below the kernel's ephemeral range (32768 and up on Linux), so that a restarted
    process does not find its port taken by some outgoing connection.
    """
    span = 10 * (groups + 1)
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32000 - span, 10)
        ok = True
        for port in range(base, base + span):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise Unavailable("could not find a free range of loopback ports")


def http_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback URLs
        return json.loads(resp.read())


def _command(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    return str(exe) if exe.exists() else name


@dataclass
class Process:
    """One server process of the cluster."""

    name: str
    command: str
    args: list[str]
    http_port: int
    log_path: Path
    group_id: int = 0
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def node_id(self) -> str:
        return self.name

    def start(self) -> None:
        if self.alive():
            return
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in kill()
        env = dict(os.environ, **self.env)
        self.proc = subprocess.Popen(
            [_command(self.command), *self.args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
        if self._log is not None and (self.proc is None or self.proc.poll() is not None):
            self._log.close()
            self._log = None

    def health(self) -> dict[str, Any] | None:
        try:
            data = http_json(self.url + "/health", timeout=1.0)
        except (OSError, urllib.error.URLError, ValueError):
            return None
        return data if isinstance(data, dict) else None


@dataclass
class LocalCluster:
    """A tracker and ``groups`` storage groups of 3 nodes on loopback, under ``root``."""

    root: Path
    groups: int = 2
    base_port: int | None = None
    secret: str | None = None
    tracker: bool = True
    storage_args: list[str] = field(default_factory=list)
    nodes: list[Process] = field(default_factory=list)
    tracker_process: Process | None = None

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        layout_path = self.root / LAYOUT_FILE
        layout: dict[str, Any] = {}
        if layout_path.exists():
            layout = json.loads(layout_path.read_text())
        if self.base_port is None:
            self.base_port = layout.get("base_port") or free_base(self.groups)
        if self.secret is None:
            self.secret = layout.get("secret") or secrets.token_hex(16)
        if layout and layout.get("groups", 0) > self.groups:
            self.groups = int(layout["groups"])  # never forget a group that holds data
        if not 1024 <= self.base_port <= 65000 - 10 * (self.groups + 1):
            raise InvalidArgument(f"base port {self.base_port} leaves no room for the cluster")
        layout_path.write_text(
            json.dumps({"base_port": self.base_port, "secret": self.secret, "groups": self.groups})
        )
        os.chmod(layout_path, 0o600)
        base = self.base_port
        if self.tracker:
            self.tracker_process = Process(
                "tracker",
                "mydfs-tracker",
                [
                    "--listen",
                    f"127.0.0.1:{base}",
                    "--data-dir",
                    str(self.root / "tracker"),
                    "--secret",
                    self.secret,
                ],
                base,
                self.root / "tracker.log",
            )
        for g in range(1, self.groups + 1):
            self.nodes += self._group(g)

    @property
    def tracker_url(self) -> str:
        return f"http://127.0.0.1:{self.base_port}"

    def _group(self, g: int) -> list[Process]:
        assert self.base_port is not None and self.secret is not None
        members = [
            (f"g{g}n{i}", self.base_port + 10 * g + i, self.base_port + 10 * g + 3 + i)
            for i in (1, 2, 3)
        ]
        out = []
        for node_id, http_port, raft_port in members:
            peers: list[str] = []
            for other, o_http, o_raft in members:
                if other != node_id:
                    peers += ["--peers", f"{other},127.0.0.1:{o_raft},http://127.0.0.1:{o_http}"]
            args = [
                "--node-id", node_id,
                "--group-id", str(g),
                "--data-dir", str(self.root / node_id),
                "--listen", f"127.0.0.1:{http_port}",
                "--raft", f"127.0.0.1:{raft_port}",
                "--secret", self.secret,
                *peers,
                *(["--tracker", self.tracker_url] if self.tracker else []),
                *self.storage_args,
            ]  # fmt: skip
            out.append(
                Process(node_id, "mydfs-storage", args, http_port, self.root / f"{node_id}.log", g)
            )
        return out

    def processes(self) -> list[Process]:
        return ([self.tracker_process] if self.tracker_process else []) + self.nodes

    def start(self, timeout: float = 60.0) -> None:
        """Start every process and wait until the tracker answers and every group has a leader
        (and, with a tracker, until the tracker sees every group writable)."""
        for proc in self.processes():
            proc.start()
        deadline = time.monotonic() + timeout
        for g in range(1, self.groups + 1):
            self.wait_leader(g, timeout=max(1.0, deadline - time.monotonic()))
        if self.tracker:
            self.wait_tracker(timeout=max(1.0, deadline - time.monotonic()))

    def wait_tracker(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                cluster = http_json(self.tracker_url + "/cluster")
                writable = {
                    int(g["group_id"]) for g in cluster.get("groups", []) if g.get("writable")
                }
                if writable >= set(range(1, self.groups + 1)):
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.05)
        raise Unavailable(f"the tracker did not see all {self.groups} groups writable in time")

    def group(self, group_id: int) -> list[Process]:
        return [n for n in self.nodes if n.group_id == group_id]

    def leader(self, group_id: int) -> Process | None:
        for node in self.group(group_id):
            if node.alive():
                h = node.health()
                if h and h.get("leader"):
                    return node
        return None

    def wait_leader(self, group_id: int, timeout: float = 30.0) -> Process:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader(group_id)
            if leader is not None:
                return leader
            time.sleep(0.05)
        raise Unavailable(f"group {group_id} elected no leader within {timeout:.0f}s")

    def stop(self) -> None:
        for proc in reversed(self.processes()):
            proc.kill(signal.SIGTERM)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
