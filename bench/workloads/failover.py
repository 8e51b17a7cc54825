"""Failover: SIGKILL a server during writes; seconds until writes succeed again.

N clients keep writing new files of ``--failover-size`` bytes. After ``failover_lead`` seconds
the server whose loss hurts writes most is killed with SIGKILL: on mydfs the leader of group 1
(with the default single group, every write goes through it); on SeaweedFS volume server 1 (it
holds a copy of every 002 volume). The figure is the time from the kill to the end of the first
write that *started after* the kill and succeeded. If none succeeds within
``--failover-timeout`` seconds, the repetition counts as "not recovered". Then the killed server
is restarted and the system is given time to become whole before the next repetition.

SeaweedFS with replication 002 and three volume servers cannot place a new write while one of
them is down, so it is expected not to recover until the server is back; that is recorded, not
hidden. There is no machine limit for this figure.
"""

from __future__ import annotations

import asyncio
import os
import time

from mydfs.bench.figures import Figure, Result, Sample
from mydfs.bench.suite import Context, Workload, close_all, register
from mydfs.bench.systems import System


class Failover(Workload):
    name = "failover"
    order = 50
    description = "failover: SIGKILL a group leader during writes; seconds until writes succeed"

    async def run(self, ctx: Context) -> list[Figure]:
        s = ctx.settings
        systems = [x for x in ctx.compared if x.can_fail_over()]
        data = os.urandom(s.failover_size)
        figures: list[Figure] = []
        for n in s.clients:

            async def body(system: System, rep: int, n: int = n) -> Sample:
                sample = await self._once(ctx, system, n, rep, data)
                shown = (
                    f"{sample.value:.2f} s"
                    if sample.value is not None
                    else f"no write succeeded in {s.failover_timeout:.0f} s"
                )
                ctx.log(f"   failover N={n} rep {rep + 1} {system.label}: {shown}")
                return sample

            samples = await ctx.alternate(systems, body)
            results = {}
            for system in systems:
                measured = system.measured("failover", s.failover_size) | {
                    "killed": "group 1 leader" if system.key == "mydfs" else "volume server 1",
                    "timeout_s": s.failover_timeout,
                }
                got = samples[system.key]
                recovered = sum(1 for x in got if x.value is not None)
                note = ""
                if recovered < len(got):
                    note = (
                        f"{len(got) - recovered} of {len(got)} kills: no write succeeded within "
                        f"{s.failover_timeout:.0f} s"
                    )
                    if system.key == "seaweedfs":
                        note += " (replication 002 needs all 3 volume servers up)"
                results[system.key] = Result.of(system.key, got, measured, note=note)
            figures.append(
                Figure(
                    workload=self.name,
                    op="recover",
                    clients=n,
                    unit="s",
                    higher_is_better=False,
                    mydfs=results.get("mydfs"),
                    peer=results.get("seaweedfs"),
                    limit=None,
                    notes=[f"writes of {s.failover_size:,} bytes; no machine limit applies"],
                )
            )
        return figures

    async def _once(self, ctx: Context, system: System, n: int, rep: int, data: bytes) -> Sample:
        s = ctx.settings
        sessions = await ctx.sessions(system, n)
        events: list[tuple[float, float, bool]] = []
        stop = asyncio.Event()

        async def writer(w: int) -> None:
            i = 0
            while not stop.is_set():
                path = ctx.path(self.name, system.key, f"n{n}", f"r{rep}", f"w{w:02d}", f"f{i:06d}")
                i += 1
                t = time.perf_counter()
                try:
                    await sessions[w].put(path, data)
                    events.append((t, time.perf_counter(), True))
                except Exception:
                    events.append((t, time.perf_counter(), False))
                    await asyncio.sleep(0.02)

        tasks = [asyncio.create_task(writer(w)) for w in range(n)]
        recovered: float | None = None
        try:
            lead_end = time.perf_counter() + max(s.failover_lead, 0.05) + 30
            await asyncio.sleep(s.failover_lead)
            while not any(ok for _, _, ok in events) and time.perf_counter() < lead_end:
                await asyncio.sleep(0.02)  # the kill must interrupt a working system
            if not any(ok for _, _, ok in events):
                raise RuntimeError(f"{system.label}: no write succeeded before the kill")
            await system.kill_one()
            killed = time.perf_counter()
            while time.perf_counter() < killed + s.failover_timeout:
                after = [end for start, end, ok in events if ok and start >= killed]
                if after:
                    recovered = min(after) - killed
                    break
                await asyncio.sleep(0.01)
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await close_all(sessions)
            await system.restore()
        failed = sum(1 for _, _, ok in events if not ok)
        return Sample(
            value=recovered,
            ops=sum(1 for _, _, ok in events if ok),
            errors=failed,
            bytes=len(data),
        )


register(Failover())
