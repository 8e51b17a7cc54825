"""Edits under crashes, on a real cluster (a fresh one per test): the failure table of
``docs/transactions.md`` carried out with kill -9.

The crashing client is a real process (``python -c``) running the SDK's edit with one step of
its coordinator wrapped: it kills itself with SIGKILL, or waits for the test, at exactly the
step named. The guarantees checked: a client killed after its prepares and before the decision
leaves the old content, its locks released and its new slices freed, within the participants'
resolve timeout; killed after the decision, its edit completes on its own; a group leader
killed between prepare and commit does not stop the edit; the tracker killed right after the
decision still has it after restart, and it is carried out; 16 appenders, some killed, leave
every acknowledged record exactly once at the offset it was given.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from e2e_helpers import SLICE, random_bytes
from helpers import http_json, wait_for

from mydfs.client import Client, MydfsError
from mydfs.client.local_cluster import LocalCluster

# The crashing client: argv = tracker, path, offset, data file, step, marker file, go file.
CRASHING_CLIENT = r"""
import asyncio, json, os, signal, sys, time
from pathlib import Path
import mydfs.client.editor as editor
from mydfs.client import Client

tracker, path, offset, data_file, step, marker, go = sys.argv[1:8]
decide, commit_all = editor._Editor.decide, editor._Editor.commit_all

def wait_go():
    deadline = time.monotonic() + 120
    while not Path(go).exists():
        if time.monotonic() > deadline:
            sys.exit("no go file")
        time.sleep(0.05)

async def wrapped_decide(self, *args, **kwargs):
    if step == "after_prepare":
        Path(marker).write_text("prepared")
        os.kill(os.getpid(), signal.SIGKILL)
    if step == "pause_after_prepare":
        Path(marker).write_text("prepared")
        await asyncio.to_thread(wait_go)
    answer = await decide(self, *args, **kwargs)
    if step == "after_decision":
        Path(marker).write_text(json.dumps({"version": answer.get("version")}))
        os.kill(os.getpid(), signal.SIGKILL)
    return answer

editor._Editor.decide = wrapped_decide
with Client(tracker) as c:
    info = c.write(path, int(offset), Path(data_file).read_bytes())
    print(json.dumps({"version": info.version, "size": info.size}))
"""


def run_crashing_client(
    cluster: LocalCluster, path: str, offset: int, data: bytes, step: str, scratch: Path
) -> tuple[subprocess.Popen[str], Path, Path]:
    data_file = scratch / "data.bin"
    data_file.write_bytes(data)
    marker, go = scratch / "marker", scratch / "go"
    env = dict(os.environ, MYDFS_TOKEN=cluster.token or "")
    args = [cluster.tracker_url, path, str(offset), str(data_file), step, str(marker), str(go)]
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING_CLIENT, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, marker, go


def group_stats(cluster: LocalCluster, group: int) -> dict[str, Any]:
    leader = cluster.wait_leader(group)
    status, body = http_json(f"{leader.url}/status")
    assert status == 200, body
    stats: dict[str, Any] = body["group"]
    return stats


def wait_read(client: Client, path: str, want: bytes, timeout: float) -> None:
    def done() -> bool:
        try:
            return client.read(path) == want
        except MydfsError:
            return False

    wait_for(done, timeout=timeout, what=f"{path} to read back the expected bytes")


def test_client_killed_after_prepare_rolls_back_within_the_timeout(
    make_cluster: Callable[..., LocalCluster], scratch: Path
) -> None:
    c = make_cluster()
    path, old = "/faults/prepared.bin", random_bytes(SLICE + 5000, seed=1)
    with Client(c.tracker_url) as client:
        info = client.put(path, old)
        assert info.head is not None
        before = group_stats(c, info.head.group)
        proc, marker, _ = run_crashing_client(c, path, 100, b"x" * 1000, "after_prepare", scratch)
        assert proc.wait(timeout=120) == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
        assert marker.read_text() == "prepared"
        # The old content reads back at once (the prepare changed nothing visible) ...
        assert client.read(path) == old
        # ... and within the resolve timeout the locks are gone and the new slices freed.
        wait_for(
            lambda: group_stats(c, info.head.group)["live"] == before["live"],
            timeout=30,
            what="the edit's new slices to be freed",
        )
        assert client.stat(path).version == info.version
        client.write(path, 100, b"y" * 1000)  # the slices are not locked any more
        assert client.read(path) == old[:100] + b"y" * 1000 + old[1100:]


def test_client_killed_after_the_decision_completes_on_its_own(
    make_cluster: Callable[..., LocalCluster], scratch: Path
) -> None:
    c = make_cluster()
    path, old = "/faults/decided.bin", random_bytes(2 * SLICE, seed=2)
    data = random_bytes(3000, seed=3)
    with Client(c.tracker_url) as client:
        info = client.put(path, old)
        proc, marker, _ = run_crashing_client(
            c, path, SLICE - 1000, data, "after_decision", scratch
        )
        assert proc.wait(timeout=120) == -signal.SIGKILL
        decided = json.loads(marker.read_text())
        assert decided["version"] == info.version + 1
        assert client.stat(path).version == info.version + 1
        want = old[: SLICE - 1000] + data + old[SLICE + 2000 :]
        wait_read(client, path, want, timeout=60)


def test_a_participant_leader_killed_between_prepare_and_commit(
    make_cluster: Callable[..., LocalCluster], scratch: Path
) -> None:
    c = make_cluster()
    path, old = "/faults/leader.bin", random_bytes(SLICE + 10, seed=4)
    data = random_bytes(5000, seed=5)
    with Client(c.tracker_url) as client:
        info = client.put(path, old)
        assert info.head is not None
        proc, marker, go = run_crashing_client(c, path, 7, data, "pause_after_prepare", scratch)
        wait_for(marker.exists, timeout=120, what="the client's prepares")
        victim = c.wait_leader(info.head.group)
        victim.kill(signal.SIGKILL)
        go.write_text("go")
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1])["version"] == info.version + 1
        want = old[:7] + data + old[5007:]
        wait_read(client, path, want, timeout=60)
        victim.start()


def test_tracker_killed_right_after_the_decision_keeps_it(
    make_cluster: Callable[..., LocalCluster], scratch: Path
) -> None:
    c = make_cluster()
    assert c.tracker_process is not None
    path, old = "/faults/tracker.bin", random_bytes(3 * SLICE, seed=6)
    data = random_bytes(SLICE, seed=7)
    with Client(c.tracker_url) as client:
        info = client.put(path, old)
        proc, _, _ = run_crashing_client(c, path, SLICE, data, "after_decision", scratch)
        assert proc.wait(timeout=120) == -signal.SIGKILL
        c.tracker_process.kill(signal.SIGKILL)  # the decision was fsynced before its answer
        c.tracker_process.start()
        c.wait_tracker()
        assert client.stat(path).version == info.version + 1
        want = old[:SLICE] + data + old[2 * SLICE :]
        wait_read(client, path, want, timeout=60)


APPENDER = r"""
import sys
from mydfs.client import Client, MydfsError

