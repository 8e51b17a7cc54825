"""Files through the SDK and plain HTTP (curl) on a real cluster: a tracker and 2 groups.

Shows: files of 0 B, 1 B, one slice - 1, one slice, one slice + 1 and 100 MiB come back
byte-identical (sha256) through the SDK (``get``, ``read``, ``open``) and through curl following
the tracker's 307 (whole, HEAD headers, single ``Range`` requests); a 7-slice file is placed
3+3+1 across both groups, as a walk of its linked chain shows; listing and deleting (the
entry disappears, ``stat`` says NotFound, its slices turn 404 on every node); overwriting
(AlreadyExists unless asked, then the version grows and the content is replaced).
"""

from __future__ import annotations

import dataclasses
import email.utils
import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from e2e_helpers import (
    EDGE_SIZES,
    MIB,
    SLICE,
    cli_ok,
    curl,
    curl_head,
    curl_ok,
    file_slice,
    http_request,
    random_bytes,
    read_grant,
    runs_of,
    sha256,
    sha256_file,
    slice_status_everywhere,
    walk_chain,
    write_random,
)
from helpers import wait_for

from mydfs.client import AlreadyExists, Client, FileInfo, NotFound
from mydfs.client.local_cluster import LocalCluster
from mydfs.common.grants import GRANT_HEADER


