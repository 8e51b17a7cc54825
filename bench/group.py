"""Storage-group speed beside the machine's limits, measured in the same run.

    python -m mydfs.bench.group [--slices 48] [--runs 3] [--json OUT]

Starts one group of three ``mydfs-storage`` processes on loopback (scratch folder, removed at
the end) and measures, over HTTP from one client process:

* slice upload through the leader (4 MiB slices, each acknowledged only when durable on 2 of 3
  nodes and sealed through Raft), at N = 1 and N = 16 concurrent uploaders: MB/s, p50/p99 ms;
* slice reads spread over the three replicas, N = 1 and N = 16: MB/s, p50/p99 ms;
* failover: one uploader runs, the leader is killed with SIGKILL, and the time until the next
  upload succeeds is measured (the client finds the new leader by asking any live node);

and, in the same run, the limits: ``dd bs=4M oflag=dsync`` into a fresh file (the disk), a
third of it (three replicas share this one disk), and one loopback TCP stream.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from mydfs.bench.limits import disk_dsync_write, loopback_tcp
from mydfs.client.local_cluster import LocalCluster
from mydfs.common import grants
from mydfs.storage.format import PAYLOAD_CAPACITY


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _leader_url(session: aiohttp.ClientSession, cluster: LocalCluster) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for node in cluster.group(1):
            if not node.alive():
                continue
            try:
                async with session.get(node.url + "/health", timeout=aiohttp.ClientTimeout(1)) as r:
                    if (await r.json()).get("leader"):
                        return node.url
            except (aiohttp.ClientError, TimeoutError):
                pass
        await asyncio.sleep(0.02)
    raise RuntimeError("no leader")


async def upload(session: aiohttp.ClientSession, url: str, data: bytes) -> dict[str, Any]:
    async with session.put(f"{url}/slices?upload={os.urandom(8).hex()}", data=data) as resp:
        if resp.status not in (200, 201):
            raise RuntimeError(f"upload failed: HTTP {resp.status} {await resp.text()}")
        result: dict[str, Any] = await resp.json()
        return result


async def writes(
    session: aiohttp.ClientSession, url: str, data: bytes, count: int, clients: int
) -> tuple[float, list[float], list[int]]:
    latencies: list[float] = []
    slots: list[int] = []
    queue = list(range(count))

    async def worker() -> None:
        while queue:
            queue.pop()
            t = time.perf_counter()
            result = await upload(session, url, data)
            latencies.append(time.perf_counter() - t)
            slots.append(int(result["slot"]))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    took = time.perf_counter() - started
    return count * len(data) / took / 1e6, latencies, slots


async def reads(
    session: aiohttp.ClientSession, urls: list[str], slots: list[int], clients: int
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = list(enumerate(slots))
    total = 0

    async def worker() -> None:
        nonlocal total
        while queue:
            i, slot = queue.pop()
            t = time.perf_counter()
            async with session.get(f"{urls[i % len(urls)]}/slices/{slot}") as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"read failed: HTTP {resp.status}")
            latencies.append(time.perf_counter() - t)
            total += len(body)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return total / (time.perf_counter() - started) / 1e6, latencies


async def failover(session: aiohttp.ClientSession, cluster: LocalCluster, data: bytes) -> float:
    """Seconds from SIGKILL of the leader to the next successful upload."""
    url = await _leader_url(session, cluster)
    await upload(session, url, data)
    leader = next(n for n in cluster.group(1) if n.url == url)
    leader.kill(signal.SIGKILL)
    killed = time.perf_counter()
    deadline = killed + 60
    while time.perf_counter() < deadline:
        live = [n for n in cluster.group(1) if n.alive()]
        node = random.choice(live)
        try:
            await upload(session, node.url, data)
            took = time.perf_counter() - killed
            leader.start()
            return took
        except (RuntimeError, aiohttp.ClientError, TimeoutError):
            await asyncio.sleep(0.02)
    raise RuntimeError("no successful upload within 60 s of the leader kill")


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


async def run(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    data = os.urandom(PAYLOAD_CAPACITY)
    figures: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        figures.setdefault(key, []).append(value)

    with LocalCluster(scratch / "cluster", groups=1, tracker=False) as cluster:
        cluster.start()
        timeout = aiohttp.ClientTimeout(total=120)
        connector = aiohttp.TCPConnector(limit=64)
        # Every slice of the run belongs to one made-up file: one write grant covers them all
        # (a write grant allows reads of its file too).
        grant = grants.issue_for(cluster.secret, "write", 86400, file_id=uuid.uuid4().hex)
        headers = {grants.GRANT_HEADER: grant}
        async with aiohttp.ClientSession(
            timeout=timeout, connector=connector, headers=headers
        ) as session:
            url = await _leader_url(session, cluster)
            await writes(session, url, data, 4, 1)  # warm-up
            for run_no in range(args.runs):
                add("disk_dsync", disk_dsync_write(scratch, 64))
                add("loopback_tcp", loopback_tcp(512 << 20))
                url = await _leader_url(session, cluster)
                urls = [n.url for n in cluster.group(1)]
                for clients in (1, 16):
                    mbs, lat, slots = await writes(session, url, data, args.slices, clients)
                    add(f"write_n{clients}_mbs", mbs)
                    add(f"write_n{clients}_p50_ms", _pct(lat, 0.5) * 1000)
                    add(f"write_n{clients}_p99_ms", _pct(lat, 0.99) * 1000)
                    mbs, lat = await reads(session, urls, slots, clients)
                    add(f"read_n{clients}_mbs", mbs)
                    add(f"read_n{clients}_p50_ms", _pct(lat, 0.5) * 1000)
                    add(f"read_n{clients}_p99_ms", _pct(lat, 0.99) * 1000)
                print(f"run {run_no + 1}/{args.runs} done", file=sys.stderr)
            for _ in range(args.failovers):
                add("failover_s", await failover(session, cluster, data[: 1 << 20]))
                await _leader_url(session, cluster)
                await asyncio.sleep(1.0)  # let the restarted node rejoin before the next kill
    return {k: _summary(v) for k, v in figures.items()}


def report(s: dict[str, Any], slices: int, runs: int) -> str:
    disk = s["disk_dsync"]["median"]
    third = disk / 3
    tcp = s["loopback_tcp"]["median"]
    lines = [
        f"storage group bench: 1 group x 3 nodes on loopback, {slices} x 4 MiB slices per run, "
        f"{runs} runs; median (min-max)",
        f"  limit: disk dd oflag=dsync fresh   {disk:8.0f} MB/s; / 3 replicas = {third:.0f} MB/s",
        f"  limit: loopback TCP, 1 stream      {tcp:8.0f} MB/s",
    ]
    for op in ("write", "read"):
        for n in (1, 16):
            m = s[f"{op}_n{n}_mbs"]
            limit = third if op == "write" else tcp
            what = "disk/3" if op == "write" else "loopback"
            lines.append(
                f"  {op:5} N={n:<2} {m['median']:7.0f} MB/s ({m['min']:.0f}-{m['max']:.0f})"
                f" = {m['median'] / limit:.2f} x {what};"
                f" p50 {s[f'{op}_n{n}_p50_ms']['median']:.1f} ms,"
                f" p99 {s[f'{op}_n{n}_p99_ms']['median']:.1f} ms per slice"
            )
    if "failover_s" in s:
        f = s["failover_s"]
        lines.append(
            f"  failover: SIGKILL of the leader -> next successful upload "
            f"{f['median']:.2f} s ({f['min']:.2f}-{f['max']:.2f})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mydfs.bench.group", description=__doc__)
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument("--slices", type=int, default=48, help="slices per measurement (48)")
    parser.add_argument("--runs", type=int, default=3, help="repetitions (3)")
    parser.add_argument("--failovers", type=int, default=3, help="leader kills (3)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="mydfs-bench-group-", dir=args.dir))
    try:
        figures = asyncio.run(run(args, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(report(figures, args.slices, args.runs))
    if args.json:
        args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
