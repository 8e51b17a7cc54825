"""A self-check of the slice store that a newcomer can run: ``mydfs-storage selfcheck``.

It builds a volume in a scratch folder, stores a chain of slices, reads them back whole and by
range, leaves a 301 and a 404, reuses the freed slot, reopens the volume, verifies every block
and prints what it did. Exit code 0 means every step matched.

It drives the volume as a standalone slice store: the slots come from the volume's own local
free list (``Volume.allocate``). In a cluster a node never does that; the group's replicated
table decides every slot (``docs/group_state.md``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TextIO

from mydfs.common.errors import SliceDeleted, SliceMoved
from mydfs.common.location import Location
from mydfs.storage.format import PAYLOAD_CAPACITY, SliceOwner
from mydfs.storage.volume import Volume


def run_selfcheck(folder: Path | None, slices: int, out: TextIO) -> None:
    """Run every step; raises AssertionError or a MydfsError on the first mismatch."""
    scratch = Path(tempfile.mkdtemp(prefix="mydfs-selfcheck-", dir=folder))
    try:
        _run(scratch / "volume.dat", slices, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(path: Path, slices: int, out: TextIO) -> None:
    def say(msg: str) -> None:
        print(msg, file=out, flush=True)

    say(f"volume {path} (slot payload capacity {PAYLOAD_CAPACITY} bytes)")
    file_id = os.urandom(16)
    digests: dict[int, str] = {}
    with Volume.open(path, create=True, node_id="selfcheck", group_id=1) as vol:
        started = time.perf_counter()
        slots = [vol.allocate() for _ in range(slices)]
        for i, slot in enumerate(slots):
            payload = os.urandom(PAYLOAD_CAPACITY if i < slices - 1 else PAYLOAD_CAPACITY // 3)
            nxt = Location(1, slots[i + 1]) if i + 1 < slices else None
            vol.write(slot, payload, owner=SliceOwner(file_id, i), next=nxt)
            digests[slot] = hashlib.sha256(payload).hexdigest()
        took = time.perf_counter() - started
        total = sum(vol.header(s).length for s in slots)
        rate = total / took / 1e6
        say(f"wrote {slices} linked slices, {total / 1e6:.1f} MB, each durable: {rate:.0f} MB/s")

        # Follow the chain from the head, as a client would.
        seen, loc = 0, Location(1, slots[0])
        while True:
            got = vol.read(loc.slot, expect_owner=SliceOwner(file_id, seen))
            assert hashlib.sha256(got.data).hexdigest() == digests[loc.slot], "slice mismatch"
            seen += 1
            if got.header.next is None:
                break
            loc = got.header.next
        assert seen == slices
        say(f"followed the chain head→tail: {seen} slices, all sha256 match")

        part = vol.read(slots[0], offset=100_000, length=70_000)
        whole = vol.read(slots[0]).data
        assert part.data == whole[100_000:170_000]
        say("range read of 70000 bytes at offset 100000 matches (checked 2 of 64 blocks)")

        vol.mark_moved(slots[1], Location(1, slots[-1]))
        vol.mark_deleted(slots[2])
        for slot, expected in ((slots[1], SliceMoved), (slots[2], SliceDeleted)):
            try:
                vol.read(slot)
            except expected as exc:
                say(f"slot {slot}: {exc.code} as expected ({exc.message})")
            else:
                raise AssertionError(f"slot {slot} should answer {expected.__name__}")
        reused = vol.allocate()
        assert reused == slots[2], "the local free list should hand back the 404 slot"
        vol.write(reused, b"reused", owner=SliceOwner(file_id, 99))
        say(f"slot {reused} reused from the volume's local free list")

    with Volume.open(path, node_id="selfcheck", group_id=1) as vol:
        report = vol.verify()
        stats = vol.stats()
        assert report.ok, f"verify found problems: {report.problems}"
        assert vol.read(reused).data == b"reused"
        say(
            f"reopened clean={vol.report.clean}: verify checked {report.checked} slots, "
            f"0 problems; live={stats.live} moved={stats.moved} deleted={stats.deleted} "
            f"free={stats.free}; {stats.disk_bytes / 1e6:.1f} MB on disk (sparse)"
        )
    say("selfcheck OK")
