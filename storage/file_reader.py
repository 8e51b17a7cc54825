"""A storage node's reader of whole files (``GET /files``): the shared read path
(``common/readpath.py``) with this node's own shortcuts.

* Its own group's runs of a chain are walked in its own replicated table (no HTTP), and used
  only when they are the file's (the file id of the tracker's entry, the next slice indexes):
  this node's table may be behind. A run that is not, or that a follower cannot walk (a
  deleted or unknown slice inside it), is asked of the group's nodes over ``GET /chain``, with
  the expected owner, so that a follower redirects to its leader and the leader proves itself
  current before answering.
* The slices it holds are read from its own disk (``read_local``, checksums verified there)
  when the bytes' own header names the owner and generation the chain gave; the others come
  from a replica of their group, checked the same way.
* Other groups' nodes are the tracker's view from the heartbeats.
* Versions (edited files): the tracker's 307 carries the entry's ``versions`` (``gv``); every
  run must come from a table that applied exactly the version the entry expects of its group
  (the reader's rule, ``common/readpath.py``). Its own group's run carries the version read
  from its table in the same read as the walk.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import aiohttp

from mydfs.common.errors import Corrupt
from mydfs.common.location import Location
from mydfs.common.readpath import ChainRun, ReadPath, ReadTimeouts, SliceLoc
from mydfs.storage.chain import ChainEntry, walk

if TYPE_CHECKING:
    from mydfs.storage.group_state import GroupState
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
        self,
        head: Location | None,
        slices: int,
        size: int,
        *,
        file_id: str,
        grant: str = "",
        versions: dict[int, int] | None = None,
        **context: Any,
    ) -> list[SliceLoc]:
        """Every slice of the file ``file_id``, checked against its entry's count and size
        (and ``versions``: the entry's versions by group, see the reader's rule); ``grant``
        (the reader's read grant) goes along to the other nodes asked."""
        return await self._path.chain(
            head, slices, size, file_id=file_id, grant=grant, versions=versions, **context
        )

    def stream(
        self,
        locs: list[SliceLoc],
        offset: int,
        end: int,
        *,
        grant: str = "",
        edited: bool = False,
        **context: Any,
    ) -> AsyncGenerator[bytes, None]:
        """The file's bytes [offset, end) in order, one slice ahead."""
        return self._path.stream(locs, offset, end, grant=grant, edited=edited, **context)

    async def _urls_of(self, group: int) -> list[str]:
        node = self._node
        if group == node.group_id:
            return list(node.urls.values())
        return list(node.tracker.replicas(group)) if node.tracker is not None else []

    async def _run_here(self, start: Location, limit: int) -> ChainRun | None:
        """This group's run from this node's table; None for another group's run, and on a
        follower whose table cannot walk it (it may be behind: the group's nodes are asked)."""
        node = self._node
        if start.group != node.group_id:
            return None

        def here(state: GroupState) -> tuple[list[ChainEntry], Location | None, int]:
            entries, nxt = walk(state, start.slot, limit)
            return entries, nxt, file_version(state, entries[0].file_id) if entries else 0

        try:
            entries, nxt, version = node.group.read(here)
        except Corrupt:
            if node.is_leader():
                raise
            return None
        return ChainRun([SliceLoc.from_wire(e.to_dict(node.urls)) for e in entries], nxt, version)

    async def _read_here(self, loc: SliceLoc, offset: int, length: int) -> bytes | None:
        """The piece from this node's disk when it holds the slice the chain named (owner and
        generation, as the bytes' own header says); None otherwise."""
        node = self._node
        if loc.group != node.group_id or not node.holds(loc.slot, loc.generation):
            return None
        info = node.info(loc.slot)
        if info is None or info.generation != loc.generation:
            return None
        got = await node.read_local(info, offset, length)
        header = got.header
        owner = (header.owner.file_id.hex(), header.owner.index, header.generation)
        if loc.file_id and owner != (loc.file_id, loc.index, loc.generation):
            return None
        return got.data


def file_version(state: GroupState, file_id: str) -> int:
    """The version of ``file_id``'s last edit this group's table applied (0: never edited)."""
    return state.file_version(file_id)
