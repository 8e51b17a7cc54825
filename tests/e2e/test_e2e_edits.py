"""Editing files in place on a real cluster (a tracker and 2 groups): the SDK's and the CLI's
``write``, ``append``, ``truncate``, ``insert``, ``cut``, every result checked against a bytes
model through the SDK and through curl following the tracker's 307 (``GET /files`` with the
entry's versions); concurrent appends each landing once; a stale ``if_version`` refused; bad
arguments refused with nothing changed.

These need the storage participant (``/edits/...``, the chain's ``version`` and ``via``) and
the tracker's decision routes (``/meta/edits...``): they pass only with all three parts of the
edit increment together.
"""

from __future__ import annotations

import concurrent.futures
import json
import random
from pathlib import Path
from urllib.parse import quote

import pytest
from e2e_helpers import SLICE, cli_ok, curl_ok, random_bytes, run_cli

from mydfs.client import Client, Conflict, InvalidArgument, NotFound
from mydfs.client.local_cluster import LocalCluster


def file_url(cluster: LocalCluster, path: str) -> str:
    return cluster.tracker_url + "/files" + quote(path)


def check(client: Client, cluster: LocalCluster, path: str, model: bytes) -> None:
    info = client.stat(path)
    assert info.size == len(model)
    assert client.read(path) == model
    assert curl_ok("-L", file_url(cluster, path)) == model


def test_every_operation_through_the_sdk_matches_a_bytes_model(
    client: Client, cluster: LocalCluster
) -> None:
    path = "/edits/model.bin"
    model = random_bytes(2 * SLICE + 1000, seed=90)
    client.put(path, model)
    rng = random.Random(91)
    sizes = [1, 100, 5000, SLICE - 1, SLICE + 7]
    for step in range(14):
        size = len(model)
        kind = ["write", "append", "insert", "cut", "truncate", "write", "write"][step % 7]
        data = rng.randbytes(rng.choice(sizes))
        off = rng.randint(0, size)
        if kind == "write":
            off = off if step % 2 else size + 10  # in place, or past the end (zeros between)
            client.write(path, off, data)
            padded = model + bytes(max(0, off - size))
            model = padded[:off] + data + padded[off + len(data) :]
        elif kind == "append":
            assert client.append(path, data) == size
            model += data
        elif kind == "insert":
            client.insert(path, off, data)
            model = model[:off] + data + model[off:]
        elif kind == "cut":
            n = rng.randint(0, min(size - off, 2 * SLICE))
            client.cut(path, off, n)
            model = model[:off] + model[off + n :]
        else:
            n = rng.choice([off, size + 3000])
            client.truncate(path, n)
            model = model[:n] + bytes(max(0, n - size))
        check(client, cluster, path, model)
    client.truncate(path, 0)
    check(client, cluster, path, b"")
    client.append(path, b"again")
    check(client, cluster, path, b"again")


def test_an_empty_file_is_edited_into_one(client: Client, cluster: LocalCluster) -> None:
    path = "/edits/empty.bin"
    client.put(path, b"")
    client.write(path, 3, b"abc")
    check(client, cluster, path, b"\0\0\0abc")


def test_concurrent_appends_each_land_once(client: Client, cluster: LocalCluster) -> None:
    path = "/edits/log.txt"
    client.put(path, b"log:")
    lines = [f"line {k}\n".encode() * 50 for k in range(6)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        offsets = list(pool.map(lambda data: client.append(path, data), lines))
    content = client.read(path)
    assert len(content) == 4 + sum(map(len, lines))
    for at, data in zip(offsets, lines, strict=True):
        assert content[at : at + len(data)] == data


def test_if_version_and_bad_arguments(client: Client, cluster: LocalCluster) -> None:
    path = "/edits/guarded.bin"
    info = client.put(path, b"0123456789")
    with pytest.raises(Conflict) as exc:
        client.write(path, 0, b"x", if_version=info.version + 5)
    assert exc.value.context.get("reason") == "version"
    info = client.write(path, 0, b"A", if_version=info.version)
    for call in (
        lambda: client.write(path, -1, b"x"),
        lambda: client.insert(path, 11, b"x"),
        lambda: client.cut(path, 5, 6),
        lambda: client.truncate(path, -2),
    ):
        with pytest.raises(InvalidArgument):
            call()
    with pytest.raises(NotFound):
        client.append("/edits/missing.bin", b"x")
    assert client.stat(path).version == info.version
    check(client, cluster, path, b"A123456789")


def test_the_cli_edits(cluster: LocalCluster, scratch: Path, client: Client) -> None:
    t = cluster.tracker_url
    path = "/edits/cli.txt"
    client.put(path, b"hello world")
    local = scratch / "part.txt"
    local.write_bytes(b"HELLO")
    cli_ok("write", path, "--offset", "0", str(local), tracker=t)
    assert cli_ok("append", path, "-", tracker=t, stdin=b"!").stdout.strip() == b"11"
    cli_ok("insert", path, "--offset", "5", tracker=t, stdin=b",")
    cli_ok("cut", path, "--offset", "0", "--length", "1", tracker=t)
    cli_ok("truncate", path, "15", tracker=t)
    model = b"ELLO, world!\0\0\0"
    assert cli_ok("cat", path, tracker=t).stdout == model
    version = json.loads(cli_ok("stat", "--json", path, tracker=t).stdout)["version"]
    stale = run_cli("truncate", path, "1", "--if-version", str(version - 1), tracker=t)
    assert stale.returncode == 1 and b"version" in stale.stderr
    bad = run_cli("cut", path, "--offset", "10", "--length", "99", tracker=t)
    assert bad.returncode == 1
    assert run_cli("write", path, "--offset", "x", tracker=t).returncode == 2
    assert cli_ok("cat", path, tracker=t).stdout == model
