"""The nemesis workload: several SDK clients doing puts (overwrites), in-place edits (writes
at offsets, appends, truncates, inserts, cuts), deletes and reads (whole or ranges), each
operation recorded as one JSON line (op, client, seq, path, its arguments, start/end on the
machine's monotonic clock, result, error; for reads what the bytes were: :func:`model.classify`).

Run as a program inside the client namespace (``ip netns exec NS python workload.py ...``):

* ``run``: ``--clients`` clients for ``--seconds``; client c owns paths ``/nem/c<c>/f<k>``
  (it is their only writer, one operation at a time) and reads any client's paths;
* ``final``: read every path of the history once, then list their folders (the final state).

The bytes an operation brings come from :func:`model.content`, so the checker can replay every
path's versions. The owner never retries blindly: when an operation fails in a way that is not
a clean refusal (a timeout, ``OutcomeUnknown``, unavailability), it waits a moment and then
stats the path until it gets an answer: the version advanced with a new mtime means the
operation was applied; the version unchanged, or advanced with the mtime unchanged (a 301
compaction, which keeps the mtime: ``docs/space.md``), means it was not (``applied``,
``resolved_at``, ``after`` in the record);
anything else, or no answer within ``--resolve-for`` seconds, leaves the path to the checker as
it is and the owner stops writing it. Refusals are stat-checked too (they must change nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from model import EDITS, SLICE, classify, content

from mydfs.client import AsyncClient, NotFound
from mydfs.common.errors import AlreadyExists, Conflict, InvalidArgument

#: Errors after which the operation surely did not happen (the checker verifies it).
REFUSALS = (Conflict, InvalidArgument, AlreadyExists)
#: Small files: a few KiB (half of them one fixed size, so a read answered from another file
#: cannot be told apart by its length alone, only by its bytes); large ones just over a slice.
SMALL = (200, 12 * 1024)
SMALL_FIXED = 4096
#: A file larger than this (and not a large one) is only shrunk.
SMALL_CAP = 48 * 1024


def path_of(client: int, k: int) -> str:
    return f"/nem/c{client}/f{k}"


class Recorder:
    """Appends one JSON line per finished operation, flushed at once."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def record(self, op: dict[str, Any]) -> None:
        self.out.write(json.dumps(op, separators=(",", ":")) + "\n")
        self.out.flush()


@dataclass
class Owned:
    """The owner's view of one of its paths."""

    exists: bool = False
    size: int = 0
    file_id: str | None = None
    version: int = 0
    mtime: float = 0.0
    stuck: bool = False

    def set(self, info: Any) -> None:
        if info is None:
            self.exists, self.size, self.file_id, self.version = False, 0, None, 0
        else:
            self.exists, self.size = True, int(info.size)
            self.file_id, self.version = str(info.file_id), int(info.version)
            self.mtime = float(info.mtime)


def _entry(info: Any) -> dict[str, Any]:
    return {"file_id": info.file_id, "version": info.version, "size": info.size}


def choose(rng: random.Random, st: Owned, large_share: float) -> dict[str, Any]:
    """The next write operation on a path in state ``st``: its kind and arguments."""
    if not st.exists:
        size = SLICE + rng.randint(1, 8192) if rng.random() < large_share else _small(rng)
        return {"op": "put", "size": size}
    size = st.size
    large = size > SLICE - 8192
    if large:
        kinds = {"write": 25, "insert": 10, "cut": 15, "append": 10, "truncate": 30, "put": 10}
    elif size > SMALL_CAP:
        kinds = {"cut": 30, "truncate": 50, "put": 20}
    else:
        kinds = {"put": 14, "write": 22, "append": 18, "truncate": 10, "insert": 16, "cut": 12,
                 "delete": 8}  # fmt: skip
    kind = rng.choices(list(kinds), weights=list(kinds.values()))[0]

    def offset(upto: int) -> int:
        if large:
            return max(0, min(upto, SLICE + rng.randint(-3000, 3000)))
        return rng.randint(0, max(0, upto))

    n = rng.randint(1, 3000) if rng.random() < 0.9 else rng.randint(3001, 16384)
    if kind == "put":
        return {"op": "put", "size": _small(rng)}
    if kind == "delete":
        return {"op": "delete"}
    if kind == "append":
        return {"op": "append", "n": n}
    if kind == "write":
        return {"op": "write", "offset": offset(size + (512 if rng.random() < 0.2 else 0)), "n": n}
    if kind == "insert":
        return {"op": "insert", "offset": offset(size), "n": n}
    if kind == "truncate":
        if large or size > SMALL_CAP:
            return {"op": "truncate", "size": rng.randint(0, 8192)}
        return {"op": "truncate", "size": rng.randint(0, size + 2048)}
    if size == 0:
        return {"op": "append", "n": n}
    off = offset(size - 1)
    return {"op": "cut", "offset": off, "length": rng.randint(1, min(size - off, 4096))}


def _small(rng: random.Random) -> int:
    return SMALL_FIXED if rng.random() < 0.5 else rng.randint(*SMALL)


def _call(sdk: AsyncClient, c: int, seq: int, path: str, op: dict[str, Any]) -> Any:
    kind = op["op"]
    data = content(c, seq, path, int(op.get("n", op.get("size", 0))))
    if kind == "put":
        return sdk.put(path, data, overwrite=True)
    if kind == "delete":
        return sdk.delete(path)
    if kind == "write":
        return sdk.write(path, op["offset"], data)
    if kind == "append":
        return sdk.append(path, data)
    if kind == "truncate":
        return sdk.truncate(path, op["size"])
    if kind == "insert":
        return sdk.insert(path, op["offset"], data)
    return sdk.cut(path, op["offset"], op["length"])


