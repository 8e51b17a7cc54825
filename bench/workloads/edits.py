"""The edit workloads: overwrites, appends and inserts inside existing files (mydfs only).

* ``edit-4k``: 4 KiB overwrites at random offsets of one 256 MiB file, at every ``--clients``
  count: ops/s, p50/p99, and the bytes each edit wrote (new slices are whole: an overwrite
  rewrites the 4 MiB slice it falls in), as a write amplification over the 4 KiB asked.
* ``append-1k``: 1 KiB records appended by 16 clients to one file: records/s; afterwards the file
  must hold exactly the acknowledged records, each once, at the offset its append returned.
* ``overwrite-64m``: one 64 MiB overwrite in place beside a 64 MiB write of a new file, the two
  alternating in every repetition: MB/s each, and their ratio.
* ``insert-mid``: one 4 KiB insert at the middle of files of 64 MiB, 256 MiB and 1 GiB: the time
  of each (it should not grow with the file).

The bytes an edit wrote are read from the storage nodes' ``mydfs_storage_received_bytes``
counters before and after (payload of every sealed slice, counted once per slice; each slice is
stored on 3 nodes), so they include slices written by attempts retried after a lock conflict.
SeaweedFS has no equivalent of these edits: the figures carry no peer and no ratio to it.
"""

from __future__ import annotations

import abc
import os
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

from mydfs.bench.edits import (
    NO_PEER,
    RECORD,
    amplification,
    check_records,
    mib,
    received_bytes,
    record,
)
from mydfs.bench.figures import Figure, Limit, Result, Sample
from mydfs.bench.suite import Context, Probe, Workload, close_all, register, run_ops
from mydfs.bench.systems import MydfsSession, MydfsSystem, Session
from mydfs.bench.workloads.common import mydfs_only, ops_limit

if TYPE_CHECKING:
    from mydfs.client.aio import AsyncClient

VIA = (
    "mydfs AsyncClient {op}: edit grant, chain walk, new slices, prepare, tracker decision, commit"
)


def _client(session: Session) -> AsyncClient:
    return cast(MydfsSession, session).client


def _urls(system: MydfsSystem) -> list[str]:
    assert system.cluster is not None
    return [n.url for n in system.cluster.nodes()]


def _fmt(value: float | None, unit: str) -> str:
    return "failed" if value is None else f"{value:,.1f} {unit}"


async def _timed(body: Callable[[], Awaitable[object]], moved: int) -> Sample:
    """One operation, timed; a failure is a sample without a value."""
    started = time.perf_counter()
    try:
        await body()
    except Exception as exc:
        return Sample(None, errors=1, first_error=f"{type(exc).__name__}: {exc}"[:300])
    took = time.perf_counter() - started
    return Sample(moved / took / 1e6, ops=1, bytes=moved, seconds=took)


class EditWorkload(Workload):
    """An edit workload: runs on mydfs only and deletes the files it made afterwards."""

    async def run(self, ctx: Context) -> list[Figure]:
        system = ctx.mydfs
        if not isinstance(system, MydfsSystem):
            ctx.log(f"   {self.name}: skipped, mydfs is left out")
            return []
        made: list[str] = []
        try:
            return await self.edits(ctx, system, made)
        finally:
            try:
                session = await system.session()
                try:
                    await session.delete_tree(ctx.path(self.name), made)
                finally:
                    await session.close()
            except Exception as exc:
                ctx.log(f"   cleanup of {self.name} failed: {exc}")

    @abc.abstractmethod
    async def edits(self, ctx: Context, system: MydfsSystem, made: list[str]) -> list[Figure]:
        """The figures; every file made is added to ``made`` (deleted afterwards)."""

    def figure(
        self,
        op: str,
        clients: int,
        unit: str,
        mine: Result,
        limit: Limit | None,
        notes: list[str],
        higher_is_better: bool = True,
    ) -> Figure:
        return mydfs_only(self.name, op, clients, unit, mine, limit=limit, notes=notes,
                          peer_absent=NO_PEER, higher_is_better=higher_is_better)  # fmt: skip


