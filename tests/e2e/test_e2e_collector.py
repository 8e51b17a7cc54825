"""The orphan collector on a real cluster (``docs/collector.md``): an upload killed with -9
halfway leaves live slices nothing references; ``mydfs df`` shows them as orphans and the
collector frees them, and the slice of an edit attempt that died before its prepare too,
while a live file, an edited file (its 301 and new slices) and an upload still in progress
(its intent, kept alive by its slices) keep every slice and read back byte-identical."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from e2e_helpers import SLICE, cli_ok, random_bytes
from helpers import entry_point, grant_headers, signed_headers

from mydfs.client import Client
from mydfs.client.local_cluster import LocalCluster

#: Short collector settings: a slice is an orphan 3 s after its reservation, an upload's
#: intent protects its file until 15 s after it was made and after its last slice.
OPTIONS = {"orphan_grace": 3, "intent_ttl": 15, "collect_interval": 1, "collect_rate": 1}


def df(c: LocalCluster) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cli_ok("df", "--json", tracker=c.tracker_url).stdout)
    return out


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def put_from_pipe(c: LocalCluster, path: str) -> subprocess.Popen[bytes]:
    """``mydfs put - PATH`` reading what the test feeds it."""
    return subprocess.Popen(
        [entry_point("mydfs"), "--tracker", c.tracker_url, "put", "-", path],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stray_slice(c: LocalCluster, file_id: str) -> tuple[int, int]:
    """Upload one slice owned by ``file_id`` straight to group 1's leader, as an editor
    does before its prepare; (slot, generation)."""
    leader = c.wait_leader(1)
    headers = {**grant_headers(c.secret, "write", file_id), "X-Mydfs-Index": "0"}
    req = urllib.request.Request(
        f"{leader.url}/slices?upload=stray-{file_id[:8]}",
        data=b"stray" * 1000,
        headers=headers,
        method="PUT",
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = json.loads(resp.read())
    return int(body["slot"]), int(body["generation"])


def feed(proc: subprocess.Popen[bytes], data: bytes, pause: float = 4.0) -> None:
    """Write ``data`` to ``proc``'s standard input one slice at a time, ``pause`` s apart."""
    assert proc.stdin is not None
    try:
        for i in range(0, len(data), SLICE):
            proc.stdin.write(data[i : i + SLICE])
            proc.stdin.flush()
            time.sleep(pause)
    finally:
        proc.stdin.close()


def test_orphans_of_a_killed_upload_are_freed_and_nothing_else(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    c = make_cluster(groups=2, tracker_options=OPTIONS)
    keep = random_bytes(2 * SLICE + 100, 1)
    edited = bytearray(random_bytes(SLICE + 10, 2))
    slow = random_bytes(5 * SLICE - 7, 3)
    killed: subprocess.Popen[bytes] | None = None
    upload: subprocess.Popen[bytes] | None = None
    try:
        with Client(c.tracker_url, deadline=60.0) as client:
            client.put("/keep.bin", keep)
            client.put("/edit.bin", bytes(edited))
            client.write("/edit.bin", 5, b"hello")  # a 301 and new slices
            edited[5:10] = b"hello"
            # The new slice of an edit attempt that died before its prepare: live, owned by
            # keep.bin's file id, referenced by nothing.
            stray = stray_slice(c, client.stat("/keep.bin").file_id)
            base = client.df()["cluster"]
            assert base["orphan"]["slots"] == 0
            # An upload killed halfway: 6 slices fed, the pipe left open, kill -9 once at
            # least 3 of them are in the groups.
            killed = put_from_pipe(c, "/killed.bin")
            assert killed.stdin is not None
            killed.stdin.write(random_bytes(6 * SLICE, 4))
            killed.stdin.flush()

            def written() -> bool:
                now = client.df()["cluster"]
                return now["live"]["slots"] >= base["live"]["slots"] + 3

            wait_for("3 slices of the upload to be written", written, 40)
            killed.kill()
            killed.wait(10)
            # An upload still in progress meanwhile: one slice every 4 s (a thread feeds it),
            # longer than its intent's TTL after it was made: its latest reservation keeps it.
            upload = put_from_pipe(c, "/slow.bin")
            feeder = threading.Thread(target=feed, args=(upload, slow), daemon=True)
            feeder.start()
            wait_for("df to show orphans", lambda: df(c)["cluster"]["orphan"]["slots"] > 0, 45)
            table = cli_ok("df", tracker=c.tracker_url).stdout.decode()
            assert "ORPHAN" in table.splitlines()[0] and table.splitlines()[-2].startswith("all")
            feeder.join(60)
            assert upload.wait(60) == 0, upload.stderr.read() if upload.stderr else ""

            def settled() -> bool:
                now = client.df()["cluster"]
                return (
                    now["orphan"]["slots"] == 0
                    and now["trash"]["slots"] == 0
                    and now["live"]["slots"] + now["moved"]["slots"] == now["files"]["slots"]
                )

            wait_for("every orphan to be freed", settled, 60)
            assert client.read("/keep.bin") == keep
            assert client.read("/edit.bin") == bytes(edited)
            assert client.read("/slow.bin") == slow
            assert not client.exists("/killed.bin")
            slot, gen = stray
            meta = f"/slices/{slot}/meta"
            with urllib.request.urlopen(
                urllib.request.Request(
                    c.wait_leader(1).url + meta, headers=signed_headers(c.secret, "GET", meta)
                ),
                timeout=30,
            ) as resp:
                now = json.loads(resp.read())
            assert now["generation"] != gen or now["state"] == "deleted", now
    finally:
        for proc in (killed, upload):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
