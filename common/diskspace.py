"""Reserving disk space ahead of writes, so a full disk fails *before* anything is changed.

A log that appends and then finds the disk full is left half-written, and a memory-mapped file
that grows sparsely and is then written into dies with SIGBUS. :func:`reserve_space` allocates
blocks for a byte range of an open file up front with ``fallocate(FALLOC_FL_KEEP_SIZE)``: the
file's size does not change (readers see nothing new), but a later write into that range needs
no new block, so it cannot fail with ``ENOSPC`` on ext4, xfs or tmpfs. When the disk is full the
reservation itself fails with ``ENOSPC`` and the caller refuses the write cleanly.

Synchronous and cheap (a metadata operation); Linux only. On a filesystem without ``fallocate``
:func:`reserve_space` returns False and the caller writes unreserved (a write may then still
fail with ``ENOSPC``, which the caller must treat as it did before).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

FALLOC_FL_KEEP_SIZE = 0x01
#: errnos meaning "this filesystem cannot preallocate", not "no space".
_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_fallocate = _libc.fallocate
_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_fallocate.restype = ctypes.c_int


def reserve_space(fd: int, offset: int, length: int) -> bool:
    """Allocate ``[offset, offset + length)`` of ``fd`` without changing its size.

    True when the range is allocated, False when the filesystem cannot preallocate. Raises
    ``OSError`` (``ENOSPC`` when the disk is full, ``EIO``...) otherwise.
    """
    if length <= 0:
        return True
    if _fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err))


def is_disk_full(exc: BaseException) -> bool:
    """True for ``ENOSPC`` and ``EDQUOT`` (a quota counts as a full disk)."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
