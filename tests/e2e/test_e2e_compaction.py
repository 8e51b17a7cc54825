"""301 compaction on a real cluster (``docs/space.md``, Compaction): edits of multi-slice files
leave 301 slots (at the head, in the middle, across both groups); once the files are idle the
tracker rewrites their chains around the redirects and frees them: ``mydfs df`` shows no 301
left and nothing leaked, and every file reads back byte-identical to a bytes model through the
SDK and through curl (and every read made while the compactions ran did), and can still be
edited. Edits running while compaction is active (no
idle time) end equal to the model too: a compaction and an edit of the same file never both
commit on the same version (the loser is planned again)."""

from __future__ import annotations

import random
import threading
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from e2e_helpers import SLICE, curl_ok, random_bytes
from test_e2e_collector import wait_for

from mydfs.bench.edits import parse_counter
from mydfs.client import Client
from mydfs.client.local_cluster import LocalCluster

#: Compact a file with one 301 as soon as a pass sees it idle for 2 s; a pass every second.
OPTIONS = {"compact_file_redirects": 1, "compact_idle": 2, "collect_interval": 1}


def metric(c: LocalCluster, name: str) -> float:
    with urllib.request.urlopen(c.tracker_url + "/metrics", timeout=10) as resp:
        return parse_counter(resp.read().decode(), name)


def compacted(client: Client) -> bool:
    now: dict[str, Any] = client.df()["cluster"]
    return (
        now["moved"]["slots"] == 0
        and now["orphan"]["slots"] == 0
        and now["live"]["slots"] + now["pending"]["slots"] == now["files"]["slots"]
    )


def check(client: Client, c: LocalCluster, path: str, model: bytes) -> None:
    assert client.stat(path).size == len(model)
    assert client.read(path) == model
    assert curl_ok("-L", c.tracker_url + "/files" + quote(path)) == model


def edit(client: Client, path: str, model: bytearray, kind: str, off: int, data: bytes) -> None:
    if kind == "write":
        client.write(path, off, data)
        model[off : off + len(data)] = data
    else:
        client.insert(path, off, data)
        model[off:off] = data


def test_redirects_are_compacted_and_files_read_the_same(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    c = make_cluster(groups=2, tracker_options=OPTIONS)
    models = {
        "/compact/a.bin": bytearray(random_bytes(3 * SLICE + 1000, seed=301)),
        "/compact/b.bin": bytearray(random_bytes(5 * SLICE, seed=302)),
        "/compact/small.bin": bytearray(random_bytes(5000, seed=303)),
    }
    with Client(c.tracker_url, deadline=60.0) as client:
        for path, model in models.items():
            client.put(path, bytes(model))
        # The head slice, a middle one and the last one of a; an insert in b; small's only one.
        edit(client, "/compact/a.bin", models["/compact/a.bin"], "write", 10, b"h" * 100)
        edit(client, "/compact/a.bin", models["/compact/a.bin"], "write", SLICE + 5, b"m" * 7)
        edit(client, "/compact/a.bin", models["/compact/a.bin"], "write", 3 * SLICE, b"e" * 9)
        edit(client, "/compact/b.bin", models["/compact/b.bin"], "insert", 2 * SLICE + 3, b"i")
        edit(client, "/compact/b.bin", models["/compact/b.bin"], "write", 4 * SLICE, b"w" * 99)
        edit(client, "/compact/small.bin", models["/compact/small.bin"], "write", 0, b"s")
        assert client.df()["cluster"]["moved"]["slots"] > 0
        versions = {p: client.stat(p).version for p in models}
        # Readers meanwhile: every read, before, during or after a compaction, is the content.
        done = threading.Event()
        reads: list[bool] = []

        failed: list[BaseException] = []

        def reader() -> None:
            try:
                with Client(c.tracker_url, deadline=60.0) as own:
                    while not done.is_set():
                        for path, model in models.items():
                            reads.append(own.read(path) == model)
            except BaseException as exc:
                failed.append(exc)

        readers = [threading.Thread(target=reader, daemon=True) for _ in range(2)]
        for t in readers:
            t.start()
        try:
            wait_for("every 301 to be compacted", lambda: compacted(client), 90)
        finally:
            done.set()
            for t in readers:
                t.join(60)
        assert not failed, failed
        assert reads and all(reads), f"{reads.count(False)} of {len(reads)} reads differed"
        assert metric(c, "mydfs_tracker_redirects_released_total") >= 6
        for path, model in models.items():
            check(client, c, path, bytes(model))
            assert client.stat(path).version > versions[path]  # compaction is a new version
        # A compacted chain is edited like any other: new 301s, compacted again.
        edit(client, "/compact/a.bin", models["/compact/a.bin"], "write", 2 * SLICE - 3, b"x" * 6)
        edit(client, "/compact/b.bin", models["/compact/b.bin"], "insert", 0, b"y" * 10)
        for path, model in models.items():
            check(client, c, path, bytes(model))
        wait_for("the new 301s to be compacted", lambda: compacted(client), 90)
        for path, model in models.items():
            check(client, c, path, bytes(model))


def test_edits_during_compaction_end_equal_to_the_model(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    c = make_cluster(
        groups=2, tracker_options={**OPTIONS, "compact_idle": 0, "collect_interval": 0.3}
    )
    path = "/compact/busy.bin"
    model = bytearray(random_bytes(4 * SLICE + 77, seed=304))
    rng = random.Random(305)
    with Client(c.tracker_url, deadline=60.0) as client:
        client.put(path, bytes(model))
        errors: list[BaseException] = []

        def editor() -> None:
            try:
                with Client(c.tracker_url, deadline=60.0) as own:
                    for step in range(24):
                        off = rng.randrange(0, len(model) - 64)
                        kind = "insert" if step % 5 == 4 else "write"
                        edit(own, path, model, kind, off, rng.randbytes(rng.randint(1, 64)))
            except BaseException as exc:
                errors.append(exc)

        worker = threading.Thread(target=editor)
        worker.start()
        worker.join(300)
        assert not worker.is_alive() and not errors, errors
        wait_for("every 301 to be compacted", lambda: compacted(client), 90)
        check(client, c, path, bytes(model))
        assert metric(c, "mydfs_tracker_redirects_released_total") > 0