class RandomOverwrites(EditWorkload):
    name = "edit-4k"
    order = 70
    description = (
        "4 KiB overwrites at random offsets of a 256 MiB file (mydfs only): ops/s, p50/p99, "
        "bytes written per edit"
    )

    async def edits(self, ctx: Context, system: MydfsSystem, made: list[str]) -> list[Figure]:
        s, e = ctx.settings, ctx.settings.edits
        path = ctx.path(self.name, "file.bin")
        setup = await system.session()
        try:
            made.append(path)
            await setup.put(path, os.urandom(e.file_bytes))
        finally:
            await setup.close()
        rng = random.Random(9)
        span = max(1, e.file_bytes - e.edit_bytes + 1)

        async def op(session: Session, i: int) -> int:
            await _client(session).write(path, rng.randrange(span), os.urandom(e.edit_bytes))
            return e.edit_bytes

        figures = []
        for n in s.clients:
            sessions = await ctx.sessions(system, n)
            samples: list[Sample] = []
            per_edit: list[float] = []
            try:
                if s.warmup:
                    await run_ops(sessions, op, n, 60.0)
                for rep in range(s.runs):
                    before = await received_bytes(_urls(system))
                    got = await run_ops(sessions, op, e.edit_ops, s.op_seconds)
                    written = await received_bytes(_urls(system)) - before
                    if got.sample.ops:
                        per_edit.append(written / got.sample.ops)
                    samples.append(got.sample)
                    ctx.log(
                        f"   edit-4k N={n} rep {rep + 1}: {_fmt(got.sample.value, 'ops/s')}, "
                        f"{written / max(1, got.sample.ops):,.0f} B written per edit"
                    )
            finally:
                await close_all(sessions)
            figures.append(self._figure(ctx, system, n, samples, per_edit))
        return figures

    def _figure(
        self, ctx: Context, system: MydfsSystem, n: int, samples: list[Sample], per: list[float]
    ) -> Figure:
        e = ctx.settings.edits
        written = statistics.median(per) if per else None
        amp = None if written is None else amplification(written, e.edit_bytes)
        measured = system.measured("write", e.edit_bytes) | {
            "via": VIA.format(op="write(path, random offset, 4 KiB)"),
            "file_bytes": e.file_bytes,
            "bytes_written_per_edit": written,
            "bytes_written_per_edit_samples": per,
            "write_amplification": amp,
            "bytes_written_from": "storage leaders' mydfs_storage_received_bytes (new slices' "
            "payload, once per slice; each is stored on 3 nodes)",
        }
        mine = Result.of("mydfs", samples, measured)
        limit = ops_limit(ctx, None, "write", int(written or 0), n) if written else None
        notes = [f"{e.edit_bytes:,} B at random offsets of one {mib(e.file_bytes)} file"]
        if written is not None and amp is not None:
            notes.append(
                f"bytes written per edit: {written:,.0f} (new slices' payload) = {amp:,.0f}x the "
                f"{e.edit_bytes:,} B asked (write amplification): an overwrite rewrites the whole "
                "4 MiB slice it falls in (two when it straddles a boundary); each slice is "
                "stored 3 times"
            )
        return self.figure("overwrite", n, "ops/s", mine, limit, notes)


