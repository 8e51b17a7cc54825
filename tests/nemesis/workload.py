"""The nemesis workload: several SDK clients doing puts (overwrites), reads and deletes, each
operation recorded as one JSON line (op, client, seq, path, start/end on the machine's
monotonic clock, result, error, and for reads what the bytes were: :func:`checker.classify`).

Run as a program inside the client namespace (``ip netns exec NS python workload.py ...``):

* ``run``: ``--clients`` clients for ``--seconds``; client c owns paths ``/nem/c<c>/f<k>``
  (it is their only writer, one operation at a time) and reads any client's paths;
* ``final``: read every path of the history once, then list their folders (the final state).

Contents come from :func:`checker.content`, so every read maps back to the write that made it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import IO, Any

from checker import classify, content

from mydfs.client import AsyncClient, NotFound

#: Sizes of the files written: mostly small (one slice), some of two slices. Half of each
#: kind have one fixed size, so a read answered from another file's chain or slot cannot be
#: told apart by its length alone (only by its bytes, which the checker compares).
SMALL = (200, 64 * 1024)
LARGE = (4_300_000, 6_000_000)
SMALL_FIXED, LARGE_FIXED = 4096, 5_000_000


def size_of(rng: random.Random, large: bool) -> int:
    if rng.random() < 0.5:
        return LARGE_FIXED if large else SMALL_FIXED
    return rng.randint(*(LARGE if large else SMALL))


def path_of(client: int, k: int) -> str:
    return f"/nem/c{client}/f{k}"


class Recorder:
    """Appends one JSON line per finished operation, flushed at once."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def record(self, op: dict[str, Any]) -> None:
        self.out.write(json.dumps(op, separators=(",", ":")) + "\n")
        self.out.flush()


async def _timed(rec: Recorder, op: dict[str, Any], call: Any) -> None:
    op["start"] = time.monotonic()
    try:
        data = await call
        op["result"] = "ok"
        if op["op"] in ("read", "final"):
            op["got"] = classify(data)
    except NotFound as exc:
        op["result"] = "not_found"
        op["error"] = type(exc).__name__
    except Exception as exc:  # every other failure: the outcome is unknown
        op["result"] = "error"
        op["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    op["end"] = time.monotonic()
    rec.record(op)


async def client_loop(
    c: int, args: argparse.Namespace, rec: Recorder, stop_at: float, rng: random.Random
) -> None:
    async with AsyncClient(args.tracker, deadline=args.op_deadline, window=4) as sdk:
        seq = 0
        while time.monotonic() < stop_at:
            seq += 1
            roll = rng.random()
            op: dict[str, Any] = {"client": c, "seq": seq}
            if roll < args.put_share:
                path = path_of(c, rng.randrange(args.paths))
                size = size_of(rng, rng.random() < args.large_share)
                op.update(op="put", path=path, size=size)
                await _timed(rec, op, sdk.put(path, content(c, seq, path, size), overwrite=True))
            elif roll < args.put_share + args.delete_share:
                path = path_of(c, rng.randrange(args.paths))
                op.update(op="delete", path=path)
                await _timed(rec, op, sdk.delete(path))
            else:
                path = path_of(rng.randrange(args.clients), rng.randrange(args.paths))
                op.update(op="read", path=path)
                await _timed(rec, op, sdk.read(path))
            await asyncio.sleep(rng.uniform(0, args.think))


async def run(args: argparse.Namespace, rec: Recorder) -> None:
    stop_at = time.monotonic() + args.seconds
    rngs = [random.Random(f"{args.seed}:{c}") for c in range(args.clients)]
    await asyncio.gather(
        *(client_loop(c, args, rec, stop_at, rngs[c]) for c in range(args.clients))
    )


async def final(args: argparse.Namespace, rec: Recorder) -> None:
    paths = sorted(
        {json.loads(line)["path"] for line in Path(args.history).read_text().splitlines() if line}
    )
    async with AsyncClient(args.tracker, deadline=args.op_deadline) as sdk:
        for path in paths:
            await _timed(rec, {"op": "final", "client": -1, "seq": 0, "path": path}, sdk.read(path))
        for folder in sorted({path.rsplit("/", 1)[0] for path in paths}):
            op = {"op": "list", "client": -1, "seq": 0, "path": folder, "start": time.monotonic()}
            try:
                entries = await sdk.listdir(folder)
                op.update(result="ok", names=sorted(e.name for e in entries))
            except NotFound:
                op.update(result="ok", names=[])
            except Exception as exc:
                op.update(result="error", error=f"{type(exc).__name__}: {str(exc)[:200]}")
            op["end"] = time.monotonic()
            rec.record(op)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("mode", choices=("run", "final"))
    p.add_argument("--tracker", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--history", help="final: the history whose paths are read")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--paths", type=int, default=6, help="paths per client")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--seed", default="1")
    p.add_argument("--op-deadline", type=float, default=10.0)
    p.add_argument("--put-share", type=float, default=0.4)
    p.add_argument("--delete-share", type=float, default=0.1)
    p.add_argument("--large-share", type=float, default=0.05)
    p.add_argument("--think", type=float, default=0.05)
    args = p.parse_args(argv)
    with open(args.out, "a") as out:
        rec = Recorder(out)
        asyncio.run(run(args, rec) if args.mode == "run" else final(args, rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
