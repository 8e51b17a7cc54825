"""The ``mydfs`` command line on a real cluster, and what happens with bad input.

Shows: files of 0 B, 1 B, one slice - 1, one slice and one slice + 1 round-trip byte-identical
through ``put``/``get``/``cat`` (and ``put -`` from standard input); ``ls``, ``stat`` and
``status`` (with and without ``--json``), the tracker taken from ``$MYDFS_TRACKER``; ``put`` to
a taken path fails unless ``--overwrite``, which replaces the content and bumps the version;
every bad input — an unknown path, ``..``, a relative path, NUL (through the SDK: argv cannot
carry it), an unreachable tracker, a missing local file, an unwritable destination — ends with
exit status 1 and one clear line on stderr, and changes nothing.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from e2e_helpers import (
    EDGE_SIZES,
    SLICE,
    cli_ok,
    closed_port,
    curl,
    http_request,
    random_bytes,
    run_cli,
    sha256,
    sha256_file,
    write_random,
)

from mydfs.client import Client, InvalidPath
from mydfs.client.local_cluster import LocalCluster


def one_line_error(done: subprocess.CompletedProcess[bytes], *expect: str) -> str:
    """Assert a failed CLI run: exit 1, nothing on stdout, exactly one line on stderr that
    starts with ``mydfs:`` and mentions every ``expect`` (case-insensitive), no traceback."""
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 1, (done.returncode, err)
    assert done.stdout == b""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mydfs: "), err
    assert "Traceback" not in err
    for word in expect:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    return lines[0]


@pytest.mark.parametrize("size", EDGE_SIZES, ids=lambda s: f"{s}B")
def test_cli_round_trips_edge_sizes(cluster: LocalCluster, scratch: Path, size: int) -> None:
    t = cluster.tracker_url
    src = scratch / "src.bin"
    digest = write_random(src, size, seed=1000 + size)
    remote = f"/cli/sizes/f{size}.bin"

    put = cli_ok("put", str(src), remote, tracker=t)
    assert put.stdout == b""
    stat = json.loads(cli_ok("stat", "--json", remote, tracker=t).stdout)
    assert (stat["path"], stat["size"], stat["version"]) == (remote, size, 1)
    assert stat["slices"] == -(-size // SLICE)

    out = scratch / "out.bin"
    cli_ok("get", remote, str(out), tracker=t)
    assert sha256_file(out) == digest
    assert not list(scratch.glob("*.mydfs-partial"))
    assert sha256(cli_ok("cat", remote, tracker=t).stdout) == digest


def test_cli_stdin_env_tracker_ls_stat_status(cluster: LocalCluster, scratch: Path) -> None:
    env = {"MYDFS_TRACKER": cluster.tracker_url}  # no --tracker: the environment names it
    data = random_bytes(SLICE + 3, seed=55)
    cli_ok("put", "-", "/cli/env/stdin.bin", stdin=data, env=env)
    cli_ok("put", "-", "/cli/env/sub/tiny.txt", stdin=b"hello\n", env=env)

    # get into a folder keeps the name; get to - writes standard output.
    cli_ok("get", "/cli/env/stdin.bin", str(scratch), env=env)
    assert (scratch / "stdin.bin").read_bytes() == data
    assert cli_ok("get", "/cli/env/sub/tiny.txt", "-", env=env).stdout == b"hello\n"

    listing = json.loads(cli_ok("ls", "--json", "/cli/env", env=env).stdout)
    assert [(e["name"], e["type"]) for e in listing] == [("stdin.bin", "file"), ("sub", "dir")]
    assert listing[0]["size"] == len(data)
    human = cli_ok("ls", "/cli/env", env=env).stdout.decode()
    assert "stdin.bin" in human and "sub/" in human and str(len(data)) in human

    stat = cli_ok("stat", "/cli/env/sub/tiny.txt", env=env).stdout.decode()
    assert "/cli/env/sub/tiny.txt" in stat and "size: 6" in stat

    status = json.loads(cli_ok("status", "--json", env=env).stdout)
    groups = status["groups"]
    assert [g["group_id"] for g in groups] == [1, 2]
    for g in groups:
        assert g["writable"] and g["leader"]
        assert sum(1 for n in g["nodes"] if n["up"]) == 3
    assert "2 groups, 2 writable" in cli_ok("status", env=env).stdout.decode()

    cli_ok("rm", "/cli/env/sub/tiny.txt", env=env)
    listing = json.loads(cli_ok("ls", "--json", "/cli/env", env=env).stdout)
    assert [e["name"] for e in listing] == ["stdin.bin"]
    one_line_error(run_cli("stat", "/cli/env/sub/tiny.txt", env=env), "no such file")


def test_cli_put_to_a_taken_path_needs_overwrite(cluster: LocalCluster, scratch: Path) -> None:
    t = cluster.tracker_url
    first, second = scratch / "v1.bin", scratch / "v2.bin"
    write_random(first, 2 * SLICE + 1, seed=61)
    digest2 = write_random(second, 12345, seed=62)
    cli_ok("put", str(first), "/cli/ow.bin", tracker=t)
    v1 = json.loads(cli_ok("stat", "--json", "/cli/ow.bin", tracker=t).stdout)

    one_line_error(run_cli("put", str(second), "/cli/ow.bin", tracker=t), "already exists")
    assert json.loads(cli_ok("stat", "--json", "/cli/ow.bin", tracker=t).stdout) == v1

    cli_ok("put", "--overwrite", str(second), "/cli/ow.bin", tracker=t)
    v2 = json.loads(cli_ok("stat", "--json", "/cli/ow.bin", tracker=t).stdout)
    assert v2["version"] == v1["version"] + 1
    assert v2["size"] == 12345 and v2["file_id"] != v1["file_id"]
    assert sha256(cli_ok("cat", "/cli/ow.bin", tracker=t).stdout) == digest2


BAD_INPUT = [
    # (id, argv with {local}/{missing}/{out}/{nodir} placeholders, words the message must say)
    ("get-unknown", ["get", "/cli/none/x.bin", "{out}"], ["no such file", "/cli/none/x.bin"]),
    ("cat-unknown", ["cat", "/cli/none/x.bin"], ["no such file"]),
    ("stat-unknown", ["stat", "/cli/none/x.bin"], ["no such file", "/cli/none/x.bin"]),
    ("rm-unknown", ["rm", "/cli/none/x.bin"], ["no such file", "/cli/none/x.bin"]),
    ("ls-unknown", ["ls", "/cli/none"], ["no such directory"]),
    ("get-dotdot", ["get", "/cli/../etc/passwd", "{out}"], ["invalid path", ".."]),
    ("put-dotdot", ["put", "{local}", "/cli/../escape.bin"], ["invalid path", ".."]),
    ("stat-dotdot", ["stat", "/cli/x/.."], ["invalid path", ".."]),
    ("rm-dotdot", ["rm", "/../cli/x.bin"], ["invalid path", ".."]),
    ("put-relative", ["put", "{local}", "cli/relative.bin"], ["invalid path", "absolute"]),
    ("get-relative", ["get", "cli/relative.bin", "{out}"], ["invalid path", "absolute"]),
    ("stat-relative", ["stat", "relative.bin"], ["invalid path", "absolute"]),
    ("rm-relative", ["rm", "relative.bin"], ["invalid path", "absolute"]),
    ("put-missing-local", ["put", "{missing}", "/cli/never.bin"], ["does not exist"]),
    ("put-local-dir", ["put", "{dir}", "/cli/never.bin"], ["not a regular file"]),
    ("get-into-missing-dir", ["get", "/cli/exists.bin", "{nodir}"], ["no such"]),
    ("put-under-a-file", ["put", "{local}", "/cli/exists.bin/child"], ["is a file"]),
]


@pytest.mark.parametrize(
    ("argv", "words"), [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT]
)
def test_cli_bad_input_gives_one_clear_line_and_exit_1(
    cluster: LocalCluster, client: Client, scratch: Path, argv: list[str], words: list[str]
) -> None:
    if not client.exists("/cli/exists.bin"):
        client.put("/cli/exists.bin", b"present")
    local = scratch / "local.bin"
    local.write_bytes(b"local data")
    places = {
        "{local}": str(local),
        "{missing}": str(scratch / "no-such-file.bin"),
        "{out}": str(scratch / "out.bin"),
        "{nodir}": str(scratch / "no" / "such" / "dir" / "out.bin"),
        "{dir}": str(scratch),
    }
    args = [places.get(a, a) for a in argv]
    before = {e.name for e in client.listdir("/cli")}

    one_line_error(run_cli(*args, tracker=cluster.tracker_url, timeout=60), *words)

    # Nothing changed: no local output, nothing new stored.
    assert not (scratch / "out.bin").exists()
    assert not (scratch / "no").exists()
    assert not list(scratch.glob("*.mydfs-partial"))
    assert {e.name for e in client.listdir("/cli")} == before
    assert client.read("/cli/exists.bin") == b"present"


@pytest.mark.parametrize(
    "argv",
    [["stat", "/x.bin"], ["ls", "/"], ["put", "{local}", "/x.bin"], ["get", "/x.bin", "{out}"]],
    ids=["stat", "ls", "put", "get"],
)
def test_cli_unreachable_tracker_fails_within_its_timeout(scratch: Path, argv: list[str]) -> None:
    port = closed_port()
    local = scratch / "local.bin"
    local.write_bytes(b"data")
    args = [{"{local}": str(local), "{out}": str(scratch / "out.bin")}.get(a, a) for a in argv]
    started = time.monotonic()
    done = run_cli(
        "--timeout", "3", *args, env={"MYDFS_TRACKER": f"http://127.0.0.1:{port}"}, timeout=60
    )
    elapsed = time.monotonic() - started
    one_line_error(done, f"127.0.0.1:{port}")
    assert elapsed < 30, elapsed
    assert not (scratch / "out.bin").exists()


def test_cli_usage_errors_exit_2() -> None:
    for argv in (["put", "only-one-arg"], ["frobnicate"], []):
        done = run_cli(*argv, timeout=60)
        assert done.returncode == 2, (argv, done)


def test_sdk_and_http_refuse_nul_and_dot_dot(cluster: LocalCluster, client: Client) -> None:
    """NUL cannot travel in argv, so the SDK carries it; raw HTTP shows the tracker refuses
    the same paths itself (encoded or not), so no client can slip one past."""
    before = {e.name for e in client.listdir("/")}
    for bad in ("/nul\x00.bin", "/a/\x00/b.bin", "/a/../b.bin", "/a/./b.bin", "relative.bin"):
        with pytest.raises(InvalidPath):
            client.put(bad, b"x")
        with pytest.raises(InvalidPath):
            client.stat(bad)
        with pytest.raises(InvalidPath):
            client.read(bad)
        with pytest.raises(InvalidPath):
            client.delete(bad)
    with pytest.raises(InvalidPath):
        client.listdir("/dir\x00")

    t = cluster.tracker_url
    for raw in ("/meta/files/nul%00.bin", "/meta/files/a/%2E%2E/b.bin", "/meta/files/a/../b.bin"):
        status, _, body = http_request(t + raw)
        assert status == 400 and json.loads(body)["error"] == "invalid_path", (raw, body)
    for raw in ("/files/nul%00.bin", "/files/a/%2e%2e/b.bin"):
        status, _, body = http_request(t + raw)
        assert status == 400 and json.loads(body)["error"] == "invalid_path", (raw, body)
    done = curl("--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", t + "/files/a/../b.bin")
    assert done.stdout == b"400"
    assert {e.name for e in client.listdir("/")} == before
