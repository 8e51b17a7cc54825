"""One nemesis run: network, cluster, workload, faults, healing, final checks, report.

:func:`run_nemesis` builds a :class:`~netns.TestNet` (one namespace per process plus one for
the clients), starts a tracker and two groups of three nodes in it (one node of each group
with its data folder on a small tmpfs, for the disk-full fault), runs the workload
(:mod:`workload`) in the client namespace while the nemesis (:mod:`faults`) starts and stops
one fault at a time, then heals everything, waits for the groups to converge (same table,
every live slice on every member), reads every path once more, waits until the collector has
freed every slot nothing references (:mod:`leaks`), stops the tracker and then the nodes, verifies
every volume offline and compares the replicas' live slices, and hands the history to the
checker (:mod:`checker`). Everything it made (processes, mounts, namespaces, the guard route)
is removed in ``finally``.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import checker
from faults import KINDS, Nemesis
from model import WRITES
from netcluster import CLIENT, NetCluster, hosts_for
from netns import TestNet

HERE = Path(__file__).resolve().parent
#: Seconds the leak check waits for the collector to catch up: the grace period and the intent
#: TTL of the cluster (30 s each, ``LocalCluster``), a few collector passes, a loaded machine.
LEAK_WAIT = 240.0
#: Over a local cluster's settings: a collector pass every 2 s, and a path with a 301 left
#: alone 1 s is compacted, so that compactions run during the faults and race the owners'
#: edits (each path is written about once a second; docs/space.md).
TRACKER = {"compact_idle": 1.0, "collect_interval": 2.0}


@dataclass
class Config:
    """How long, how many faults, which kinds; ``fault_seconds`` is each fault's duration and
    ``gap_seconds`` the calm after it."""

    faults: int = 10
    kinds: tuple[str, ...] = KINDS
    fault_seconds: tuple[float, float] = (4.0, 6.0)
    gap_seconds: float = 3.0
    clients: int = 4
    paths: int = 6
    seed: str = "1"
    large_share: float = 0.1
    small_disk: str = "256m"
    op_deadline: float = 10.0

    @property
    def seconds(self) -> float:
        """The workload's length: warm-up, every fault and its calm, a tail."""
        return 5.0 + self.faults * (max(self.fault_seconds) + self.gap_seconds) + 5.0


def read_history(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _acked_writes(path: Path) -> int:
    return sum(1 for op in read_history(path) if op["op"] in WRITES and op["result"] == "ok")


def _wait(predicate: Any, timeout: float, interval: float = 0.2) -> bool:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= end:
            return False
        time.sleep(interval)
    return True


def _workload(net: TestNet, cluster: NetCluster, cfg: Config, mode: str, out: Path,
              log: Path, extra: list[str]) -> subprocess.Popen[bytes]:  # fmt: skip
    argv = [*net.wrap(CLIENT), sys.executable, str(HERE / "workload.py"), mode,
            "--tracker", cluster.tracker_url, "--out", str(out),
            "--op-deadline", str(cfg.op_deadline), *extra]  # fmt: skip
    with open(log, "ab") as f:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)


