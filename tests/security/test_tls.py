"""A cluster with TLS on every HTTP listener (tracker and storage nodes).

A throwaway CA and a certificate for 127.0.0.1 are made with the ``openssl`` command (skipped
with a reason when it is missing). The cluster (``LocalCluster(tls_dir=...)``) serves HTTPS
only; its nodes trust the CA for heartbeats and node-to-node calls (``tls_ca``). Checked: curl
with ``--cacert`` reads a file through the tracker's redirect, curl without it fails, the SDK
works with ``ca=`` (and refuses the cluster without it), the tracker sees every node up
(heartbeats over HTTPS), and every node of the group holds the slice (pushes over HTTPS).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ClusterUp, child_pids, free_base

from mydfs.client import Client
from mydfs.client.local_cluster import LocalCluster
from mydfs.client.process import entry_point, http_json, wait_for
from mydfs.client.tlsgen import CA_FILE, CERT_FILE, KEY_FILE
from mydfs.common.auth import AUTH_HEADER, sign
from mydfs.common.errors import InvalidArgument
from mydfs.common.tls import server_context, tls_paths

OPENSSL = shutil.which("openssl")
CURL = shutil.which("curl")


def _openssl(*args: str, cwd: Path) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca_and_cert(folder: Path) -> Path:
    """ca.pem, cert.pem (127.0.0.1, localhost) and key.pem in ``folder``, via openssl."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca-key.pem", "-out", CA_FILE, "-days", "2",
        "-subj", "/CN=mydfs test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "req", *ec, "-keyout", KEY_FILE, "-out", "server.csr", "-subj", "/CN=127.0.0.1",
        cwd=folder,
    )  # fmt: skip
    (folder / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=CA:FALSE\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", CA_FILE, "-CAkey", "ca-key.pem",
        "-CAcreateserial", "-out", CERT_FILE, "-days", "2", "-extfile", "ext.cnf",
        cwd=folder,
    )  # fmt: skip
    (folder / KEY_FILE).chmod(0o600)
    return folder


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    if OPENSSL is None:
        pytest.skip("the openssl command is not installed (needed to make a throwaway CA)")
    root = tmp_path_factory.mktemp("tls")
    tls_dir = make_ca_and_cert(root / "tls")
    cluster = LocalCluster(root / "data", groups=1, tls_dir=tls_dir, die_with_parent=True)
    try:
        cluster.start(timeout=90)
        yield cluster
    finally:
        cluster.stop()


def test_tls_config_needs_cert_and_key(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="both or neither"):
        tls_paths({"tls_cert": tmp_path / "c.pem", "tls_key": ""})
    with pytest.raises(InvalidArgument, match="not a file"):
        tls_paths({"tls_cert": tmp_path / "c.pem", "tls_key": tmp_path / "k.pem"})
    assert tls_paths({}) == (None, None, None)
    assert server_context(None, None) is None


def test_every_listener_is_https(tls_cluster: LocalCluster) -> None:
    assert tls_cluster.tracker_url.startswith("https://")
    for proc in tls_cluster.processes():
        assert proc.url.startswith("https://")
        # Plain HTTP to a TLS port gets no HTTP answer.
        plain = proc.url.replace("https://", "http://")
        try:
            status, _ = http_json(plain + "/health", timeout=3)
        except OSError:
            status = 0
        assert status in (0, 400), f"{proc.name} answered plain HTTP with {status}"


def test_heartbeats_over_https(tls_cluster: LocalCluster) -> None:
    def all_up() -> bool:
        status, body = http_json(
            tls_cluster.tracker_url + "/cluster",
            headers=tls_cluster.auth_headers(),
            ca=tls_cluster.ca,
        )
        nodes = [n for g in (body or {}).get("groups", []) for n in g.get("nodes", [])]
        return status == 200 and len(nodes) == 3 and all(n.get("up") for n in nodes)

    wait_for(all_up, timeout=30, what="the tracker to see 3 nodes up over HTTPS")


