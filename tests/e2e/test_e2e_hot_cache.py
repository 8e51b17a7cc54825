"""The hot-slice cache on real processes (a tracker and one group of 3 storage nodes, hot after
2 reads): a small file read often is served from memory (``mydfs_storage_hot_cache_hits_total``
rises on the nodes), and when another client writes into it, appends, truncates, overwrites or
deletes it, every later read returns the new bytes (or 404), through the SDK and through the
plain-HTTP ``GET /files`` path, never the cached old ones."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable
from urllib.parse import quote

import pytest
from e2e_helpers import curl_ok, random_bytes

from mydfs.client import Client, NotFound
from mydfs.client.local_cluster import LocalCluster

READS = 8  # per check: past the threshold on at least one replica, whichever it picks


def metric(cluster: LocalCluster, name: str) -> float:
    """``name``'s value summed over every storage node of the cluster."""
    total = 0.0
    for node in cluster.nodes():
        with urllib.request.urlopen(node.url + "/metrics", timeout=10) as reply:
            text = reply.read().decode()
        found = re.search(rf"^{name} (\S+)$", text, re.M)
        assert found, f"{name} missing from {node.url}/metrics"
        total += float(found.group(1))
    return total


def hits(cluster: LocalCluster) -> float:
    return metric(cluster, "mydfs_storage_hot_cache_hits_total")


def check(reader: Client, cluster: LocalCluster, path: str, model: bytes) -> None:
    url = cluster.tracker_url + "/files" + quote(path)
    for i in range(READS):
        assert reader.read(path) == model, f"read {i} of {path} after the change"
    for _ in range(2):
        assert curl_ok("-L", url) == model


def test_hot_slices_are_served_from_memory_and_never_stale(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster(groups=1, storage_args=["--hot-cache-reads", "2"])
    path = "/hot/small.bin"
    with (
        Client(cluster.tracker_url, deadline=60.0) as writer,
        Client(cluster.tracker_url, deadline=60.0) as reader,
    ):
        model = random_bytes(1000, seed=1)
        writer.put(path, model)
        before = hits(cluster)
        check(reader, cluster, path, model)
        assert hits(cluster) > before, "a file read 10 times was never served from the cache"
        assert metric(cluster, "mydfs_storage_hot_cache_bytes") >= len(model)

        # Edits by another client: in place, past the end, shorter; each read sees them.
        writer.write(path, 10, b"EDITED")
        model = model[:10] + b"EDITED" + model[16:]
        check(reader, cluster, path, model)
        assert writer.append(path, b"tail") == len(model)
        model += b"tail"
        check(reader, cluster, path, model)
        writer.truncate(path, 300)
        model = model[:300]
        check(reader, cluster, path, model)

        # Overwritten as a whole, deleted, written again (its slots may be reused).
        model = random_bytes(1000, seed=2)
        writer.put(path, model, overwrite=True)
        check(reader, cluster, path, model)
        writer.delete(path)
        for _ in range(3):
            with pytest.raises(NotFound):
                reader.read(path)
        model = random_bytes(900, seed=3)
        writer.put(path, model)
        check(reader, cluster, path, model)
        assert hits(cluster) > before
