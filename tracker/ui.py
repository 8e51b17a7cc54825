"""The tracker's monitoring face: ``GET /cluster/view`` (the live cluster view as JSON, see
:mod:`mydfs.tracker.cluster_view`), the dashboard at ``GET /ui`` with its few static files
(``tracker/static/``: plain HTML, JS and CSS, no CDN, so it works offline), and the per-group and
per-node Prometheus gauges of the cluster (:class:`ClusterCollector`).

The page and its static files are open (they hold no data); ``/cluster/view`` needs a read key
(``tracker/auth.py``): the page takes it from the URL's fragment (``mydfs ui`` prints
``/ui#token=...``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mydfs.common.web import json_response
from mydfs.tracker.cluster_view import PathIndex, build_view, walk_files
from mydfs.tracker.registry import Registry
from mydfs.tracker.service import Tracker

STATIC = Path(__file__).with_name("static")
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
_FILES = {p.name: p for p in STATIC.iterdir() if p.suffix in _TYPES} if STATIC.is_dir() else {}


class _Monitor:
    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.paths = PathIndex()

    def view(self) -> dict[str, Any]:
        tracker, now = self.tracker, time.monotonic()

        def paths(file_ids: list[str]) -> Mapping[str, str | None]:
            ns = tracker.store.ns
            version = tracker.store.log.last_seq
            return self.paths.lookup(file_ids, version, now, lambda: walk_files(ns))

        return build_view(tracker.registry, now, time.time(), paths)

    async def view_handler(self, request: web.Request) -> web.Response:
        return json_response(self.view())


async def _page(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("name", "index.html")
    path = _FILES.get(name)
    if path is None:
        raise web.HTTPNotFound(text=f"no such dashboard file: {name}")
    return web.FileResponse(
        path, headers={"Content-Type": _TYPES[path.suffix], "Cache-Control": "no-cache"}
    )


class ClusterCollector(Collector):
    """Per-group and per-node liveness from the registry, read per scrape (bounded: one series
    per group and per node, never per slice)."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = time.monotonic()
        writable = GaugeMetricFamily(
            "mydfs_tracker_group_writable", "1 if the group accepts writes", labels=["group"]
        )
        leader = GaugeMetricFamily(
            "mydfs_tracker_group_has_leader", "1 if the group has an up leader", labels=["group"]
        )
        up = GaugeMetricFamily(
            "mydfs_tracker_group_nodes_up", "group members heard from lately", labels=["group"]
        )
        known = GaugeMetricFamily(
            "mydfs_tracker_group_nodes", "group members ever heard from", labels=["group"]
        )
        node_up = GaugeMetricFamily(
            "mydfs_tracker_node_up", "1 while the node heartbeats", labels=["group", "node"]
        )
        seen = GaugeMetricFamily(
            "mydfs_tracker_node_heartbeat_age_seconds",
            "seconds since the node's last heartbeat",
            labels=["group", "node"],
        )
        for view in self._registry.groups(now):
            g = str(view.group_id)
            writable.add_metric([g], 1 if view.writable else 0)
            leader.add_metric([g], 1 if view.leader is not None else 0)
            up.add_metric([g], len(view.up))
            known.add_metric([g], len(view.nodes))
            for node in view.nodes:
                labels = [g, node.hb.node_id]
                node_up.add_metric(labels, 1 if node.up(now, self._registry.timeout) else 0)
                seen.add_metric(labels, max(0.0, now - node.last_seen))
        yield from (writable, leader, up, known, node_up, seen)


def install(app: web.Application, tracker: Tracker) -> None:
    """Add the monitoring routes, and the cluster gauges to the tracker's metrics registry."""
    monitor = _Monitor(tracker)
    app.router.add_get("/cluster/view", monitor.view_handler)
    app.router.add_get("/ui", _page)
    app.router.add_get("/ui/{name}", _page)
    registry = tracker.metrics.registry
    if not getattr(registry, "_mydfs_cluster_collector", False):  # one per metrics registry
        registry.register(ClusterCollector(tracker.registry))
        registry._mydfs_cluster_collector = True  # type: ignore[attr-defined]
