"""Small durable-file helpers: fsync of files and directories, atomic replace.

Everything here is synchronous and meant to run on the pysyncobj tick thread (journal, snapshot)
or at start-up, never on the event loop.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename/creation inside ``path`` (a directory) durable."""
    fd = os.open(os.fspath(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike[str]) -> None:
    """fsync an existing file by name (its data and metadata)."""
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_synced(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` (create/truncate) and fsync it. No rename, no directory sync."""
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Durably replace ``path`` with ``data``: tmp file + fsync + rename + directory fsync."""
    target = Path(path)
    tmp = target.with_name(target.name + ".atomic.tmp")
    write_file_synced(tmp, data, mode)
    os.replace(tmp, target)
    fsync_dir(target.parent)
