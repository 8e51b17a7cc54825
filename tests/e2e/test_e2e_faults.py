"""Crashes on a real cluster (a fresh one per test): kill -9 of the tracker and of a storage
group's leader in the middle of the work.

Shows: the tracker killed with SIGKILL while files are being stored, then restarted on its data
folder, still knows every file it acknowledged (same id, size and version; the bytes read back
identical); a group leader killed with SIGKILL during a large upload leaves either a complete
file (the upload got through by retrying on the new leader) or no file at all — never a
visible broken one — and the cluster goes on serving once the node is back.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import (
    MIB,
    SLICE,
    curl_ok,
    http_request,
    random_bytes,
    sha256,
    sha256_file,
    walk_chain,
    write_random,
)
from helpers import http_json, wait_for

from mydfs.client import Client, FileInfo, MydfsError, NotFound
from mydfs.client.local_cluster import LocalCluster


def _size_of(i: int) -> int:
    """A mix: empty files, small ones, and every 25th one over a slice."""
    if i % 25 == 0:
        return SLICE + 1000 * (i % 7)
    if i % 10 == 3:
        return 0
    return 1 + (i * 7919) % 40_000


def test_tracker_kill_9_and_restart_keeps_every_acknowledged_file(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    c = make_cluster()
    assert c.tracker_process is not None
    acked: dict[str, tuple[FileInfo, str]] = {}  # path -> (entry, sha256), acknowledged puts
    failed: dict[str, str] = {}  # path -> sha256 of puts that raised
    lock = threading.Lock()

    def store(client: Client, i: int) -> None:
        path = f"/t{i % 4}/f{i:05d}.bin"
        data = random_bytes(_size_of(i), seed=i)
        try:
            info = client.put(path, data)
        except MydfsError:
            with lock:
                failed[path] = sha256(data)
            return
        with lock:
            acked[path] = (info, sha256(data))

    with Client(c.tracker_url, deadline=60.0) as client:
        # Many files registered, 8 at a time.
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: store(client, i), range(150)))
        assert len(acked) == 150, failed

        # More keep coming while the tracker is killed with SIGKILL and started again.
        stop = threading.Event()
        counter = iter(range(1000, 100_000))

        def writer() -> None:
            while not stop.is_set():
                store(client, next(counter))

        writers = [threading.Thread(target=writer, daemon=True) for _ in range(3)]
        for w in writers:
            w.start()
        try:
            wait_for(lambda: len(acked) >= 170, timeout=60, what="writes before the kill")
            c.tracker_process.kill(signal.SIGKILL)
            assert not c.tracker_process.alive()
            at_kill = len(acked)
            c.tracker_process.start()
            c.wait_tracker(timeout=60)
            wait_for(lambda: len(acked) >= at_kill + 20, timeout=90, what="writes after restart")
        finally:
            stop.set()
            for w in writers:
                w.join(timeout=120)
        assert not any(w.is_alive() for w in writers)

    status, health = http_json(f"{c.tracker_url}/health")
    assert status == 200 and health["ok"]
    assert health["files"] >= len(acked)

    # A fresh client (no caches): every acknowledged file is there, whole.
    with Client(c.tracker_url, deadline=60.0) as fresh:
        for path, (info, digest) in sorted(acked.items()):
            got = fresh.stat(path)
            assert (got.file_id, got.size, got.version, got.head) == (
                info.file_id,
                info.size,
                info.version,
                info.head,
            ), path
            assert sha256(fresh.read(path)) == digest, path
        # A put that raised may or may not have registered; if it did, the file is whole.
        for path, digest in failed.items():
            if fresh.exists(path):
                assert sha256(fresh.read(path)) == digest, path
        listed = {
            f"/t{d}/{e.name}" for d in range(4) for e in fresh.listdir(f"/t{d}") if e.type == "file"
        }
        assert set(acked) <= listed


class GatedSource:
    """A binary source that stops after ``gate_at`` bytes until ``release`` is set, so a test
    can act at a known point of an upload (with slices sealed, in flight and reserved)."""

    def __init__(self, path: Path, gate_at: int) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.gate_at = gate_at
        self.sent = 0
        self.reached = threading.Event()
        self.release = threading.Event()

    def read(self, n: int = -1) -> bytes:
        if self.sent >= self.gate_at and not self.release.is_set():
            self.reached.set()
            self.release.wait(timeout=120)
        if n < 0:
            n = 1 << 62
        if self.sent < self.gate_at:
            n = min(n, self.gate_at - self.sent)
        data = self._f.read(n)
        self.sent += len(data)
        return data

    def close(self) -> None:
        self._f.close()


def _pending_groups(c: LocalCluster) -> set[int]:
    """Groups whose leader has a reserved but not yet sealed slot."""
    out = set()
    for g in (1, 2):
        leader = c.leader_now(g)
        if leader is None:
            continue
        status, body = http_json(f"{leader.url}/status")
        if status == 200 and body["group"]["pending"] > 0:
            out.add(g)
    return out


@pytest.mark.parametrize("mode", ["gated", "streaming"])
def test_leader_kill_9_during_a_large_upload_leaves_a_whole_file_or_none(
    make_cluster: Callable[..., LocalCluster], scratch: Path, mode: str
) -> None:
    """``gated``: the upload is held with 8 slices read (the last one reserved, its fill
    waiting for the next reservation) and the leader of the group holding that reservation is
    killed. ``streaming``: the leader of group 2 is killed while data flows, once 30% of the
    file is sealed."""
    c = make_cluster()
    size = 80 * MIB
    src = scratch / "big.bin"
    digest = write_random(src, size, seed=80)
    path = "/crash/big.bin"
    outcome: dict[str, Any] = {}
    sealed = [0]
    progressed = threading.Event()

    def on_progress(n: int) -> None:
        sealed[0] += n
        if sealed[0] >= 0.3 * size:
            progressed.set()

    with Client(c.tracker_url, deadline=60.0) as client:
        before = random_bytes(3 * SLICE, seed=81)
        client.put("/crash/before.bin", before)
        source: Any = GatedSource(src, 8 * SLICE) if mode == "gated" else src

        def upload() -> None:
            try:
                outcome["info"] = client.put(path, source, progress=on_progress)
            except BaseException as exc:
                outcome["error"] = exc

        uploader = threading.Thread(target=upload, daemon=True)
        uploader.start()
        try:
            if mode == "gated":
                assert source.reached.wait(timeout=120), "the upload never reached the gate"
                groups = wait_for(
                    lambda: (p := _pending_groups(c)) and len(p) == 1 and p,
                    timeout=60,
                    what="one group with a reserved, unsealed slice",
                )
                victim_group = next(iter(groups))
            else:
                assert progressed.wait(timeout=120), "the upload made no progress"
                victim_group = 2
            victim = c.leader_now(victim_group)
            assert victim is not None
            victim.kill(signal.SIGKILL)
            assert not victim.alive()
        finally:
            if mode == "gated":
                source.release.set()
            uploader.join(timeout=240)
            if mode == "gated":
                source.close()
        assert not uploader.is_alive(), "the upload hung"

        if "info" in outcome:
            info = outcome["info"]
            assert (info.size, info.slices) == (size, -(-size // SLICE))
            assert client.stat(path) == info
            out = scratch / "back.bin"
            client.get(path, out)
            assert sha256_file(out) == digest
            out.unlink()
        else:
            error = outcome["error"]
            assert isinstance(error, MydfsError), repr(error)
            with pytest.raises(NotFound):
                client.stat(path)
            assert "big.bin" not in [e.name for e in client.listdir("/crash")]
        assert client.read("/crash/before.bin") == before

    # The group has a new leader; the killed node comes back and serves downloads at once,
    # while it is still catching up (the tracker may send a download to it any time).
    new_leader = c.wait_leader(victim_group, timeout=60)
    assert new_leader is not victim
    victim.start()
    wait_for(victim.health, timeout=60, what=f"{victim.name} answering again")
    check = path if "info" in outcome else "/crash/before.bin"
    check_digest = digest if "info" in outcome else sha256(before)
    status, headers, _ = http_request(f"{c.tracker_url}/files{check}")
    assert status == 307
    through_victim = victim.url + "/files/" + headers["location"].split("/files/", 1)[1]
    via_victim = scratch / "victim.bin"
    curl_ok("-o", str(via_victim), through_victim)
    assert sha256_file(via_victim) == check_digest
    via_victim.unlink()

    with Client(c.tracker_url, deadline=60.0) as fresh:
        assert fresh.read("/crash/before.bin") == before
        if "info" in outcome:
            info = fresh.stat(path)
            assert info.head is not None
            head = [info.head.group, info.head.slot]
            chain = walk_chain(c.tracker_url, head, info.slices, grant=info.grant)
            assert len(chain) == info.slices == 21
            via_curl = scratch / "curl.bin"
            curl_ok("-L", "-o", str(via_curl), f"{c.tracker_url}/files{path}")
            assert sha256_file(via_curl) == digest
        else:
            assert not fresh.exists(path)
    print(f"mode={mode} killed={victim.name} outcome={'stored' if 'info' in outcome else 'failed'}")
