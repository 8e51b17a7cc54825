"""Storage groups and nodes as known from their heartbeats (pure: time comes in as ``now``).

A node registers with its first heartbeat, and a group exists as soon as one of its nodes has
heartbeated: a new group joins the cluster by starting its three nodes, with no tracker restart or
config. A node is **up** while its last heartbeat is at most ``heartbeat_timeout`` seconds old. A
group is **writable** while it has an up leader and at least a majority of its three members up
(:data:`QUORUM`, or a majority of the known nodes if more have been seen). The leader is the up
node claiming ``leader`` with the highest term (a deposed leader that has not noticed yet loses).

Nothing here is durable: after a restart the tracker learns the cluster again from heartbeats
(GFS does the same for chunk locations).
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mydfs.common.errors import Conflict, InvalidArgument
from mydfs.common.location import MAX_GROUP
from mydfs.common.slices import MAX_UNREPAIRABLE
from mydfs.tracker.cluster_view import check_stats
from mydfs.tracker.scheduler import GroupSpace

ROLES = ("leader", "follower", "candidate")
GROUP_SIZE = 3
QUORUM = GROUP_SIZE // 2 + 1
_NODE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: Recent events (registrations, nodes down and back, leader changes) kept for the dashboard.
EVENT_HISTORY = 200
#: Roles are reported as given; only ``leader`` matters. Raft adapters may also report states
#: such as ``new``, ``stopped`` or ``unknown``: accepted, and counted as not leading.
_ROLE = re.compile(r"^[a-z_]{1,32}$")


def _nonneg_int(body: Mapping[str, Any], key: str, *, nullable: bool = False) -> int | None:
    if key not in body:
        raise InvalidArgument(f"heartbeat field {key!r} is missing", field=key)
    value = body[key]
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        what = "a non-negative integer" + (" or null" if nullable else "")
        raise InvalidArgument(f"heartbeat field {key!r} must be {what}, got {value!r}", field=key)
    return value


def _slots(value: Any) -> tuple[int, ...]:
    """The optional ``unrepairable`` list: at most :data:`MAX_UNREPAIRABLE` slot numbers."""
    if (
        not isinstance(value, list)
        or len(value) > MAX_UNREPAIRABLE
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        raise InvalidArgument(
            f"heartbeat field 'unrepairable' must be a list of at most {MAX_UNREPAIRABLE} "
            f"slot numbers, got {str(value)[:100]!r}",
            field="unrepairable",
        )
    return tuple(value)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One report of a storage node (the body of ``POST /heartbeat``)."""

    node_id: str
    group_id: int
    url: str
    role: str
    term: int
    free_slots: int | None
    used_slots: int
    bytes_live: int
    load: float
    stats: dict[str, Any] | None = None  # live figures for the dashboard (cluster_view.py)
    #: Slots whose copy on this node is bad while no other node holds them (the scrub's).
    unrepairable: tuple[int, ...] = ()

    @staticmethod
    def from_dict(body: Any) -> Heartbeat:
        if not isinstance(body, Mapping):
            raise InvalidArgument("the heartbeat body must be a JSON object")
        node_id = body.get("node_id")
        if not isinstance(node_id, str) or not _NODE_ID.match(node_id):
            raise InvalidArgument(
                f"node_id must be 1-64 of [A-Za-z0-9._-], got {node_id!r}", field="node_id"
            )
        group_id = _nonneg_int(body, "group_id")
        assert group_id is not None
        if not 1 <= group_id <= MAX_GROUP:
            raise InvalidArgument(f"group_id {group_id} out of range 1..{MAX_GROUP}")
        url = body.get("url")
        if not isinstance(url, str) or len(url) > 512:
            raise InvalidArgument(f"url must be an http(s) URL, got {url!r}", field="url")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise InvalidArgument(f"url must be an http(s) URL, got {url!r}", field="url")
        role = body.get("role")
        if not isinstance(role, str) or not _ROLE.match(role):
            raise InvalidArgument(
                f"role must be one of {ROLES} (or another lowercase word), got {role!r}",
                field="role",
            )
        load = body.get("load")
        if (
            isinstance(load, bool)
            or not isinstance(load, int | float)
            or not math.isfinite(load)
            or load < 0
        ):
            raise InvalidArgument(f"load must be a number >= 0, got {load!r}", field="load")
        term = _nonneg_int(body, "term")
        used = _nonneg_int(body, "used_slots")
        live = _nonneg_int(body, "bytes_live")
        assert term is not None and used is not None and live is not None
        return Heartbeat(
            node_id=node_id,
            group_id=group_id,
            url=url.rstrip("/"),
            role=str(role),
            term=term,
            free_slots=_nonneg_int(body, "free_slots", nullable=True),
            used_slots=used,
            bytes_live=live,
            load=float(load),
            stats=check_stats(body.get("stats")),
            unrepairable=_slots(body.get("unrepairable", [])),
        )


