"""Metadata operations: stat of a file and listing of a directory, ops/s with p50/p99.

Setup (not timed): ``--meta-files`` one-byte files spread over ``--meta-dirs`` directories on
each system. Then, at each client count, every repetition stats random files and lists random
directories (each holds meta-files / meta-dirs entries). On mydfs these are tracker requests;
on SeaweedFS, filer requests (``?metadata=true`` and a JSON listing). The limit is the same loop
against the null HTTP server, which answers a listing of the same number of entries.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

from mydfs.bench.figures import Figure, Sample
from mydfs.bench.suite import Context, Workload, close_all, register, run_ops
from mydfs.bench.systems import NullSystem, Session, System
from mydfs.bench.workloads.common import ops_limit


class Metadata(Workload):
    name = "meta"
    order = 40
    description = "tracker metadata operations: stat and listdir, ops/s with p50/p99 latency"

    def _dir(self, ctx: Context, system: System, d: int) -> str:
        return ctx.path(self.name, system.key, f"d{d:03d}")

    def _file(self, ctx: Context, system: System, i: int) -> str:
        return f"{self._dir(ctx, system, i % _dirs(ctx))}/f{i:06d}"

    async def run(self, ctx: Context) -> list[Figure]:
        files, dirs = ctx.settings.meta_files, _dirs(ctx)
        if isinstance(ctx.null, NullSystem):
            ctx.null.list_entries = files // dirs
        for system in ctx.compared:
            await self._create(ctx, system, files, dirs)
        figures: list[Figure] = []
        for n in ctx.settings.clients:
            figures += await self._at(ctx, n, files, dirs)
        return figures

    async def _create(self, ctx: Context, system: System, files: int, dirs: int) -> None:
        sessions = await ctx.sessions(system, 16)

        async def create(session: Session, i: int) -> int:
            await session.put(self._file(ctx, system, i), b"x")
            return 1

        try:
            got = await run_ops(sessions, create, files, 600.0)
        finally:
            await close_all(sessions)
        ctx.log(
            f"   meta: {got.sample.ops} files in {dirs} directories on {system.label} "
            f"({got.sample.value or 0:,.0f} creates/s at N=16)"
        )
        if got.sample.errors:
            raise RuntimeError(f"{system.label}: creating files failed: {got.sample.first_error}")

    async def _at(self, ctx: Context, n: int, files: int, dirs: int) -> list[Figure]:
        s = ctx.settings
        systems = ctx.systems(with_null=True)
        sessions: dict[str, list[Session]] = {}

        def runner(op: str) -> Callable[[System, int], Awaitable[Sample]]:
            async def body(system: System, rep: int) -> Sample:
                rng = random.Random(rep)
                span = files if op == "stat" else dirs
                picks = [rng.randrange(span) for _ in range(s.small_ops)]

                async def one(session: Session, i: int) -> int:
                    if op == "stat":
                        await session.stat(self._file(ctx, system, picks[i]))
                    else:
                        await session.listdir(self._dir(ctx, system, picks[i]))
                    return 0

                got = await run_ops(sessions[system.key], one, s.small_ops, s.op_seconds)
                if rep >= 0:
                    v = got.sample
                    rate = "failed" if v.value is None else f"{v.value:,.0f} ops/s"
                    err = f", {v.errors} errors ({v.first_error})" if v.errors else ""
                    ctx.log(f"   meta {op} N={n} rep {rep + 1} {system.label}: {rate}{err}")
                return got.sample

            return body

        results: dict[str, dict[str, list[Sample]]] = {}
        try:
            for system in systems:
                sessions[system.key] = await ctx.sessions(system, n)
            for op in ("stat", "listdir"):
                body = runner(op)
                if s.warmup:
                    for system in systems:
                        await body(system, -1)
                results[op] = await ctx.alternate(systems, body)
        finally:
            for group in sessions.values():
                await close_all(group)
        figures = []
        for op, samples in results.items():
            null = ctx.result(ctx.null, samples, op, 0)
            figures.append(
                Figure(
                    workload=self.name,
                    op=op,
                    clients=n,
                    unit="ops/s",
                    higher_is_better=True,
                    mydfs=ctx.result(ctx.mydfs, samples, op, 0),
                    peer=ctx.result(ctx.peer, samples, op, 0),
                    limit=ops_limit(ctx, null, op, 0, n),
                    notes=[f"{files} files in {dirs} directories of {files // dirs} entries"],
                )
            )
        return figures


def _dirs(ctx: Context) -> int:
    return max(1, min(ctx.settings.meta_dirs, ctx.settings.meta_files))


register(Metadata())
