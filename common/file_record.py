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
    (``null`` on the wire); ``version`` is 1 at creation, +1 per overwrite. ``grant`` is the
    read grant the tracker's ``GET /meta/files`` answer carries for it (``""`` elsewhere): the
    SDK forwards it to the storage nodes it reads from. It is not part of ``to_dict``, its
    equality or its repr (a credential stays out of logs and printed records).

    ``versions``: for each group an edit ever touched, the version of the last commit that
    touched it (``(group, version)`` sorted by group; empty for a never-edited file): a reader
    accepts a chain run from group ``g`` only at version ``versions.get(g, 0)``. ``layout``:
    the version of the last edit that changed the slices' layout (0: none).
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
        """The wire form; ``versions`` and ``layout`` only when the file was edited (absent
        reads as empty / 0)."""
        out = {
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
        if self.versions:
            out["versions"] = [[g, v] for g, v in self.versions]
        if self.layout:
            out["layout"] = self.layout
        return out
