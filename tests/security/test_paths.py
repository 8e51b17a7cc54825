"""Hostile paths through the SDK, the CLI and curl: ``..``, encoded dots and slashes, NUL and
other control characters, over-long paths and names, and names not in Unicode NFC are refused
with a 400 (``invalid_path``) that says why, and nothing is stored under any of them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from security_helpers import auth_headers

from mydfs.client import Client
from mydfs.client.local_cluster import LocalCluster
from mydfs.client.process import entry_point
from mydfs.common.errors import InvalidPath

LONG_NAME = "n" * 256
LONG_PATH = "/" + "/".join(["d" * 200] * 21)  # 4221 bytes

#: (path as the SDK and CLI take it, what the reason says)
BAD_PATHS = [
    ("/a/../b", "'..'"),
    ("/..", "'..'"),
    ("/a/./b", "'.'"),
    ("/a\x00b", "NUL"),
    ("/a\nb", "U+000A"),
    ("/" + LONG_NAME, "longer than 255"),
    (LONG_PATH, "longer than 4096"),
    ("/cafe\u0301", "NFC"),
    ("relative", "not absolute"),
    ("/a//b", "empty component"),
]

#: (raw URL tail after /meta/files/ or /files/, what the reason says)
BAD_URLS = [
    ("a/%2e%2e/b", "'..'"),
    ("a/%2E%2E", "'..'"),
    ("a/../b", "'..'"),
    ("%2e", "'.'"),
    ("a%2fb", "encoded '/'"),
    ("..%2F..%2Fetc%2Fpasswd", "encoded '/'"),
    ("a%00b", "NUL"),
    ("a%0d%0ab", "U+000D"),
    ("%ff%fe", "not UTF-8"),
    (LONG_NAME, "longer than 255"),
    (LONG_PATH[1:], "longer than 4096"),
    ("cafe%CC%81", "NFC"),
]


def test_sdk_refuses_bad_paths_with_a_reason(hostile_cluster: LocalCluster) -> None:
    with Client(hostile_cluster.tracker_url, deadline=30.0) as c:
        for path, why in BAD_PATHS:
            for call in (c.put, c.stat, c.read):
                with pytest.raises(InvalidPath) as info:
                    call(path, b"x") if call == c.put else call(path)  # type: ignore[operator]
                assert info.value.status == 400
                assert why in info.value.message, (path[:60], info.value.message[:200])
        assert c.listdir("/") == []  # nothing was stored


def test_cli_refuses_bad_paths_with_one_line(hostile_cluster: LocalCluster, tmp_path: Path) -> None:
    local = tmp_path / "x.bin"
    local.write_bytes(b"x" * 10)
    env = dict(os.environ, MYDFS_TRACKER=hostile_cluster.tracker_url)
    for path, why in BAD_PATHS:
        if "\x00" in path:
            continue  # a command line cannot carry NUL: the SDK and curl cases cover it
        for args in (["put", str(local), path], ["stat", path], ["get", path, str(tmp_path / "o")]):
            done = subprocess.run(
                [entry_point("mydfs"), *args], capture_output=True, env=env, timeout=60, check=False
            )
            err = done.stderr.decode(errors="replace")
            assert done.returncode == 1, (args, done.returncode, err)
            assert err.startswith("mydfs: invalid path") and why in err, (args, err[:300])
            assert err.count("\n") == 1, err[:500]
    assert not (tmp_path / "o").exists()


def _curl(*args: str) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        ["curl", "-sS", "--path-as-is", "--max-time", "20", "-w", "\n%{http_code}", *args],
        capture_output=True,
        timeout=40,
        check=False,
    )
    body, _, code = done.stdout.decode(errors="replace").rpartition("\n")
    return int(code), json.loads(body) if body.startswith("{") else {}


def test_curl_gets_400_with_a_reason(hostile_cluster: LocalCluster) -> None:
    base = hostile_cluster.tracker_url
    headers = [f"-H{k}: {v}" for k, v in auth_headers(hostile_cluster).items()]
    for tail, why in BAD_URLS:
        for args in (
            [f"{base}/files/{tail}"],
            [f"{base}/meta/files/{tail}"],
            ["-X", "DELETE", f"{base}/meta/files/{tail}"],
            ["-X", "PUT", "-d", "{}", f"{base}/meta/files/{tail}"],
            [f"{base}/meta/list/{tail}"],
        ):
            status, body = _curl(*headers, *args)
            if status in (401, 403):
                continue  # a route that checks the caller's key before the path
            if status == 414:
                continue  # a request line over max_request_line: refused by the HTTP parser
            assert status == 400, (args[-1][:120], status, body)
            assert body.get("error") == "invalid_path", body
            assert why in str(body.get("message")), (args[-1][:120], body)