def test_sdk_with_ca_replicates_and_curl_reads(tls_cluster: LocalCluster, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4096 * 5  # 5 MiB: two slices
    with Client(tls_cluster.tracker_url, ca=tls_cluster.ca) as c:
        c.put("/tls/a.bin", data)
        assert c.read("/tls/a.bin", 0, len(data)) == data
        info = c.stat("/tls/a.bin")
    assert info.head is not None
    slot = info.head.slot

    def held_everywhere() -> bool:
        for node in tls_cluster.group(info.head.group if info.head else 1):
            path = f"/slices/{slot}/meta"
            headers = {AUTH_HEADER: sign(tls_cluster.secret, "GET", path)}
            try:
                status, body = http_json(node.url + path, headers=headers, ca=tls_cluster.ca)
            except OSError:
                return False
            if status != 200 or not (body or {}).get("held_here"):
                return False
        return True

    wait_for(held_everywhere, timeout=30, what="every node of the group to hold the slice")

    if CURL is None:
        pytest.skip("curl is not installed")
    out = tmp_path / "copy.bin"
    url = tls_cluster.tracker_url + "/files/tls/a.bin"
    done = subprocess.run(
        [CURL, "-sS", "-L", "--fail", "--cacert", str(tls_cluster.ca), "-o", str(out), url]
        + ["-H", f"Authorization: Bearer {tls_cluster.token}"],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == data
    refused = subprocess.run([CURL, "-sS", "-L", "-o", "/dev/null", url], capture_output=True)
    assert refused.returncode == 60, refused.stderr  # curl: peer certificate cannot be verified


def test_sdk_without_the_ca_is_refused(
    tls_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MYDFS_CA", raising=False)
    # A credentials file without the cluster's CA (the session's one has it), the key by env.
    monkeypatch.setenv("MYDFS_CREDENTIALS", str(tmp_path / "credentials.json"))
    monkeypatch.setenv("MYDFS_TOKEN", tls_cluster.token or "")
    with pytest.raises(Exception) as raised, Client(tls_cluster.tracker_url, deadline=5) as c:
        c.status()
    assert "certificate" in str(raised.value).lower() or "ssl" in repr(raised.value).lower()
    monkeypatch.setenv("MYDFS_CA", str(tls_cluster.ca))  # $MYDFS_CA is the default ca
    with Client(tls_cluster.tracker_url) as c:
        assert c.status()["groups"]


TRACKER_LINE = re.compile(r"^tracker (https://127\.0\.0\.1:(\d+))$")


def test_cluster_up_with_tls_dir_and_cli_ca(tmp_path: Path) -> None:
    """``mydfs cluster up --tls-dir`` makes a CA when the folder is empty (cryptography); the
    CLI reaches it with ``--ca`` or ``$MYDFS_CA``; no child has the secret on its command line."""
    tls_dir = tmp_path / "tls"
    up = ClusterUp(
        "--data", str(tmp_path / "data"), "--groups", "1", "--port", str(free_base(1)),
        "--tls-dir", str(tls_dir),
        cwd=tmp_path,
    )  # fmt: skip
    try:
        url = up.wait_line(TRACKER_LINE, timeout=120).group(1)
        up.children = child_pids(up.proc.pid)
        assert len(up.children) == 4, (up.children, up.seen)
        ca = tls_dir / CA_FILE
        assert stat.S_IMODE((tls_dir / KEY_FILE).stat().st_mode) == 0o600
        src = tmp_path / "src.bin"
        src.write_bytes(os.urandom(100_000))
        mydfs = entry_point("mydfs")
        env = {k: v for k, v in os.environ.items() if k != "MYDFS_CA"}
        put = subprocess.run(
            [mydfs, "--tracker", url, "--ca", str(ca), "put", str(src), "/cli.bin"],
            capture_output=True, timeout=120, env=env,
        )  # fmt: skip
        assert put.returncode == 0, put.stderr
        cat = subprocess.run(
            [mydfs, "--tracker", url, "cat", "/cli.bin"],
            capture_output=True, timeout=120, env={**env, "MYDFS_CA": str(ca)},
        )  # fmt: skip
        assert cat.returncode == 0, cat.stderr
        assert cat.stdout == src.read_bytes()
        # No CA anywhere: not in the arguments, the environment or the credentials file (the
        # session's one holds the cluster's CA), the key given by environment.
        token = (tmp_path / "data" / "tracker" / "admin.token").read_text().strip()
        bare = {**env, "MYDFS_CREDENTIALS": str(tmp_path / "bare.json"), "MYDFS_TOKEN": token}
        no_ca = subprocess.run(
            [mydfs, "--tracker", url, "--timeout", "3", "ls", "/"],
            capture_output=True, timeout=120, env=bare,
        )  # fmt: skip
        assert no_ca.returncode == 1, no_ca
        secret = json.loads((tmp_path / "data" / "cluster.json").read_text())["secret"]
        for pid in up.children:
            assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert up.terminate() == 0
    finally:
        up.kill_everything()
