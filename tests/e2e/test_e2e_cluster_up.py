"""``mydfs cluster up``: the one-command local cluster, as a newcomer uses it.

Shows: ``mydfs cluster up --data DIR --groups 2 --port BASE`` started as a subprocess prints
``tracker http://127.0.0.1:BASE`` once the cluster is writable; following the lines it prints
(where the admin API key was saved, ``mydfs put``/``ls``/``get``, ``curl -LO`` with the key and
with a share URL) stores and fetches a file with no key handling; SIGTERM stops it and every
process it started (checked by pid); ``cluster up`` again on
the same folder, without ``--port``, comes back on the same port with every file
(sha256).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import (
    SLICE,
    cli_ok,
    sha256_file,
    write_random,
)
from helpers import ClusterUp, child_pids, entry_point, free_base

from mydfs.client import Client, credentials

TRACKER_LINE = re.compile(r"^tracker (http://127\.0\.0\.1:(\d+))$")


@pytest.fixture
def running() -> Iterator[list[ClusterUp]]:
    """Every ``cluster up`` a test starts; whatever is left is stopped at the end."""
    started: list[ClusterUp] = []
    try:
        yield started
    finally:
        for up in started:
            up.kill_everything()


def start(running: list[ClusterUp], *args: str, cwd: Path) -> tuple[ClusterUp, str, int]:
    up = ClusterUp(*args, cwd=cwd)
    running.append(up)
    m = up.wait_line(TRACKER_LINE, timeout=120)
    up.children = child_pids(up.proc.pid)
    assert len(up.children) == 7, (up.children, up.seen)  # a tracker and 2 x 3 storage nodes
    return up, m.group(1), int(m.group(2))


def test_cluster_up_store_stop_and_come_back_with_every_file(
    running: list[ClusterUp], scratch: Path
) -> None:
    data = scratch / "mydfs-data"
    work = scratch / "work"
    work.mkdir()
    base = free_base(2)

    up, tracker, port = start(
        running, "--data", str(data), "--groups", "2", "--port", str(base), cwd=work
    )
    assert port == base
    first_hint = len(up.seen)
    up.wait_line(re.compile(r"^logs in "), timeout=30)  # the last line of the hints
    hints = up.seen[first_hint:]
    saved = [h for h in hints if h.startswith("admin API key saved in ")]
    assert saved and str(credentials.path()) in saved[0], hints
    assert credentials.default_tracker() == tracker

    # The newcomer's steps, as printed: put, ls, get, curl; the tracker and its key come from
    # the credentials file.
    env: dict[str, str] = {}
    files = {
        "some.file": write_random(work / "some.file", 2 * SLICE + 12345, seed=1),
        "empty.file": write_random(work / "empty.file", 0, seed=2),
        "one.byte": write_random(work / "one.byte", 1, seed=3),
    }
    for name in files:
        cli_ok("put", f"./{name}", f"/{name}", env=env, cwd=work)
    listed = cli_ok("ls", "/", env=env).stdout.decode()
    assert all(name in listed for name in files), listed
    cli_ok("get", "/some.file", "./copy", env=env, cwd=work)
    assert sha256_file(work / "copy") == files["some.file"]
    curl_hints = [h.strip() for h in hints if h.strip().startswith("curl ")]
    assert len(curl_hints) == 2, hints  # with the key, and with a share URL
    shell_env = dict(os.environ, PATH=f"{Path(entry_point('mydfs')).parent}:{os.environ['PATH']}")
    for i, hint in enumerate(curl_hints):
        download = scratch / f"download{i}"
        download.mkdir()
        # as printed, through a shell: curl -LO -H "...$(mydfs token)" URL / "$(mydfs share ...)"
        subprocess.run(["bash", "-c", hint], cwd=download, env=shell_env, check=True, timeout=120)
        assert [p.name for p in download.iterdir()] == ["some.file"], hint
        assert sha256_file(download / "some.file") == files["some.file"], hint

    # SIGTERM stops the cluster and everything it started.
    assert up.terminate() == 0
    assert "stopped" in up.rest_of_output(timeout=5) + up.seen

    # Again on the same folder, without --port: same port, every file back.
    again, tracker2, port2 = start(running, "--data", str(data), cwd=work)
    assert (tracker2, port2) == (tracker, port)
    assert not (again.children & up.children)
    out = scratch / "back"
    out.mkdir()
    for name, digest in files.items():
        cli_ok("get", f"/{name}", str(out / name), env=env)
        assert sha256_file(out / name) == digest, name
    with Client(tracker2) as client:
        assert sorted(e.name for e in client.listdir("/")) == sorted(files)
        assert client.status()["groups"][1]["writable"]
    assert again.terminate() == 0
