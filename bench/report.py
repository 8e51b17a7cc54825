"""Writing a run down: ``results.json``, ``results.md`` (the table) and ``chart.png``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson

from mydfs.bench.figures import Figure, Result

PEER = "SeaweedFS"


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "s" or abs(value) < 10:
        text = f"{value:.2f}"
    elif abs(value) < 100:
        text = f"{value:.1f}"
    else:
        text = f"{value:,.0f}"
    return text


def _cell(r: Result | None, unit: str) -> str:
    if r is None:
        return "-"
    if r.median is None:
        return "none" if unit == "s" else "failed"
    if r.min is not None and r.max is not None and r.min != r.max:
        return f"**{_num(r.median, unit)}** ({_num(r.min, unit)}-{_num(r.max, unit)})"
    return f"**{_num(r.median, unit)}**"


def _lat(r: Result | None, unit: str) -> str:
    if unit != "ops/s" or r is None or r.p50_ms is None or r.p99_ms is None:
        return "-"
    return f"{r.p50_ms:.1f} / {r.p99_ms:.1f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def markdown_table(figures: list[Figure]) -> tuple[str, list[str]]:
    """The table of figures and its footnotes (numbered [1], [2], ... in the cells)."""
    foot: list[str] = []

    def mark(text: str) -> str:
        if text not in foot:
            foot.append(text)
        return f" [{foot.index(text) + 1}]"

    rows = [
        "| figure | unit | mydfs median (min-max) | p50 / p99 ms | "
        f"{PEER} median (min-max) | p50 / p99 ms | limit | mydfs ÷ {PEER} | mydfs ÷ limit |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for f in figures:
        ratio_peer = _ratio(f.ratio_peer)
        unlike = f.unlike()
        if unlike and f.ratio_peer is not None:
            ratio_peer += mark("not alike: " + "; ".join(unlike))
        mine = _cell(f.mydfs, f.unit)
        if f.mydfs is not None and f.mydfs.note:
            mine += mark(f"mydfs: {f.mydfs.note}")
        peer = _cell(f.peer, f.unit) if f.peer is not None else "not run"
        if f.peer is None and f.peer_absent:
            peer = "no equivalent" + mark(f"{PEER}: {f.peer_absent}")
        if f.peer is not None and f.peer.note:
            peer += mark(f"{PEER}: {f.peer.note}")
        limit = "-"
        if f.limit is not None:
            limit = f"{_num(f.limit.value, f.unit)} ({f.limit.label or f.limit.what})"
        rows.append(
            f"| {f.workload} {f.op} N={f.clients} | {f.unit} | {mine} | "
            f"{_lat(f.mydfs, f.unit)} | {peer} | {_lat(f.peer, f.unit)} | {limit} | {ratio_peer} | "
            f"{_ratio(f.ratio_limit)} |"
        )
    return "\n".join(rows), foot


def limits_lines(doc: dict[str, Any]) -> list[str]:
    out = []
    for lim in doc.get("limits", {}).values():
        samples = lim["samples"]
        out.append(
            f"- {lim['what']}: **{_num(lim['median'])} {lim['unit']}** "
            f"({_num(min(samples))}-{_num(max(samples))})"
        )
    return out


def markdown(doc: dict[str, Any], figures: list[Figure]) -> str:
    meta = doc["meta"]
    m = meta["machine"]
    settings = meta["settings"]
    table, foot = markdown_table(figures)
    systems = meta.get("systems", {})
    lines = [
        f"# mydfs bench — {meta['started']}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM, kernel "
        f"{m['kernel']}, Python {m['python']}; scratch on {meta.get('scratch_filesystem')}.",
        "",
        "Systems:",
    ]
    for key, d in systems.items():
        lines.append(f"- {key} {d.get('version', '')}: {d.get('topology', '')}")
    lines += [
        "",
        f"Method: {settings['runs']} repetition(s) per figure"
        f"{', after an unrecorded warm-up' if settings['warmup'] else ''}; the systems alternate"
        " (order reversed every other repetition); median (min-max). One client process, N "
        "concurrent clients (asyncio), all on the same cores as the servers. Ratios: > 1 means "
        "mydfs is better (for seconds-to-recover, the peer's time ÷ mydfs's)."
        + (" **Quick run: tiny sizes, not a measurement.**" if settings.get("quick") else ""),
        "",
        table,
        "",
    ]
    if foot:
        lines += [f"{i}. {text}" for i, text in enumerate(foot, 1)] + [""]
    lines += [
        "The limits, all measured in this run on this machine: **disk/3** = `dd bs=4M "
        "oflag=dsync` into a new file (fresh blocks), measured in turn with the systems on the "
        "same number of bytes, divided by 3 because three copies share one disk; **loopback "
        "TCP** = one stream over 127.0.0.1 with 4 MiB sends; **null HTTP** = the same client "
        "loop against an HTTP server that does nothing (one request per operation); **dsync "
        "append** = one 4 KiB O_DSYNC append per write (single client). An ops limit is the "
        "lowest of those that apply. At the start of the run:",
        *limits_lines(doc),
        "",
    ]
    lines += [
        "What each side measured (bytes per op, copies, fsync before the acknowledgement, "
        "path) is in `results.json` under each figure's `measured`.",
    ]
    lines += alone_lines(figures)
    cpu = [
        f"{name} {c['our_cores']:.2f} / {c['foreign_cores']:.2f} / {c.get('irq_cores', 0):.2f}"
        for name, w in doc.get("workloads", {}).items()
        if (c := w.get("cpu"))
    ]
    if cpu:
        lines += [
            "",
            "CPU in cores during each workload (this run's processes / every other process, "
            "kernel threads included / interrupts, where loopback traffic is handled): "
            + "; ".join(cpu),
        ]
    rss = [
        f"{name}: " + ", ".join(f"{proc} {mib}" for proc, mib in sorted(r.items()))
        for name, w in doc.get("workloads", {}).items()
        if (r := w.get("peak_rss_mib"))
    ]
    if rss:
        lines += ["", "Peak resident size in MiB of each process during each workload:"]
        lines += [f"- {line}" for line in rss]
    notes = list(doc.get("notes", []))
    notes += [f"workload {k} failed: {v}" for k, v in doc.get("failures", {}).items()]
    if notes:
        lines += ["", "Notes:", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def alone_lines(figures: list[Figure]) -> list[str]:
    """The notes of the figures measured on mydfs alone (the edit workloads): what each
    did, the bytes it wrote, its write amplification, its checks."""
    alone = [f for f in figures if f.peer is None and f.peer_absent and f.notes]
    if not alone:
        return []
    out = ["", "Figures measured on mydfs alone (no peer equivalent):"]
    for f in alone:
        out.append(f"- **{f.workload} {f.op} N={f.clients}**: " + "; ".join(f.notes))
    return out


def info_lines(doc: dict[str, Any]) -> list[str]:
    """A few lines for the chart: machine, systems, what the writes mean, the limits."""
    meta = doc["meta"]
    m = meta["machine"]
    settings = meta["settings"]
    out = [
        f"{meta['started'][:16].replace('T', ' ')} UTC; {m['cores']} cores {m['cpu']}, "
        f"{m['memory_gib']} GiB",
        f"{settings['runs']} repetition(s), systems alternating"
        + (" -- QUICK RUN, tiny sizes" if settings.get("quick") else ""),
        "",
    ]
    systems = meta.get("systems", {})
    if "mydfs" in systems:
        out.append(f"mydfs {systems['mydfs'].get('version', '')}: {systems['mydfs']['topology']}")
        out.append("  write acked when fsync'ed on 2 of 3 + Raft commit")
    if "seaweedfs" in systems:
        sw = systems["seaweedfs"]
        version = str(sw.get("version", "")).split(" ")[0]
        out.append(f"SeaweedFS {version}: {sw['topology']}")
        out.append("  write acked when on all 3 copies, NOT fsync'ed")
    out += ["", "limits measured in this run:"]
    for lim in doc.get("limits", {}).values():
        short = lim["what"].split(":")[0]
        out.append(f"  {short:<13} {lim['name']:<24} {_num(lim['median']):>7} {lim['unit']}")
    out.append("  large: dd and loopback measured again in turn with the systems")
    out.append("  write limit = disk / 3 copies; ops limit = the lowest of:")
    out.append("  null HTTP server (same client loop), disk/3, 4 KiB dsync append")
    return out


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))


def chart(
    path: Path, figures: list[Figure], title: str, info: list[str] | None = None
) -> str | None:
    """Draw the PNG: one panel per unit (MB/s, ops/s; seconds to recover, beside ``info``).
    Returns why not if matplotlib is missing or there is nothing to draw."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "chart skipped: matplotlib is not installed (pip install -e '.[bench]')"

    headings = {
        "MB/s": "Throughput, MB/s (log scale, higher is better)",
        "ops/s": "Operations per second (log scale, higher is better)",
        "s": "Seconds until writes succeed after a SIGKILL (lower is better)",
        "ms": "Milliseconds per edit (log scale, lower is better; mydfs alone)",
        "x": "Ratios (log scale; churn: write ops/s with housekeeping on ÷ off, 1 = no cost)",
        "slices/s": "Slices freed per second (log scale; churn, housekeeping on)",
    }
    units = list(dict.fromkeys(f.unit for f in figures))
    wide = [u for u in units if u != "s"]
    if not figures:
        return "chart skipped: no figures"
    rows = len(wide) + 1
    fig = plt.figure(figsize=(15, 4.3 * len(wide) + 4.0), dpi=110)
    grid = fig.add_gridspec(rows, 2, height_ratios=[1.0] * len(wide) + [0.9])
    for i, unit in enumerate(wide):
        ax = fig.add_subplot(grid[i, :])
        _panel(ax, [f for f in figures if f.unit == unit], headings.get(unit, unit))
    if "s" in units:
        _panel(fig.add_subplot(grid[rows - 1, 0]), [f for f in figures if f.unit == "s"],
               headings["s"])  # fmt: skip
    if info:
        ax = fig.add_subplot(grid[rows - 1, 1])
        ax.axis("off")
        ax.text(0.0, 1.0, "\n".join(info), va="top", ha="left", fontsize=8, family="monospace",
                transform=ax.transAxes, wrap=True)  # fmt: skip
    fig.suptitle(title, fontsize=12)
    fig.text(
        0.5,
        0.005,
        "Bars: median of the repetitions, whiskers min-max. Under each group: mydfs ÷ SeaweedFS "
        "(SW) and mydfs ÷ the machine's limit (lim); > 1 means mydfs is better.",
        ha="center",
        fontsize=8,
        color="#444",
    )
    fig.tight_layout(rect=(0, 0.02, 1, 0.97), h_pad=3.0)
    fig.savefig(path)
    plt.close(fig)
    return None


