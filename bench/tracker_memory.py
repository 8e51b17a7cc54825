"""Memory per file of the tracker's namespace, and what a checkpoint of it costs.

    python -m mydfs.bench.tracker_memory [--files 1000000] [--per-dir 1000] [--tracemalloc]
                                         [--checkpoint] [--json OUT]

Builds the pure :class:`~mydfs.tracker.namespace.Namespace` the way live registrations do
(``PutFile`` edits through ``apply``) with realistic paths ``/data/d0042/f000123.bin``, each file
with a random 16-byte id, a size, a head location and a ``crc32c:`` hash. Reports:

* **RSS delta / files**: what the process really grew by, per file (allocator overhead included);
* with ``--tracemalloc``: bytes Python allocated per file (slower, run separately);
* with ``--checkpoint``: the snapshot pause (event loop blocked), the checkpoint write time and
  size, and the time to load it back (start-up before log replay).

GFS kept under 64 bytes per file in its master; the figure to watch here is how far a Python
tracker is from that.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import orjson

from mydfs.common.location import Location
from mydfs.tracker.checkpoint import read_checkpoint, write_checkpoint
from mydfs.tracker.namespace import Namespace
from mydfs.tracker.records import FileEntry, PutFile


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build(files: int, per_dir: int, seed: int = 42) -> Namespace:
    rnd = random.Random(seed)
    ns = Namespace()
    now = 1_700_000_000.0
    for i in range(files):
        path = f"/data/d{i // per_dir:04d}/f{i % per_dir:06d}.bin"
        size = rnd.randint(1, 64 << 20)
        slices = (size + 4_190_207) // 4_190_208
        entry = FileEntry(
            file_id=rnd.randbytes(16).hex(),
            size=size,
            slices=slices,
            head=Location(rnd.randint(1, 8), rnd.randint(0, 1 << 20)),
            hash=f"crc32c:{rnd.getrandbits(32):08x}",
            ctime=now + i,
            mtime=now + i,
            version=1,
        )
        ns.apply(PutFile(path, entry))
    return ns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mydfs.bench.tracker_memory", description=__doc__
    )
    parser.add_argument("--files", type=int, default=1_000_000, help="files (1,000,000)")
    parser.add_argument("--per-dir", type=int, default=1000, help="files per directory (1000)")
    parser.add_argument("--tracemalloc", action="store_true", help="also count with tracemalloc")
    parser.add_argument("--checkpoint", action="store_true", help="also time a checkpoint")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.files < 1 or args.per_dir < 1:
        parser.error("--files and --per-dir must be >= 1")

    out: dict[str, Any] = {"files": args.files, "per_dir": args.per_dir}
    gc.collect()
    if args.tracemalloc:
        tracemalloc.start()
    before = rss_bytes()
    started = time.perf_counter()
    ns = build(args.files, args.per_dir)
    out["build_seconds"] = round(time.perf_counter() - started, 2)
    gc.collect()
    out["rss_bytes_per_file"] = round((rss_bytes() - before) / args.files, 1)
    if args.tracemalloc:
        current, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["tracemalloc_bytes_per_file"] = round(current / args.files, 1)
    out["directories"] = ns.directories
    print(
        f"{args.files:,} files in {ns.directories:,} directories, built in {out['build_seconds']} s"
    )
    note = " (inflated by tracemalloc's own tables)" if args.tracemalloc else ""
    print(f"RSS delta per file:        {out['rss_bytes_per_file']} bytes{note}")
    if args.tracemalloc:
        print(f"tracemalloc per file:      {out['tracemalloc_bytes_per_file']} bytes")

    if args.checkpoint:
        scratch = Path(tempfile.mkdtemp(prefix="mydfs-bench-tracker-", dir=args.dir))
        try:
            started = time.perf_counter()
            snap = ns.snapshot()
            out["snapshot_pause_seconds"] = round(time.perf_counter() - started, 3)
            started = time.perf_counter()
            path = write_checkpoint(scratch, args.files, snap, time.time())
            out["checkpoint_write_seconds"] = round(time.perf_counter() - started, 2)
            out["checkpoint_bytes"] = path.stat().st_size
            del snap
            started = time.perf_counter()
            _, loaded = read_checkpoint(path)
            out["checkpoint_load_seconds"] = round(time.perf_counter() - started, 2)
            assert loaded.files == ns.files
            print(f"snapshot pause:            {out['snapshot_pause_seconds']} s")
            print(
                f"checkpoint write:          {out['checkpoint_write_seconds']} s, "
                f"{out['checkpoint_bytes'] / 1e6:.1f} MB "
                f"({out['checkpoint_bytes'] / args.files:.0f} bytes per file)"
            )
            print(f"checkpoint load:           {out['checkpoint_load_seconds']} s")
        finally:
            for item in scratch.iterdir():
                item.unlink()
            scratch.rmdir()
    if args.json:
        args.json.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