class ConcurrentAppends(EditWorkload):
    name = "append-1k"
    order = 71
    description = (
        "1 KiB appends by 16 clients to one file (mydfs only): records/s; the file is checked "
        "to hold exactly the acknowledged records"
    )

    async def edits(self, ctx: Context, system: MydfsSystem, made: list[str]) -> list[Figure]:
        s, e = ctx.settings, ctx.settings.edits
        n = e.append_clients
        sessions = await ctx.sessions(system, n)
        samples: list[Sample] = []
        per: list[float] = []
        checks: list[str] = []
        try:
            first = _client(sessions[0])
            if s.warmup:
                warm = ctx.path(self.name, "warm.log")
                made.append(warm)
                await first.put(warm, b"")
                await run_ops(sessions, self._op(warm, "warm", {}), n, 60.0)
            for rep in range(s.runs):
                path = ctx.path(self.name, f"r{rep}.log")
                made.append(path)
                await first.put(path, b"")
                acked: dict[int, int] = {}
                before = await received_bytes(_urls(system))
                got = await run_ops(sessions, self._op(path, rep, acked), e.append_records,
                                    s.op_seconds)  # fmt: skip
                moved = await received_bytes(_urls(system)) - before
                why = check_records(await first.read(path), acked, rep)
                if why:
                    got.sample.value = None
                    got.sample.first_error = f"the file is not the acknowledged records: {why}"
                checks.append(why or f"{len(acked)} acknowledged records, each once at its offset")
                if got.sample.ops:
                    per.append(moved / got.sample.ops)
                samples.append(got.sample)
                ctx.log(
                    f"   append-1k N={n} rep {rep + 1}: {_fmt(got.sample.value, 'records/s')}; "
                    f"check: {checks[-1]}"
                )
        finally:
            await close_all(sessions)
        written = statistics.median(per) if per else None
        verified = all(c.endswith("at its offset") for c in checks)
        measured = system.measured("write", RECORD) | {
            "via": VIA.format(op="append(path, 1 KiB)"),
            "bytes_written_per_append": written,
            "write_amplification": None if written is None else amplification(written, RECORD),
            "verified": verified,
            "checks": checks,
        }
        mine = Result.of("mydfs", samples, measured)
        limit = ops_limit(ctx, None, "write", int(written or 0), n) if written else None
        notes = [
            f"{n} clients append {RECORD:,} B records to one file; records/s = acknowledged "
            "appends per second",
            "check after each repetition: the file holds exactly the acknowledged records, each "
            f"once, at the offset its append returned: {'passed' if verified else 'FAILED'} "
            f"({'; '.join(checks)})",
        ]
        if written is not None:
            notes.append(
                f"bytes written per append: {written:,.0f} (an append copies the file's last "
                "slice, up to 4 MiB, and adds the record; appends serialise on that slice)"
            )
        return [self.figure("append", n, "ops/s", mine, limit, notes)]

    @staticmethod
    def _op(
        path: str, rep: object, acked: dict[int, int]
    ) -> Callable[[Session, int], Awaitable[int]]:
        async def op(session: Session, i: int) -> int:
            acked[i] = await _client(session).append(path, record(rep, i))
            return RECORD

        return op


class OverwriteInPlace(EditWorkload):
    name = "overwrite-64m"
    order = 72
    description = (
        "one 64 MiB overwrite in place beside a 64 MiB write of a new file (mydfs only): MB/s"
    )

    async def edits(self, ctx: Context, system: MydfsSystem, made: list[str]) -> list[Figure]:
        s, e = ctx.settings, ctx.settings.edits
        size = e.overwrite_bytes
        target = ctx.path(self.name, "target.bin")
        session = await system.session()
        client = _client(session)
        written: list[float] = []
        try:
            made.append(target)
            await client.put(target, os.urandom(size))
            if s.warmup:
                warm = ctx.path(self.name, "warm.bin")
                made.append(warm)
                await client.put(warm, os.urandom(min(size, 4 << 20)))
                await client.write(target, 0, os.urandom(min(size, 4 << 20)))

            async def body(member: Probe, rep: int) -> Sample:
                data = os.urandom(size)  # made before the clock starts
                if member.key == "put":
                    path = ctx.path(self.name, f"new-r{rep}.bin")
                    made.append(path)
                    sample = await _timed(lambda: client.put(path, data), size)
                else:
                    before = await received_bytes(_urls(system))
                    sample = await _timed(lambda: client.write(target, 0, data), size)
                    written.append(await received_bytes(_urls(system)) - before)
                ctx.log(f"   overwrite-64m rep {rep + 1} {member.label}: "
                        f"{_fmt(sample.value, 'MB/s')} {sample.first_error}")  # fmt: skip
                return sample

            members = [Probe("overwrite", "overwrite in place"), Probe("put", "new-file write")]
            got = await ctx.alternate(members, body)
        finally:
            await session.close()
        disk = ctx.limits.get("disk")
        limit = None
        if disk is not None:
            limit = disk.limit("disk/3", 1 / 3, "disk bandwidth (dd oflag=dsync) / 3 copies")
        put = Result.of("mydfs", got["put"], system.measured("write", size))
        over_written = statistics.median(written) if written else None
        over = Result.of(
            "mydfs",
            got["overwrite"],
            system.measured("write", size)
            | {
                "via": VIA.format(op=f"write(path, 0, {mib(size)})"),
                "bytes_written": over_written,
            },
        )
        ratio = None
        if over.median is not None and put.median is not None and put.median > 0:
            ratio = over.median / put.median
        over.measured["ratio_to_new_file_write"] = ratio
        what = f"one {mib(size)} write(path, 0, data) over an existing {mib(size)} file"
        notes = [what]
        if ratio is not None:
            notes.append(
                f"overwrite in place ÷ write of a new file of the same size, same run: "
                f"{ratio:.2f}x ({over.median:,.1f} vs {put.median:,.1f} MB/s)"
            )
        if over_written is not None:
            notes.append(f"bytes written by the overwrite: {over_written:,.0f}")
        return [
            self.figure("overwrite", 1, "MB/s", over, limit, notes),
            self.figure("new-file", 1, "MB/s", put, limit,
                        [f"one {mib(size)} put of a new file, alternating with the overwrite"]),
        ]  # fmt: skip