tracker, path, name = sys.argv[1:4]
with Client(tracker) as c:
    for k in range(100000):
        rec = f"{name} record {k:05d} ".encode().ljust(1024, b".")
        try:
            at = c.append(path, rec)
        except MydfsError:
            continue
        print(at, k, flush=True)
"""


def test_sixteen_appenders_some_killed_land_each_record_once(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    """12 appenders in threads and 4 in processes killed with SIGKILL at random moments: every
    acknowledged record is in the file exactly once at the offset its append returned; a
    record whose append was cut short by the kill is there at most once; nothing else is."""
    c = make_cluster()
    path, record = "/faults/appends.log", 1024
    with Client(c.tracker_url) as client:
        client.put(path, b"")
    acked: dict[bytes, int] = {}  # record -> the offset its append returned
    lock = threading.Lock()
    stop = time.monotonic() + 20

    def appender(n: int) -> None:
        with Client(c.tracker_url) as mine:
            k = 0
            while time.monotonic() < stop:
                rec = f"thread {n:02d} record {k:05d} ".encode().ljust(record, b".")
                k += 1
                try:
                    at = mine.append(path, rec)
                except MydfsError:
                    continue
                with lock:
                    acked[rec] = at

    threads = [threading.Thread(target=appender, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    env = dict(os.environ, MYDFS_TOKEN=c.token or "")
    victims = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, c.tracker_url, path, f"proc {n:02d}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for n in range(4)
    ]
    for n, proc in enumerate(victims):
        time.sleep(2 + 3 * n)  # killed 2, 5, 8 and 11 s in
        proc.kill()
    for t in threads:
        t.join(timeout=120)
    for n, proc in enumerate(victims):
        out, _ = proc.communicate(timeout=30)
        for line in out.splitlines():
            at, k = (int(x) for x in line.split())
            acked[f"proc {n:02d} record {k:05d} ".encode().ljust(record, b".")] = at
    with Client(c.tracker_url) as client:
        final = client.read(path)
    assert acked
    assert len(final) % record == 0
    for rec, at in acked.items():
        assert final[at : at + record] == rec, f"the record at {at} is not the acknowledged one"
    records = [final[i : i + record] for i in range(0, len(final), record)]
    assert len(set(records)) == len(records), "a record landed twice"
    assert all(r.startswith((b"thread ", b"proc ")) for r in records)
    print(f"appends: {len(acked)} acknowledged, {len(records)} in the file")
