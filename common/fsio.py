"""Durable file helpers: fsync of files and directories, whole writes, atomic replace.

Everything here is synchronous and blocking: run it off the event loop (a worker thread, the
pysyncobj tick thread, or start-up).
"""

from __future__ import annotations

import os
from pathlib import Path

StrPath = str | os.PathLike[str]


def fsync_dir(path: StrPath) -> None:
    """Make a creation, rename or removal inside the directory ``path`` durable."""
    fd = os.open(os.fspath(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: StrPath) -> None:
    """fsync an existing file by name (its data and metadata)."""
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (``os.write`` may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_file_synced(path: StrPath, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` (create/truncate) and fsync it. No rename, no directory sync."""
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: StrPath, data: bytes, mode: int = 0o600) -> None:
    """Durably replace (or create) ``path`` with ``data``: ``<name>.tmp`` + fsync + rename +
    directory fsync. A crash leaves the old file or the new one, never a mix."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    write_file_synced(tmp, data, mode)
    os.replace(tmp, target)
    fsync_dir(target.parent)


def truncate_synced(path: StrPath, size: int) -> None:
    """Cut ``path`` to ``size`` bytes, durably."""
    fd = os.open(os.fspath(path), os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: Path) -> None:
    """Create the folder ``path`` (mode 0700, its creation durable) if it does not exist."""
    if path.is_dir():
        return
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    fsync_dir(path.parent)


#: Data and metadata are readable by their owner only: files 0600, folders 0700.
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def restrict_tree(root: StrPath) -> list[str]:
    """Make the folder ``root`` and everything under it owner-only (folders 0700, files 0600;
    symlinks are left alone). Tightens what an older version or another umask created.
    Returns what could not be changed (not ours: ``PermissionError``), for a warning."""
    refused: list[str] = []

    def tighten(path: str, mode: int) -> None:
        try:
            os.chmod(path, mode)
        except PermissionError:
            refused.append(path)

    for dirpath, _dirnames, filenames in os.walk(os.fspath(root)):
        tighten(dirpath, PRIVATE_DIR_MODE)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                tighten(path, PRIVATE_FILE_MODE)
    return refused
