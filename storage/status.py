"""What a storage node reports about itself: the heartbeat body it sends the tracker (see
:mod:`mydfs.storage.heartbeat` for the link) and the ``/status`` document."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from mydfs.common.slices import MAX_UNREPAIRABLE
from mydfs.storage.context import NodeContext
from mydfs.storage.format import SLOT_SIZE
from mydfs.storage.monitoring import node_stats


class LoadMeter:
    """Requests served per second between two readings (the load figure of a heartbeat).
    Pure: the time is passed in."""

    def __init__(self, now: float) -> None:
        self.served = 0
        self._mark = (now, 0)

    def count(self) -> None:
        self.served += 1

    def rate(self, now: float) -> float:
        """Requests per second since the last reading; starts a new one."""
        mark_time, mark_count = self._mark
        rate = (self.served - mark_count) / max(1e-3, now - mark_time)
        self._mark = (now, self.served)
        return rate


def heartbeat_report(
    ctx: NodeContext, load: float, unrepairable: Sequence[int] = ()
) -> dict[str, Any]:
    """What this node tells the tracker every heartbeat; ``unrepairable``: the slots whose copy
    here the scrub found bad while no other node holds them (at most 100 are sent)."""
    stats = ctx.group.read(lambda g: g.stats())
    free_slots: int | None = None
    if ctx.volume is not None:
        vstats = ctx.volume.stats()
        disk = os.statvfs(ctx.config.volume_path.parent)
        free_slots = vstats.free + disk.f_bavail * disk.f_frsize // SLOT_SIZE
    return {
        "node_id": ctx.node_id,
        "group_id": ctx.group_id,
        "url": ctx.config.advertise,
        "role": ctx.raft.role if ctx.raft is not None else "follower",
        "term": ctx.raft.term if ctx.raft is not None else 0,
        "free_slots": free_slots,
        "used_slots": stats.live,
        "bytes_live": stats.bytes_live,
        "load": round(load, 2),
        "unrepairable": list(unrepairable[:MAX_UNREPAIRABLE]),
        "stats": node_stats(ctx),
    }


def status_report(
    ctx: NodeContext, disk_error: str | None, scrub: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``GET /status`` document: identity, role, Raft, table and volume statistics, the
    edits prepared in the group and not decided yet, and the scrub's progress (``scrub``)."""
    raft_status = ctx.raft.status() if ctx.raft is not None else {}
    group_stats = ctx.group.read(lambda g: g.stats().to_dict())
    prepared = ctx.group.read(lambda g: [t.txn for t in g.prepared_txns()])
    vstats = ctx.volume.stats() if ctx.volume is not None else None
    return {
        "node_id": ctx.node_id,
        "group_id": ctx.group_id,
        "advertise": ctx.config.advertise,
        "role": ctx.raft.role if ctx.raft is not None else "starting",
        "leader": ctx.leader_url(),
        "raft": raft_status,
        "group": group_stats,
        "volume": None if vstats is None else asdict(vstats),
        "registration": {"entries": len(ctx.registration), "bytes": ctx.registration.bytes},
        # Edits prepared in this group and not decided yet (at most the first 100 txn ids).
        "edits": {"prepared": len(prepared), "txns": prepared[:100]},
        "disk_error": disk_error,
        "scrub": scrub,
    }
