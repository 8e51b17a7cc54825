"""Slice-store speed beside the disk's own limit, measured in the same run on the same filesystem.

    python -m mydfs.bench.slice_store [--dir DIR] [--slices 128] [--runs 3] [--json OUT]

Each run, alternating so that drift on a shared machine hits both alike:

* ``dd bs=4M count=N oflag=dsync`` into a **fresh** file: the raw limit for durable 4 MiB writes;
* the slice store writing N slices of 4 MiB (payload 4,190,208 bytes + its header page) into a
  **fresh** volume, one after another, each durable (two fdatasyncs) before the next starts;
* the same with 4 writer threads (group commit shares the syncs);
* cached whole-slice reads of what was just written (page cache hot), CRC-checked.

Fresh files on both sides, because blocks never written before are several times slower to
write than reused ones on this kind of machine. Prints median (min-max) and the ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

from mydfs.storage.format import PAYLOAD_CAPACITY, SLOT_SIZE, SliceOwner
from mydfs.storage.volume import Volume


def dd_dsync(path: Path, count: int) -> float:
    """MB/s of ``dd bs=4M oflag=dsync`` writing ``count`` blocks to a new file."""
    started = time.perf_counter()
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={path}", "bs=4M", f"count={count}", "oflag=dsync"],
        check=True,
        capture_output=True,
    )
    took = time.perf_counter() - started
    return count * SLOT_SIZE / took / 1e6


def volume_writes(path: Path, count: int, payload: bytes, writers: int = 1) -> float:
    """MB/s (payload bytes) of ``count`` durable slice writes into a new volume."""
    vol = Volume.open(path, create=True, node_id="bench", group_id=1)
    try:
        per_writer = count // writers

        def work(index: int) -> None:
            for i in range(per_writer):
                slot = vol.allocate()
                vol.write(slot, payload, owner=SliceOwner(bytes(16), index * per_writer + i))

        started = time.perf_counter()
        if writers == 1:
            work(0)
        else:
            threads = [threading.Thread(target=work, args=(i,)) for i in range(writers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        took = time.perf_counter() - started
        return per_writer * writers * len(payload) / took / 1e6
    finally:
        vol.close()


def volume_reads(path: Path, passes: int) -> float:
    """MB/s of whole-slice reads (block CRCs checked) over a volume already in the page cache."""
    vol = Volume.open(path)
    try:
        slots = [h.slot for h in vol.scan()]
        for slot in slots:  # warm the cache
            vol.read(slot)
        total = 0
        started = time.perf_counter()
        for _ in range(passes):
            for slot in slots:
                total += len(vol.read(slot).data)
        return total / (time.perf_counter() - started) / 1e6
    finally:
        vol.close()


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _fmt(s: dict[str, float]) -> str:
    return f"{s['median']:8.0f} MB/s ({s['min']:.0f}-{s['max']:.0f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mydfs.bench.slice_store", description=__doc__)
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument("--slices", type=int, default=128, help="4 MiB slices per run (128)")
    parser.add_argument("--runs", type=int, default=3, help="repetitions (3)")
    parser.add_argument("--read-passes", type=int, default=5, help="read passes per run (5)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.slices < 4 or args.runs < 1:
        parser.error("--slices must be >= 4 and --runs >= 1")

    scratch = Path(tempfile.mkdtemp(prefix="mydfs-bench-", dir=args.dir))
    payload = os.urandom(PAYLOAD_CAPACITY)
    results: dict[str, list[float]] = {"dd": [], "write1": [], "write4": [], "read": []}
    try:
        # Warm-up: one small round of each, not counted.
        dd_dsync(scratch / "warm.dd", 4)
        volume_writes(scratch / "warm.vol", 4, payload)
        # Every file is kept until all write runs are done, so that every write lands on blocks
        # this run has not used before (deleting and rewriting would reuse warm blocks).
        volumes: list[Path] = []
        for run in range(args.runs):
            vol = scratch / f"run{run}.vol"
            vol4 = scratch / f"run{run}-4.vol"
            order = ["dd", "vol"] if run % 2 == 0 else ["vol", "dd"]
            for what in order:
                if what == "dd":
                    results["dd"].append(dd_dsync(scratch / f"run{run}.dd", args.slices))
                else:
                    results["write1"].append(volume_writes(vol, args.slices, payload))
            results["write4"].append(volume_writes(vol4, args.slices, payload, writers=4))
            volumes.append(vol)
            print(
                f"run {run + 1}/{args.runs}: dd {results['dd'][-1]:.0f}  "
                f"write {results['write1'][-1]:.0f}  write-x4 {results['write4'][-1]:.0f} MB/s",
                file=sys.stderr,
            )
        for vol in volumes:
            results["read"].append(volume_reads(vol, args.read_passes))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    s = {k: _summary(v) for k, v in results.items()}
    ratio_write = s["write1"]["median"] / s["dd"]["median"]
    ratio_write4 = s["write4"]["median"] / s["dd"]["median"]
    print(f"slice store bench: {args.slices} x 4 MiB per run, {args.runs} runs, fresh files")
    print(f"  disk limit  dd bs=4M oflag=dsync, fresh file    {_fmt(s['dd'])}")
    print(
        f"  slice write, 1 writer, each durable (payload)  {_fmt(s['write1'])}  "
        f"= {ratio_write:.2f} x dd  (goal >= 0.80)"
    )
    print(
        f"  slice write, 4 writers, group commit          {_fmt(s['write4'])}  "
        f"= {ratio_write4:.2f} x dd"
    )
    print(
        f"  cached whole-slice read, CRC-checked          {_fmt(s['read'])}  "
        f"= {s['read']['median'] / 1000:.2f} GB/s  (goal >= 1 GB/s)"
    )
    if args.json:
        doc = {"slices": args.slices, "runs": args.runs, "figures": s, "raw": results}
        doc["ratio_write_to_dd"] = ratio_write
        args.json.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
