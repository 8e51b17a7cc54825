"""The pure rules of the read path (no I/O): what a chain walk and a replica must answer.

``common/readpath.py`` (the one read path) applies them; see its docstring for the reader's
rule as a whole. Here: the records of a walk (:class:`SliceLoc`, :class:`ChainRun`,
:class:`Piece`), the checks of a run's owner (:func:`owner_mismatch`) and version
(:func:`version_check`), of a replica's owner and generation (:func:`foreign_owner`,
:func:`stale_generation`), the request headers that say what the reader expects
(:func:`expect_headers`), the chain's count and size (:func:`check_chain`) and the cut of a byte
range into slice pieces (:func:`cut_range`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from mydfs.common.errors import Corrupt, NotFound, StaleEntry, Unavailable
from mydfs.common.grants import GRANT_HEADER
from mydfs.common.location import Location

#: Request header of a chain walk: the file's version the reader expects of that group.
VERSION_HEADER = "X-Mydfs-Version"


@dataclass(frozen=True)
class SliceLoc:
    """Where one slice of a file is, as its group's chain walk reported it."""

    group: int
    slot: int
    generation: int  # 0: not known (a one-slice file located from its entry alone)
    length: int
    crc32c: int
    replicas: tuple[str, ...]
    file_id: str = ""  # the owner: when set, a replica must answer with it and ``index``
    index: int = 0  # the slice's position in its file
    #: The 301 slots ``(slot, generation)`` of this group the walk passed through to reach the
    #: slice, in order (empty when the pointer named its live slot): an edit's entry point.
    via: tuple[tuple[int, int], ...] = ()

    @classmethod
    def from_wire(cls, entry: Mapping[str, Any]) -> SliceLoc:
        """An entry of a ``GET /chain`` answer (its owner is what the walking table says)."""
        return cls(
            group=int(entry["group"]),
            slot=int(entry["slot"]),
            generation=int(entry["generation"]),
            length=int(entry["length"]),
            crc32c=int(entry["crc32c"]),
            replicas=tuple(entry.get("replicas") or ()),
            file_id=str(entry.get("file_id") or ""),
            index=int(entry.get("index") or 0),
            via=tuple((int(v[0]), int(v[1])) for v in entry.get("via") or ()),
        )


class ChainRun(NamedTuple):
    """One group's run of a chain, where the chain continues (None: it ends), and the version
    of the file the answering node's group last applied (0: never edited, or an old node)."""

    entries: list[SliceLoc]
    next: Location | None
    version: int = 0


class Piece(NamedTuple):
    """The bytes ``[offset, offset + length)`` of one slice."""

    loc: SliceLoc
    offset: int
    length: int


class Owned(Protocol):
    """Anything that names its owner: a chain entry, a slice location."""

    @property
    def file_id(self) -> str: ...

    @property
    def index(self) -> int: ...


# --- pure parts -------------------------------------------------------------------------------


def check_chain(locs: Sequence[SliceLoc], slices: int, size: int, **context: Any) -> None:
    """:class:`Corrupt` unless the chain holds as many slices and bytes as the file entry says."""
    total = sum(loc.length for loc in locs)
    if len(locs) != slices or total != size:
        raise Corrupt(
            f"chain has {len(locs)} slices / {total} bytes; the file entry says {slices} / {size}",
            **context,
        )


def owner_mismatch(
    entries: Sequence[Owned], file_id: str, first: int, *, indexes: bool = True
) -> str | None:
    """Why a run of a chain is not the file's (None when it is): every entry must carry
    ``file_id`` and (with ``indexes``, a never-edited file) the consecutive slice indexes
    ``first, first + 1, ...``. An empty ``file_id`` (a reader that does not know the file)
    checks nothing."""
    if not file_id:
        return None
    for i, entry in enumerate(entries):
        if entry.file_id != file_id or (indexes and entry.index != first + i):
            return (
                f"the chain names slice {entry.file_id or '?'}#{entry.index} where "
                f"{file_id}#{first + i} was expected"
            )
    return None


def version_check(expected: int, got: int, **context: Any) -> StaleEntry | Unavailable | None:
    """The reader's rule on a run's version: None when the node's group applied exactly the
    version the reader's entry expects; :class:`StaleEntry` when it applied a later one (the
    entry is stale); :class:`Unavailable` (``reason=behind``, another node may be current)
    when an earlier one."""
    if got == expected:
        return None
    if got > expected:
        return StaleEntry(
            f"the group applied version {got} of the file; the entry expects {expected}",
            **context,
            reason="stale_entry",
        )
    return Unavailable(
        f"the node applied version {got} of the file, not yet {expected}",
        **context,
        reason="behind",
    )


def foreign_owner(loc: SliceLoc, headers: Mapping[str, str], **context: Any) -> NotFound | None:
    """:class:`NotFound` when ``loc`` names an owner and the replica's answer carries another
    (``X-Mydfs-File``, ``X-Mydfs-Index``): the slot was freed and reused since, or the node's
    table is behind. None when the owner is right (or ``loc`` names none)."""
    if not loc.file_id:
        return None
    owner = (headers.get("X-Mydfs-File"), headers.get("X-Mydfs-Index"))
    if owner == (loc.file_id, str(loc.index)):
        return None
    return NotFound(
        f"the slot holds another file now ({owner[0]}#{owner[1]}, not {loc.file_id}#{loc.index})",
        **context,
    )


def stale_generation(
    loc: SliceLoc, headers: Mapping[str, str], **context: Any
) -> Unavailable | NotFound | None:
    """When ``loc`` knows its generation and the replica answered another
    (``X-Mydfs-Generation``): a newer one is :class:`NotFound` (``reason=reused``: the slot was
    freed and reused since the chain was read; generations only grow), an older or missing one
    :class:`Unavailable` (a stale answer, worth another replica). Else None."""
    got = headers.get("X-Mydfs-Generation")
    if not loc.generation or got == str(loc.generation):
        return None
    message = f"the replica answered generation {got}, not {loc.generation}"
    if got is not None and got.isdigit() and int(got) > loc.generation:
        return NotFound(message + ": the slot was reused since", **context, reason="reused")
    return Unavailable(message, **context, reason="stale")


def expect_headers(
    file_id: str, index: int | None, grant: str = "", version: int | None = None
) -> dict[str, str]:
    """The request headers telling a node which owner the reader expects (none if unknown;
    ``index`` None: any index of the file), the reader's grant (none if it has none) and the
    file's version it expects of the node's group (none if it does not check versions)."""
    headers = {"X-Mydfs-File": file_id} if file_id else {}
    if file_id and index is not None:
        headers["X-Mydfs-Index"] = str(index)
    if grant:
        headers[GRANT_HEADER] = grant
    if version is not None:
        headers[VERSION_HEADER] = str(version)
    return headers


def cut_range(locs: Sequence[SliceLoc], offset: int, end: int) -> list[Piece]:
    """The pieces of the slices (in chain order) that overlap the file's bytes [offset, end)."""
    pieces: list[Piece] = []
    pos = 0
    for loc in locs:
        lo, hi = max(offset, pos), min(end, pos + loc.length)
        if lo < hi:
            pieces.append(Piece(loc, lo - pos, hi - lo))
        pos += loc.length
    return pieces


def versions_of(pairs: Sequence[tuple[int, int]]) -> dict[int, int]:
    """An entry's ``versions`` (``(group, version)`` pairs) as a mapping group -> version."""
    return dict(pairs)