def run_nemesis(root: Path, cfg: Config) -> dict[str, Any]:
    """One whole run under ``root``; the report (also written to ``root/report.json``)."""
    root.mkdir(parents=True, exist_ok=True)
    net = TestNet(hosts_for(2))
    net.create()
    cluster: NetCluster | None = None
    procs: list[subprocess.Popen[bytes]] = []
    problems: list[str] = []
    try:
        # One node of each group on a small disk: the tracker places by free space, so a
        # single small group would get (almost) no files.
        small = (("g1n3", "g2n3"), cfg.small_disk)
        cluster = NetCluster(root / "cluster", net, small_disks=small, tracker_options=TRACKER)
        t0 = time.monotonic()
        cluster.start_all(timeout=120)
        started = time.monotonic() - t0
        history, final_path = root / "history.jsonl", root / "final.jsonl"
        wl = _workload(net, cluster, cfg, "run", history, root / "workload.log",
                       ["--seconds", str(cfg.seconds), "--clients", str(cfg.clients),
                        "--paths", str(cfg.paths), "--seed", cfg.seed,
                        "--large-share", str(cfg.large_share)])  # fmt: skip
        procs.append(wl)
        if not _wait(lambda: _acked_writes(history) >= 3 or wl.poll() is not None, 60):
            problems.append("no write was acknowledged within 60 s before the faults")
        windows = _fault_loop(cluster, cfg, wl)
        net_hosts = list(net.hosts)
        for host in net_hosts:
            net.flush(host)
        exited = cluster.revive()
        try:
            wl.wait(timeout=cfg.seconds + cfg.op_deadline * 3 + 60)
        except subprocess.TimeoutExpired:
            problems.append("the workload did not stop in time")
            wl.kill()
        t_heal = time.monotonic()
        cluster.wait_healthy(timeout=120)
        convergence = cluster.wait_converged(timeout=120)
        healed = time.monotonic() - t_heal
        # The tracker's reclaimer may still be deleting the slices of removed or replaced files:
        # members apply each delete a moment apart, so compare again (bounded) before reporting.
        tables_differ = cluster.tables_differ()
        compare_until = time.monotonic() + 60
        for _ in range(10):  # each comparison reads every slot of every member: seconds
            if not tables_differ or time.monotonic() > compare_until:
                break
            cluster.wait_converged(timeout=60)
            tables_differ = cluster.tables_differ()
        fin = _workload(net, cluster, cfg, "final", final_path, root / "workload.log",
                        ["--history", str(history)])  # fmt: skip
        procs.append(fin)
        fin.wait(timeout=600)
        leaks = _leak_check(net, cluster, root)
        # The tracker's collector and reclaimer keep deleting slices in the background: stop
        # the tracker first and let every group converge, or a delete committed by two members
        # after the third stopped would show as replicas that differ.
        if cluster.tracker_process is not None:
            cluster.tracker_process.terminate()
        convergence_at_stop = cluster.wait_converged(timeout=60)
        cluster.stop()
        offline = _offline_checks(cluster)
        ops = read_history(history) + read_history(final_path)
        result = checker.check(ops)
        acks = [o["end"] for o in ops if o["op"] in WRITES and o["result"] == "ok"]
        report: dict[str, Any] = {
            "config": {**asdict(cfg), "seconds": cfg.seconds},
            "start_seconds": round(started, 1),
            "heal_seconds": round(healed, 1),
            "faults": len(windows),
            **result.figures,
            **checker.availability(windows, acks),
            "convergence": {str(g): v for g, v in convergence.items()},
            "convergence_at_stop": {str(g): v for g, v in convergence_at_stop.items()},
            "tables_differ": tables_differ,
            "leaks": {k: leaks.get(k) for k in ("caught_up", "seconds", "leaked", "samples")},
            "compaction": leaks.get("compaction"),
            "space": (leaks.get("last") or {}).get("cluster"),
            "raft_diverged_warnings": cluster.log_lines("state machine may have diverged"),
            "log_tracebacks": cluster.log_lines("Traceback"),
            "offline": offline,
            "unexpected_exits": cluster.unexpected_exits + exited,
            "problems": problems,
            "violations": [v.to_dict() for v in result.violations[:200]],
        }
        (root / "report.json").write_text(json.dumps(report, indent=2))
        return report
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        leftovers = cluster.close() if cluster is not None else []
        leftovers += net.destroy()
        if leftovers:
            (root / "cleanup-problems.txt").write_text("\n".join(leftovers))