_COLORS = {"mydfs": "#1f77b4", PEER: "#ff7f0e", "limit": "#b0b0b0"}


def _panel(ax: Any, group: list[Figure], heading: str) -> None:
    labels = [f"{f.workload}\n{f.op} N={f.clients}" for f in group]
    x = list(range(len(group)))
    series: list[tuple[str, list[float | None], list[tuple[float, float] | None]]] = [
        ("mydfs", [f.mydfs.median if f.mydfs else None for f in group], _errs(group, "m")),
        (PEER, [f.peer.median if f.peer else None for f in group], _errs(group, "p")),
    ]
    if any(f.limit is not None for f in group):
        series.append(("limit", [f.limit.value if f.limit else None for f in group], []))
    width = 0.8 / len(series)
    seconds = group[0].unit == "s"
    tops = [v for _, vals, _ in series for v in vals if v]
    timeouts = [
        float(r.measured.get("timeout_s", 0))
        for f in group
        for r in (f.mydfs, f.peer)
        if r is not None and r.median is None
    ]
    for k, (name, values, errs) in enumerate(series):
        xs = [xi + (k - (len(series) - 1) / 2) * width for xi in x]
        heights = [v if v is not None else 0.0 for v in values]
        bars = ax.bar(
            xs,
            heights,
            width,
            label="machine limit" if name == "limit" else name,
            color=_COLORS[name],
            hatch="//" if name == "limit" else None,
            edgecolor="#707070" if name == "limit" else "white",
            linewidth=0.5,
        )
        if errs:
            lo = [h - e[0] if (h and e) else 0.0 for h, e in zip(heights, errs, strict=True)]
            hi = [e[1] - h if (h and e) else 0.0 for h, e in zip(heights, errs, strict=True)]
            ax.errorbar(xs, heights, yerr=[lo, hi], fmt="none", ecolor="#333", lw=0.8)
        for bar, v, f, e in zip(bars, values, group, errs or [None] * len(group), strict=True):
            cx = bar.get_x() + width / 2
            r = f.mydfs if name == "mydfs" else f.peer if name == PEER else None
            if v is None and r is not None:
                limit_s = float(r.measured.get("timeout_s", 0))
                if seconds and limit_s:
                    ax.bar(cx, limit_s, width, color="none", edgecolor=_COLORS[name], hatch="xx",
                           linewidth=0.8)  # fmt: skip
                    ax.text(cx, limit_s, f"no write\nin {limit_s:.0f} s", ha="center",
                            va="bottom", fontsize=7, color=_COLORS[name])  # fmt: skip
                else:
                    ax.text(cx, ax.get_ylim()[0], "failed", ha="center", va="bottom",
                            fontsize=7, color=_COLORS[name])  # fmt: skip
                continue
            if v is None:
                continue
            top = max(v, e[1]) if e else v  # above the whisker
            ax.text(cx, top, _short(v, f.unit), ha="center", va="bottom", fontsize=7,
                    rotation=90 if len(group) > 6 else 0)  # fmt: skip
    for xi, f in zip(x, group, strict=True):
        parts = []
        if f.ratio_peer is not None:
            parts.append(f"{f.ratio_peer:.2f}x SW")
        if f.ratio_limit is not None:
            parts.append(f"{f.ratio_limit:.2f}x lim")
        if parts:
            ax.annotate("\n".join(parts), (xi, 0), xycoords=("data", "axes fraction"),
                        xytext=(0, -34), textcoords="offset points", ha="center", va="top",
                        fontsize=7, color="#1f4e79")  # fmt: skip
    if seconds:
        ax.set_ylim(0, max(tops + timeouts + [1.0]) * 1.3)
    elif tops:
        ax.set_yscale("log")
        ax.set_ylim(min(tops) / 3, max(tops) * 6)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_title(heading, fontsize=10, loc="left")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right", ncols=3)
    ax.tick_params(axis="x", length=0)


def _errs(group: list[Figure], which: str) -> list[tuple[float, float] | None]:
    out: list[tuple[float, float] | None] = []
    for f in group:
        r = f.mydfs if which == "m" else f.peer
        if r is None or r.min is None or r.max is None:
            out.append(None)
        else:
            out.append((r.min, r.max))
    return out


def _short(v: float, unit: str) -> str:
    if unit == "s":
        return f"{v:.1f}"
    if v >= 10_000:
        return f"{v / 1000:.0f}k"
    if v >= 1000:
        return f"{v / 1000:.1f}k"
    if v >= 10:
        return f"{v:.0f}"
    return f"{v:.1f}" if not math.isnan(v) else "?"
