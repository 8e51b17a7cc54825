"""``GET /space`` (``mydfs df``) and what the collector reads from the tracker's state.

The handler asks the running :class:`~mydfs.tracker.collector.Collector` (kept under
:data:`COLLECTOR_KEY` by ``tracker/main.py``) for a survey: the reports of every group, the
roots and the verdict, nothing freed. :func:`roots_of` and :func:`intents_of` read the
namespace (in memory, durable or not: a registration not yet durable is a root all the same).
"""

from __future__ import annotations

from aiohttp import web

from mydfs.common.errors import Unavailable
from mydfs.common.location import Location
from mydfs.common.web import json_response
from mydfs.tracker.collector import Collector
from mydfs.tracker.namespace import Namespace
from mydfs.tracker.orphans import Roots
from mydfs.tracker.records import FileEntry

COLLECTOR_KEY = web.AppKey("collector", Collector)


def roots_of(ns: Namespace) -> Roots:
    """The heads of every live file and every trash record (intents apart)."""
    files: list[tuple[str, Location]] = []
    for _, packed in ns.snapshot().iter_files():
        entry = FileEntry.unpack(packed)
        if entry.head is not None:
            files.append((entry.file_id, entry.head))
    trash = [(r.file_id, r.head) for r in ns.trash() if r.head is not None]
    return Roots(files=files, trash=trash)


def intents_of(ns: Namespace) -> list[tuple[str, float]]:
    """(file id, creation time) of every intent."""
    return [(i.file_id, i.time) for i in ns.intents()]


async def get_space(request: web.Request) -> web.Response:
    """``GET /space``: slots and bytes per group and for the cluster (``docs/collector.md``)."""
    collector = request.app.get(COLLECTOR_KEY)
    if collector is None:
        raise Unavailable("the collector does not run in this process")
    return json_response(await collector.space())


__all__ = ["COLLECTOR_KEY", "get_space", "intents_of", "roots_of"]
