"""What ``put`` stores, read one slice at a time: bytes, a local path, or a binary file object
(never loaded whole)."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

from mydfs.common.errors import NotFound
from mydfs.common.slices import PAYLOAD_CAPACITY

SLICE = PAYLOAD_CAPACITY
Source = bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes]


def source_size(src: Source) -> int | None:
    """The bytes ``src`` will yield, when known up front."""
    if isinstance(src, bytes | bytearray | memoryview):
        return len(src)
    if isinstance(src, str | os.PathLike):
        return Path(src).stat().st_size
    try:
        return os.fstat(src.fileno()).st_size - src.tell()
    except (OSError, AttributeError, ValueError):
        return None


def source_stamp(src: Source) -> tuple[int, int] | None:
    """Size and modification time (ns) of a source that is a regular file (a path or an open
    file), to tell whether it changed while it was read; None for anything else."""
    try:
        if isinstance(src, str | os.PathLike):
            st = os.stat(src)
        elif isinstance(src, bytes | bytearray | memoryview):
            return None
        else:
            st = os.fstat(src.fileno())
    except (OSError, AttributeError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_size, st.st_mtime_ns


async def chunks(src: Source) -> AsyncIterator[bytes]:
    """The source cut into slices of exactly SLICE bytes (the last one shorter)."""
    if isinstance(src, bytes | bytearray | memoryview):
        view = memoryview(src)
        for i in range(0, len(view), SLICE):
            yield bytes(view[i : i + SLICE])
        return
    if isinstance(src, str | os.PathLike):
        path = Path(src)
        if not path.is_file():
            raise NotFound("local file does not exist or is not a regular file", local=str(path))
        with open(path, "rb") as f:
            async for chunk in chunks(f):
                yield chunk
        return
    while True:
        chunk = await asyncio.to_thread(_read_full, src, SLICE)
        if not chunk:
            return
        yield chunk
        if len(chunk) < SLICE:
            return


def _read_full(f: IO[bytes], n: int) -> bytes:
    parts = []
    got = 0
    while got < n:
        part = f.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)
