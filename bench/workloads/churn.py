"""The churn workload: what mydfs's housekeeping costs the foreground writes (mydfs only).

Two phases, each on a cluster of its own started for it (a tracker and ``--groups`` groups of
3 storage nodes, like the suite's, in the scratch folder) and stopped after it, because the
housekeeping is set by configuration at start-up:

* **housekeeping off**: no scrub (``scrub_rate_mb`` 0), the orphan collector, its 301
  compaction and the trash reclaimer idle (passes a day and an hour apart, a day of
  ``trash_retention`` and of ``compact_idle``);
* **housekeeping on**: the scrub at 64 MiB/s with a pass every second, the collector every
  second with 5 s of ``orphan_grace`` and compaction of any file with a 301 left idle 1 s,
  the reclaimer every 0.25 s with 0.5 s of ``trash_retention``, so that removed and replaced
  files are freed and edited ones compacted during the phase.

Everything else is the same. In both, :data:`CLIENTS` clients each repeat a cycle over files of
their own: put a new file (64 KiB; every :data:`LARGE_EVERY`-th file 3 slices), put it again
with ``overwrite=True``, write 4 KiB at its middle, remove the file made :data:`LAG` files
before (:class:`Cycle`). Every step is one write
operation; a phase is ``--small-ops`` of them, capped at ``--op-seconds``. The phases alternate
(off, on; then on, off; ...) for ``--runs`` repetitions.

Figures: write ops/s in each phase, the ratio on ÷ off per repetition (the cost of housekeeping:
1 means none, 0.8 means the foreground lost a fifth of its rate), and the slices freed per
second during the on phase: the increase of the tracker's counters
``mydfs_tracker_reclaimed_slices_total`` (the reclaimer), ``mydfs_tracker_orphans_freed_total``
(the collector) and ``mydfs_tracker_redirects_released_total`` (compaction) over the timed
operations, divided by their wall time. The bytes the scrub
checked meanwhile (``mydfs_storage_scrub_bytes_total``, summed over the nodes) show that it ran.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from mydfs.bench.edits import parse_counter, scrape
from mydfs.bench.figures import Figure, Result, Sample
from mydfs.bench.suite import Context, Workload, close_all, register, run_ops
from mydfs.bench.systems import MydfsSession, Session
from mydfs.bench.workloads.common import mydfs_only
from mydfs.client.local_cluster import LocalCluster
from mydfs.common.slices import PAYLOAD_CAPACITY

NAME = "churn"
#: Concurrent clients in both phases.
CLIENTS = 4
SMALL = 64 << 10
#: Three slices: two full ones and 64 KiB.
LARGE = 2 * PAYLOAD_CAPACITY + (64 << 10)
#: One file in this many is :data:`LARGE`.
LARGE_EVERY = 8
EDIT = 4 << 10
#: The rm step removes the file this many files back.
LAG = 8
STEPS = ("put", "overwrite", "edit", "rm")

RECLAIMED = "mydfs_tracker_reclaimed_slices_total"
ORPHANS = "mydfs_tracker_orphans_freed_total"
RELEASED = "mydfs_tracker_redirects_released_total"
SCRUBBED = "mydfs_storage_scrub_bytes_total"

NO_PEER = (
    "not measured on SeaweedFS: this workload sets mydfs beside itself, its housekeeping "
    "(scrub, orphan collector and compaction, trash reclaimer) off and on, so no ratio to a peer "
    "is given"
)


@dataclass(frozen=True)
class Phase:
    """How a phase's cluster is configured."""

    key: str
    label: str
    tracker_options: dict[str, float]
    trash_retention: float
    storage_args: tuple[str, ...]

    def describe(self) -> dict[str, Any]:
        return {
            "tracker": self.tracker_options | {"trash_retention": self.trash_retention},
            "storage_args": " ".join(self.storage_args),
        }


OFF = Phase(
    "off",
    "housekeeping off",
    {
        "collect_interval": 86_400,
        "orphan_grace": 86_400,
        "reclaim_interval": 3600,
        "compact_file_redirects": 1,
        "compact_idle": 86_400,
    },
    86_400.0,
    ("--scrub-rate-mb", "0"),
)
ON = Phase(
    "on",
    "housekeeping on",
    {
        "collect_interval": 1.0,
        "orphan_grace": 5.0,
        "reclaim_interval": 0.25,
        "compact_file_redirects": 1,
        "compact_idle": 1.0,
    },
    0.5,
    ("--scrub-rate-mb", "64", "--scrub-interval", "1"),
)


