"""Small disks for the disk-full tests: a tmpfs mount, and a ballast file written until ENOSPC."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import can_mount_tmpfs, umount


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


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``path`` (created if missing) for the block; unmounted
    after, pass or fail. Skips the test, with the reason, where no tmpfs can be mounted."""
    reason = can_mount_tmpfs()
    if reason is not None:
        pytest.skip(f"needs a tmpfs mount: {reason}")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        umount(path)
