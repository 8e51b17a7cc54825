"""The tracker's operations, between the HTTP layer and the pure cores.

:class:`Tracker` owns the durable namespace (:class:`~mydfs.tracker.store.MetaStore`), the
cluster registry and the metrics, and reads the clocks: ``monotonic`` for heartbeats, wall time
for file times. Every namespace change is planned, logged, applied and made durable before it
returns; every namespace read first waits for the log to be durable up to what it sees.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from mydfs.common import grants
from mydfs.common.errors import (
    AlreadyExists,
    Conflict,
    Forbidden,
    InvalidArgument,
    MydfsError,
    NotFound,
    Unavailable,
)
from mydfs.common.paths import url_quote
from mydfs.tracker.config import TrackerConfig
from mydfs.tracker.edits import Edits
from mydfs.tracker.metrics import TrackerMetrics
from mydfs.tracker.namespace import Registration
from mydfs.tracker.records import Edit, FileEntry, TrashRecord
from mydfs.tracker.registry import Heartbeat, Registry
from mydfs.tracker.scheduler import plan_runs
from mydfs.tracker.store import MetaStore
from mydfs.tracker.trash import describe, due, is_due

log = logging.getLogger("mydfs.tracker")


@dataclass(frozen=True, slots=True)
class Located:
    """Where to read a file: ``url`` (a storage node) or None for an empty file."""

    entry: FileEntry
    url: str | None


class Tracker:
    def __init__(
        self,
        config: TrackerConfig,
        store: MetaStore,
        metrics: TrackerMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.registry = Registry(config.heartbeat_timeout)
        self._clock = clock
        self._wall = wall
        self._rng = rng or random.Random()
        self.edits = Edits(self)

    def wall(self) -> float:
        """The tracker's wall clock (unix seconds): file times, grants, decisions."""
        return self._wall()

    # --- grants ----------------------------------------------------------------------------------

    def grant(self, op: str, file_id: str) -> str:
        """A grant for ``op`` ("read" or "write") on the file ``file_id`` (any group), valid for
        ``grant_ttl`` seconds: what a storage node asks for before it serves or changes a slice
        of that file (``docs/replication.md``, Grants)."""
        return grants.issue_for(
            self.config.secret, op, self.config.grant_ttl, file_id=file_id, now=self._wall()
        )

    # --- cluster ---------------------------------------------------------------------------------

    def heartbeat(self, body: Any) -> dict[str, Any]:
        hb = Heartbeat.from_dict(body)
        now = self._clock()
        for event in self.registry.heartbeat(hb, now):
            log.info("%s", event)
        self.metrics.heartbeats.inc()
        return {
            "interval": self.config.heartbeat_interval,
            "groups": self.registry.cluster_map(now),
        }

    def tick(self) -> None:
        self.store.ns.decisions.expire(self._wall(), self.config.edit_decision_retention)
        for event in self.registry.tick(self._clock()):
            bad = " is down" in event or "NOT writable" in event or "leader: none" in event
            log.log(logging.WARNING if bad else logging.INFO, "%s", event)

    def cluster(self) -> dict[str, Any]:
        return {
            "k": self.config.max_consecutive,
            "groups": self.registry.describe(self._clock()),
        }

    def place(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or "slices" not in body:
            raise InvalidArgument('the body must be {"slices": n}', field="slices")
        n, most = body["slices"], self.config.max_placement_slices
        if isinstance(n, int) and not isinstance(n, bool) and n > most:
            raise InvalidArgument(
                f"a placement may ask for at most {most} slices, not {n}",
                limit=most,
                field="slices",
            )
        now = self._clock()
        views = {v.group_id: v for v in self.registry.groups(now)}
        spaces = self.registry.writable_spaces(now)
        runs = plan_runs(body["slices"], self.config.max_consecutive, spaces)
        targets: dict[int, tuple[str, list[str]]] = {}
        for g in {run.group_id for run in runs}:
            view = views[g]
            assert view.leader is not None
            targets[g] = (view.leader.hb.url, [n.hb.url for n in view.up])
        out = []
        placed: dict[int, int] = {}
        for run in runs:
            leader, replicas = targets[run.group_id]
            placed[run.group_id] = placed.get(run.group_id, 0) + run.count
            out.append(
                {"group": run.group_id, "count": run.count, "leader": leader, "replicas": replicas}
            )
        for g, count in placed.items():
            self.registry.reserve(g, count)
            self.metrics.placements.labels(str(g)).inc(count)
        return {"runs": out}

    def group_urls(self, group: int) -> list[str]:
        """The URLs of a group's up nodes, its leader first (empty when none is up)."""
        view = self.registry.group(group, self._clock())
        if view is None:
            return []
        urls = [n.hb.url for n in view.up]
        if view.leader is not None and view.leader.hb.url in urls:
            urls.remove(view.leader.hb.url)
            urls.insert(0, view.leader.hb.url)
        return urls

    # --- namespace changes -----------------------------------------------------------------------

    async def record_edit(self, edit: Edit, op: str) -> FileEntry | None:
        """Log and apply ``edit``; return once it is durable (counted as ``op``)."""
        started = time.perf_counter()
        result = await self.store.commit(edit)
        self.metrics.commit_latency.observe(time.perf_counter() - started)
        self.metrics.edits.labels(op).inc()
        return result

    async def put_file(
        self, path: str, body: Any, *, overwrite: bool
    ) -> tuple[int, dict[str, Any]]:
        reg = Registration.from_dict(body)
        try:
            edit = self.store.ns.plan_put(path, reg, now=self._wall(), overwrite=overwrite)
            if edit is not None and self.store.ns.find_intent(reg.file_id) is None:
                # Only a file id the tracker handed a write grant for (POST /meta/intents) may
                # be registered: an entry for a made-up id would name slices nobody wrote.
                raise Forbidden(
                    "no upload intent for this file id (POST /meta/intents first)",
                    path=path,
                    file_id=reg.file_id,
                )
        except MydfsError:
            await self.store.barrier()  # a refusal may rest on state that is not durable yet
            raise
        if edit is None:
            await self.store.barrier()
            entry = self.store.ns.stat(path)
            return 200, dict(entry.to_dict(path), unchanged=True)
        old = await self.record_edit(edit, "put")
        data = edit.entry.to_dict(path)
        if old is None:
            return 201, data
        data["replaced"] = old.to_dict(path)
        return 200, data

    async def delete_file(self, path: str, *, purge: bool = False) -> dict[str, Any]:
        """Remove ``path`` (to the trash); with ``purge`` also purge its record at once."""
        try:
            edit = self.store.ns.plan_delete(path, now=self._wall())
        except MydfsError:
            await self.store.barrier()
            raise
        if not purge:
            old = await self.record_edit(edit, "delete")
            assert old is not None
            return {"deleted": old.to_dict(path)}
        _, old = self.store.submit(edit)  # both edits applied together, one wait
        assert old is not None
        purged = self.store.ns.plan_purge(None, old.file_id)
        await self._commit_all(purged, "purge")
        self.metrics.edits.labels("delete").inc()
        return {"deleted": old.to_dict(path), "purged": True}

    async def add_intent(self, body: Any) -> dict[str, Any]:
        """Record an upload intent (``{"file_id", "path"}``) and hand out its write grant. Two
        optional keys save the SDK a request each before the data: ``"exclusive": true``
        refuses (409 ``already_exists``, nothing recorded) when a file is at the path, and
        ``"slices": n`` adds ``"placement"``, what ``POST /placements`` answers for n."""
        if not isinstance(body, dict):
            raise InvalidArgument('the body must be {"file_id": ..., "path": ...}')
        edit = self.store.ns.plan_intent(body.get("file_id"), body.get("path"), now=self._wall())
        exclusive = body.get("exclusive", False)
        if not isinstance(exclusive, bool):
            raise InvalidArgument(
                f"exclusive must be a boolean, got {exclusive!r}", field="exclusive"
            )
        if exclusive and self.store.ns.get(edit.intent.path) is not None:
            await self.store.barrier()  # a refusal may rest on state that is not durable yet
            raise AlreadyExists("a file already exists at this path", path=edit.intent.path)
        placement = self.place(body) if "slices" in body else None
        await self.record_edit(edit, "intent")
        out = dict(edit.intent.to_dict(), grant=self.grant("write", edit.intent.file_id))
        if placement is not None:
            out["placement"] = placement
        return out

    async def drop_intent(self, file_id: str) -> dict[str, Any]:
        try:
            edit = self.store.ns.plan_drop_intent(file_id)
        except MydfsError:
            await self.store.barrier()
            raise
        found = self.store.ns.find_intent(file_id)
        assert found is not None
        await self.record_edit(edit, "drop_intent")
        return {"dropped": found.to_dict()}

    async def drop_trash(self, file_id: str) -> dict[str, Any]:
        try:
            edit = self.store.ns.plan_drop_trash(file_id)
        except MydfsError:
            await self.store.barrier()
            raise
        found = self.store.ns.find_trash(file_id)
        assert found is not None
        await self.record_edit(edit, "drop_trash")
        return {"dropped": found.to_dict()}

    # --- trash: undelete, purge, the reclaimer's mark -------------------------------------------

    async def _commit_all(self, edits: list[Any], op: str) -> None:
        """Apply ``edits`` now (no yield in between) and wait until the last is durable."""
        seq = self.store.log.last_seq
        for edit in edits:
            seq, _ = self.store.submit(edit)
            self.metrics.edits.labels(op).inc()
        await self.store.log.wait_durable(seq)

    async def undelete(self, body: Any) -> dict[str, Any]:
        """``{"path", "new_path"?, "file_id"?}``: put a trashed file back (``docs/space.md``)."""
        path, file_id = _trash_target(body)
        new_path = body.get("new_path")
        if new_path is not None and not isinstance(new_path, str):
            raise InvalidArgument("new_path must be a string", field="new_path")
        try:
            edit = self.store.ns.plan_undelete(path, new_path, file_id)
        except MydfsError:
            await self.store.barrier()
            raise
        record = self.store.ns.find_trash(edit.file_id)
        assert record is not None
        entry = await self.record_edit(edit, "undelete")
        assert entry is not None
        return {"restored": entry.to_dict(edit.path), "from": record.path}

    async def purge(self, body: Any) -> dict[str, Any]:
        """``{"path"?, "file_id"?}`` or ``{"all": true}``: free at the reclaimer's next pass."""
        every = isinstance(body, dict) and body.get("all") is True
        if every:
            if body.get("path") is not None or body.get("file_id") is not None:
                raise InvalidArgument('"all" purges every record: give no path or file_id')
            path, file_id = None, None
        else:
            path, file_id = _trash_target(body)
        ns = self.store.ns
        try:
            edits = ns.plan_purge(path, file_id, every=every)
            records = ns.trash() if every else [ns.find_trashed(path, file_id)]
        except MydfsError:
            await self.store.barrier()
            raise
        await self._commit_all(edits, "purge")
        now, retention = self._wall(), self.config.trash_retention
        shown = [ns.find_trash(r.file_id) or r for r in records]
        return {"purged": [describe(r, now, retention) for r in shown]}

    async def mark_reclaiming(self, record: TrashRecord) -> None:
        """The reclaimer's durable mark before it deletes ``record``'s first slice: from now on
        it cannot be undeleted. :class:`NotFound` if the record was undeleted (or replaced by a
        newer one) meanwhile, :class:`Conflict` if it is not due."""
        current = self.store.ns.find_trash(record.file_id)
        if current is None or current.time != record.time:
            raise NotFound("the trash record was undeleted meanwhile", file_id=record.file_id)
        if not is_due(current, self._wall(), self.config.trash_retention):
            raise Conflict("the trash record is not due", file_id=record.file_id)
        edit = self.store.ns.plan_mark(record.file_id)
        if edit is not None:
            await self.record_edit(edit, "mark_trash")

    # --- namespace reads -------------------------------------------------------------------------

    async def stat(self, path: str) -> FileEntry:
        await self.store.barrier()
        entry: FileEntry = self.store.ns.stat(path)
        return entry

    async def listdir(self, path: str, *, after: str | None, limit: int | None) -> dict[str, Any]:
        await self.store.barrier()
        items = self.store.ns.listdir(path, after=after, limit=None if limit is None else limit + 1)
        more = limit is not None and len(items) > limit
        if more:
            items = items[:limit]
        prefix = "" if path == "/" else path
        entries: list[dict[str, Any]] = []
        for name, entry in items:
            full = prefix + "/" + name
            if entry is None:
                entries.append({"name": name, "type": "dir", "path": full})
            else:
                entries.append(dict(entry.to_dict(full), name=name, type="file"))
        return {"path": path, "entries": entries, "next": items[-1][0] if more else None}

    async def trash(self) -> dict[str, Any]:
        await self.store.barrier()
        now, retention = self._wall(), self.config.trash_retention
        records = sorted(self.store.ns.trash(), key=lambda r: r.time)
        return {"trash": [describe(r, now, retention) for r in records], "retention": retention}

    async def trash_records(self) -> list[TrashRecord]:
        """The records the reclaimer may free now (``tracker/trash.py``), once every edit they
        rest on is durable (a slice is never freed for a removal a crash could still undo)."""
        records = self.store.ns.trash()  # taken before the barrier: all durable after it
        await self.store.barrier()
        return due(records, self._wall(), self.config.trash_retention)

    async def intents(self) -> dict[str, Any]:
        await self.store.barrier()
        return {"intents": [i.to_dict() for i in self.store.ns.intents()]}

    async def locate(self, path: str) -> Located:
        """Pick a random up node of the head's group for a read of ``path``. The URL carries
        the entry (head, size, slices, file id, mtime, version; ``gv=g:v,...`` = the versions
        of an edited file) and a read grant."""
        entry = await self.stat(path)
        if entry.head is None:
            return Located(entry, None)
        now = self._clock()
        view = self.registry.group(entry.head.group, now)
        if view is None or not view.up:
            raise Unavailable(
                "no storage node of the file's group is up", path=path, group=entry.head.group
            )
        # Prefer nodes heard from within the last heartbeat or so: a node that died a moment
        # ago is still "up" until heartbeat_timeout passes, and a redirect to it would fail.
        fresh_within = 1.5 * self.config.heartbeat_interval
        fresh = [n for n in view.up if now - n.last_seen <= fresh_within]
        node = self._rng.choice(fresh or view.up)
        params: dict[str, str | int] = {
            "head": f"{entry.head.group}:{entry.head.slot}",
            "size": entry.size,
            "slices": entry.slices,
            "file": entry.file_id,
            "mtime": repr(entry.mtime),
            "version": entry.version,
        }
        if entry.versions:  # an edited file: the version each group's chain runs must report
            params["gv"] = ",".join(f"{g}:{v}" for g, v in entry.versions)
        params[grants.GRANT_PARAM] = self.grant("read", entry.file_id)
        query = urlencode(params, safe=":,")
        return Located(entry, f"{node.hb.url}/files{url_quote(path)}?{query}")

    # --- health and metrics ----------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        groups, writable, up, down = self.registry.counts(self._clock())
        ns = self.store.ns
        return {
            "ok": not self.store.log.failed,
            "files": ns.files,
            "bytes": ns.bytes,
            "groups": groups,
            "writable_groups": writable,
            "nodes_up": up,
            "nodes_down": down,
            "edit_seq": self.store.log.last_seq,
            "durable_seq": self.store.log.durable_seq,
            "checkpoint_seq": self.store.checkpoint_seq,
            "advertise": self.config.advertise,
        }

    def refresh_gauges(self) -> None:
        m = self.metrics
        groups, writable, up, down = self.registry.counts(self._clock())
        m.groups.set(groups)
        m.groups_writable.set(writable)
        m.nodes.labels("up").set(up)
        m.nodes.labels("down").set(down)
        ns = self.store.ns
        m.files.set(ns.files)
        m.file_bytes.set(ns.bytes)
        m.directories.set(ns.directories)
        m.trash.set(ns.trash_count)
        m.intents.set(ns.intent_count)
        m.decisions.set(len(ns.decisions))
        m.log_seq.set(self.store.log.last_seq)
        m.log_durable.set(self.store.log.durable_seq)
        m.log_syncs.set(self.store.log.syncs)
        m.checkpoint_seq.set(self.store.checkpoint_seq)
        m.checkpoint_seconds.set(self.store.last_checkpoint_seconds)
        m.checkpoint_bytes.set(self.store.last_checkpoint_bytes)


def _trash_target(body: Any) -> tuple[str | None, str | None]:
    """``(path, file_id)`` of an undelete or purge body; at least one of them."""
    if not isinstance(body, dict):
        raise InvalidArgument('the body must be a JSON object {"path": ..., "file_id": ...}')
    path, file_id = body.get("path"), body.get("file_id")
    if path is None and file_id is None:
        raise InvalidArgument("give the path of a trashed file, or its file_id", field="path")
    if path is not None and not isinstance(path, str):
        raise InvalidArgument("path must be a string", field="path")
    if file_id is not None and not isinstance(file_id, str):
        raise InvalidArgument("file_id must be a string", field="file_id")
    return path, file_id
