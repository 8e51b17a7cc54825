"""The trash operations of :class:`~mydfs.client.aio.AsyncClient`: list the trash, undelete,
purge (``docs/space.md``, Trash). Removing a file is ``AsyncClient.delete``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mydfs.common.errors import InvalidArgument
from mydfs.common.file_record import FileRecord
from mydfs.common.paths import check_file_path
from mydfs.common.tracing import traced

if TYPE_CHECKING:
    from mydfs.client._transport import Transport


class TrashMethods:
    """Mixed into :class:`~mydfs.client.aio.AsyncClient` (which has these)."""

    tracker: str
    _t: Transport

    if TYPE_CHECKING:

        async def _tracker(
            self, method: str, url: str, *, body: Any = None, path: str | None = None
        ) -> Any: ...

    @traced
    async def trash(self) -> list[dict[str, Any]]:
        """The tracker's trash, oldest first: ``path``, ``file_id``, ``size``, ``time`` (removed
        at), ``reason``, ``state`` (held, purged, reclaiming), ``free_at`` (null: at the next
        pass), ``restorable``..."""
        body = await self._tracker("GET", f"{self.tracker}/meta/trash")
        records: list[dict[str, Any]] = body["trash"]
        return records

    @traced
    async def undelete(
        self, path: str, new_path: str | None = None, *, file_id: str | None = None
    ) -> FileRecord:
        """Put the newest trashed file of ``path`` (or the one of ``file_id``) back, under
        ``new_path`` if given. :class:`Conflict` if the target path exists or the reclaimer
        started freeing the file; :class:`NotFound` if no such record."""
        check_file_path(path)
        if new_path is not None:
            check_file_path(new_path)
        req = {"path": path, "new_path": new_path, "file_id": file_id}
        # One attempt: a retry after a lost answer would find the file already restored.
        body = await self._t.json("POST", f"{self.tracker}/meta/trash/undelete", body=req)
        return FileRecord.from_dict(body["restored"])

    @traced
    async def purge(
        self,
        path: str | None = None,
        *,
        file_id: str | None = None,
        everything: bool = False,
    ) -> list[dict[str, Any]]:
        """Free a trashed file at the reclaimer's next pass instead of after the retention: the
        newest record of ``path``, or the one of ``file_id``; ``everything=True`` purges the
        whole trash. :class:`NotFound` if no such record. Returns the records purged."""
        if everything:
            if path is not None or file_id is not None:
                raise InvalidArgument("purge everything takes no path or file_id")
            req: dict[str, Any] = {"all": True}
        elif path is None and file_id is None:
            raise InvalidArgument("purge needs a path, a file_id or everything=True")
        else:
            if path is not None:
                check_file_path(path)
            req = {"path": path, "file_id": file_id}
        body = await self._tracker("POST", f"{self.tracker}/meta/trash/purge", body=req)
        records: list[dict[str, Any]] = body["purged"]
        return records
