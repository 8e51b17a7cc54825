"""Sequential reads of one stored file (``AsyncClient.open``): slice by slice with the SDK's
read-ahead, checking the file's end-to-end CRC32C when the last byte has been read; and the
SDK's walk of a file's chain (:func:`chain_of`).

A read whose entry turns out stale (an edit committed since, :class:`StaleEntry`) starts again
from a fresh entry as long as no byte was handed out; the entry it finally read is the last of
the ``seen`` list the stream is given (``AsyncReader.info``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from mydfs.common.checksum import crc32c
from mydfs.common.errors import Corrupt
from mydfs.common.file_record import FileRecord as FileInfo
from mydfs.common.readpath import ReadPath, SliceLoc, versions_of

#: Times a read starts again from a fresh entry after finding its entry stale.
STALE_RETRIES = 5


class AsyncReader:
    """Reads a stored file sequentially, slice by slice, with read-ahead."""

    def __init__(
        self, info: FileInfo, slices: Callable[[list[FileInfo]], AsyncIterator[bytes]]
    ) -> None:
        self.info = info
        self._seen = [info]  # the entries read: the stream appends a fresh one on a restart
        self._slices = slices  # opens the ordered stream of the file's slices
        self._pos = 0
        self._buf = b""
        self._stream: AsyncIterator[bytes] | None = None
        self._crc = 0

    def tell(self) -> int:
        return self._pos - len(self._buf)

    async def _next_piece(self) -> bytes:
        if self._stream is None:
            self._stream = self._slices(self._seen)
        try:
            piece = await self._stream.__anext__()
        except StopAsyncIteration:
            check_hash(self.info, self._crc)
            return b""
        self.info = self._seen[-1]
        self._crc = crc32c(piece, self._crc)
        self._pos += len(piece)
        return piece

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all that is left if ``n < 0``); ``b""`` at the end."""
        chunks = [self._buf]
        have = len(self._buf)
        while n < 0 or have < n:
            piece = await self._next_piece()
            if not piece:
                break
            chunks.append(piece)
            have += len(piece)
        data = b"".join(chunks)
        if n < 0 or len(data) <= n:
            self._buf = b""
            return data
        self._buf = data[n:]
        return data[:n]

    def __aiter__(self) -> AsyncReader:
        return self

    async def __anext__(self) -> bytes:
        if self._buf:
            data, self._buf = self._buf, b""
            return data
        piece = await self._next_piece()
        if not piece:
            raise StopAsyncIteration
        return piece


def check_hash(info: FileInfo, crc: int) -> None:
    """Raise :class:`Corrupt` unless ``crc`` (CRC32C of the whole file) is the entry's."""
    if info.hash.startswith("crc32c:") and int(info.hash[7:], 16) != crc:
        raise Corrupt("file content fails its end-to-end checksum", path=info.path)


async def chain_of(
    read: ReadPath, info: FileInfo, cache: dict[tuple[str, int], list[SliceLoc]]
) -> list[SliceLoc]:
    """Every slice location of the file: one ``/chain`` walk per group run (``cache``d by file
    id and version), under the reader's rule with the entry's ``versions``."""
    key = (info.file_id, info.version)
    if key in cache:
        return cache[key]
    one_slice = info.slices == 1 and info.head is not None
    if one_slice and info.hash.startswith("crc32c:") and not info.versions:
        assert info.head is not None
        # One slice of a never-edited file: the entry says all there is (where, how long,
        # its CRC), so skip the chain walk; the replica's owner headers (this file id,
        # slice 0) prove the slot still holds it. An edited file's head may be a 301.
        one = SliceLoc(
            group=info.head.group,
            slot=info.head.slot,
            generation=0,
            length=info.size,
            crc32c=int(info.hash[7:], 16),
            replicas=(),
            file_id=info.file_id,
            index=0,
        )
        return [one]
    locs = await read.chain(
        info.head,
        info.slices,
        info.size,
        file_id=info.file_id,
        grant=info.grant,
        versions=versions_of(info.versions),
        path=info.path,
    )
    cache[key] = locs
    return locs