class Cycle:
    """One client's files: put, overwrite, edit of file k, then rm of file k - :data:`LAG`
    (left idle meanwhile, so that compaction may rewrite it around its 301; while k < LAG
    a second edit of file k instead), then file k + 1, and so on. It moves to the next step
    only when a step succeeded (a failed one is tried again)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.file = 0
        self.step = 0

    @property
    def path(self) -> str:
        return f"{self.prefix}/f{self.file:06d}"

    @property
    def old_path(self) -> str | None:
        """The file the rm step removes (None: none yet)."""
        k = self.file - LAG
        return f"{self.prefix}/f{k:06d}" if k >= 0 else None

    @property
    def size(self) -> int:
        return LARGE if self.file % LARGE_EVERY == LARGE_EVERY - 1 else SMALL

    @property
    def op(self) -> str:
        return STEPS[self.step]

    def advance(self) -> None:
        self.step = (self.step + 1) % len(STEPS)
        if self.step == 0:
            self.file += 1


def cycles_of(sessions: list[Session], prefix: str) -> dict[int, Cycle]:
    """A cycle per session (keyed by ``id(session)``), each in its own folder under ``prefix``."""
    return {id(x): Cycle(f"{prefix}/c{j}") for j, x in enumerate(sessions)}


@dataclass
class PhaseRun:
    """One timed phase: its sample and the counters' increases over it."""

    sample: Sample
    counters: dict[str, float] = field(default_factory=dict)

    @property
    def freed(self) -> float:
        return sum(self.counters.get(k, 0.0) for k in (RECLAIMED, ORPHANS, RELEASED))

    @property
    def freed_per_second(self) -> float | None:
        seconds = self.sample.seconds
        return self.freed / seconds if seconds > 0 else None


def counters(tracker_page: str, node_pages: list[str]) -> dict[str, float]:
    """The tracker's freed-slice counters and the scrub bytes summed over the nodes."""
    return {
        RECLAIMED: parse_counter(tracker_page, RECLAIMED),
        ORPHANS: parse_counter(tracker_page, ORPHANS),
        RELEASED: parse_counter(tracker_page, RELEASED),
        SCRUBBED: sum(parse_counter(page, SCRUBBED) for page in node_pages),
    }


def increase(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - v for k, v in before.items()}


def ratios(on: list[PhaseRun], off: list[PhaseRun]) -> list[Sample]:
    """On ÷ off write rates, repetition by repetition (None where either failed)."""
    out = []
    for a, b in zip(on, off, strict=True):
        x, y = a.sample.value, b.sample.value
        out.append(Sample(x / y if x is not None and y else None))
    return out


class Payloads:
    """The bytes the cycle writes, made once before the clock starts."""

    def __init__(self) -> None:
        self.first = {n: os.urandom(n) for n in (SMALL, LARGE)}
        self.second = {n: os.urandom(n) for n in (SMALL, LARGE)}
        self.edit = os.urandom(EDIT)


