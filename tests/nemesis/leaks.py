"""The nemesis' leak check, run in the client namespace once the workload has ended: ask the
tracker for ``GET /space`` (``mydfs df``) until the collector and the reclaimer have caught up,
and write what was seen to ``--out`` (JSON).

With no upload or edit in progress, every allocated slot (live, 301 or pending) must be reached
from a live file or a trash record: ``unaccounted = live + moved + pending - files - trash`` is
what nothing references (orphans not freed yet, or slots leaked for good). The check waits
(bounded) until it is 0 with a complete survey: the orphans of interrupted uploads and edits
need the collector's grace period and intent TTL to pass first (``docs/collector.md``). What it
saw last is the verdict: ``leaked`` is the unaccounted count when the time ran out, 0 when the
cluster caught up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from mydfs.bench.edits import parse_counter
from mydfs.client import AsyncClient

#: The tracker's compaction counters, reported beside the verdict (that compaction ran).
COMPACTION = (
    "mydfs_tracker_redirects_released_total",
    'mydfs_tracker_compactions_total{outcome="committed"}',
    'mydfs_tracker_compactions_total{outcome="aborted"}',
    'mydfs_tracker_compactions_total{outcome="stale"}',
)


def compaction(tracker: str) -> dict[str, float] | str:
    """The compaction counters from the tracker's ``/metrics``."""
    try:
        with urllib.request.urlopen(tracker + "/metrics", timeout=10) as resp:
            page = resp.read().decode()
    except OSError as exc:
        return repr(exc)
    return {name: parse_counter(page, name) for name in COMPACTION}


def unaccounted(cluster: dict[str, Any]) -> int:
    """Allocated slots that neither a live file nor a trash record reaches."""
    used = sum(cluster[k]["slots"] for k in ("live", "moved", "pending"))
    return used - cluster["files"]["slots"] - cluster["trash"]["slots"]


async def watch(tracker: str, timeout: float, interval: float) -> dict[str, Any]:
    start = time.monotonic()
    samples: list[dict[str, Any]] = []
    last: dict[str, Any] | None = None
    async with AsyncClient(tracker, deadline=30.0) as sdk:
        while True:
            try:
                last = await sdk.df()
                left = unaccounted(last["cluster"])
                samples.append({"at": round(time.monotonic() - start, 1), "unaccounted": left,
                                "orphan": last["cluster"]["orphan"]["slots"],
                                "complete": last["complete"]})  # fmt: skip
                if last["complete"] and left == 0:
                    break
            except Exception as exc:  # a slow tracker: note it and ask again
                samples.append({"at": round(time.monotonic() - start, 1), "error": repr(exc)})
            if time.monotonic() - start > timeout:
                break
            await asyncio.sleep(interval)
    caught_up = last is not None and last["complete"] and unaccounted(last["cluster"]) == 0
    return {
        "caught_up": caught_up,
        "seconds": round(time.monotonic() - start, 1),
        "leaked": None if last is None else unaccounted(last["cluster"]),
        "last": last,
        "samples": samples[-20:],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tracker", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--timeout", type=float, default=240.0)
    p.add_argument("--interval", type=float, default=3.0)
    args = p.parse_args(argv)
    result = asyncio.run(watch(args.tracker, args.timeout, args.interval))
    result["compaction"] = compaction(args.tracker)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