@dataclass(slots=True)
class NodeState:
    hb: Heartbeat
    first_seen: float
    last_seen: float
    was_up: bool = True

    def up(self, now: float, timeout: float) -> bool:
        return now - self.last_seen <= timeout

    def to_dict(self, now: float, timeout: float) -> dict[str, Any]:
        hb = self.hb
        return {
            "node_id": hb.node_id,
            "url": hb.url,
            "role": hb.role,
            "term": hb.term,
            "up": self.up(now, timeout),
            "last_seen_s": round(max(0.0, now - self.last_seen), 3),
            "free_slots": hb.free_slots,
            "used_slots": hb.used_slots,
            "bytes_live": hb.bytes_live,
            "load": hb.load,
            "unrepairable": list(hb.unrepairable),
        }


@dataclass(slots=True)
class GroupState:
    group_id: int
    nodes: dict[str, NodeState] = field(default_factory=dict)
    planned: int = 0  # slices promised by placements since the leader's last report
    was_writable: bool = False
    last_leader: str | None = None


@dataclass(frozen=True, slots=True)
class GroupView:
    """A group at one instant."""

    group_id: int
    writable: bool
    leader: NodeState | None
    up: list[NodeState]
    nodes: list[NodeState]
    free_slots: int | None  # min over up nodes (None = unbounded), minus planned slices
    planned: int