def _fault_loop(
    cluster: NetCluster, cfg: Config, wl: subprocess.Popen[bytes]
) -> list[dict[str, Any]]:
    """Start and stop ``cfg.faults`` faults, one at a time, kinds in shuffled rounds; the
    fault windows (kind, target, start, end)."""
    rng = random.Random(cfg.seed)
    nemesis = Nemesis(cluster, rng)
    windows: list[dict[str, Any]] = []
    schedule: list[str] = []
    while len(windows) < cfg.faults and wl.poll() is None:
        if not schedule:
            schedule = rng.sample(list(cfg.kinds), len(cfg.kinds))
        kind = schedule.pop()
        start = time.monotonic()
        fault = nemesis.start(kind)
        time.sleep(rng.uniform(*cfg.fault_seconds))  # the fault's duration, not a wait
        fault.stop()
        end = time.monotonic()
        windows.append({"kind": kind, "target": fault.target, "start": start, "end": end})
        cluster.revive()  # a process that died of the fault (e.g. a full disk) comes back
        time.sleep(cfg.gap_seconds)
    return windows


def _leak_check(net: TestNet, cluster: NetCluster, root: Path) -> dict[str, Any]:
    """``leaks.py`` in the client namespace: wait (bounded) until every allocated slot is
    reached from a live file or a trash record again; what it saw."""
    out = root / "space.json"
    argv = [*net.wrap(CLIENT), sys.executable, str(HERE / "leaks.py"), "--tracker",
            cluster.tracker_url, "--out", str(out), "--timeout", str(LEAK_WAIT)]  # fmt: skip
    with open(root / "workload.log", "ab") as log:
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                       timeout=LEAK_WAIT + 120, check=False)  # fmt: skip
    try:
        result: dict[str, Any] = json.loads(out.read_text())
    except (OSError, ValueError) as exc:
        return {"caught_up": False, "leaked": None, "samples": [f"no result: {exc!r}"]}
    return result


def _offline_checks(cluster: NetCluster) -> dict[str, Any]:
    """``mydfs-storage verify`` of every volume; the replicas of each group hold the same live
    slices."""
    verify: dict[str, Any] = {}
    live: dict[str, dict[int, tuple[int, int, int]]] = {}
    for node in cluster.nodes():
        done = cluster.verify_volume(node)
        verify[node.name] = {"rc": done.returncode, "out": done.stdout.strip()[-400:]}
        live[node.name] = cluster.live_slices(node)
    differ = []
    for g in range(1, cluster.groups + 1):
        names = [n.name for n in cluster.nodes(g)]
        first = live[names[0]]
        for name in names[1:]:
            if live[name] != first:
                keys = set(first) ^ set(live[name])
                keys |= {k for k in set(first) & set(live[name]) if first[k] != live[name][k]}
                differ.append(f"{name} vs {names[0]}: slots {sorted(keys)[:20]}")
    return {
        "verify": verify,
        "verify_failed": [k for k, v in verify.items() if v["rc"] != 0],
        "live_slices": {k: len(v) for k, v in live.items()},
        "replicas_differ": differ,
    }


def summary(report: dict[str, Any]) -> str:
    """The figures in a few lines."""
    keys = ("faults", "ops", "acknowledged_writes", "acknowledged_edits", "edits_by_kind",
            "unknown_outcomes", "versions", "reads_ok", "range_reads_ok", "lost", "wrong_reads",
            "model_violations", "violations_by_kind", "listing_violations", "errors",
            "availability", "availability_storage_faults",
            "availability_by_kind", "longest_gap_by_kind", "longest_recovery_by_kind",
            "by_result", "start_seconds",
            "heal_seconds", "unexpected_exits", "problems")  # fmt: skip
    lines = [f"{k}: {report.get(k)}" for k in keys]
    lines.append(f"convergence: {report['convergence']}")
    lines.append(f"convergence_at_stop: {report['convergence_at_stop']}")
    lines.append(f"tables_differ: {report['tables_differ']}")
    lines.append(f"leaks: {report['leaks']}")
    lines.append(f"compaction: {report.get('compaction')}")
    lines.append(f"raft_diverged_warnings: {report['raft_diverged_warnings']}")
    lines.append(f"log_tracebacks: {report['log_tracebacks']}")
    off = report["offline"]
    lines.append(
        f"verify_failed: {off['verify_failed']}; replicas_differ: {off['replicas_differ']}"
    )
    return "\n".join(lines)
