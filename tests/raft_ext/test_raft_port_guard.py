"""The Raft port guard against a live 3-process group.

An unauthenticated peer streams a header claiming 2^31-1 bytes followed by zeros (and, in turn,
a header at the frame limit followed by zeros) at every Raft port, reconnecting whenever it is
closed. Writes must keep committing, each connection must be closed after at most a bounded
number of bytes, and no node's RSS may grow by more than a few MiB.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

import pytest
from helpers import wait_until
from raft_harness import ProcCluster

from mydfs.common.errors import InvalidArgument
from mydfs.raft_ext import RaftSettings
from mydfs.raft_ext.portguard import DEFAULT_MAX_FRAME_BYTES, frame_length_ok

ZEROS = bytes(64 * 1024)


def test_frame_length_bound() -> None:
    assert frame_length_ok(struct.pack("i", 0), DEFAULT_MAX_FRAME_BYTES)
    assert frame_length_ok(struct.pack("i", DEFAULT_MAX_FRAME_BYTES), DEFAULT_MAX_FRAME_BYTES)
    assert not frame_length_ok(struct.pack("i", DEFAULT_MAX_FRAME_BYTES + 1), 1 << 20)
    assert not frame_length_ok(struct.pack("i", 2**31 - 1), DEFAULT_MAX_FRAME_BYTES)
    assert not frame_length_ok(struct.pack("i", -1), DEFAULT_MAX_FRAME_BYTES)


def test_password_stays_mandatory(tmp_path: object) -> None:
    settings = RaftSettings(
        self_address="127.0.0.1:1",
        peers=("127.0.0.1:2",),
        http_urls={"127.0.0.1:1": "http://x:1", "127.0.0.1:2": "http://x:2"},
        data_dir=tmp_path,  # type: ignore[arg-type]
        password=None,
    )
    with pytest.raises(InvalidArgument, match="password is required"):
        settings.validate()
    with pytest.raises(InvalidArgument, match="max_frame_bytes"):
        settings.replace(password="long-enough-secret", max_frame_bytes=2**31 - 1).validate()


@dataclass
class Attack:
    port: int
    stop: threading.Event
    closed: int = 0
    max_accepted: int = 0  # most bytes one connection took before it was closed
    errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        headers = [struct.pack("i", 2**31 - 1), struct.pack("i", DEFAULT_MAX_FRAME_BYTES)]
        n = 0
        while not self.stop.is_set():
            header = headers[n % 2]
            n += 1
            sent = 0
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    s.sendall(header)
                    sent = len(header)
                    while not self.stop.is_set():
                        s.sendall(ZEROS)
                        sent += len(ZEROS)
                        if sent > 64 * DEFAULT_MAX_FRAME_BYTES:
                            self.errors.append(f"port {self.port} accepted {sent} bytes")
                            return
            except (ConnectionError, TimeoutError, OSError):
                if not self.stop.is_set():
                    self.closed += 1
                    self.max_accepted = max(self.max_accepted, sent)
                    time.sleep(0.01)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_oversized_frames_are_refused_while_writes_commit(
    proc_cluster: ProcCluster,
) -> None:
    c = proc_cluster
    await c.start_all()
    leader = await c.leader_among([0, 1, 2], timeout=20)
    for k in range(50):  # warm up (allocations of a working group)
        code, body = await c.submit(leader, {"op": "set", "k": f"w{k}", "v": k})
        assert code == 200, body
    pids = {i: proc.pid for i, proc in c.procs.items()}
    rss_before = {i: _rss_kib(pid) for i, pid in pids.items()}

    stop = threading.Event()
    attacks = [Attack(port, stop) for port in c.raft_ports]
    threads = [threading.Thread(target=a.run, daemon=True) for a in attacks]
    for t in threads:
        t.start()
    try:
        committed = 0
        started = time.monotonic()
        while time.monotonic() - started < 6.0:
            code, body = await c.submit(leader, {"op": "incr", "k": "n"}, timeout=2.0)
            assert code == 200, f"a write failed under the attack: {code} {body}"
            committed += 1
            await asyncio.sleep(0.02)
        rss_during = {i: _rss_kib(pid) for i, pid in pids.items()}
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    print(
        f"committed {committed} writes under attack; closed connections "
        f"{[a.closed for a in attacks]}, most bytes taken by one "
        f"{[a.max_accepted for a in attacks]}; rss KiB {rss_before} -> {rss_during}"
    )
    for a in attacks:
        assert not a.errors, a.errors
        assert a.closed >= 2, f"raft port {a.port} never closed an attacking connection"
    for i in pids:
        grown = rss_during[i] - rss_before[i]
        assert grown < 8 * 1024, f"node {i} RSS grew by {grown} KiB under the attack"
    state = await c.state(leader)
    assert state["data"]["n"] == committed
    status = await c.status(leader)
    assert status is not None and status.get("raft_frames_refused", 1) >= 1


async def test_idle_connections_without_handshake_are_closed(proc_cluster: ProcCluster) -> None:
    """40 silent connections per Raft port: at most 16 wait at a time (the oldest are closed at
    once), the rest are closed after ``connection_timeout``; writes commit meanwhile."""
    c = proc_cluster
    await c.start_all()
    leader = await c.leader_among([0, 1, 2], timeout=20)
    socks = [
        socket.create_connection(("127.0.0.1", port), timeout=5)
        for port in c.raft_ports
        for _ in range(40)
    ]
    try:
        for k in range(20):
            code, body = await c.submit(leader, {"op": "set", "k": f"idle{k}", "v": k})
            assert code == 200, body

        def closed(s: socket.socket) -> bool:
            s.setblocking(False)
            try:
                return s.recv(1) == b""
            except BlockingIOError:
                return False
            except OSError:
                return True

        await wait_until(
            lambda: all(closed(s) for s in socks),
            timeout=20,
            what="every connection without a handshake to be closed",
        )
        code, body = await c.submit(leader, {"op": "set", "k": "after", "v": 1})
        assert code == 200, body
    finally:
        for s in socks:
            s.close()
