"""CRC32C, the one checksum of mydfs (slice blocks, headers, logs).

The ``crc32c`` package uses the CPU's CRC32 instruction (about 17 GB/s here against 7.6 GB/s for
zlib's crc32), accepts memoryviews without copying, and releases the GIL on large buffers, so
checking every 64 KiB block of every read costs next to nothing.
"""

from __future__ import annotations

import crc32c as _crc32c

Buffer = bytes | bytearray | memoryview


def crc32c(data: Buffer, value: int = 0) -> int:
    """CRC32C of ``data``, continuing from ``value`` (0 to start)."""
    return int(_crc32c.crc32c(data, value))


def block_crcs(data: Buffer, block_size: int) -> list[int]:
    """The CRC32C of each ``block_size`` block of ``data`` (the last block may be short)."""
    view = memoryview(data)
    fn = _crc32c.crc32c
    return [int(fn(view[i : i + block_size])) for i in range(0, len(view), block_size)]
