"""The machine's own limits, measured in the same run as the figures they bound."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

from mydfs.storage.format import SLOT_SIZE


def disk_dsync_write(folder: Path, slices: int = 64) -> float:
    """MB/s of ``dd bs=4M oflag=dsync`` into a fresh file in ``folder`` (file kept by caller)."""
    path = folder / f"limit-dd-{time.monotonic_ns()}.bin"
    started = time.perf_counter()
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={path}", "bs=4M", f"count={slices}", "oflag=dsync"],
        check=True,
        capture_output=True,
    )
    took = time.perf_counter() - started
    return slices * SLOT_SIZE / took / 1e6


def loopback_tcp(total_bytes: int = 1 << 30, chunk: int = 4 << 20) -> float:
    """MB/s of one TCP stream over 127.0.0.1 between two threads (4 MiB sends)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    received = 0

    def sink() -> None:
        nonlocal received
        conn, _ = server.accept()
        with conn:
            buf = bytearray(chunk)
            while True:
                n = conn.recv_into(buf)
                if not n:
                    break
                received += n

    thread = threading.Thread(target=sink)
    thread.start()
    data = bytes(chunk)
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as client:
        sent = 0
        while sent < total_bytes:
            client.sendall(data)
            sent += len(data)
    thread.join()
    took = time.perf_counter() - started
    server.close()
    return received / took / 1e6


def disk_dsync_append(folder: Path, count: int = 2000, block: int = 4096) -> float:
    """ops/s of ``dd bs=4k oflag=dsync`` into a fresh file: one durable small append per op."""
    path = folder / f"limit-append-{time.monotonic_ns()}.bin"
    started = time.perf_counter()
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={path}", f"bs={block}", f"count={count}", "oflag=dsync"],
        check=True,
        capture_output=True,
    )
    return count / (time.perf_counter() - started)
