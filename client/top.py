"""``mydfs top``: the tracker's live cluster view (``GET /cluster/view``) in a terminal, for a
server without a browser. Plain text and ANSI escapes, no library: :func:`render` (pure) makes
one frame from the view; :func:`run` fetches and redraws every ``interval`` seconds, or prints
one frame with ``once``.
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from typing import Any, TextIO

import orjson

from mydfs.common.errors import Unavailable
from mydfs.common.tls import ca_from_env, client_context

SLOT = 4 * 1024 * 1024
CLEAR = "\x1b[H\x1b[2J"
RED, GREEN, BOLD, DIM, RESET = "\x1b[31m", "\x1b[32m", "\x1b[1m", "\x1b[2m", "\x1b[0m"


def fetch_view(
    tracker: str, timeout: float = 5.0, token: str | None = None, ca: str | None = None
) -> dict[str, Any]:
    url = tracker.rstrip("/") + "/cluster/view"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    context = client_context(ca_from_env(ca))  # --ca, else $MYDFS_CA, else the system store
    try:
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - http(s) only
        with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:  # noqa: S310
            view = orjson.loads(resp.read())
    except (OSError, urllib.error.URLError, orjson.JSONDecodeError) as exc:
        raise Unavailable(f"cannot read the cluster view at {url}: {exc}", url=url) from None
    if not isinstance(view, dict):
        raise Unavailable(f"the cluster view at {url} is not an object", url=url)
    return view


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _ops(rates: dict[str, Any]) -> float:
    keys = ("read_per_s", "write_per_s", "replicate_per_s", "edit_per_s")
    return float(sum(rates.get(k, 0) for k in keys))


def render(view: dict[str, Any], *, color: bool = False) -> str:
    """One frame of ``mydfs top`` from a cluster view."""

    def paint(text: str, code: str) -> str:
        return f"{code}{text}{RESET}" if color else text

    c = view["cluster"]
    lines = [
        paint("mydfs cluster", BOLD)
        + f"  {c['groups']} groups ({c['writable_groups']} writable)  "
        + f"nodes {c['nodes_up']} up / {c['nodes_down']} down",
        f"ops/s {c['ops_per_s']:.1f} (read {c['read_per_s']:.1f}, write {c['write_per_s']:.1f}, "
        f"replicate {c['replicate_per_s']:.1f}, edit {c['edit_per_s']:.1f})  "
        f"out {human(c['bytes_out_per_s'])}/s  in {human(c['bytes_in_per_s'])}/s  "
        f"in flight {c['inflight']}  used {human(c['used_slots'] * SLOT)}",
        "",
    ]
    head = (
        f"{'node':<10} {'state':<5} {'role':<9} {'term':>5} {'hb':>6} {'ops/s':>7} "
        f"{'I/O/s':>10} {'infl':>4} {'queue':>5} {'lag':>5} {'used':>9} {'free':>9}"
    )
    for g in view["groups"]:
        state = "writable" if g["writable"] else paint("NOT writable", RED)
        lines.append(
            paint(f"group {g['group_id']}", BOLD)
            + f"  {state}  leader {g['leader'] or paint('none', RED)}  term {g['term'] or '-'}  "
            + f"{g['up']}/{len(g['nodes'])} up"
        )
        lines.append(paint(head, DIM))
        for n in g["nodes"]:
            st = n.get("stats") or {}
            rates = st.get("rates") or {}
            up = n["up"]
            io = (rates.get("bytes_in_per_s", 0) + rates.get("bytes_out_per_s", 0)) if up else 0
            free = "inf" if n["free_slots"] is None else human(n["free_slots"] * SLOT)
            row = (
                f"{n['node_id']:<10} {'up' if up else 'DOWN':<5} {n['role']:<9} {n['term']:>5} "
                f"{n['last_seen_s']:>5.1f}s {(_ops(rates) if up else 0):>7.1f} "
                f"{human(io):>10} {st.get('inflight', '-'):>4} "
                f"{(st.get('executor') or {}).get('queued', '-'):>5} "
                f"{(st.get('raft') or {}).get('lag', '-'):>5} "
                f"{human(n['used_slots'] * SLOT):>9} {free:>9}"
            )
            lines.append(row if up else paint(row, RED))
        lines.append("")
    lines.append(paint("hot slices (reads in the last minute, all replicas)", BOLD))
    if not view["hot"]:
        lines.append("  none")
    for h in view["hot"][:10]:
        path = h["path"] or f"({h['file_id'][:12]}...)"
        lines.append(
            f"  {h['recent']:>7} recent {h['total']:>9} total  "
            f"{path}#{h['index']}  ({h['group']}:{h['slot']} on {' '.join(h['nodes'])})"
        )
    lines.append("")
    lines.append(paint("events", BOLD))
    for e in view["events"][:8]:
        stamp = time.strftime("%H:%M:%S", time.localtime(e["time"]))
        bad = " down" in e["text"] or "NOT writable" in e["text"] or "leader: none" in e["text"]
        lines.append("  " + paint(f"{stamp} {e['text']}", RED if bad else ""))
    return "\n".join(lines) + "\n"


def run(
    tracker: str,
    *,
    once: bool,
    interval: float = 1.5,
    out: TextIO = sys.stdout,
    token: str | None = None,
    ca: str | None = None,
) -> int:
    """Print one frame (``once``) or redraw until Ctrl-C."""
    color = out.isatty()
    if once:
        out.write(render(fetch_view(tracker, token=token, ca=ca), color=color))
        return 0
    try:
        while True:
            try:
                frame = render(fetch_view(tracker, token=token, ca=ca), color=color)
            except Unavailable as exc:
                frame = f"{exc}\n(retrying every {interval:g} s; Ctrl-C to quit)\n"
            out.write(CLEAR + frame)
            out.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0
