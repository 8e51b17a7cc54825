"""The background scrub on a real cluster: a bit flipped in a follower's volume file while the
cluster runs is found by the follower's scrub within a pass and repaired from another holder
(the repaired copy is byte-identical), and SDK reads during the whole test never return bad
bytes. A slice whose every copy is damaged is unrepairable: ``mydfs status`` raises an alert
naming it, and reads of it fail instead of returning the bad bytes."""

from __future__ import annotations

import json
import os
import threading
import urllib.request
from collections.abc import Callable
from typing import Any

from e2e_helpers import cli_ok, random_bytes, sha256
from helpers import wait_for

from mydfs.client import Client, MydfsError
from mydfs.client.local_cluster import LocalCluster
from mydfs.client.process import StorageProcess
from mydfs.storage.format import HEADER_SIZE, PAYLOAD_OFFSET, SlotState, decode_header, slot_offset

#: A fast scrub, so that a pass over a few slots takes well under a second.
SCRUB_ARGS = ["--scrub-rate-mb", "64", "--scrub-interval", "0.5"]


def disk_copy(node: StorageProcess, slot: int, length: int) -> tuple[int, bytes] | None:
    """(generation, payload) of the LIVE copy of ``slot`` in ``node``'s volume file, read raw
    while the node runs (no checks: the test compares the bytes itself); None if none."""
    with open(node.volume_file, "rb") as f:
        f.seek(slot_offset(slot))
        raw = f.read(PAYLOAD_OFFSET + length)
    if (
        len(raw) < PAYLOAD_OFFSET + length
        or raw[:HEADER_SIZE] != raw[HEADER_SIZE : 2 * HEADER_SIZE]
    ):
        return None
    try:
        header = decode_header(raw[:HEADER_SIZE], slot=slot)
    except MydfsError:
        return None
    if header.state != SlotState.LIVE or header.length != length:
        return None
    return header.generation, raw[PAYLOAD_OFFSET:]


def flip_bit(node: StorageProcess, slot: int, at: int) -> None:
    """Flip one bit of payload byte ``at`` of ``slot`` in the running node's volume file."""
    fd = os.open(node.volume_file, os.O_RDWR)
    try:
        where = slot_offset(slot) + PAYLOAD_OFFSET + at
        (byte,) = os.pread(fd, 1, where)
        os.pwrite(fd, bytes([byte ^ 0x10]), where)
        os.fsync(fd)
    finally:
        os.close(fd)


def scrub_status(c: LocalCluster, node: StorageProcess) -> dict[str, Any]:
    status = c.node_status(node, timeout=5.0)
    assert status is not None, f"{node.node_id} does not answer /status"
    scrub: dict[str, Any] = status["scrub"]
    return scrub


