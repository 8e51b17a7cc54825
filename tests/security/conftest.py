"""Fixtures of the security tests: a real cluster (a tracker and one group of three storage
nodes, :class:`~mydfs.client.local_cluster.LocalCluster`) with short header and body timeouts,
so a client that stalls is cut off well within the tests' 10-second answer bound, and a small
bound on pending reservations (16).

* ``hostile_cluster`` — one started cluster per test module.

``security_helpers.auth_headers(cluster)`` adds the cluster's bearer token where it has one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import dispose, free_base
from security_helpers import CLIENT_TIMEOUT

from mydfs.client.local_cluster import LocalCluster


@pytest.fixture(scope="module")
def hostile_cluster() -> Iterator[LocalCluster]:
    root = Path(tempfile.mkdtemp(prefix="mydfs-security-"))
    limits = ["--header-timeout", str(CLIENT_TIMEOUT), "--body-timeout", str(CLIENT_TIMEOUT)]
    limits += ["--max-pending-reservations", "16"]
    c = LocalCluster(root, groups=1, base_port=free_base(1), storage_args=limits)
    assert c.tracker_process is not None
    c.tracker_process.options.update(header_timeout=CLIENT_TIMEOUT, body_timeout=CLIENT_TIMEOUT)
    try:
        c.start(timeout=90.0)
        yield c
    finally:
        dispose(c, root)
