"""The CLI and SDK under interruption and refusal: Ctrl-C during a put prints one line and exits
130; a put refused because the path exists leaves no upload record (intent); a local file that
changes size while it is uploaded fails the put and leaves nothing visible."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import http_json, wait_until
from security_helpers import auth_headers

from mydfs.client import Client
from mydfs.client.local_cluster import LocalCluster
from mydfs.client.process import entry_point
from mydfs.common.errors import InvalidArgument, NotFound

SLICE = 4_190_208


def _intents(cluster: LocalCluster) -> list[dict[str, Any]]:
    status, body = http_json(
        f"{cluster.tracker_url}/meta/intents", headers=auth_headers(cluster), timeout=10
    )
    assert status == 200, body
    intents: list[dict[str, Any]] = body["intents"]
    return intents


def _cli(cluster: LocalCluster, *args: str, **kw: Any) -> subprocess.Popen[bytes]:
    env = dict(os.environ, MYDFS_TRACKER=cluster.tracker_url)
    return subprocess.Popen(
        [entry_point("mydfs"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )


async def test_ctrl_c_during_a_put_prints_one_line_and_exits_130(
    hostile_cluster: LocalCluster,
) -> None:
    c = hostile_cluster
    before = {i["file_id"] for i in _intents(c)}
    proc = _cli(c, "put", "-", "/hygiene/interrupted", stdin=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        # More than a slice, then the pipe stays open: the put is mid-way, waiting for more.
        proc.stdin.write(os.urandom(SLICE + 1000))
        proc.stdin.flush()
        await wait_until(
            lambda: any(i["path"] == "/hygiene/interrupted" for i in _intents(c)),
            timeout=30,
            what="the put to start",
        )
        proc.send_signal(signal.SIGINT)
        proc.stdin.close()  # the read of stdin in progress returns; the CLI can exit
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert proc.returncode == 130, err
    assert err.decode() == "mydfs: interrupted\n", err.decode()
    with Client(c.tracker_url) as client, pytest.raises(NotFound):
        client.stat("/hygiene/interrupted")
    assert before <= {i["file_id"] for i in _intents(c)}


async def test_put_refused_because_the_path_exists_leaves_no_intent(
    hostile_cluster: LocalCluster, tmp_path: Path
) -> None:
    c = hostile_cluster
    local = tmp_path / "f.bin"
    local.write_bytes(b"first")
    with Client(c.tracker_url) as client:
        client.put("/hygiene/exists", local)
    assert not [i for i in _intents(c) if i["path"] == "/hygiene/exists"]
    local.write_bytes(b"second")
    proc = _cli(c, "put", str(local), "/hygiene/exists")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert err.decode().startswith("mydfs: a file already exists") and err.count(b"\n") == 1
    assert not [i for i in _intents(c) if i["path"] == "/hygiene/exists"]
    with Client(c.tracker_url) as client:
        assert client.read("/hygiene/exists") == b"first"


@pytest.mark.parametrize("change", ["truncate", "grow"])
def test_a_source_that_changes_size_fails_the_put(
    hostile_cluster: LocalCluster, tmp_path: Path, change: str
) -> None:
    c = hostile_cluster
    local = tmp_path / "changing.bin"
    local.write_bytes(os.urandom(5 * SLICE))
    path = f"/hygiene/changed-{change}"
    changed = []

    def progress(n: int) -> None:
        if not changed:  # once, as soon as the first slice is stored
            changed.append(n)
            if change == "truncate":
                os.truncate(local, SLICE + 5)
            else:
                with open(local, "ab") as f:
                    f.write(b"more" * 1000)

    with Client(c.tracker_url, window=2) as client:
        with pytest.raises(InvalidArgument, match=r"changed while it was read|grew while"):
            client.put(path, local, progress=progress)
        assert changed
        with pytest.raises(NotFound):
            client.stat(path)