class MiddleInsert(EditWorkload):
    name = "insert-mid"
    order = 73
    description = (
        "one 4 KiB insert at the middle of 64 MiB, 256 MiB and 1 GiB files (mydfs only): "
        "milliseconds each"
    )

    async def edits(self, ctx: Context, system: MydfsSystem, made: list[str]) -> list[Figure]:
        s, e = ctx.settings, ctx.settings.edits
        sizes = sorted(e.insert_sizes)
        data = memoryview(os.urandom(max(sizes)))
        paths = {size: ctx.path(self.name, f"f{size}.bin") for size in sizes}
        session = await system.session()
        client = _client(session)
        written: dict[int, list[float]] = {size: [] for size in sizes}
        try:
            for size in sizes:
                made.append(paths[size])
                await client.put(paths[size], data[:size])
            del data
            if s.warmup:
                await client.insert(paths[sizes[0]], sizes[0] // 2, os.urandom(e.insert_bytes))

            async def body(member: Probe, rep: int) -> Sample:
                size = int(member.key)
                payload = os.urandom(e.insert_bytes)
                before = await received_bytes(_urls(system))
                sample = await _timed(
                    lambda: client.insert(paths[size], size // 2, payload), e.insert_bytes
                )
                written[size].append(await received_bytes(_urls(system)) - before)
                if sample.value is not None:
                    sample.value = sample.seconds * 1000
                ctx.log(f"   insert-mid rep {rep + 1} {member.label}: "
                        f"{_fmt(sample.value, 'ms')} {sample.first_error}")  # fmt: skip
                return sample

            members = [Probe(str(size), f"{mib(size)} file") for size in sizes]
            got = await ctx.alternate(members, body)
        finally:
            await session.close()
        disk = ctx.limits.get("disk")
        figures = []
        results = {size: Result.of("mydfs", got[str(size)], {}) for size in sizes}
        smallest, largest = results[sizes[0]].median, results[sizes[-1]].median
        growth = largest / smallest if largest is not None and smallest else None
        for size in sizes:
            mine = results[size]
            bytes_written = statistics.median(written[size]) if written[size] else None
            mine.measured = system.measured("write", e.insert_bytes) | {
                "via": VIA.format(op=f"insert(path, size // 2, {mib(e.insert_bytes)})"),
                "file_bytes": size,
                "bytes_written": bytes_written,
                "time_ratio_largest_to_smallest": growth,
            }
            notes = [f"{e.insert_bytes:,} B inserted at the middle of a {mib(size)} file"]
            limit = None
            if disk is not None and bytes_written:
                rate = disk.median / 3 * 1e6  # bytes per second, 3 copies on one disk
                limit = Limit(
                    value=bytes_written / rate * 1000,
                    what=f"the {bytes_written:,.0f} B the insert wrote, at disk bandwidth / 3",
                    measured={"disk_MBps": disk.median, "bytes_written": bytes_written},
                    label="disk/3",
                )
                notes.append(
                    f"bytes written: {bytes_written:,.0f}; rewriting the whole file instead "
                    f"would take {size / rate:,.2f} s at this run's disk/3"
                )
            if size == sizes[-1] and growth is not None:
                notes.append(
                    f"time at {mib(size)} ÷ time at {mib(sizes[0])}: {growth:.2f}x for a file "
                    f"{size // sizes[0]}x larger"
                )
            op = f"insert@{mib(size).replace(' ', '')}"
            figures.append(self.figure(op, 1, "ms", mine, limit, notes, higher_is_better=False))
        return figures


register(RandomOverwrites())
register(ConcurrentAppends())
register(OverwriteInPlace())
register(MiddleInsert())
