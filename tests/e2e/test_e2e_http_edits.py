"""Editing and creating files with curl alone (issue 9, plain HTTP): ``PATCH|POST|PUT
/files/<path>`` on the tracker, which answers 307 to a storage node with a write grant bound to
the path; the node spools the body and runs the SDK for the caller.

Every route goes through real curl following the redirect (``-L``); every result is checked
against a bytes model through the SDK and through ``GET /files``. A stale ``if_version`` and
every bad input get their 4xx with the file unchanged; the node refuses forged grants, grants
for another path and grants for a file id; the tracker takes a cluster-signed request only on
the routes the SDK needs, and only with a valid signature.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from e2e_helpers import SLICE, bearer_args, curl_ok, group_nodes, http_request, random_bytes

from mydfs.client import Client
from mydfs.client.local_cluster import LocalCluster
from mydfs.common import grants
from mydfs.common.auth import AUTH_HEADER, sign


def file_url(cluster: LocalCluster, path: str, query: str = "") -> str:
    return cluster.tracker_url + "/files" + quote(path) + (f"?{query}" if query else "")


def curl_call(
    url: str, *args: str, stdin: bytes | None = None, auth: bool = True
) -> tuple[int, Any]:
    """``curl -sS -L ARGS URL``: the final status and its JSON body (None if empty)."""
    extra = bearer_args([url]) if auth else []
    done = subprocess.run(
        ["curl", "-sS", "-L", "--max-time", "120", "-w", "\n%{http_code}", *extra, *args, url],
        input=stdin,
        capture_output=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    body, _, code = done.stdout.rpartition(b"\n")
    return int(code), (json.loads(body) if body.strip() else None)


def check(client: Client, cluster: LocalCluster, path: str, model: bytes) -> None:
    assert client.stat(path).size == len(model)
    assert client.read(path) == model
    assert curl_ok("-L", file_url(cluster, path)) == model


def test_every_route_through_curl_matches_a_bytes_model(
    client: Client, cluster: LocalCluster, tmp_path: Path
) -> None:
    path = "/http/model.bin"
    model = random_bytes(SLICE + 3000, seed=201)
    src = tmp_path / "src.bin"
    src.write_bytes(model)
    status, entry = curl_call(file_url(cluster, path), "-T", str(src))
    assert status == 201, entry
    assert entry["path"] == path and entry["size"] == len(model)
    check(client, cluster, path, model)

    # Overwrite in place, across the slice boundary.
    data = random_bytes(5000, seed=202)
    piece = tmp_path / "piece.bin"
    piece.write_bytes(data)
    off = SLICE - 2000
    rng = f"bytes {off}-{off + len(data) - 1}/*"
    status, entry = curl_call(
        file_url(cluster, path),
        "-X", "PATCH", "-H", f"Content-Range: {rng}", "--data-binary", f"@{piece}",
    )  # fmt: skip
    assert status == 200, entry
    model = model[:off] + data + model[off + len(data) :]
    assert entry["size"] == len(model)
    check(client, cluster, path, model)

    # Past the end (zeros between), with the total given.
    off = len(model) + 10
    rng = f"bytes {off}-{off + len(data) - 1}/{off + len(data)}"
    status, entry = curl_call(
        file_url(cluster, path),
        "-X", "PATCH", "-H", f"Content-Range: {rng}", "--data-binary", f"@{piece}",
    )  # fmt: skip
    assert status == 200, entry
    model = model + bytes(10) + data
    check(client, cluster, path, model)

    # Append from stdin: the offset where it landed and the new entry.
    tail = random_bytes(777, seed=203)
    status, body = curl_call(
        file_url(cluster, path, "append"), "-X", "POST", "--data-binary", "@-", stdin=tail
    )
    assert status == 200, body
    assert body["offset"] == len(model)
    model += tail
    assert body["entry"]["size"] == len(model)
    check(client, cluster, path, model)

    # Insert, cut, truncate (shrink and grow).
    ins = random_bytes(1234, seed=204)
    status, entry = curl_call(
        file_url(cluster, path, "insert=100"), "-X", "POST", "--data-binary", "@-", stdin=ins
    )
    assert status == 200, entry
    model = model[:100] + ins + model[100:]
    status, entry = curl_call(file_url(cluster, path, "cut=50&length=3000"), "-X", "POST")
    assert status == 200, entry
    model = model[:50] + model[3050:]
    assert entry["size"] == len(model)
    check(client, cluster, path, model)
    status, entry = curl_call(file_url(cluster, path, "truncate=4000"), "-X", "POST")
    assert status == 200, entry
    model = model[:4000]
    status, entry = curl_call(file_url(cluster, path, "truncate=4100"), "-X", "POST")
    assert status == 200, entry
    model += bytes(100)
    assert entry["size"] == len(model)
    check(client, cluster, path, model)


def test_put_creates_replaces_only_with_overwrite_and_streams_large_files(
    client: Client, cluster: LocalCluster, tmp_path: Path
) -> None:
    path = "/http/put.bin"
    big = random_bytes(2 * SLICE + 17, seed=210)
    src = tmp_path / "big.bin"
    src.write_bytes(big)
    url = file_url(cluster, path)
    done = subprocess.run(
        ["curl", "-sS", "-v", "-L", "--fail-with-body", *bearer_args([url]), "-T", str(src), url],
        capture_output=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    trace = done.stderr.decode(errors="replace")
    # The tracker answers the Expect with its 307: the body goes to the storage node only.
    assert "Expect: 100-continue" in trace and "< HTTP/1.1 307" in trace
    first = trace.index("< HTTP/1.1 ")
    assert trace.startswith("< HTTP/1.1 307", first), trace[first : first + 200]
    assert json.loads(done.stdout)["size"] == len(big)
    check(client, cluster, path, big)
    small = tmp_path / "small.bin"
    small.write_bytes(b"replaced")
    status, body = curl_call(file_url(cluster, path), "-T", str(small))
    assert status == 409, body
    assert client.read(path) == big
    status, entry = curl_call(file_url(cluster, path, "overwrite=1"), "-T", str(small))
    assert status == 201, entry
    check(client, cluster, path, b"replaced")
    # An empty file, and a PUT with a stale if_version.
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    status, entry = curl_call(file_url(cluster, "/http/empty.bin"), "-T", str(empty))
    assert status == 201 and entry["size"] == 0, entry
    version = client.stat(path).version
    status, body = curl_call(file_url(cluster, path, f"if_version={version + 5}"), "-T", str(src))
    assert status == 409 and body["context"]["reason"] == "version", body
    assert client.read(path) == b"replaced"
    status, entry = curl_call(file_url(cluster, path, f"if_version={version}"), "-T", str(src))
    assert status == 201, entry
    assert client.read(path) == big


def test_stale_if_version_is_a_conflict_and_changes_nothing(
    client: Client, cluster: LocalCluster
) -> None:
    path = "/http/cas.bin"
    client.put(path, b"0123456789")
    version = client.stat(path).version
    status, body = curl_call(
        file_url(cluster, path, f"append&if_version={version + 1}"),
        "-X", "POST", "--data-binary", "@-", stdin=b"xyz",
    )  # fmt: skip
    assert status == 409, body
    assert body["error"] == "conflict" and body["context"]["reason"] == "version"
    assert client.read(path) == b"0123456789"
    status, body = curl_call(
        file_url(cluster, path, f"if_version={version}"),
        "-X", "PATCH", "-H", "Content-Range: bytes 0-2/*", "--data-binary", "@-", stdin=b"abc",
    )  # fmt: skip
    assert status == 200, body
    assert body["version"] == version + 1
    assert client.read(path) == b"abc3456789"


BAD = [
    # (method, query, extra curl args, body, status)
    ("POST", "truncate=-1", [], None, 400),
    ("POST", "truncate=abc", [], None, 400),
    ("POST", "insert=1.5", [], b"x", 400),
    ("POST", "truncate=1&cut=2&length=1", [], None, 400),
    ("POST", "", [], b"x", 400),
    ("POST", "cut=2", [], None, 400),
    ("POST", "cut=0&length=999999", [], None, 400),
    ("POST", "insert=999999", [], b"x", 400),
    ("POST", "truncate=3", [], b"a body", 400),
    ("POST", "append&bogus=1", [], b"x", 400),
    ("PATCH", "", [], b"abc", 400),
    ("PATCH", "", ["-H", "Content-Range: 0-2/*"], b"abc", 400),
    ("PATCH", "", ["-H", "Content-Range: items 0-2/*"], b"abc", 400),
    ("PATCH", "", ["-H", "Content-Range: bytes 3-1/*"], b"abc", 400),
    ("PATCH", "", ["-H", "Content-Range: bytes -1-2/*"], b"abc", 400),
    ("PATCH", "", ["-H", "Content-Range: bytes 0-9/*"], b"short", 400),
    ("PATCH", "", ["-H", "Content-Range: bytes 0-1/*"], b"longer", 400),
    ("PATCH", "append", ["-H", "Content-Range: bytes 0-2/*"], b"abc", 400),
]


def test_bad_input_is_a_4xx_and_changes_nothing(client: Client, cluster: LocalCluster) -> None:
    path = "/http/bad.bin"
    client.put(path, b"0123456789")
    before = client.stat(path)
    for method, query, extra, body, want in BAD:
        args = ["-X", method, *extra]
        if body is not None:
            args += ["--data-binary", "@-"]
        status, answer = curl_call(file_url(cluster, path, query), *args, stdin=body)
        assert status == want, (method, query, extra, answer)
        assert answer["error"] == "invalid_argument", answer
        after = client.stat(path)
        assert after.version == before.version, (method, query, extra)
        assert client.read(path) == b"0123456789"
    # A missing file, and a folder.
    status, answer = curl_call(
        file_url(cluster, "/http/none.bin", "append"), "-X", "POST", "--data-binary", "@-",
        stdin=b"x",
    )  # fmt: skip
    assert status == 404, answer
    assert not client.exists("/http/none.bin")
    status, answer = curl_call(file_url(cluster, "/http", "truncate=0"), "-X", "POST")
    assert status == 400 and answer["context"]["reason"] == "directory", answer
    status, answer = curl_call(
        file_url(cluster, "/http/none.bin"), "-X", "PATCH", "-H", "Content-Range: bytes 0-0/*",
        "--data-binary", "@-", stdin=b"x",
    )  # fmt: skip
    assert status == 404, answer
    # Without an API key the tracker refuses; nothing is redirected.
    status, answer = curl_call(file_url(cluster, path, "truncate=0"), "-X", "POST", auth=False)
    assert status == 401, answer
    assert client.read(path) == b"0123456789"
    # Every spooled body was removed, refused or not.
    for node in cluster.nodes():
        spool = node.data_dir / "http-spool"
        assert not spool.exists() or not list(spool.iterdir()), list(spool.iterdir())


def test_storage_node_refuses_forged_or_other_grants(client: Client, cluster: LocalCluster) -> None:
    path = "/http/guarded.bin"
    client.put(path, b"guarded")
    info = client.stat(path)
    node = group_nodes(cluster.tracker_url)[1][0]
    secret = cluster.secret

    def post(grant: str | None) -> int:
        query = "truncate=0" + (f"&grant={grant}" if grant else "")
        status, _, _ = http_request(f"{node}/files{quote(path)}?{query}", "POST", auth=False)
        return status

    assert post(None) == 401
    assert post(grants.issue_for("another-secret-0123456789", "write", 600, path=path)) == 401
    assert post(grants.issue_for(secret, "write", 600, path="/http/other.bin")) == 403
    assert post(grants.issue_for(secret, "read", 600, path=path)) == 403
    assert post(grants.issue_for(secret, "write", 600, file_id=info.file_id)) == 403
    assert post(grants.issue_for(secret, "write", -10, path=path)) == 403
    assert client.read(path) == b"guarded"
    # The genuine one works (what the tracker's 307 carries).
    assert post(grants.issue_for(secret, "write", 600, path=path)) == 200
    assert client.read(path) == b""


def test_tracker_takes_a_signature_only_where_the_sdk_needs_it(
    client: Client, cluster: LocalCluster
) -> None:
    path = "/http/signed.bin"
    client.put(path, b"signed")
    meta = f"/meta/files{quote(path)}"

    def call(method: str, path_qs: str, secret: str) -> int:
        headers = {AUTH_HEADER: sign(secret, method, path_qs, body=b"")}
        url = cluster.tracker_url + path_qs
        status, _, _ = http_request(url, method, headers=headers, auth=False)
        return status

    assert call("GET", meta, cluster.secret) == 200
    assert call("GET", meta, "another-secret-0123456789") == 401
    assert call("DELETE", meta, cluster.secret) == 401  # not a route the SDK's edits need
    assert call("GET", "/admin/keys", cluster.secret) == 401
    assert call("GET", "/meta/trash", cluster.secret) == 401
    assert client.read(path) == b"signed"


@pytest.mark.parametrize("query", ["append", "truncate=1"])
def test_the_tracker_redirect_carries_a_path_grant(cluster: LocalCluster, query: str) -> None:
    status, headers, _ = http_request(file_url(cluster, "/http/x y.bin", query), "POST")
    assert status == 307
    location = headers["location"]
    assert "/files/http/x%20y.bin?" in location and query.split("=")[0] in location
    token = location.split("grant=", 1)[1].split("&", 1)[0]
    grant = grants.check(cluster.secret, token, op="write", path="/http/x y.bin")
    assert grant.file_id == ""
