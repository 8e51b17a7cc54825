"""Where the SDK's writes go: each group's leader, and the group of each slice of an upload.

:class:`Leaders` caches every group's leader and up nodes (from the tracker's ``/cluster`` and
its placements) and finds a leader again when the cached one moved or stopped answering: it
asks the group's nodes that are not suspected (``GET /health`` says whether a node leads; the
nodes know an election at once), then the tracker (whose view lags by a heartbeat). One search
per group runs at a time, shared by every slice waiting on it. :class:`GroupPlan` turns the
tracker's placements (runs of at most K slices per group) into the group of each slice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from mydfs.client._transport import Transport
from mydfs.common.errors import MydfsError, Unavailable
from mydfs.common.slices import PAYLOAD_CAPACITY

#: group -> (its leader's URL if known, the URLs of its up nodes)
Groups = dict[int, tuple[str | None, tuple[str, ...]]]


class Leaders:
    """The known leader and nodes of every group, and the search for a leader."""

    def __init__(self, transport: Transport, tracker: str) -> None:
        self._t = transport
        self._tracker = tracker
        self.groups: Groups = {}
        self._finding: dict[int, asyncio.Future[str]] = {}  # group -> search under way

    def remember_cluster(self, cluster: dict[str, Any]) -> None:
        """Take the groups, leaders and up nodes of a tracker ``/cluster`` answer."""
        for g in cluster.get("groups", []):
            nodes = tuple(n["url"] for n in g.get("nodes", []) if n.get("up", True))
            self.groups[int(g["group_id"])] = (g.get("leader"), nodes)

    def set(self, group: int, url: str | None) -> None:
        """Record ``url`` as the group's leader (None: unknown, find it on next use)."""
        _, nodes = self.groups.get(group, (None, ()))
        self.groups[group] = (url, nodes)

    def hint(self, group: int, url: str) -> None:
        """The tracker's word on the group's leader: taken only when none is known that still
        answers (the tracker's view lags an election by a heartbeat; a cached leader that moved
        answers 307 or 503 anyway)."""
        leader, _ = self.groups.get(group, (None, ()))
        if leader is None or self._t.suspected(leader):
            self.set(group, url)

    def set_nodes(self, group: int, nodes: tuple[str, ...]) -> None:
        leader, _ = self.groups.get(group, (None, ()))
        self.groups[group] = (leader, nodes)

    async def leader(self, group: int) -> str:
        """The group's leader: the one known, unless it failed a liveness probe lately; else
        found anew."""
        leader, _ = self.groups.get(group, (None, ()))
        if leader and not self._t.suspected(leader):
            return leader
        search = self._finding.get(group)
        if search is None:
            search = asyncio.ensure_future(self._find(group))
            self._finding[group] = search
            search.add_done_callback(lambda done: self._forget(group, done))
        return await asyncio.shield(search)

    def _forget(self, group: int, done: asyncio.Future[str]) -> None:
        """Done callback of a search: drop it (and retrieve its error, which every waiter has
        already seen or, all of them cancelled, nobody needs)."""
        if self._finding.get(group) is done:
            del self._finding[group]
        if not done.cancelled():
            done.exception()

    async def _find(self, group: int) -> str:
        """Ask the group's nodes, then the tracker. One attempt: the caller's retry policy
        decides whether to ask again."""
        _, nodes = self.groups.get(group, (None, ()))
        found = await self._ask_nodes(group, nodes)
        if found is None:
            with contextlib.suppress(MydfsError):
                cluster = await self._t.json("GET", f"{self._tracker}/cluster", control=True)
                self.remember_cluster(cluster)
            leader, more = self.groups.get(group, (None, ()))
            if leader and not self._t.suspected(leader):
                found = leader
            elif set(more) - set(nodes):
                found = await self._ask_nodes(group, more)
        if found is None:
            raise Unavailable(f"group {group} has no leader right now", group=group)
        self.set(group, found)
        return found

    async def _ask_nodes(self, group: int, nodes: tuple[str, ...]) -> str | None:
        """The first of ``nodes`` (skipping suspected ones) whose ``/health`` says it leads."""

        async def leads(node: str) -> bool:
            try:
                health = await self._t.json(
                    "GET", f"{node}/health", timeout=self._t.policy.probe, control=True
                )
            except MydfsError:
                return False
            return bool(health.get("leader")) and int(health.get("group_id", group)) == group

        asked = [node for node in nodes if not self._t.suspected(node)]
        answers = await asyncio.gather(*(leads(node) for node in asked))
        return next((node for node, yes in zip(asked, answers, strict=True) if yes), None)


class GroupPlan:
    """Which group each slice of one upload goes to, from the tracker's placements (runs of at
    most K slices per group); ``place(n)`` asks the tracker for ``n`` more slices."""

    def __init__(
        self,
        place: Callable[[int], Awaitable[dict[str, Any]]],
        leaders: Leaders,
        size_hint: int | None,
    ) -> None:
        self._place = place
        self._leaders = leaders
        self._hint = None if size_hint is None else max(1, -(-size_hint // PAYLOAD_CAPACITY))
        self._groups: list[int] = []

    def wanted(self) -> int:
        """How many slices the next placement asks for: the rest of the hint, else 64."""
        remaining = (self._hint - len(self._groups)) if self._hint else 0
        return remaining if remaining > 0 else 64

    def add(self, body: dict[str, Any]) -> None:
        """Take a placement (``POST /placements``'s answer, or the one an intent carries)."""
        for run in body["runs"]:
            group = int(run["group"])
            self._groups += [group] * int(run["count"])
            if run.get("leader"):
                self._leaders.hint(group, run["leader"])
            nodes = tuple(run.get("replicas") or ())
            if nodes:
                self._leaders.set_nodes(group, nodes)

    async def group_of(self, index: int) -> int:
        while index >= len(self._groups):
            self.add(await self._place(self.wanted()))
        return self._groups[index]
