"""Large files: write and read ``--large-size`` bytes (1 GiB) cut in 4 MiB slices (chunks).

GFS section 6.1 style, with the total fixed so that the disk is not filled: at N = 1 one client
writes one file of the whole size; at N = 16, 16 clients each write their own file of 1/16 of it
at the same time. Then each client reads back what it wrote. MB/s = all bytes / wall time.

Nothing is deleted until the workload ends, so every write lands on blocks this run has not
written before (this kind of disk is several times faster on blocks written before). The limits
are measured in turn with the systems, each repetition, on the same number of bytes: for writes
``dd bs=4M oflag=dsync`` into a new file (kept until the workload ends), divided by 3 (three
copies share one disk); for reads one loopback TCP stream (reads come from the page cache).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics

from mydfs.bench.figures import Figure, Limit, Sample
from mydfs.bench.limits import disk_dsync_write, loopback_tcp
from mydfs.bench.suite import Context, Probe, Workload, close_all, register, run_ops
from mydfs.bench.systems import Session, System


class LargeFiles(Workload):
    name = "large"
    order = 10
    description = (
        "large-file write and read: 1 GiB (--large-size) in 4 MiB slices, one file per client, MB/s"
    )

    async def run(self, ctx: Context) -> list[Figure]:
        s = ctx.settings
        systems = ctx.compared
        data = os.urandom(s.large_bytes)
        figures: list[Figure] = []
        try:
            for n in s.clients:
                figures += await self._at(ctx, systems, data, n)
        finally:
            await self._cleanup(ctx, systems)
        return figures

    async def _at(self, ctx: Context, systems: list[System], data: bytes, n: int) -> list[Figure]:
        s = ctx.settings
        per = len(data) // n
        parts = [data] if n == 1 else [data[i * per : (i + 1) * per] for i in range(n)]
        sessions: dict[str, list[Session]] = {}

        def path(system: System, rep: object, i: int) -> str:
            return ctx.path(self.name, system.key, f"n{n}", f"r{rep}", f"c{i:02d}.bin")

        async def write(system: System, rep: object, chunk: int | None = None) -> Sample:
            async def op(session: Session, i: int) -> int:
                body = parts[i] if chunk is None else parts[i][:chunk]
                await session.put(path(system, rep, i), body)
                return len(body)

            got = await run_ops(sessions[system.key], op, n, 3600.0, max_errors=1)
            return _mbs(got.sample)

        async def read(system: System, rep: object, chunk: int | None = None) -> Sample:
            async def op(session: Session, i: int) -> int:
                want = len(parts[i]) if chunk is None else min(chunk, len(parts[i]))
                got = await session.get(path(system, rep, i), want)
                if got != want:
                    raise RuntimeError(f"read {got} bytes of {want}")
                return got

            got = await run_ops(sessions[system.key], op, n, 3600.0, max_errors=1)
            return _mbs(got.sample)

        try:
            for system in systems:
                sessions[system.key] = await ctx.sessions(system, n)
            if s.warmup:
                warm = min(16 << 20, max(1 << 20, per // 4))
                for system in systems:
                    await write(system, "warm", warm)
                    await read(system, "warm", warm)

            async def timed(op: str, member: System | Probe, rep: int) -> Sample:
                if isinstance(member, Probe):
                    sample = await self._limit(ctx, op, len(data), rep)
                else:
                    sample = await (write if op == "write" else read)(member, rep)
                rate = "failed" if sample.value is None else f"{sample.value:,.0f} MB/s"
                err = f" ({sample.first_error})" if sample.first_error else ""
                ctx.log(f"   large {op} N={n} rep {rep + 1} {member.label}: {rate}{err}")
                return sample

            with_disk: list[System | Probe] = [*systems, Probe("limit", "limit: dd oflag=dsync")]
            with_tcp: list[System | Probe] = [*systems, Probe("limit", "limit: loopback TCP")]
            writes = await ctx.alternate(with_disk, lambda m, r: timed("write", m, r))
            reads = await ctx.alternate(with_tcp, lambda m, r: timed("read", m, r))
        finally:
            for group in sessions.values():
                await close_all(group)
        mib = len(data) >> 20
        out = []
        for op, samples in (("write", writes), ("read", reads)):
            values = [x.value for x in samples["limit"] if x.value is not None]
            limit = None
            if values and op == "write":
                limit = Limit(
                    value=statistics.median(values) / 3,
                    min=min(values) / 3,
                    max=max(values) / 3,
                    what=f"disk: dd bs=4M oflag=dsync of {mib} MiB into a new file, "
                    "in turn with the systems, / 3 copies on one disk",
                    measured={"disk_MBps": values, "copies": 3},
                    label="disk/3",
                )
            elif values:
                limit = Limit(
                    value=statistics.median(values),
                    min=min(values),
                    max=max(values),
                    what=f"loopback TCP: one stream of {mib} MiB over 127.0.0.1, 4 MiB sends, "
                    "in turn with the systems",
                    measured={"samples": values},
                    label="loopback TCP",
                )
            figure = Figure(
                workload=self.name,
                op=op,
                clients=n,
                unit="MB/s",
                higher_is_better=True,
                mydfs=ctx.result(ctx.mydfs, samples, op, per),
                peer=ctx.result(ctx.peer, samples, op, per),
                limit=limit,
                notes=[f"{n} file(s) of {per:,} bytes per repetition"],
            )
            out.append(figure)
        return out

    async def _limit(self, ctx: Context, op: str, total: int, rep: int) -> Sample:
        """The limit for ``total`` bytes, measured now: dd into a fresh file (kept until the
        workload ends, so that no later write reuses its blocks) or one loopback stream."""
        if op == "write":
            folder = ctx.scratch / "large-limit"
            folder.mkdir(exist_ok=True)
            slices = max(1, total // (4 << 20))
            mbs = await asyncio.to_thread(disk_dsync_write, folder, slices)
            return Sample(mbs, ops=slices, bytes=slices * (4 << 20))
        mbs = await asyncio.to_thread(loopback_tcp, total)
        return Sample(mbs, ops=1, bytes=total)

    async def _cleanup(self, ctx: Context, systems: list[System]) -> None:
        """Free the disk space for the workloads after this one (not timed)."""
        shutil.rmtree(ctx.scratch / "large-limit", ignore_errors=True)
        for system in systems:
            try:
                session = await system.session()
            except Exception:
                continue
            try:
                paths = [
                    ctx.path(self.name, system.key, f"n{n}", f"r{rep}", f"c{i:02d}.bin")
                    for n in ctx.settings.clients
                    for rep in ["warm", *range(ctx.settings.runs)]
                    for i in range(n)
                ]
                await session.delete_tree(ctx.path(self.name, system.key), paths)
            except Exception as exc:
                ctx.log(f"   cleanup of {system.label} failed: {exc}")
            finally:
                await session.close()


def _mbs(sample: Sample) -> Sample:
    """The sample with its value turned into MB/s (None if any operation failed)."""
    ok = sample.errors == 0 and sample.ops > 0 and sample.seconds > 0
    sample.value = sample.bytes / sample.seconds / 1e6 if ok else None
    return sample


register(LargeFiles())
