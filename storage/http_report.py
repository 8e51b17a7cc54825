"""``GET /internal/report``: the group's slot report, for the tracker's collector and ``df``.

Signed with the cluster secret (``storage/http_routes.py``), answered by the group's leader
only (a follower answers as it answers any leader-only call), from one consistent read of the
replicated slot table: every allocated slot that is not deleted, with its generation, state,
owner, next pointer, 301 target, length, lock and reservation time, and the counts and bytes
per state. ``now_ms`` is the leader's clock at the time of the read, the clock
``reserved_at_ms`` was taken with, so the tracker computes ages without comparing clocks.
The format is in ``docs/collector.md``; :func:`slot_report` is pure.
"""

from __future__ import annotations

import os
import time
from typing import Any

from aiohttp import web

from mydfs.common.location import Location
from mydfs.storage.format import SLOT_SIZE
from mydfs.storage.group_state import GroupState, SlotState
from mydfs.storage.http_common import NODE_KEY, json_response

#: Version of the report's format (``docs/collector.md``).
REPORT_FORMAT = 1


def _loc(loc: Location | None) -> list[int] | None:
    return None if loc is None else [loc.group, loc.slot]


def slot_report(g: GroupState, now_ms: int) -> dict[str, Any]:
    """The report of one group's table (see the module docstring). Pure."""
    stats = g.stats()
    slots: list[dict[str, Any]] = []
    for info in g.slots():
        if info.state is SlotState.DELETED:
            continue
        slots.append(
            {
                "slot": info.slot,
                "generation": info.generation,
                "state": info.state.value,
                "file_id": info.file_id,
                "index": info.slice_index,
                "next": _loc(info.next),
                "target": _loc(info.target),
                "length": info.length,
                "locked": g.lock_of(info.slot) is not None,
                "reserved_at_ms": info.reserved_at_ms,
                "file_version": g.file_version(info.file_id) if info.file_id else 0,
            }
        )
    return {
        "format": REPORT_FORMAT,
        "group": g.group,
        "now_ms": now_ms,
        "end": stats.end,
        "available": stats.available,
        "counts": {
            "live": stats.live,
            "moved": stats.moved,
            "pending": stats.pending,
            "deleted": stats.deleted,
        },
        "bytes": {"live": stats.bytes_live, "pending": stats.bytes_pending},
        "slots": slots,
    }


async def report(request: web.Request) -> web.Response:
    """``GET /internal/report`` (signed; leader): :func:`slot_report` of this group, plus the
    leader's estimate of free slots on its disk (``disk_free_slots``, as in its heartbeat)."""
    node = request.app[NODE_KEY]
    if not node.is_leader():
        raise node.not_leader_error()
    body = node.group.read(lambda g: slot_report(g, time.time_ns() // 1_000_000))
    disk_free: int | None = None
    volume = node.volume
    if volume is not None:
        disk = os.statvfs(node.config.volume_path.parent)
        disk_free = volume.stats().free + disk.f_bavail * disk.f_frsize // SLOT_SIZE
    body["disk_free_slots"] = disk_free
    body["node_id"] = node.node_id
    return json_response(body)


def add_report_routes(app: web.Application) -> None:
    app.router.add_get("/internal/report", report)


__all__ = ["REPORT_FORMAT", "add_report_routes", "report", "slot_report"]
