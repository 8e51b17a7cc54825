"""A storage node's link to the tracker: heartbeats out, the cluster map back.

Every ``heartbeat_interval`` seconds the node POSTs its identity, role, free space and load to
the tracker, signed with the cluster secret, body included. The reply carries the whole cluster
map (group → leader and node URLs), which the node uses to reach other groups, e.g. when it
streams a file whose chain continues elsewhere. A tracker that is down only delays the map;
the group goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from mydfs.common.auth import AUTH_HEADER, sign

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupView:
    leader: str | None
    nodes: tuple[str, ...]


class TrackerLink:
    """Sends heartbeats and keeps the latest cluster map."""

    def __init__(
        self,
        tracker: str,
        secret: str,
        session: aiohttp.ClientSession,
        report: Callable[[], dict[str, Any]],
        interval: float,
    ) -> None:
        self.tracker = tracker.rstrip("/")
        self._secret = secret
        self._session = session
        self._report = report
        self.interval = interval
        self.groups: dict[int, GroupView] = {}
        self.last_ok: float | None = None
        self.failures = 0

    async def beat(self) -> None:
        """One heartbeat; updates the cluster map from the reply."""
        path = "/heartbeat"
        body = orjson.dumps(self._report())
        headers = {
            AUTH_HEADER: sign(self._secret, "POST", path, body=body),
            "Content-Type": "application/json",
        }
        timeout = aiohttp.ClientTimeout(total=max(2.0, self.interval * 2))
        async with self._session.post(
            self.tracker + path, data=body, headers=headers, timeout=timeout
        ) as resp:
            if resp.status != 200:
                raise aiohttp.ClientResponseError(
                    resp.request_info, (), status=resp.status, message=await resp.text()
                )
            reply = await resp.json(loads=orjson.loads)
        groups = {}
        for gid, view in (reply.get("groups") or {}).items():
            groups[int(gid)] = GroupView(view.get("leader"), tuple(view.get("nodes") or ()))
        self.groups = groups
        if reply.get("interval"):
            self.interval = float(reply["interval"])
        self.last_ok = asyncio.get_running_loop().time()

    async def run(self) -> None:
        while True:
            try:
                await self.beat()
                if self.failures:
                    log.info("tracker %s reachable again", self.tracker)
                self.failures = 0
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                self.failures += 1
                if self.failures in (1, 10) or self.failures % 100 == 0:
                    log.warning("heartbeat to %s failed (%d): %s", self.tracker, self.failures, exc)
            await asyncio.sleep(self.interval)

    def replicas(self, group: int) -> tuple[str, ...]:
        view = self.groups.get(group)
        return () if view is None else view.nodes
