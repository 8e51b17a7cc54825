"""Keep the C allocator from holding on to freed payload buffers (glibc only; a no-op elsewhere).

A slice is a 4 MiB buffer. glibc serves such a request with ``mmap`` at first, but each time it
frees one it raises its mmap threshold to that size ("dynamic threshold"), after which buffers
of about that size come from the heap arenas (one per thread that allocates: the event loop
and the disk threads), and freed arena memory is seldom given back: a node that once held a
gigabyte of slices keeps its resident size for good. :func:`tune` fixes the threshold (which
turns the dynamic adjustment off), so every large buffer is mapped on its own and unmapped
when freed; :func:`release_free_memory` trims what the arenas still keep.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

#: ``mallopt`` parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Allocations at least this large are mapped on their own (and unmapped when freed).
MMAP_THRESHOLD = 256 * 1024


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 - glibc has it; musl and others may not
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def tune() -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD` (and the trim threshold above it).
    True if applied."""
    if _LIBC is None:
        return False
    ok = bool(_LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    ok = bool(_LIBC.mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD)) and ok
    if not ok:
        log.warning("mallopt refused the mmap threshold; freed slices may stay resident")
    return ok


def release_free_memory() -> None:
    """Give the memory glibc holds free in its arenas back to the system."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
