"""A file's entry as it travels between the tracker and its clients (the JSON form).

The tracker answers ``GET /meta/files/<path>``, listings, puts and deletes with this record;
the SDK hands it to its users as :class:`mydfs.client.FileInfo`. The tracker keeps its own
packed form (``tracker/records.py``) and converts to this one at its edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mydfs.common.location import Location


@dataclass(frozen=True)
class FileRecord:
    """A file of the namespace: where its chain starts and what the client said about it.

    ``hash`` is the client's content hash (``crc32c:1a2b3c4d``), ``""`` when none was given
    (``null`` on the wire); ``version`` is 1 at creation, +1 per overwrite, committed edit or
    compaction.
    ``versions`` says, for every group an in-place edit ever touched, the version of the last
    committed edit that touched it (``((group, version), ...)`` by group; empty for a file never
    edited): a reader accepts a chain run of group ``g`` only when the node reports exactly
    ``versions.get(g, 0)``. ``layout`` is the version of the last layout-changing edit (0:
    none). On the wire ``"versions": [[g, v], ...]`` and ``"layout": n``, left out for a file
    never edited (absent means empty and 0). ``grant`` is the
    read grant the tracker's ``GET /meta/files`` answer carries for it (``""`` elsewhere): the
    SDK forwards it to the storage nodes it reads from. It is not part of ``to_dict``, its
    equality or its repr (a credential stays out of logs and printed records).
    """

    path: str
    file_id: str
    size: int
    slices: int
    head: Location | None
    hash: str
    ctime: float
    mtime: float
    version: int
    versions: tuple[tuple[int, int], ...] = ()
    layout: int = 0
    grant: str = field(default="", compare=False, repr=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileRecord:
        head = d.get("head")
        return cls(
            path=str(d["path"]),
            file_id=str(d["file_id"]),
            size=int(d["size"]),
            slices=int(d["slices"]),
            head=None if head is None else Location(int(head[0]), int(head[1])),
            hash=str(d.get("hash") or ""),
            ctime=float(d.get("ctime") or 0),
            mtime=float(d.get("mtime") or 0),
            version=int(d.get("version") or 1),
            versions=tuple(sorted((int(g), int(v)) for g, v in d.get("versions") or ())),
            layout=int(d.get("layout") or 0),
            grant=str(d.get("grant") or ""),
        )

    def to_dict(self) -> dict[str, Any]:
        """The wire form; ``versions`` and ``layout`` only for a file edited in place."""
        wire: dict[str, Any] = {
            "path": self.path,
            "file_id": self.file_id,
            "size": self.size,
            "slices": self.slices,
            "head": None if self.head is None else [self.head.group, self.head.slot],
            "hash": self.hash or None,
            "ctime": self.ctime,
            "mtime": self.mtime,
            "version": self.version,
        }
        if self.versions or self.layout:
            wire["versions"] = [[g, v] for g, v in self.versions]
            wire["layout"] = self.layout
        return wire

    def version_of(self, group: int) -> int:
        """``versions.get(group, 0)``: the version a chain run of ``group`` must report."""
        for g, v in self.versions:
            if g == group:
                return v
        return 0
