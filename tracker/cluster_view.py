"""The live cluster view (``GET /cluster/view``, the dashboard's data and ``mydfs top``'s), built
from the registry: every group and node with the ``stats`` of its last heartbeat (see
:mod:`mydfs.storage.monitoring`), cluster totals, the hot slices of all nodes merged and named by
file path, and the recent events (nodes down and back, leader changes, writability).

Pure: the registry, the clocks and the file-id → path lookup come in as arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from mydfs.common.errors import InvalidArgument
from mydfs.common.paths import ROOT, join
from mydfs.tracker.namespace import Namespace

if TYPE_CHECKING:  # the registry imports check_stats from here
    from mydfs.tracker.registry import Registry

#: Paths of a list of file ids (None for an id no file has any more).
PathLookup = Callable[[list[str]], Mapping[str, str | None]]
#: Longest hot-slice list a heartbeat may carry.
MAX_HOT = 50
#: Hot slices shown for the whole cluster.
CLUSTER_HOT = 20
#: Rates summed for the cluster (per second).
RATE_KEYS = (
    "read_per_s",
    "write_per_s",
    "replicate_per_s",
    "edit_per_s",
    "other_per_s",
    "bytes_in_per_s",
    "bytes_out_per_s",
)


def check_stats(value: Any) -> dict[str, Any] | None:
    """The optional ``stats`` object of a heartbeat, checked for shape (not for every figure:
    it is only displayed)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidArgument("heartbeat field 'stats' must be an object", field="stats")
    hot = value.get("hot", [])
    if not isinstance(hot, list) or len(hot) > MAX_HOT:
        raise InvalidArgument(f"stats.hot must be a list of at most {MAX_HOT}", field="stats")
    for item in hot:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("file_id"), str)
            or not all(_count(item.get(k, 0)) for k in ("index", "recent", "since_start", "total"))
        ):
            raise InvalidArgument(
                "stats.hot items must be objects with a file_id and integer counts", field="stats"
            )
    rates = value.get("rates", {})
    if not isinstance(rates, dict):
        raise InvalidArgument("stats.rates must be an object", field="stats")
    return value


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(mapping: Mapping[str, Any], key: str) -> float:
    value = mapping.get(key, 0)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _hot(nodes: list[tuple[int, str, dict[str, Any]]], paths: PathLookup) -> list[dict[str, Any]]:
    """Merge the nodes' hot lists: one row per (file, index), reads summed over replicas."""
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    for group_id, node_id, stats in nodes:
        for item in stats.get("hot") or []:
            key = (item["file_id"], int(item.get("index", 0)))
            row = merged.get(key)
            if row is None:
                row = merged[key] = {
                    "file_id": key[0],
                    "index": key[1],
                    "group": group_id,
                    "slot": item.get("slot"),
                    "recent": 0,
                    "since_start": 0,
                    "total": 0,
                    "nodes": [],
                }
            for field in ("recent", "since_start", "total"):
                row[field] += int(_number(item, field))
            row["nodes"].append(node_id)
    rows = sorted(merged.values(), key=lambda r: (-r["recent"], -r["total"], r["file_id"]))
    rows = rows[:CLUSTER_HOT]
    names = paths([row["file_id"] for row in rows])
    for row in rows:
        row["path"] = names.get(row["file_id"])
    return rows


def build_view(registry: Registry, now: float, wall: float, paths: PathLookup) -> dict[str, Any]:
    """The cluster view at monotonic time ``now`` (``wall`` is the matching Unix time)."""
    groups: list[dict[str, Any]] = []
    reporting: list[tuple[int, str, dict[str, Any]]] = []
    totals = dict.fromkeys(RATE_KEYS, 0.0)
    inflight = 0
    up_count = down_count = free = used = 0
    for view in registry.groups(now):
        nodes = []
        for node in view.nodes:
            entry = node.to_dict(now, registry.timeout)
            stats = node.hb.stats
            entry["group_id"] = view.group_id
            entry["stats"] = stats
            nodes.append(entry)
            if not entry["up"]:
                down_count += 1
                continue
            up_count += 1
            used += node.hb.used_slots
            free += node.hb.free_slots or 0
            if stats is not None:
                reporting.append((view.group_id, node.hb.node_id, stats))
                rates = stats.get("rates") or {}
                for key in RATE_KEYS:
                    totals[key] += _number(rates, key)
                inflight += int(_number(stats, "inflight"))
        groups.append(
            {
                "group_id": view.group_id,
                "writable": view.writable,
                "leader": view.leader.hb.node_id if view.leader else None,
                "leader_url": view.leader.hb.url if view.leader else None,
                "term": view.leader.hb.term if view.leader else None,
                "up": len(view.up),
                "nodes": nodes,
            }
        )
    cluster = {k: round(v, 2) for k, v in totals.items()}
    cluster["ops_per_s"] = round(
        sum(totals[k] for k in ("read_per_s", "write_per_s", "replicate_per_s", "edit_per_s")), 2
    )
    cluster.update(
        inflight=inflight,
        groups=len(groups),
        writable_groups=sum(1 for g in groups if g["writable"]),
        nodes_up=up_count,
        nodes_down=down_count,
        free_slots=free,
        used_slots=used,
    )
    events = [
        {"ago_s": round(max(0.0, now - at), 1), "time": wall - (now - at), "text": text}
        for at, text in reversed(registry.events)
    ]
    return {
        "time": wall,
        "heartbeat_timeout": registry.timeout,
        "cluster": cluster,
        "groups": groups,
        "hot": _hot(reporting, paths),
        "events": events,
    }


def walk_files(ns: Namespace) -> Iterator[tuple[str, str]]:
    """Every (file id, path) of the namespace."""
    stack = [ROOT]
    while stack:
        directory = stack.pop()
        for name, entry in ns.listdir(directory):
            path = join(directory, name)
            if entry is None:
                stack.append(path)
            else:
                yield entry.file_id, path


class PathIndex:
    """File id → path, for the few ids of the hot list. The namespace has no such index, so
    this one is rebuilt by a walk of the namespace when an unknown id is asked for and the
    namespace changed since the last walk, at most once per ``min_interval`` seconds."""

    def __init__(self, min_interval: float = 10.0) -> None:
        self._paths: dict[str, str] = {}
        self._version: object = None
        self._built_at: float | None = None
        self._min_interval = min_interval

    def lookup(
        self,
        file_ids: list[str],
        version: object,
        now: float,
        walk: Callable[[], Iterator[tuple[str, str]]],
    ) -> dict[str, str | None]:
        missing = any(f not in self._paths for f in file_ids)
        stale = version != self._version
        due = self._built_at is None or now - self._built_at >= self._min_interval
        if missing and stale and due:
            self._paths = dict(walk())
            self._version = version
            self._built_at = now
        return {f: self._paths.get(f) for f in file_ids}
