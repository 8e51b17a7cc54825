"""``GET /space`` (``mydfs df``) and what the collector reads from the tracker's state.

:func:`make_collector` builds the tracker's collector. The handler asks the running
:class:`~mydfs.tracker.collector.Collector` (kept under :data:`COLLECTOR_KEY` by
``tracker/main.py``) for a survey: the reports of every group, the roots and the verdict,
nothing freed. :func:`roots_of` and :func:`intents_of` read the namespace (in memory, durable
or not: a registration not yet durable is a root all the same).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from aiohttp import web

from mydfs.common.errors import Unavailable
from mydfs.common.location import Location
from mydfs.common.web import json_response
from mydfs.tracker.collector import Collector, Sources
from mydfs.tracker.compaction import Rules
from mydfs.tracker.compactor import Compactor
from mydfs.tracker.compactor import Sources as CompactSources
from mydfs.tracker.namespace import Namespace
from mydfs.tracker.orphans import Roots
from mydfs.tracker.records import Decide, FileEntry
from mydfs.tracker.service import Tracker

COLLECTOR_KEY = web.AppKey("collector", Collector)


def make_collector(tracker: Tracker) -> Collector:
    """The tracker's collector and its compactor, configured from its config
    (``docs/collector.md``, ``docs/space.md``)."""
    config = tracker.config
    compactor = Compactor(
        CompactSources(
            tracker.group_urls,
            lambda ids: files_of(tracker.store.ns, ids),
            tracker.store.ns.get,
            tracker.store.ns.decisions.get,
            lambda d: tracker.record_edit(Decide(d), "compact"),
            tracker.edits.token,
            lambda file_id: tracker.grant("write", file_id),
        ),
        Rules(
            file_redirects=config.compact_file_redirects,
            group_redirects=config.compact_group_redirects,
            idle=config.compact_idle,
        ),
        rate=config.compact_rate,
        registry=tracker.metrics.registry,
        wall=tracker.wall,
    )
    return Collector(
        Sources(
            config.secret,
            lambda: [v.group_id for v in tracker.registry.groups(time.monotonic())],
            tracker.group_urls,
            lambda: roots_of(tracker.store.ns),
            lambda: intents_of(tracker.store.ns),
            tracker.drop_intent,
        ),
        grace=config.orphan_grace,
        intent_ttl=config.intent_ttl,
        rate=config.collect_rate,
        interval=config.collect_interval,
        registry=tracker.metrics.registry,
        ca=config.tls_ca,
        compactor=compactor,
    )


def roots_of(ns: Namespace) -> Roots:
    """The heads of every live file and every trash record (intents apart)."""
    files: list[tuple[str, Location]] = []
    for _, packed in ns.snapshot().iter_files():
        entry = FileEntry.unpack(packed)
        if entry.head is not None:
            files.append((entry.file_id, entry.head))
    trash = [(r.file_id, r.head) for r in ns.trash() if r.head is not None]
    return Roots(files=files, trash=trash)


def files_of(ns: Namespace, file_ids: set[str]) -> Iterator[tuple[str, FileEntry]]:
    """(path, entry) of the live files with these ids (only their entries are unpacked)."""
    wanted = {bytes.fromhex(f) for f in file_ids}
    for path, packed in ns.snapshot().iter_files():
        if packed[:16] in wanted:
            yield path, FileEntry.unpack(packed)


def intents_of(ns: Namespace) -> list[tuple[str, float]]:
    """(file id, creation time) of every intent."""
    return [(i.file_id, i.time) for i in ns.intents()]


async def get_space(request: web.Request) -> web.Response:
    """``GET /space``: slots and bytes per group and for the cluster (``docs/collector.md``)."""
    collector = request.app.get(COLLECTOR_KEY)
    if collector is None:
        raise Unavailable("the collector does not run in this process")
    return json_response(await collector.space())


__all__ = ["COLLECTOR_KEY", "files_of", "get_space", "intents_of", "make_collector", "roots_of"]
