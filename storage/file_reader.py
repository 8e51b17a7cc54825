"""A storage node's reader of whole files (``GET /files``): the shared read path
(``common/readpath.py``) with this node's own shortcuts.

* Its own group's runs of a chain are walked in its own replicated table (no HTTP). A
  follower whose table lacks part of the chain may be behind: it asks its leader (or, when it
  knows none yet, the other members) over ``GET /chain``.
* The slices it holds are read from its own disk (``read_local``, checksums verified there);
  the others come from a replica of their group.
* Other groups' nodes are the tracker's view from the heartbeats.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import aiohttp

from mydfs.common.errors import Corrupt
from mydfs.common.location import Location
from mydfs.common.readpath import ChainRun, ReadPath, ReadTimeouts, SliceLoc, fetch_chain_run

if TYPE_CHECKING:
    from mydfs.storage.node import StorageNode

#: Seconds for one chain walk and one slice fetch asked of another node.
TIMEOUTS = ReadTimeouts(chain=10.0, slice=30.0)
#: Fetches in flight while streaming: the slice being sent and one ahead.
WINDOW = 2


class FileReader:
    """Walks a file's chain and streams its bytes for one storage node."""

    def __init__(self, node: StorageNode, session: aiohttp.ClientSession) -> None:
        self._node = node
        self._session = session
        self._path = ReadPath(
            session,
            self._urls_of,
            timeouts=TIMEOUTS,
            window=WINDOW,
            local_run=self._run_here,
            local_slice=self._read_here,
        )

    async def chain(
        self, head: Location | None, slices: int, size: int, **context: Any
    ) -> list[SliceLoc]:
        """Every slice of the file, checked against its entry's count and size."""
        return await self._path.chain(head, slices, size, **context)

    def stream(
        self, locs: list[SliceLoc], offset: int, end: int, **context: Any
    ) -> AsyncGenerator[bytes, None]:
        """The file's bytes [offset, end) in order, one slice ahead."""
        return self._path.stream(locs, offset, end, **context)

    async def _urls_of(self, group: int) -> list[str]:
        node = self._node
        if group == node.group_id:
            return list(node.urls.values())
        return list(node.tracker.replicas(group)) if node.tracker is not None else []

    async def _run_here(self, start: Location, limit: int) -> ChainRun | None:
        """This group's run from this node's table; None for another group's run."""
        node = self._node
        if start.group != node.group_id:
            return None
        try:
            entries, nxt = node.chain_here(start.slot, limit)
        except Corrupt:
            if node.is_leader():
                raise
            # This replica may be behind: the leader knows every sealed slice. Just restarted,
            # it may not know the leader yet: then any other member will do.
            others = [u for n, u in node.urls.items() if n != node.node_id]
            urls = [u for u in (node.leader_url(), *others) if u]
            return await fetch_chain_run(self._session, urls, start, limit, timeout=TIMEOUTS.chain)
        return ChainRun([SliceLoc.from_wire(e) for e in entries], nxt)

    async def _read_here(self, loc: SliceLoc, offset: int, length: int) -> bytes | None:
        """The piece from this node's disk when it holds the slice; None otherwise."""
        node = self._node
        if loc.group != node.group_id or not node.holds(loc.slot, loc.generation):
            return None
        info = node.info(loc.slot)
        if info is None or info.generation != loc.generation:
            return None
        return (await node.read_local(info, offset, length)).data
