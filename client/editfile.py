"""A seekable file object for editing a stored file in place: ``open(path, "r+b")``.

:class:`EditBuffer` is the pure core (no I/O): the object's unflushed writes as dirty extents
(sorted, merged: two extents never touch or overlap), the size the object sees, and how much
of the stored file is still visible under its truncates. Its :meth:`EditBuffer.edits` are the
edits that turn the stored file into what the object sees: a shrinking ``truncate`` first
(when the object cut the file below its stored size), then one ``write`` per contiguous dirty
extent in offset order, then a growing ``truncate`` (when the object's size is past the end of
its last write).

:class:`AsyncEditFile` (``AsyncClient.open(path, "r+b")``) and :class:`EditFile` (the blocking
twin, ``Client.open(path, "r+b")``) are the shells: ``read``, ``write``, ``seek``, ``tell``,
``truncate``, ``flush``, ``close``. Each edit of a flush goes through the SDK's coordinator
(``client/editor.py``) with ``if_version=`` the version the object last knew, so a change by
another client since then makes the flush fail with :class:`Conflict` (``reason=version``)
instead of overwriting it; after each committed edit the object knows the new version. A flush
of several edits is not atomic: the edits committed before a failure stay committed (and leave
the buffer), the rest stay buffered.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from mydfs.common.errors import Conflict, InvalidArgument
from mydfs.common.file_record import FileRecord

if TYPE_CHECKING:
    from mydfs.client.aio import AsyncClient

T = TypeVar("T")

#: Default bound of an object's unflushed bytes: past it, a write flushes.
BUFFER_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Edit:
    """One edit of a flush: ``write`` of ``data`` at ``offset``, or ``truncate`` to ``offset``."""

    kind: str  # "write" | "truncate"
    offset: int
    data: bytes = b""


@dataclass(frozen=True)
class Piece:
    """A part of a read: ``length`` bytes of the stored file at ``offset`` (``data`` is None),
    or bytes the object holds (its writes, or zeros)."""

    offset: int
    length: int
    data: bytes | None = None


class EditBuffer:
    """What an edit object changed and has not committed yet (pure).

    The object sees byte ``k < size`` as: the byte of a dirty extent holding ``k``, else the
    stored file's byte ``k`` when ``k < keep``, else zero. ``stored`` is the stored file's size
    at the version the object knows; ``keep <= stored`` is how much of it the object's
    truncates left.
    """

    def __init__(self, stored: int) -> None:
        if stored < 0:
            raise InvalidArgument(f"a stored size is never negative, got {stored}")
        self.stored = stored
        self.keep = stored
        self.size = stored
        self._starts: list[int] = []
        self._data: list[bytearray] = []
        self._bytes = 0  # the sum of the extents' lengths

    @property
    def dirty(self) -> bool:
        """Is there anything to commit?"""
        return bool(self._starts) or self.keep != self.stored or self.size != self.stored

    @property
    def dirty_bytes(self) -> int:
        """Bytes held in the dirty extents."""
        return self._bytes

    def extents(self) -> list[tuple[int, bytes]]:
        """The dirty extents, ``(offset, bytes)`` in offset order."""
        return [(s, bytes(d)) for s, d in zip(self._starts, self._data, strict=True)]

    def write(self, offset: int, data: bytes) -> None:
        """Record ``data`` at ``offset`` (past the size: zeros between), merged with every
        extent it overlaps or touches."""
        if offset < 0:
            raise InvalidArgument(f"offset must be >= 0, got {offset}")
        if not data:
            return
        end = offset + len(data)
        # Extents overlapping or touching [offset, end]: those with start <= end and stop >= offset.
        lo = bisect.bisect_left(self._starts, offset)
        if lo > 0 and self._starts[lo - 1] + len(self._data[lo - 1]) >= offset:
            lo -= 1
        hi = bisect.bisect_right(self._starts, end)
        before = sum(len(self._data[k]) for k in range(lo, hi))
        # Grow the first extent in place when the write starts inside it or at its end (a
        # run of sequential writes costs what it writes, not the extent's size each time).
        if lo < hi and self._starts[lo] <= offset:
            start, merged, rest = self._starts[lo], self._data[lo], range(lo + 1, hi)
        else:
            start, merged, rest = offset, bytearray(), range(lo, hi)
        for k in rest:  # the extents after it, up to the end of the write (or past)
            _put(merged, self._starts[k] - start, self._data[k])
        _put(merged, offset - start, data)
        self._starts[lo:hi] = [start]
        self._data[lo:hi] = [merged]
        self._bytes += len(merged) - before
        self.size = max(self.size, end)

    def truncate(self, size: int) -> None:
        """Cut what the object sees to ``size`` bytes, or grow it with zeros."""
        if size < 0:
            raise InvalidArgument(f"size must be >= 0, got {size}")
        if size < self.size:
            k = bisect.bisect_left(self._starts, size)
            if k > 0 and self._starts[k - 1] + len(self._data[k - 1]) > size:
                del self._data[k - 1][size - self._starts[k - 1] :]
            del self._starts[k:]
            del self._data[k:]
            self._bytes = sum(len(d) for d in self._data)
            self.keep = min(self.keep, size)
        self.size = size

    def pieces(self, offset: int, n: int) -> list[Piece]:
        """Where the bytes ``[offset, offset + n)`` (cut at the size) come from, in order."""
        if offset < 0:
            raise InvalidArgument(f"offset must be >= 0, got {offset}")
        end = min(self.size, offset + max(n, 0))
        out: list[Piece] = []
        pos = offset
        k = max(bisect.bisect_right(self._starts, pos) - 1, 0)
        while pos < end:
            if k < len(self._starts) and self._starts[k] + len(self._data[k]) <= pos:
                k += 1
                continue
            if k < len(self._starts) and self._starts[k] <= pos:
                stop = min(end, self._starts[k] + len(self._data[k]))
                at = pos - self._starts[k]
                out.append(Piece(pos, stop - pos, bytes(self._data[k][at : at + stop - pos])))
                pos = stop
                k += 1
                continue
            nxt = self._starts[k] if k < len(self._starts) else end
            stop = min(end, nxt)
            if pos < self.keep:
                kept = min(stop, self.keep)
                out.append(Piece(pos, kept - pos))
                pos = kept
            else:
                out.append(Piece(pos, stop - pos, bytes(stop - pos)))
                pos = stop
        return out

    def edits(self) -> list[Edit]:
        """The edits that make the stored file what the object sees, in the order to commit."""
        out: list[Edit] = []
        if self.keep < self.stored:
            out.append(Edit("truncate", self.keep))
        out += [Edit("write", s, bytes(d)) for s, d in zip(self._starts, self._data, strict=True)]
        # The stored size after those: the shrink (or the stored size), grown by the writes.
        ends = [s + len(d) for s, d in zip(self._starts, self._data, strict=True)]
        reach = max([self.keep, *ends])
        if self.size != reach:
            out.append(Edit("truncate", self.size))
        return out

    def committed(self, edit: Edit) -> None:
        """``edit`` (the first of :meth:`edits`) is committed: the stored file has it."""
        first = self.edits()[:1]
        if first != [edit]:
            raise InvalidArgument("edits are committed in the order edits() gives them")
        if edit.kind == "truncate":
            self.stored = self.keep = edit.offset
            return
        del self._starts[0]
        self._bytes -= len(self._data.pop(0))
        self.stored = self.keep = max(self.stored, edit.offset + len(edit.data))

    def rebase(self, stored: int) -> None:
        """The stored file is now ``stored`` bytes (a newer version) and nothing is dirty."""
        if self.dirty:
            raise InvalidArgument("a buffer with unflushed changes cannot be rebased")
        self.stored = self.keep = self.size = stored


def _put(buf: bytearray, at: int, data: bytes | bytearray) -> None:
    """Write ``data`` into ``buf`` at ``at``, growing it (zeros between) as needed."""
    if len(buf) < at:
        buf.extend(bytes(at - len(buf)))
    buf[at : at + len(data)] = data


class AsyncEditFile:
    """A stored file open for reading and editing (``await AsyncClient.open(path, "r+b")``).

    ``read``, ``write``, ``seek``, ``tell``, ``truncate``, ``flush``, ``close`` with the
    meaning of a binary file; writes stay in memory (at most ``buffer_bytes``: past it a write
    flushes) and a read sees them. ``flush`` commits them as edits, each with
    ``if_version=`` the version the object knows (:attr:`info`). Reading the stored part when
    the file has moved on to another version: with nothing unflushed the object adopts that
    version, else :class:`Conflict` (``reason=version``).
    """

    def __init__(self, client: AsyncClient, info: FileRecord, buffer_bytes: int) -> None:
        if buffer_bytes < 1:
            raise InvalidArgument(f"buffer_bytes must be >= 1, got {buffer_bytes}")
        self._c = client
        self.info = info
        self.path = info.path
        self.buffer_bytes = buffer_bytes
        self._buf = EditBuffer(info.size)
        self._pos = 0
        self.closed = False

    def _check_open(self) -> None:
        if self.closed:
            raise InvalidArgument("I/O on a closed file", path=self.path)

    @property
    def version(self) -> int:
        """The version of the stored file the object knows."""
        return self.info.version

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move to ``offset`` from the start (0), the position (1) or the end (2)."""
        self._check_open()
        if whence not in (0, 1, 2):
            raise InvalidArgument(f"whence must be 0, 1 or 2, got {whence}", path=self.path)
        pos = offset + (0, self._pos, self._buf.size)[whence]
        if pos < 0:
            raise InvalidArgument(f"negative seek position {pos}", path=self.path)
        self._pos = pos
        return pos

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes from the position (all that is left if ``n < 0``)."""
        self._check_open()
        if not self._buf.dirty:
            await self._current()  # nothing unflushed: see the file as it is now
        if n < 0:
            n = max(0, self._buf.size - self._pos)
        pieces = self._buf.pieces(self._pos, n)
        if self._buf.dirty and any(p.data is None for p in pieces):
            await self._current()
        out: list[bytes] = []
        for piece in pieces:
            out.append(piece.data if piece.data is not None else await self._stored(piece))
        data = b"".join(out)
        self._pos += len(data)
        return data

    async def _current(self) -> None:
        """Read the entry again (a fresh read grant): a newer version is taken when nothing is
        unflushed, else :class:`Conflict` ``reason=version``."""
        info = await self._c.stat(self.path)
        if info.file_id != self.info.file_id:
            raise Conflict("the path names another file now", path=self.path, reason="replaced")
        if info.version != self.info.version:
            if self._buf.dirty:
                raise self._moved(info.version)
            self._buf.rebase(info.size)
        self.info = info

    def _moved(self, version: int) -> Conflict:
        return Conflict(
            f"the file is at version {version}, this object knows {self.info.version} and has "
            "unflushed changes",
            path=self.path,
            reason="version",
            version=version,
        )

    async def _stored(self, piece: Piece) -> bytes:
        seen = [self.info]
        parts = [p async for p in self._c._slices_in_order(seen, piece.offset, piece.length)]
        data = b"".join(parts)
        if seen[-1].version != self.info.version or len(data) != piece.length:
            raise Conflict("the file changed while it was read", path=self.path, reason="changed")
        return data

    async def write(self, data: bytes | bytearray | memoryview) -> int:
        """Buffer ``data`` at the position (past the end: zeros between); the bytes taken."""
        self._check_open()
        b = bytes(data)
        self._buf.write(self._pos, b)
        self._pos += len(b)
        if self._buf.dirty_bytes > self.buffer_bytes:
            await self.flush()
        return len(b)

    async def truncate(self, size: int | None = None) -> int:
        """Cut the file to ``size`` bytes (default: the position) or grow it with zeros; the
        position does not move."""
        self._check_open()
        n = self._pos if size is None else size
        self._buf.truncate(n)
        return n

    async def flush(self) -> None:
        """Commit the buffered changes, one edit at a time, each with ``if_version=`` the
        version the object knows."""
        self._check_open()
        for edit in self._buf.edits():
            if edit.kind == "write":
                info = await self._c.write(
                    self.path, edit.offset, edit.data, if_version=self.info.version
                )
            else:
                info = await self._c.truncate(self.path, edit.offset, if_version=self.info.version)
            self._buf.committed(edit)
            self.info = info

    async def close(self) -> None:
        """Flush, then close (closed even when the flush fails; its error is raised)."""
        if self.closed:
            return
        try:
            await self.flush()
        finally:
            self.closed = True

    async def __aenter__(self) -> AsyncEditFile:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class EditFile:
    """The blocking twin of :class:`AsyncEditFile` (``Client.open(path, "r+b")``)."""

    def __init__(self, run: Callable[[Coroutine[Any, Any, Any]], Any], file: AsyncEditFile) -> None:
        self._run = run
        self._f = file

    @property
    def info(self) -> FileRecord:
        return self._f.info

    @property
    def version(self) -> int:
        return self._f.version

    @property
    def closed(self) -> bool:
        return self._f.closed

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._run(self._f.read(n))
        return data

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n: int = self._run(self._f.write(data))
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def truncate(self, size: int | None = None) -> int:
        n: int = self._run(self._f.truncate(size))
        return n

    def flush(self) -> None:
        self._run(self._f.flush())

    def close(self) -> None:
        self._run(self._f.close())

    def __enter__(self) -> EditFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