def slices_for(size: int) -> int:
    return -(-size // SLICE)


def file_url(cluster: LocalCluster, path: str) -> str:
    return cluster.tracker_url + "/files" + quote(path)


def check_head_headers(cluster: LocalCluster, info: FileInfo) -> None:
    """HEAD through the tracker's redirect: the headers a downloader needs."""
    status, headers = curl_head(file_url(cluster, info.path))
    assert status == 200
    assert int(headers["content-length"]) == info.size
    assert headers["etag"] == f'"{info.file_id}-{info.version}"'
    modified = email.utils.parsedate_to_datetime(headers["last-modified"]).timestamp()
    assert abs(modified - info.mtime) < 1.0, (headers["last-modified"], info.mtime)


@pytest.mark.parametrize("size", EDGE_SIZES, ids=lambda s: f"{s}B")
def test_edge_sizes_round_trip_through_sdk_and_curl(
    client: Client, cluster: LocalCluster, scratch: Path, size: int
) -> None:
    data = random_bytes(size, seed=size)
    path = f"/sizes/f{size}.bin"

    info = client.put(path, data)
    assert (info.size, info.slices, info.version) == (size, slices_for(size), 1)
    assert client.stat(path) == info
    assert (info.head is None) == (size == 0)

    out = scratch / "sdk.bin"
    client.get(path, out)
    assert sha256_file(out) == sha256(data)
    assert client.read(path) == data
    with client.open(path) as reader:
        assert b"".join(reader) == data

    via_curl = scratch / "curl.bin"
    curl_ok("-L", "-o", str(via_curl), file_url(cluster, path))
    assert sha256_file(via_curl) == sha256(data)
    check_head_headers(cluster, info)


def test_100_mib_round_trips_through_sdk_and_curl_with_ranges(
    client: Client, cluster: LocalCluster, scratch: Path
) -> None:
    size = 100 * MIB
    src = scratch / "big.bin"
    digest = write_random(src, size, seed=100)

    info = client.put("/big/100mib.bin", src)
    assert (info.size, info.slices) == (size, slices_for(size))

    out = scratch / "sdk.bin"
    client.get(info.path, out)
    assert sha256_file(out) == digest
    out.unlink()

    via_curl = scratch / "curl.bin"
    curl_ok("-L", "-o", str(via_curl), file_url(cluster, info.path))
    assert sha256_file(via_curl) == digest
    via_curl.unlink()
    check_head_headers(cluster, info)

    # Single ranges: inside a slice, across one and several slice boundaries, open-ended,
    # a suffix, the first and the last byte.
    url = file_url(cluster, info.path)
    ranges = [
        (0, 1),
        (5, 4096),
        (SLICE - 10, 20),
        (3 * SLICE - 1, 2 * SLICE + 2),
        (size - 1, 1),
    ]
    for offset, length in ranges:
        got = curl_ok("-L", "-r", f"{offset}-{offset + length - 1}", url)
        assert got == file_slice(src, offset, length), (offset, length)
        assert client.read(info.path, offset, length) == file_slice(src, offset, length)
    assert curl_ok("-L", "-r", f"{size - 1000}-", url) == file_slice(src, size - 1000, 1000)
    assert curl_ok("-L", "-r", "-777", url) == file_slice(src, size - 777, 777)

    status, headers = curl_head(url, "-r", f"{SLICE - 1}-{SLICE}")
    assert status == 206
    assert headers["content-range"] == f"bytes {SLICE - 1}-{SLICE}/{size}"
    assert headers["content-length"] == "2"

    # A range past the end is refused, not answered with short data.
    done = curl("-L", "-o", "/dev/null", "-w", "%{http_code}", "-r", f"{size}-{size + 9}", url)
    assert done.stdout == b"416"


def test_seven_slice_file_is_placed_3_3_1_across_both_groups(
    client: Client, cluster: LocalCluster
) -> None:
    size = 6 * SLICE + 1000
    data = random_bytes(size, seed=7)
    info = client.put("/placement/seven.bin", data)
    assert info.slices == 7 and info.head is not None

    entries = walk_chain(
        cluster.tracker_url,
        [info.head.group, info.head.slot],
        info.slices,
        grant=read_grant(cluster, info.file_id),
    )
    assert len(entries) == 7
    assert (entries[0]["group"], entries[0]["slot"]) == (info.head.group, info.head.slot)
    runs = runs_of(entries)
    assert [n for _, n in runs] == [3, 3, 1], runs
    groups = [g for g, _ in runs]
    assert groups[0] != groups[1] and groups[2] == groups[0], runs
    assert set(groups) == {1, 2}
    assert [e["index"] for e in entries] == list(range(7))
    assert {e["file_id"] for e in entries} == {info.file_id}
    assert sum(e["length"] for e in entries) == size
    # The SDK's own walk agrees with the public one.
    sdk_chain = client._run(client._aio._chain(client.stat(info.path)))  # with its read grant
    assert [(s.group, s.slot) for s in sdk_chain] == [(e["group"], e["slot"]) for e in entries]

    # Acknowledged on 2 of 3 nodes; the third copy follows in the background, then every
    # replica of every slice serves it (reads spread over the group).
    assert all(len(e["replicas"]) >= 2 for e in entries), entries

    def fully_replicated() -> list[dict[str, Any]] | None:
        walked = walk_chain(
            cluster.tracker_url,
            [info.head.group, info.head.slot],
            7,
            grant=read_grant(cluster, info.file_id),
        )
        return walked if all(len(e["replicas"]) == 3 for e in walked) else None

    entries = wait_for(fully_replicated, timeout=30, what="3 replicas of every slice")
    for e in entries:
        for url in e["replicas"]:
            status, headers, _ = http_request(
                f"{url}/slices/{e['slot']}?gen={e['generation']}",
                method="HEAD",
                headers={GRANT_HEADER: read_grant(cluster, info.file_id)},
            )
            assert status == 200, (url, e["slot"], status)
            assert int(headers["x-mydfs-crc32c"]) == e["crc32c"]

    assert client.read(info.path) == data
    assert sha256(curl_ok("-L", file_url(cluster, info.path))) == sha256(data)


def test_listdir_and_delete(client: Client, cluster: LocalCluster) -> None:
    two_slices = random_bytes(SLICE + 5, seed=21)
    client.put("/ls/a.bin", two_slices)
    client.put("/ls/b.bin", b"b")
    client.put("/ls/sub/c.bin", b"c" * 100)
    client.put("/ls/sub/d.bin", b"")

    listing = client.listdir("/ls")
    assert [(e.name, e.type) for e in listing] == [
        ("a.bin", "file"),
        ("b.bin", "file"),
        ("sub", "dir"),
    ]
    assert listing[0].info is not None and listing[0].info.size == SLICE + 5
    assert [e.name for e in client.listdir("/ls/sub")] == ["c.bin", "d.bin"]
    assert "ls" in [e.name for e in client.listdir("/")]

    info = client.stat("/ls/a.bin")
    assert info.head is not None
    grant = read_grant(cluster, info.file_id)
    entries = walk_chain(
        cluster.tracker_url,
        [info.head.group, info.head.slot],
        info.slices,
        grant=read_grant(cluster, info.file_id),
    )
    assert len(entries) == 2
    for e in entries:  # the third copy may still be on its way: wait for it
        wait_for(
            lambda e=e: (
                slice_status_everywhere(cluster.tracker_url, e, grant=grant) == [200, 200, 200]
            ),
            timeout=30,
            what=f"slice {e['group']}:{e['slot']} to be served by every node",
        )

    deleted = client.delete("/ls/a.bin")
    assert deleted.file_id == info.file_id
    assert [e.name for e in client.listdir("/ls")] == ["b.bin", "sub"]
    with pytest.raises(NotFound):
        client.stat("/ls/a.bin")
    with pytest.raises(NotFound):
        client.read("/ls/a.bin")
    assert not client.exists("/ls/a.bin")
    status, _, _ = http_request(file_url(cluster, "/ls/a.bin"))
    assert status == 404
    with pytest.raises(NotFound):
        client.delete("/ls/a.bin")

    # Its slices become 404 on every node of their group.
    for e in entries:
        wait_for(
            lambda e=e: (
                slice_status_everywhere(cluster.tracker_url, e, grant=grant) == [404, 404, 404]
            ),
            timeout=30,
            what=f"slice {e['group']}:{e['slot']} to be 404 on every node",
        )

    # A directory vanishes with its last file; the rest stays readable.
    client.delete("/ls/sub/c.bin")
    cli_ok("rm", "/ls/sub/d.bin", tracker=cluster.tracker_url)
    assert [e.name for e in client.listdir("/ls")] == ["b.bin"]
    with pytest.raises(NotFound):
        client.listdir("/ls/sub")
    assert client.read("/ls/b.bin") == b"b"


def test_overwrite_needs_consent_then_replaces_and_bumps_the_version(
    client: Client, cluster: LocalCluster
) -> None:
    first = random_bytes(2 * SLICE, seed=31)
    second = random_bytes(SLICE // 2, seed=32)
    v1 = client.put("/ow/x.bin", first)
    assert v1.head is not None
    grant = read_grant(cluster, v1.file_id)
    old_entries = walk_chain(
        cluster.tracker_url,
        [v1.head.group, v1.head.slot],
        v1.slices,
        grant=read_grant(cluster, v1.file_id),
    )

    intents = cluster.tracker_url + "/meta/intents"  # (admin: curl_ok sends the saved key)
    before = json.loads(curl_ok(intents))
    with pytest.raises(AlreadyExists):
        client.put("/ow/x.bin", second)
    assert client.stat("/ow/x.bin") == v1
    assert client.read("/ow/x.bin") == first
    # The refusal came from the intent request itself: no intent recorded, nothing written.
    after = json.loads(curl_ok(intents))
    assert after == before

    v2 = client.put("/ow/x.bin", second, overwrite=True)
    assert v2.version == v1.version + 1
    assert v2.file_id != v1.file_id
    assert v2.ctime == v1.ctime and v2.mtime >= v1.mtime
    assert (v2.size, v2.slices) == (len(second), 1)
    assert client.stat("/ow/x.bin") == v2
    assert client.read("/ow/x.bin") == second
    assert curl_ok("-L", file_url(cluster, "/ow/x.bin")) == second
    _, headers = curl_head(file_url(cluster, "/ow/x.bin"))
    assert headers["etag"] == f'"{v2.file_id}-2"'

    # The replaced chain is released.
    for e in old_entries:
        wait_for(
            lambda e=e: (
                slice_status_everywhere(cluster.tracker_url, e, grant=grant) == [404, 404, 404]
            ),
            timeout=30,
            what=f"old slice {e['group']}:{e['slot']} to be 404 on every node",
        )


def test_sources_destinations_and_quoted_names(
    client: Client, cluster: LocalCluster, scratch: Path
) -> None:
    data = random_bytes(SLICE + 77, seed=41)
    local = scratch / "src.bin"
    local.write_bytes(data)

    client.put("/src/from-path.bin", local)
    client.put("/src/from-str-path.bin", str(local))
    client.put("/src/from-file-object.bin", io.BytesIO(data))
    with open(local, "rb") as f:
        f.seek(77)
        client.put("/src/from-offset.bin", f)  # from the current position on
    assert client.read("/src/from-offset.bin") == data[77:]
    for name in ("from-path", "from-str-path", "from-file-object"):
        sink = io.BytesIO()
        client.get(f"/src/{name}.bin", sink)
        assert sink.getvalue() == data, name

    # Names that need quoting in URLs travel intact through the SDK and curl.
    odd = "/docs/a b/ü?#%25 &+.bin"
    client.put(odd, b"odd name")
    assert client.read(odd) == b"odd name"
    assert [e.name for e in client.listdir("/docs/a b")] == ["ü?#%25 &+.bin"]
    assert curl_ok("-L", file_url(cluster, odd)) == b"odd name"


def test_stale_one_slice_entry_never_reads_another_files_bytes(
    client: Client, cluster: LocalCluster
) -> None:
    """A one-slice file is read straight from its head slot (no chain walk). An entry whose
    slot now holds another file (freed and reused since) must read NotFound, never the other
    file's bytes: the replica's owner header tells. Simulated deterministically by an entry
    naming another file's head slot."""
    other = client.put("/stale/b.bin", random_bytes(5000, seed=72))
    stale = dataclasses.replace(
        other, path="/stale/a.bin", file_id="0" * 32, grant=read_grant(cluster, "0" * 32)
    )

    async def read_stale() -> bytes:
        aio = client._aio
        return b"".join([piece async for piece in aio._slices_in_order([stale])])

    with pytest.raises(NotFound):
        client._run(read_stale())
    assert client.read("/stale/b.bin") == random_bytes(5000, seed=72)
