"""API keys, roles, public folders and share URLs on a real cluster (a tracker and one group of
three nodes, the tracker with ``public_prefixes = ["/pub"]``), through raw HTTP, the SDK, the
``mydfs`` CLI, curl and wget (and aria2c when it is installed)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from e2e_helpers import cli_ok, curl, curl_ok, http_request, random_bytes, run_cli, sha256
from helpers import dispose, free_base

from mydfs.client import Client, credentials
from mydfs.client.local_cluster import LocalCluster
from mydfs.common import grants
from mydfs.common.errors import Forbidden, Unauthorized

DATA = random_bytes(300_000, 11)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    root = Path(tempfile.mkdtemp(prefix="mydfs-e2e-auth-"))
    c = LocalCluster(root, groups=1, base_port=free_base(1), die_with_parent=True)
    assert c.tracker_process is not None
    c.tracker_process.options["public_prefixes"] = "/pub"
    try:
        c.start(timeout=90.0)
        with Client(c.tracker_url, deadline=60.0) as admin:
            admin.put("/pub/open.bin", DATA)
            admin.put("/priv/secret.bin", DATA)
            admin.put("/priv/other.bin", b"other file")
        yield c
    finally:
        dispose(c, root)


def _status(url: str, method: str = "GET", token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, _, _ = http_request(url, method, headers=headers, auth=False)
    return status


def _cli(cluster: LocalCluster, token: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return run_cli(*args, tracker=cluster.tracker_url, env={"MYDFS_TOKEN": token})


def test_the_cluster_saved_its_admin_key(cluster: LocalCluster) -> None:
    path = credentials.path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert cluster.token and data["trackers"][cluster.tracker_url]["token"] == cluster.token
    tracker_dir = cluster.root / "tracker"
    assert (tracker_dir / "admin.token").read_text().strip() == cluster.token
    assert cluster.token not in (tracker_dir / "keys.json").read_text()
    assert cluster.token not in cluster.tracker_process.log_text()  # type: ignore[union-attr]
    out = cli_ok("token", tracker=cluster.tracker_url).stdout.decode().strip()
    assert out == cluster.token
    ui = cli_ok("ui", tracker=cluster.tracker_url).stdout.decode().strip()
    assert ui == f"{cluster.tracker_url}/ui#token={cluster.token}"


def test_no_key_is_401_and_open_routes_stay_open(cluster: LocalCluster) -> None:
    t = cluster.tracker_url
    for method, route in [
        ("GET", "/cluster"),
        ("GET", "/cluster/view"),
        ("GET", "/meta/list/"),
        ("GET", "/meta/list/priv"),
        ("GET", "/meta/files/priv/secret.bin"),
        ("GET", "/files/priv/secret.bin"),
        ("HEAD", "/files/priv/secret.bin"),
        ("PUT", "/meta/files/priv/x"),
        ("DELETE", "/meta/files/priv/secret.bin"),
        ("POST", "/placements"),
        ("POST", "/meta/intents"),
        ("GET", "/meta/intents"),
        ("GET", "/meta/trash"),
        ("GET", "/admin/keys"),
        ("POST", "/share"),
    ]:
        assert _status(t + route, method) == 401, (method, route)
        assert _status(t + route, method, token="mydfs-not-a-key") == 401, (method, route)
    for route in ("/health", "/metrics", "/ui", "/ui/dashboard.js"):
        assert _status(t + route) == 200, route
    _, _, body = http_request(t + "/cluster", auth=False)
    assert b"Authorization: Bearer" in body
    with Client(t, token="mydfs-wrong") as c, pytest.raises(Unauthorized):
        c.stat("/priv/secret.bin")


def test_roles(cluster: LocalCluster, scratch: Path) -> None:
    t = cluster.tracker_url
    reader = cli_ok("keys", "create", "reader", "--role", "read", tracker=t).stdout.decode()
    writer = cli_ok("keys", "create", "writer", "--role", "write", tracker=t).stdout.decode()
    reader, writer = reader.strip(), writer.strip()
    assert reader.startswith("mydfs-") and writer.startswith("mydfs-") and reader != writer
    listed = cli_ok("keys", "ls", tracker=t).stdout.decode()
    assert {line.split()[0]: line.split()[1] for line in listed.splitlines()} == {
        "admin": "admin",
        "reader": "read",
        "writer": "write",
    }
    assert reader not in listed

    # read: reads, cannot write
    with Client(t, token=reader) as c:
        assert c.read("/priv/secret.bin") == DATA
        assert [e.name for e in c.listdir("/priv")] == ["other.bin", "secret.bin"]
        with pytest.raises(Forbidden):
            c.put("/priv/new.bin", b"x")
        with pytest.raises(Forbidden):
            c.delete("/priv/secret.bin")
    local = scratch / "f.bin"
    local.write_bytes(b"hello")
    done = _cli(cluster, reader, "put", str(local), "/priv/by-reader.bin")
    assert done.returncode == 1 and b"role read" in done.stderr
    assert _status(t + "/meta/files/priv/secret.bin", token=reader) == 200
    assert _status(t + "/meta/files/priv/secret.bin", "DELETE", token=reader) == 403

    # write: writes, cannot administer
    _cli(cluster, writer, "put", str(local), "/priv/by-writer.bin").check_returncode()
    assert _cli(cluster, writer, "cat", "/priv/by-writer.bin").stdout == b"hello"
    done = _cli(cluster, writer, "keys", "ls")
    assert done.returncode == 1 and b"needs admin" in done.stderr
    assert _status(t + "/meta/intents", token=writer) == 403
    assert _status(t + "/meta/trash", token=writer) == 200  # trash ls: read role
    assert _status(t + f"/meta/trash/{'0' * 32}", "DELETE", token=writer) == 403
    assert _status(t + "/admin/keys", token=writer) == 403

    # --token on the command line works too
    done = run_cli("--token", reader, "cat", "/priv/by-writer.bin", tracker=t)
    assert done.returncode == 0 and done.stdout == b"hello"

    # admin revokes: the key stops working at once
    cli_ok("keys", "rm", "reader", tracker=t)
    assert _status(t + "/meta/files/priv/secret.bin", token=reader) == 401
    done = _cli(cluster, reader, "ls", "/priv")
    assert done.returncode == 1 and b"revoked" in done.stderr
    assert "reader" not in cli_ok("keys", "ls", tracker=t).stdout.decode()
    done = run_cli("keys", "rm", "admin", tracker=t)
    assert done.returncode == 1 and b"last admin key" in done.stderr


def test_public_prefix_is_readable_anonymously(cluster: LocalCluster, scratch: Path) -> None:
    t = cluster.tracker_url
    assert curl_ok("-L", t + "/files/pub/open.bin", auth=False) == DATA
    assert _status(t + "/meta/files/pub/open.bin") == 200
    status, _, body = http_request(t + "/meta/list/pub", auth=False)
    assert status == 200 and [e["name"] for e in json.loads(body)["entries"]] == ["open.bin"]
    # only GETs, only under the prefix
    assert _status(t + "/meta/files/pub/open.bin", "DELETE") == 401
    assert _status(t + "/meta/files/pubx/open.bin") == 401
    assert _status(t + "/meta/list/") == 401
    done = curl(
        "-L", "-o", "/dev/null", "-w", "%{http_code}", t + "/files/priv/secret.bin", auth=False
    )
    assert done.stdout == b"401"


def test_share_url_works_with_curl_wget_and_ranges(cluster: LocalCluster, scratch: Path) -> None:
    url = cli_ok("share", "/priv/secret.bin", "--ttl", "30m", tracker=cluster.tracker_url)
    url_text = url.stdout.decode().strip()
    assert url_text.startswith(cluster.tracker_url + "/files/priv/secret.bin?grant=v1.")
    assert curl_ok("-L", url_text, auth=False) == DATA
    assert curl_ok("-L", "-r", "1000-1999", url_text, auth=False) == DATA[1000:2000]
    status, headers, _ = http_request(url_text, "HEAD", auth=False)
    assert status == 307 and "location" in headers

    # wget -c resumes a partial download through the same URL
    target = scratch / "resumed.bin"
    target.write_bytes(DATA[:12345])
    subprocess.run(
        ["wget", "-q", "-c", "-O", str(target), url_text], check=True, timeout=120, cwd=scratch
    )
    assert sha256(target.read_bytes()) == sha256(DATA)

    if shutil.which("aria2c"):
        subprocess.run(
            ["aria2c", "-q", "-d", str(scratch), "-o", "aria.bin", url_text],
            check=True,
            timeout=120,
        )
        assert (scratch / "aria.bin").read_bytes() == DATA
        # A file of several slices, fetched over 4 connections in 1 MiB byte ranges.
        big = random_bytes(9 * 1024 * 1024 + 123, 12)
        with Client(cluster.tracker_url) as c:
            c.put("/priv/big.bin", big)
            big_url = c.share("/priv/big.bin", 600)
        subprocess.run(
            ["aria2c", "-q", "-x", "4", "-s", "4", "-k", "1M", "--file-allocation=none"]
            + ["-d", str(scratch), "-o", "big.bin", big_url],
            check=True,
            timeout=180,
        )
        assert sha256((scratch / "big.bin").read_bytes()) == sha256(big)

    # the SDK gives the same kind of URL
    with Client(cluster.tracker_url) as c:
        assert curl_ok("-L", c.share("/priv/other.bin", 60), auth=False) == b"other file"


def test_share_url_refusals(cluster: LocalCluster) -> None:
    t = cluster.tracker_url
    url = cli_ok("share", "/priv/secret.bin", "--ttl", "90s", tracker=t).stdout.decode().strip()
    token = parse_qs(urlsplit(url).query)["grant"][0]

    # tampered: one character of the signature changed
    last = token[-2]
    forged = token[:-2] + ("A" if last != "A" else "B") + token[-1]
    assert _status(f"{t}/files/priv/secret.bin?grant={forged}") == 403
    # another path with this grant
    assert _status(f"{t}/files/priv/other.bin?grant={token}") == 403
    # expired: a grant for this path whose time has passed
    expired = grants.issue_for(cluster.secret, "read", -60, path="/priv/secret.bin")
    assert _status(f"{t}/files/priv/secret.bin?grant={expired}") == 403
    # a grant is for /files only
    assert _status(f"{t}/meta/files/priv/secret.bin?grant={token}") == 401
    # ttl bounds
    done = run_cli("share", "/priv/secret.bin", "--ttl", "8d", tracker=t)
    assert done.returncode == 1 and b"ttl" in done.stderr
    done = run_cli("share", "/priv/secret.bin", "--ttl", "soon", tracker=t)
    assert done.returncode == 1 and b"--ttl" in done.stderr
    # the genuine one still works
    assert _status(url) == 307


def test_environment_token_wins_over_the_file(cluster: LocalCluster) -> None:
    done = run_cli("ls", "/priv", tracker=cluster.tracker_url, env={"MYDFS_TOKEN": "mydfs-nope"})
    assert done.returncode == 1 and b"unknown" in done.stderr


def test_a_client_token_in_the_environment_stays_out_of_servers(scratch: Path) -> None:
    from mydfs.client.process import TrackerProcess

    proc = TrackerProcess(
        name="t", http_port=1, log_path=scratch / "t.log", env={"MYDFS_API_SECRET": "s3cr3t-value"}
    )
    os.environ["MYDFS_TOKEN"] = "mydfs-client-key"
    try:
        proc.command = lambda: ["true"]  # type: ignore[method-assign]
        proc.start()
        assert proc.proc is not None and proc.proc.wait(timeout=30) == 0
    finally:
        os.environ.pop("MYDFS_TOKEN", None)
    text = proc.log_text()
    assert "mydfs-client-key" not in text and "s3cr3t-value" not in text
