"""Sequential reads of one stored file (``AsyncClient.open``): slice by slice with the SDK's
read-ahead, checking the file's end-to-end CRC32C when the last byte has been read."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from mydfs.common.checksum import crc32c
from mydfs.common.errors import Corrupt
from mydfs.common.file_record import FileRecord as FileInfo


class AsyncReader:
    """Reads a stored file sequentially, slice by slice, with read-ahead."""

    def __init__(self, info: FileInfo, slices: Callable[[], AsyncIterator[bytes]]) -> None:
        self.info = info
        self._slices = slices  # opens the ordered stream of the file's slices
        self._pos = 0
        self._buf = b""
        self._stream: AsyncIterator[bytes] | None = None
        self._crc = 0

    def tell(self) -> int:
        return self._pos - len(self._buf)

    async def _next_piece(self) -> bytes:
        if self._stream is None:
            self._stream = self._slices()
        try:
            piece = await self._stream.__anext__()
        except StopAsyncIteration:
            check_hash(self.info, self._crc)
            return b""
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
