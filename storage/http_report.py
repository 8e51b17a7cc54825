"""``GET /internal/report``: the group's slot report, for the tracker's collector and ``df``.

Signed with the cluster secret (``storage/http_routes.py``), answered by the group's leader
only (a follower answers as it answers any leader-only call), from one consistent read of the
replicated slot table: every allocated slot that is not deleted (nor reserved ahead by the
leader: it holds no slice yet), with its generation, state,
owner, next pointer, 301 target, length, lock and reservation time, and the counts and bytes
per state. ``now_ms`` is the leader's clock just before the read, the clock
``reserved_at_ms`` was taken with, so the tracker computes ages without comparing clocks.
The format is in ``docs/collector.md``; :func:`slot_report` is pure.
"""

from __future__ import annotations

import os
import time
from typing import Any, NamedTuple

from aiohttp import web

from mydfs.common.location import Location
from mydfs.storage.format import SLOT_SIZE
from mydfs.storage.group_commands import POOL_PREFIX
from mydfs.storage.group_state import GroupState, GroupStats, SlotInfo, SlotState
from mydfs.storage.http_common import NODE_KEY, json_response

#: Version of the report's format (``docs/collector.md``).
REPORT_FORMAT = 1


def _loc(loc: Location | None) -> list[int] | None:
    return None if loc is None else [loc.group, loc.slot]


class _Copy(NamedTuple):
    """What a report needs from the table, copied under the group's lock (cheap: the slot
    records are immutable, the lists are copied by reference); the JSON is built outside it,
    so a large report does not hold up the Raft thread for long."""

    group: int
    stats: GroupStats
    slots: list[SlotInfo]
    locked: frozenset[int]
    versions: dict[str, int]


def _copy(g: GroupState) -> _Copy:
    slots = g.slots()
    locked = frozenset(slot for t in g.prepared_txns() for slot, _ in t.slots())
    versions = {fid: g.file_version(fid) for fid in {s.file_id for s in slots if s.file_id}}
    return _Copy(g.group, g.stats(), slots, locked, versions)


def _build(c: _Copy, now_ms: int) -> dict[str, Any]:
    slots: list[dict[str, Any]] = []
    for info in c.slots:
        if info.state is SlotState.DELETED or info.upload_id.startswith(POOL_PREFIX):
            continue  # deleted, or reserved ahead (holding no slice: the settler's, not ours)
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
                "locked": info.slot in c.locked,
                "reserved_at_ms": info.reserved_at_ms,
                "file_version": c.versions.get(info.file_id, 0),
            }
        )
    stats = c.stats
    return {
        "format": REPORT_FORMAT,
        "group": c.group,
        "now_ms": now_ms,
        "end": stats.end,
        "available": stats.available,
        "counts": {
            "live": stats.live,
            "moved": stats.moved,
            "pending": stats.pending,
            "deleted": stats.deleted,
            "ahead": stats.ahead,
        },
        "bytes": {"live": stats.bytes_live, "pending": stats.bytes_pending},
        "slots": slots,
    }


def slot_report(g: GroupState, now_ms: int) -> dict[str, Any]:
    """The report of one group's table (see the module docstring). Pure."""
    return _build(_copy(g), now_ms)


async def report(request: web.Request) -> web.Response:
    """``GET /internal/report`` (signed; leader): :func:`slot_report` of this group, plus the
    leader's estimate of free slots on its disk (``disk_free_slots``, as in its heartbeat)."""
    node = request.app[NODE_KEY]
    if not node.is_leader():
        raise node.not_leader_error()
    # The clock before the read: every age the tracker computes is at most the true one.
    now_ms = time.time_ns() // 1_000_000
    copy = node.group.read(_copy)  # one consistent read of the table, under its lock
    body = _build(copy, now_ms)
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
