"""What the edit workloads share: their settings, the append records and their check, and the
storage counter that says how many bytes an edit wrote.

The workloads themselves are in :mod:`mydfs.bench.workloads.edits`; this module imports nothing
of the suite, so that :class:`~mydfs.bench.suite.Settings` can hold an :class:`EditSettings`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp

#: The edit workloads, in the order they run; ``mydfs bench edits`` selects them all.
EDIT_WORKLOADS = ("edit-4k", "append-1k", "overwrite-64m", "insert-mid")

#: Why the edit figures have no SeaweedFS column (shown in the table's peer cell and notes).
NO_PEER = (
    "not measured on SeaweedFS: it has no equivalent of these edits (an atomic overwrite, "
    "insert or exactly-once append inside an existing file), so no ratio to it is given"
)

#: The storage counter of payload bytes a group leader sealed (one count per new slice, not
#: per copy: each slice is stored on 3 nodes).
RECEIVED = "mydfs_storage_received_bytes_total"

RECORD = 1024


@dataclass
class EditSettings:
    """Sizes and counts of the edit workloads (``--edit-size`` and the rest)."""

    #: The file the 4 KiB random overwrites go to.
    file_bytes: int = 256 << 20
    #: Bytes per random overwrite.
    edit_bytes: int = 4 << 10
    #: Overwrites per repetition (capped by ``--op-seconds`` too).
    edit_ops: int = 1000
    #: Records appended per repetition (capped by ``--op-seconds`` too), and by how many clients.
    append_records: int = 1000
    append_clients: int = 16
    #: Bytes of the one overwrite in place (and of the new-file write it is set beside).
    overwrite_bytes: int = 64 << 20
    #: File sizes of the middle inserts.
    insert_sizes: tuple[int, ...] = (64 << 20, 256 << 20, 1 << 30)
    #: Bytes per insert.
    insert_bytes: int = 4 << 10

    @classmethod
    def quick(cls) -> EditSettings:
        """Tiny sizes for ``--quick`` (a smoke run, not a measurement)."""
        return cls(
            file_bytes=32 << 20,  # 8 slices: 16 clients rarely collide on one
            edit_ops=24,
            append_records=48,
            overwrite_bytes=8 << 20,
            insert_sizes=(4 << 20, 8 << 20, 16 << 20),
        )


def record(rep: object, i: int) -> bytes:
    """The ``i``-th append record of repetition ``rep``: exactly :data:`RECORD` bytes, its
    identity first (so that a record found in the file names itself), then filler derived
    from it."""
    head = f"R{rep}:{i:08d}:".encode()
    filler = hashlib.sha256(head).digest() * (RECORD // 32)
    return (head + filler)[:RECORD]


def check_records(content: bytes, acked: dict[int, int], rep: object) -> str:
    """Why ``content`` is not exactly the acknowledged records (``acked``: record index ->
    the offset its append returned), each once at its offset; '' when it is."""
    if len(content) != RECORD * len(acked):
        return f"file holds {len(content):,} bytes, {len(acked)} acknowledged records of {RECORD}"
    seen: set[int] = set()
    for i, at in sorted(acked.items(), key=lambda kv: kv[1]):
        if at % RECORD or at in seen:
            return f"record {i} acknowledged at offset {at}, taken or not a record boundary"
        seen.add(at)
        if content[at : at + RECORD] != record(rep, i):
            return f"record {i} is not at offset {at}, where its append said it landed"
    return ""


def amplification(written: float, asked: int) -> float | None:
    """Bytes written ÷ bytes the caller asked to write (None when nothing was asked)."""
    return written / asked if asked > 0 else None


def parse_counter(text: str, name: str) -> float:
    """The value of the sample ``name`` (no labels) in a Prometheus text page (0 if absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def parse_received(text: str) -> int:
    """The :data:`RECEIVED` counter's value in a Prometheus text page (0 if absent)."""
    return int(parse_counter(text, RECEIVED))


async def scrape(urls: Iterable[str]) -> list[str]:
    """The ``/metrics`` pages (an open route on the tracker and the storage nodes) of the
    servers at ``urls``, in order."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def one(url: str) -> str:
            async with http.get(f"{url}/metrics") as resp:
                return await resp.text()

        return list(await asyncio.gather(*(one(u) for u in urls)))


async def received_bytes(urls: Iterable[str]) -> int:
    """The sum of :data:`RECEIVED` over the storage nodes at ``urls``: payload bytes of every
    slice sealed so far."""
    return sum(parse_received(page) for page in await scrape(urls))


def mib(n: int) -> str:
    """'64 MiB', '1 GiB', '4 KiB' for a size."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n:,} B"