class Registry:
    """Every node and group seen so far. Methods take ``now`` (monotonic seconds)."""

    def __init__(self, heartbeat_timeout: float) -> None:
        self.timeout = heartbeat_timeout
        self._groups: dict[int, GroupState] = {}
        self._node_group: dict[str, int] = {}
        self.events: deque[tuple[float, str]] = deque(maxlen=EVENT_HISTORY)

    def heartbeat(self, hb: Heartbeat, now: float) -> list[str]:
        """Record a heartbeat; returns log-worthy events (registrations, come-backs)."""
        events: list[str] = []
        old_gid = self._node_group.get(hb.node_id)
        if old_gid is not None and old_gid != hb.group_id:
            old = self._groups[old_gid].nodes[hb.node_id]
            if old.up(now, self.timeout):
                raise Conflict(
                    f"node {hb.node_id} is up in group {old_gid}; it cannot join group "
                    f"{hb.group_id} until that registration times out",
                    node=hb.node_id,
                    group=hb.group_id,
                )
            del self._groups[old_gid].nodes[hb.node_id]
            if not self._groups[old_gid].nodes:
                del self._groups[old_gid]
            events.append(f"node {hb.node_id} moved from group {old_gid} to {hb.group_id}")
        group = self._groups.get(hb.group_id)
        if group is None:
            group = self._groups[hb.group_id] = GroupState(hb.group_id)
            events.append(f"group {hb.group_id} joined")
        node = group.nodes.get(hb.node_id)
        if node is None:
            group.nodes[hb.node_id] = NodeState(hb, now, now)
            events.append(
                f"node {hb.node_id} registered in group {hb.group_id} at {hb.url} as {hb.role}"
            )
        else:
            if not node.up(now, self.timeout):
                events.append(f"node {hb.node_id} (group {hb.group_id}) is up again")
            node.hb = hb
            node.last_seen = now
            node.was_up = True
        self._node_group[hb.node_id] = hb.group_id
        if hb.role == "leader":
            group.planned = 0  # the leader's report supersedes our estimate
        self.events.extend((now, e) for e in events)
        return events

    def tick(self, now: float) -> list[str]:
        """Notice nodes going down and groups changing writability (for the log)."""
        events: list[str] = []
        for gid in sorted(self._groups):
            group = self._groups[gid]
            for node in group.nodes.values():
                if node.was_up and not node.up(now, self.timeout):
                    node.was_up = False
                    events.append(
                        f"node {node.hb.node_id} (group {gid}) is down: no heartbeat for "
                        f"{now - node.last_seen:.1f}s"
                    )
            view = self._view(group, now)
            if view.writable != group.was_writable:
                group.was_writable = view.writable
                events.append(f"group {gid} is {'writable' if view.writable else 'NOT writable'}")
            leader = view.leader.hb.url if view.leader else None
            if leader != group.last_leader:
                group.last_leader = leader
                events.append(f"group {gid} leader: {leader or 'none'}")
        self.events.extend((now, e) for e in events)
        return events

    def _view(self, group: GroupState, now: float) -> GroupView:
        nodes = sorted(group.nodes.values(), key=lambda n: n.hb.node_id)
        up = [n for n in nodes if n.up(now, self.timeout)]
        leaders = [n for n in up if n.hb.role == "leader"]
        leader = max(leaders, key=lambda n: (n.hb.term, n.last_seen)) if leaders else None
        quorum = max(QUORUM, len(nodes) // 2 + 1)
        writable = leader is not None and len(up) >= quorum
        frees = [n.hb.free_slots for n in up]
        free: int | None
        if not up:
            free = 0
        elif all(f is None for f in frees):
            free = None
        else:
            free = max(0, min(f for f in frees if f is not None) - group.planned)
        return GroupView(group.group_id, writable, leader, up, nodes, free, group.planned)

    def group(self, group_id: int, now: float) -> GroupView | None:
        group = self._groups.get(group_id)
        return None if group is None else self._view(group, now)

    def groups(self, now: float) -> list[GroupView]:
        return [self._view(self._groups[gid], now) for gid in sorted(self._groups)]

    def writable_spaces(self, now: float) -> list[GroupSpace]:
        return [
            GroupSpace(v.group_id, v.free_slots, v.planned) for v in self.groups(now) if v.writable
        ]

    def reserve(self, group_id: int, slices: int) -> None:
        group = self._groups.get(group_id)
        if group is not None:
            group.planned += slices

    def cluster_map(self, now: float) -> dict[str, Any]:
        """The map sent back to every heartbeat: each group's leader and up nodes."""
        return {
            str(v.group_id): {
                "leader": v.leader.hb.url if v.leader else None,
                "nodes": [n.hb.url for n in v.up],
                "writable": v.writable,
            }
            for v in self.groups(now)
        }

    def describe(self, now: float) -> list[dict[str, Any]]:
        """The groups part of ``GET /cluster``."""
        return [
            {
                "group_id": v.group_id,
                "writable": v.writable,
                "leader": v.leader.hb.url if v.leader else None,
                "free_slots": v.free_slots,
                "nodes": [n.to_dict(now, self.timeout) for n in v.nodes],
            }
            for v in self.groups(now)
        ]

    def counts(self, now: float) -> tuple[int, int, int, int]:
        """(groups, writable groups, nodes up, nodes down)."""
        views = self.groups(now)
        up = sum(len(v.up) for v in views)
        total = sum(len(v.nodes) for v in views)
        return len(views), sum(v.writable for v in views), up, total - up