async def write_op(
    sdk: AsyncClient, args: argparse.Namespace, rec: Recorder, op: dict[str, Any], st: Owned
) -> None:
    """Run one write operation of the owner, resolve its outcome if it failed, record it."""
    c, seq, path = int(op["client"]), int(op["seq"]), str(op["path"])
    op["start"] = time.monotonic()
    clean = True
    try:
        got = await _call(sdk, c, seq, path, op)
        op["result"] = "ok"
    except NotFound as exc:
        op.update(result="not_found", error=type(exc).__name__)
    except REFUSALS as exc:
        op.update(result="refused", error=f"{type(exc).__name__}: {str(exc)[:200]}")
    except Exception as exc:  # every other failure: the outcome is unknown
        op.update(result="error", error=f"{type(exc).__name__}: {str(exc)[:200]}")
        clean = False
    op["end"] = time.monotonic()
    if op["result"] == "ok":
        if op["op"] == "append":
            op["landed"] = int(got)
            st.size += int(op["n"])
            st.version += 1
            await refresh(sdk, path, st)
        elif op["op"] == "delete":
            st.set(None)
        else:
            op["after"] = _entry(got)
            st.set(got)
    else:
        await resolve(sdk, args, op, st, clean)
    rec.record(op)


async def refresh(sdk: AsyncClient, path: str, st: Owned) -> None:
    """After an append (it answers only its offset): the entry's mtime, so that a later
    resolution can tell a compaction from an edit; left as it was when the stat fails."""
    try:
        info = await sdk.stat(path)
    except Exception:
        return
    if str(info.file_id) == st.file_id:
        st.set(info)


async def resolve(
    sdk: AsyncClient, args: argparse.Namespace, op: dict[str, Any], st: Owned, clean: bool
) -> None:
    """Was a failed operation applied? The path's stat against the owner's view."""
    if not clean:
        await asyncio.sleep(args.settle)  # let a decision in flight land before looking
    give_up = time.monotonic() + args.resolve_for
    while True:
        try:
            now: Any = await sdk.stat(op["path"])
            break
        except NotFound:
            now = None
            break
        except Exception:
            if time.monotonic() > give_up:
                op["applied"] = None
                st.stuck = True
                return
            await asyncio.sleep(0.5)
    op["resolved_at"] = time.monotonic()
    op["after"] = None if now is None else _entry(now)
    before = (st.file_id, st.version) if st.exists else None
    seen = None if now is None else (str(now.file_id), int(now.version))
    kind = op["op"]
    compacted = (
        seen is not None and before is not None and seen[0] == before[0]
        and seen[1] > before[1] and float(now.mtime) == st.mtime
    )  # fmt: skip
    if seen == before or compacted:  # a compaction alone changes the version, not the mtime
        op["applied"] = False
        st.set(now)
        return
    if kind == "delete":
        applied = seen is None
    elif kind == "put":
        number = 1 if before is None else before[1] + 1
        applied = (
            seen is not None and seen[1] >= number and (before is None or seen[0] != before[0])
        )
    else:  # a new mtime (compactions may have added versions too)
        applied = (
            kind in EDITS and seen is not None and before is not None
            and seen[0] == before[0] and seen[1] > before[1]
        )  # fmt: skip
    if applied:
        op["applied"] = True
        st.set(now)
    else:
        op.update(applied=None, resolution="inconsistent")
        st.stuck = True


async def read_op(
    sdk: AsyncClient, rec: Recorder, op: dict[str, Any], offset: int, length: int | None
) -> None:
    op.update(offset=offset, length=length, start=time.monotonic())
    try:
        data = await sdk.read(op["path"], offset, length)
        op.update(result="ok", got=classify(data))
    except NotFound as exc:
        op.update(result="not_found", error=type(exc).__name__)
    except Exception as exc:
        op.update(result="error", error=f"{type(exc).__name__}: {str(exc)[:200]}")
    op["end"] = time.monotonic()
    rec.record(op)


async def client_loop(
    c: int, args: argparse.Namespace, rec: Recorder, stop_at: float, rng: random.Random
) -> None:
    owned = [Owned() for _ in range(args.paths)]
    async with AsyncClient(args.tracker, deadline=args.op_deadline, window=4) as sdk:
        seq = 0
        while time.monotonic() < stop_at:
            seq += 1
            k = rng.randrange(args.paths)
            if rng.random() < args.write_share and not owned[k].stuck:
                op = {"client": c, "seq": seq, "path": path_of(c, k)}
                op.update(choose(rng, owned[k], args.large_share))
                await write_op(sdk, args, rec, op, owned[k])
            else:
                path = path_of(rng.randrange(args.clients), k)
                op = {"op": "read", "client": c, "seq": seq, "path": path}
                if rng.random() < 0.5:
                    await read_op(sdk, rec, op, 0, None)
                else:
                    near = rng.random() < 0.1
                    offset = SLICE - rng.randint(0, 4000) if near else rng.randint(0, 3000)
                    await read_op(sdk, rec, op, offset, rng.randint(1, 8192))
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
            await read_op(sdk, rec, {"op": "final", "client": -1, "seq": 0, "path": path}, 0, None)
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
    p.add_argument("--write-share", type=float, default=0.5)
    p.add_argument("--large-share", type=float, default=0.05, help="of the puts")
    p.add_argument("--think", type=float, default=0.05)
    p.add_argument("--settle", type=float, default=1.0, help="pause before resolving")
    p.add_argument("--resolve-for", type=float, default=90.0)
    args = p.parse_args(argv)
    with open(args.out, "a") as out:
        rec = Recorder(out)
        asyncio.run(run(args, rec) if args.mode == "run" else final(args, rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