def test_scrub_finds_a_flipped_bit_and_repairs_it_while_reads_stay_correct(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    c = make_cluster(groups=1, storage_args=SCRUB_ARGS)
    files = {f"/scrub/f{i}.bin": random_bytes(300_000 + 70_000 * i, seed=40 + i) for i in range(3)}
    digests = {path: sha256(data) for path, data in files.items()}
    with Client(c.tracker_url, deadline=60.0) as client:
        heads = {}
        for path, data in files.items():
            info = client.put(path, data)
            assert info.head is not None
            heads[path] = info.head.slot
        leader = wait_for(lambda: c.leader_now(1), timeout=30.0, what="the group's leader")
        follower = next(n for n in c.nodes(1) if n is not leader)
        # The follower holds every slice (pushed or fetched by its reconciler).
        for path, data in files.items():
            wait_for(
                lambda p=path, d=data: (
                    (got := disk_copy(follower, heads[p], len(d))) is not None and got[1] == d
                ),
                timeout=30.0,
                what=f"{follower.node_id} to hold {path}",
            )

        # Readers run during the whole test: every read returns the right bytes or an error,
        # never other bytes. They leave f2 alone, so that its damage is found by the scrub
        # (a read meeting a bad copy gives it up for repair the same way).
        read_during = ["/scrub/f0.bin", "/scrub/f1.bin"]
        stop = threading.Event()
        bad_reads: list[str] = []
        good_reads = [0]

        def reader() -> None:
            while not stop.is_set():
                for path in read_during:
                    try:
                        data = client.read(path)
                    except MydfsError:
                        continue  # an error is allowed; other bytes are not
                    if sha256(data) != digests[path]:
                        bad_reads.append(path)
                    else:
                        good_reads[0] += 1

        threads = [threading.Thread(target=reader, daemon=True) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            before = scrub_status(c, follower)
            assert before["enabled"] is True
            # f0 is damaged in the middle of its second block, f2 in its last byte.
            flip_bit(follower, heads["/scrub/f0.bin"], 70_000)
            flip_bit(follower, heads["/scrub/f2.bin"], len(files["/scrub/f2.bin"]) - 1)

            def repaired() -> bool:
                st = scrub_status(c, follower)
                found = st["corrupt_found"] - before["corrupt_found"]
                return (
                    found >= 1
                    and not st["waiting_repair"]
                    and all(
                        (got := disk_copy(follower, heads[p], len(d))) is not None and got[1] == d
                        for p, d in files.items()
                    )
                )

            wait_for(repaired, timeout=40.0, what="the scrub to find and repair both copies")
            reads_then = good_reads[0]
            wait_for(lambda: good_reads[0] > reads_then, timeout=30.0, what="reads after repair")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60.0)
    assert not bad_reads, f"reads returned bad bytes: {bad_reads}"
    assert good_reads[0] > 0
    after = scrub_status(c, follower)
    # The read path may have met one of the bad copies first; the scrub found the rest, and
    # every copy it found was repaired.
    assert after["corrupt_found"] >= 1
    assert after["repairs"] >= after["corrupt_found"] - before["corrupt_found"]
    assert after["unrepairable"] == []
    assert after["passes"] >= 1 and after["last_pass_end"] is not None
    with urllib.request.urlopen(follower.url + "/metrics", timeout=10) as resp:
        exposition = resp.read().decode()
    for name in (
        "mydfs_storage_scrub_slots_total",
        "mydfs_storage_scrub_bytes_total",
        "mydfs_storage_scrub_corrupt_total",
        "mydfs_storage_scrub_repairs_total",
        "mydfs_storage_scrub_last_pass_end_seconds",
        "mydfs_storage_scrub_pass_duration_seconds",
        "mydfs_storage_scrub_unrepairable_slots",
    ):
        assert name in exposition, name
    with Client(c.tracker_url, deadline=60.0) as client:
        for path, digest in digests.items():
            assert sha256(client.read(path)) == digest


def test_a_slice_damaged_everywhere_is_reported_by_mydfs_status_and_never_served(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    c = make_cluster(groups=1, storage_args=SCRUB_ARGS)
    data = random_bytes(200_000, seed=50)
    keep = random_bytes(100_000, seed=51)
    with Client(c.tracker_url, deadline=20.0) as client:
        info = client.put("/scrub/lost.bin", data)
        client.put("/scrub/keep.bin", keep)
        assert info.head is not None
        slot = info.head.slot
        nodes = c.nodes(1)
        for node in nodes:
            wait_for(
                lambda n=node: (
                    (got := disk_copy(n, slot, len(data))) is not None and got[1] == data
                ),
                timeout=30.0,
                what=f"{node.node_id} to hold the slice",
            )
        for node in nodes:  # every copy damaged: no node can repair it
            flip_bit(node, slot, 1000)

        def alerted() -> list[dict[str, Any]]:
            status = json.loads(cli_ok("status", "--json", tracker=c.tracker_url).stdout)
            return [
                n for g in status["groups"] for n in g["nodes"] if slot in n.get("unrepairable", [])
            ]

        flagged = wait_for(
            alerted, timeout=60.0, what="a node to report the slot unrepairable", interval=1.0
        )
        table = cli_ok("status", tracker=c.tracker_url).stdout.decode()
        assert f"ALERT group 1 node {flagged[0]['node_id']}" in table, table
        assert str(slot) in table.split("ALERT", 1)[1]
        try:
            got = client.read("/scrub/lost.bin")
        except MydfsError:
            pass  # the slice cannot be served intact: an error, never other bytes
        else:
            raise AssertionError(f"read returned {len(got)} bytes of a slice damaged everywhere")
        assert client.read("/scrub/keep.bin") == keep
