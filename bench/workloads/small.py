"""Small files: write then read many files of one size (64 KiB, 1 KiB), ops/s with p50/p99.

At each client count N, every repetition writes up to ``--small-ops`` new files (each client
one at a time, ``--op-seconds`` at most), then reads back, in random order, the files that
repetition wrote. The same loop runs against mydfs, SeaweedFS (through its filer) and the null
HTTP server, whose rate is the limit (lowered, for writes, by the disk's bandwidth for 3 copies
and, for one client, by one durable 4 KiB append per write). When SeaweedFS runs, its fsync
variant (the volume-server API with ``?fsync=true``, ``bench/seaweed.py``) runs in the same
alternation, and each figure gets a second row, ``<op>, peer fsync``: mydfs beside that
variant.
"""

from __future__ import annotations

import os
import random

from mydfs.bench.figures import Figure, Sample
from mydfs.bench.suite import Context, OpRun, Workload, close_all, register, run_ops
from mydfs.bench.systems import Session, System
from mydfs.bench.workloads.common import ops_limit


class SmallFiles(Workload):
    def __init__(self, name: str, size: int, order: int) -> None:
        self.name = name
        self.size = size
        self.order = order
        self.description = (
            f"small-file write and read: files of {size:,} bytes, ops/s with p50/p99 latency"
        )

    def _path(self, ctx: Context, system: System, n: int, rep: object, i: int) -> str:
        return ctx.path(self.name, system.key, f"n{n}", f"r{rep}", f"d{i // 200:03d}", f"f{i:06d}")

    async def run(self, ctx: Context) -> list[Figure]:
        data = os.urandom(self.size)
        figures: list[Figure] = []
        for n in ctx.settings.clients:
            figures += await self._at(ctx, n, data)
        return figures

    async def _at(self, ctx: Context, n: int, data: bytes) -> list[Figure]:
        s = ctx.settings
        systems = ctx.systems(with_null=True)
        if ctx.peer_fsync is not None:
            systems.insert(len(ctx.compared), ctx.peer_fsync)
        sessions: dict[str, list[Session]] = {}
        written: dict[tuple[str, int], list[int]] = {}

        async def write(system: System, rep: int, count: int) -> OpRun:
            async def op(session: Session, i: int) -> int:
                await session.put(self._path(ctx, system, n, rep, i), data)
                return self.size

            got = await run_ops(sessions[system.key], op, count, s.op_seconds)
            written[(system.key, rep)] = got.done
            return got

        async def read(system: System, rep: int, count: int) -> OpRun:
            files = list(written.get((system.key, rep), []))
            random.Random(rep).shuffle(files)
            if not files:
                return OpRun(Sample(None, first_error="nothing was written to read"))

            async def op(session: Session, i: int) -> int:
                j = files[i % len(files)]
                return await session.get(self._path(ctx, system, n, rep, j), self.size)

            return await run_ops(sessions[system.key], op, count, s.op_seconds)

        async def timed_write(system: System, rep: int) -> Sample:
            got = await write(system, rep, s.small_ops)
            self._log(ctx, system, "write", n, rep, got.sample)
            return got.sample

        async def timed_read(system: System, rep: int) -> Sample:
            got = await read(system, rep, s.small_ops)
            self._log(ctx, system, "read", n, rep, got.sample)
            return got.sample

        try:
            for system in systems:
                sessions[system.key] = await ctx.sessions(system, n)
            if s.warmup:
                warm = max(4, min(50, s.small_ops // 10))
                for system in systems:
                    await write(system, -1, warm)
                    await read(system, -1, warm)
            writes = await ctx.alternate(systems, timed_write)
            reads = await ctx.alternate(systems, timed_read)
        finally:
            for group in sessions.values():
                await close_all(group)
        figures = []
        for op, samples in (("write", writes), ("read", reads)):
            null = ctx.result(ctx.null, samples, op, self.size)
            figures.append(
                Figure(
                    workload=self.name,
                    op=op,
                    clients=n,
                    unit="ops/s",
                    higher_is_better=True,
                    mydfs=ctx.result(ctx.mydfs, samples, op, self.size),
                    peer=ctx.result(ctx.peer, samples, op, self.size),
                    limit=ops_limit(ctx, null, op, self.size, n),
                )
            )
            fsync = ctx.result(ctx.peer_fsync, samples, op, self.size)
            if fsync is not None:
                figures.append(
                    Figure(
                        workload=self.name,
                        op=f"{op}, peer fsync",
                        clients=n,
                        unit="ops/s",
                        higher_is_better=True,
                        mydfs=ctx.result(ctx.mydfs, samples, op, self.size),
                        peer=fsync,
                        limit=ops_limit(ctx, null, op, self.size, n),
                        notes=["peer: SeaweedFS through the volume-server API, ?fsync=true"],
                    )
                )
        return figures

    def _log(self, ctx: Context, system: System, op: str, n: int, rep: int, s: Sample) -> None:
        rate = "failed" if s.value is None else f"{s.value:,.0f} ops/s"
        lat = "" if s.p50_ms is None else f", p50 {s.p50_ms:.1f} ms, p99 {s.p99_ms:.1f} ms"
        err = f", {s.errors} errors ({s.first_error})" if s.errors else ""
        ctx.log(f"   {self.name} {op} N={n} rep {rep + 1} {system.label}: {rate}{lat}{err}")


register(SmallFiles("small-64k", 64 << 10, order=20))
register(SmallFiles("small-1k", 1 << 10, order=30))
