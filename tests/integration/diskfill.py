"""Filling a (tmpfs) disk for the disk-full tests: a ballast file written until ENOSPC."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def fill(directory: Path, name: str = "ballast") -> Path:
    """Write ``directory/name`` until the disk refuses (ENOSPC); returns its path.

    Unbuffered writes, so the refusal surfaces here and not at close.
    """
    path = directory / name
    chunk = b"\xab" * 65536
    small = b"\xab" * 4096
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for block in (chunk, small):
            while True:
                try:
                    os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return path
