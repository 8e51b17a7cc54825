"""The live figures of a storage node, out of :class:`~mydfs.storage.access_stats.AccessStats`
and the node's handles: the ``stats`` part of a heartbeat (the tracker's cluster view and
dashboard are built from it), extra Prometheus series, and the totals file of per-slice reads.

The totals file ``access-totals.json`` in the data dir is rewritten atomically (mode 0600) every
:data:`FLUSH_INTERVAL` seconds when reads happened, and once more on a clean stop; a crash loses
at most that many seconds of counts. Not reported because they do not exist yet: scrub progress
and garbage-collector progress.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mydfs.common.fsio import atomic_write
from mydfs.storage.access_stats import OPS, encode_totals
from mydfs.storage.context import NodeContext

log = logging.getLogger(__name__)

#: Seconds between two flushes of the per-slice totals.
FLUSH_INTERVAL = 10.0
#: Hot slices reported per heartbeat.
HOT_K = 10
TOTALS_FILE = "access-totals.json"


def totals_path(ctx: NodeContext) -> Path:
    return ctx.config.data_dir / TOTALS_FILE


def _executor(ctx: NodeContext) -> dict[str, int]:
    pool = ctx.executor
    return {
        "workers": pool._max_workers,
        "threads": len(pool._threads),
        "queued": pool._work_queue.qsize(),
    }


def _raft(ctx: NodeContext) -> dict[str, Any]:
    raft = ctx.raft
    if raft is None:
        return {"role": "starting", "term": 0, "commit_index": 0, "last_applied": 0, "lag": 0}
    commit, applied = raft.commit_index, raft.last_applied
    return {
        "role": raft.role,
        "term": raft.term,
        "commit_index": commit,
        "last_applied": applied,
        "lag": max(0, commit - applied),
    }


def _disk(ctx: NodeContext) -> dict[str, int]:
    try:
        st = os.statvfs(ctx.config.data_dir)
    except OSError:
        return {"size_bytes": 0, "free_bytes": 0}
    return {"size_bytes": st.f_blocks * st.f_frsize, "free_bytes": st.f_bavail * st.f_frsize}


def node_stats(ctx: NodeContext, now: float | None = None) -> dict[str, Any]:
    """The ``stats`` object of a heartbeat: rates since the previous heartbeat, in-flight
    requests, disk threads, Raft progress, disk space, read counters and the hot slices."""
    now = time.monotonic() if now is None else now
    access = ctx.access
    return {
        "rates": access.rates(now),
        "inflight": access.inflight,
        "executor": _executor(ctx),
        "raft": _raft(ctx),
        "disk": _disk(ctx),
        "reads_since_start": access.reads_since_start(),
        "reads_total": access.reads_total(),
        "hot": access.hot(HOT_K, now),
    }


class AccessCollector(Collector):
    """Prometheus series from the access counters and the node's handles (read per scrape)."""

    def __init__(self, ctx: NodeContext) -> None:
        self._ctx = ctx

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        ctx, access = self._ctx, self._ctx.access
        ops = CounterMetricFamily("mydfs_storage_ops", "requests by kind", labels=["op"])
        for op in OPS:
            ops.add_metric([op], access.ops[op])
        yield ops
        yield CounterMetricFamily(
            "mydfs_storage_slice_reads",
            "slice reads served since start",
            value=access.reads_since_start(),
        )
        yield GaugeMetricFamily(
            "mydfs_storage_inflight_requests", "requests being answered", value=access.inflight
        )
        pool = _executor(ctx)
        yield GaugeMetricFamily(
            "mydfs_storage_executor_queued", "disk jobs waiting for a thread", value=pool["queued"]
        )
        yield GaugeMetricFamily(
            "mydfs_storage_executor_threads", "disk threads started", value=pool["threads"]
        )
        raft = _raft(ctx)
        yield GaugeMetricFamily(
            "mydfs_storage_raft_apply_lag", "commit index minus last applied", value=raft["lag"]
        )
        disk = _disk(ctx)
        yield GaugeMetricFamily(
            "mydfs_storage_fs_size_bytes",
            "size of the data dir's filesystem",
            value=disk["size_bytes"],
        )
        yield GaugeMetricFamily(
            "mydfs_storage_fs_free_bytes",
            "bytes of the data dir's filesystem available to the node",
            value=disk["free_bytes"],
        )


def load_totals(ctx: NodeContext) -> None:
    """Take the per-slice totals of earlier runs (blocking: call at start-up)."""
    path = totals_path(ctx)
    try:
        count = ctx.access.load_totals(path.read_bytes())
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        log.warning("ignoring the access totals in %s: %s", path, exc)
        return
    log.info("loaded the read totals of %d slices from %s", count, path)


async def flush_totals(ctx: NodeContext) -> None:
    """Write the totals file if reads happened since the last write."""
    if not ctx.access.dirty:
        return
    earlier, since_start = ctx.access.totals_snapshot()

    def write() -> None:  # on a disk thread: encoding 100,000 slices takes tens of ms
        atomic_write(totals_path(ctx), encode_totals(earlier, since_start), 0o600)

    try:
        await ctx.disk(write)
    except OSError as exc:
        ctx.access.dirty = True
        log.warning("could not write the access totals: %s", exc)


async def flush_loop(ctx: NodeContext, interval: float = FLUSH_INTERVAL) -> None:
    while True:
        await asyncio.sleep(interval)
        await flush_totals(ctx)