def churn_op(cycles: dict[int, Cycle], data: Payloads) -> Callable[[Session, int], Awaitable[int]]:
    """The operation of :func:`~mydfs.bench.suite.run_ops`: the next step of the session's
    cycle; returns the bytes it wrote."""

    async def op(session: Session, i: int) -> int:
        cycle = cycles[id(session)]
        client = cast(MydfsSession, session).client
        size, moved = cycle.size, cycle.size
        if cycle.op == "put":
            await client.put(cycle.path, data.first[size])
        elif cycle.op == "overwrite":
            await client.put(cycle.path, data.second[size], overwrite=True)
        elif cycle.op == "edit":
            await client.write(cycle.path, size // 2, data.edit)
            moved = EDIT
        elif cycle.old_path is None:
            await client.write(cycle.path, 0, data.edit)
            moved = EDIT
        else:
            await client.delete(cycle.old_path)
            moved = 0
        cycle.advance()
        return moved

    return op


class Churn(Workload):
    name = NAME
    order = 80
    description = (
        "put/overwrite/edit/rm cycles with housekeeping (scrub, collector, compaction, reclaimer) "
        "off and on (mydfs only): write ops/s each, on ÷ off, slices freed per second"
    )

    async def run(self, ctx: Context) -> list[Figure]:
        if not ctx.settings.mydfs:
            ctx.log(f"   {self.name}: skipped, mydfs is left out")
            return []
        data = Payloads()

        async def body(phase: Phase, rep: int) -> PhaseRun:
            return await self._phase(ctx, phase, rep, data)

        got = await ctx.alternate([OFF, ON], body)
        return self._figures(ctx, got["off"], got["on"])

    async def _phase(self, ctx: Context, phase: Phase, rep: int, data: Payloads) -> PhaseRun:
        s = ctx.settings
        cluster = LocalCluster(
            ctx.scratch / f"{self.name}-{phase.key}-r{rep}",
            groups=s.groups,
            storage_args=phase.storage_args,
            tracker_options=phase.tracker_options,
            trash_retention=phase.trash_retention,
        )
        sessions: list[Session] = []
        try:
            await asyncio.to_thread(cluster.start, timeout=90)
            sessions = [MydfsSession(cluster.tracker_url, 120.0) for _ in range(CLIENTS)]
            urls = [cluster.tracker_url, *(n.url for n in cluster.nodes())]
            if s.warmup:
                warm = cycles_of(sessions, ctx.path(self.name, "warm"))
                await run_ops(sessions, churn_op(warm, data), CLIENTS * len(STEPS), 60.0)
            cycles = cycles_of(sessions, ctx.path(self.name, "timed"))
            pages = await scrape(urls)
            before = counters(pages[0], pages[1:])
            got = await run_ops(sessions, churn_op(cycles, data), s.small_ops, s.op_seconds)
            pages = await scrape(urls)
            run = PhaseRun(got.sample, increase(before, counters(pages[0], pages[1:])))
        finally:
            await close_all(sessions)
            await asyncio.to_thread(cluster.stop)
        self._log(ctx, phase, rep, run)
        return run

    def _log(self, ctx: Context, phase: Phase, rep: int, run: PhaseRun) -> None:
        s = run.sample
        rate = "failed" if s.value is None else f"{s.value:,.1f} write ops/s"
        err = f", {s.errors} errors ({s.first_error})" if s.errors else ""
        ctx.log(
            f"   {self.name} rep {rep + 1} {phase.label}: {rate}, {run.freed:,.0f} slices freed, "
            f"{run.counters.get(SCRUBBED, 0) / 1e6:,.1f} MB scrubbed in {s.seconds:.1f} s{err}"
        )

    def _figures(self, ctx: Context, off: list[PhaseRun], on: list[PhaseRun]) -> list[Figure]:
        common = {
            "bytes_per_op": f"{SMALL:,} B files, one in {LARGE_EVERY} of {LARGE:,} B (3 slices); "
            f"edits of {EDIT:,} B",
            "copies": 3,
            "fsync": True,
            "via": "mydfs AsyncClient: put, put(overwrite=True), write(path, size // 2, 4 KiB), "
            "delete, each client on its own files",
            "clients": CLIENTS,
        }

        def measured(phase: Phase, runs: list[PhaseRun]) -> dict[str, Any]:
            return common | {
                "phase": phase.label,
                "cluster": phase.describe(),
                "slices_freed": [r.freed for r in runs],
                "reclaimed_slices": [r.counters.get(RECLAIMED, 0.0) for r in runs],
                "orphans_freed": [r.counters.get(ORPHANS, 0.0) for r in runs],
                "redirects_released": [r.counters.get(RELEASED, 0.0) for r in runs],
                "scrub_bytes": [r.counters.get(SCRUBBED, 0.0) for r in runs],
                "seconds": [r.sample.seconds for r in runs],
            }

        m_off, m_on = measured(OFF, off), measured(ON, on)
        mine_off = Result.of("mydfs", [r.sample for r in off], m_off)
        mine_on = Result.of("mydfs", [r.sample for r in on], m_on)
        ratio = Result.of("mydfs", ratios(on, off), {"on": m_on["phase"], "off": m_off["phase"]})
        freed = Result.of("mydfs", [Sample(r.freed_per_second) for r in on], m_on)
        cycle = (
            f"{CLIENTS} clients, each a cycle of put, overwrite, 4 KiB edit and rm (of the file "
            f"{LAG} back) over files of its own; up to {ctx.settings.small_ops} write ops per "
            f"phase, capped at {ctx.settings.op_seconds:g} s; a fresh cluster per phase"
        )
        scrubbed = ", ".join(f"{b / 1e6:,.1f}" for b in m_on["scrub_bytes"])
        return [
            self._figure("write, housekeeping off", "ops/s", mine_off,
                         [cycle, "scrub off, collector and reclaimer idle"]),
            self._figure("write, housekeeping on", "ops/s", mine_on,
                         [cycle, "scrub 64 MiB/s every 1 s, collector every 1 s (grace 5 s), "
                          "compaction after 1 s idle, reclaimer every 0.25 s (trash retention "
                          "0.5 s)",
                          f"MB checked by the scrub during the timed ops: {scrubbed}"]),
            self._figure("on ÷ off", "x", ratio,
                         ["cost of housekeeping: write ops/s with it on ÷ without it, per "
                          "repetition (1 = no cost; below 1 the foreground lost that share)"]),
            self._figure("slices freed, housekeeping on", "slices/s", freed,
                         [f"increase of {RECLAIMED} + {ORPHANS} + {RELEASED} on the tracker over "
                          "the timed "
                          "ops of the on phase, ÷ their wall time; slices freed in the off "
                          f"phase: {', '.join(f'{r.freed:g}' for r in off)}"]),
        ]  # fmt: skip

    def _figure(self, op: str, unit: str, mine: Result, notes: list[str]) -> Figure:
        return mydfs_only(self.name, op, CLIENTS, unit, mine, limit=None, notes=notes,
                          peer_absent=NO_PEER)  # fmt: skip


register(Churn())
