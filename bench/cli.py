"""``mydfs bench``: mydfs beside SeaweedFS and the machine's limits, in one run.

    mydfs bench                      every workload (10-20 minutes)
    mydfs bench large small-64k      only these
    mydfs bench --list               the workloads
    mydfs bench --quick              everything on tiny sizes, in under a minute
    mydfs bench edits                the edit workloads (mydfs only): edit-4k append-1k
                                     overwrite-64m insert-mid

Starts a mydfs cluster (a tracker and one group of 3 storage nodes), SeaweedFS (1 master with
replication 002, 3 volume servers, 1 filer) and a null HTTP server, all on 127.0.0.1 in a
scratch folder, measures the machine's limits, runs the workloads, and stops everything (also
on Ctrl-C). Writes results.json, results.md and chart.png to --out
(default bench-results/<timestamp>/). See docs/bench.md.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from mydfs.bench.edits import EDIT_WORKLOADS
from mydfs.bench.figures import Figure
from mydfs.bench.report import chart, info_lines, markdown, markdown_table, write_json
from mydfs.bench.suite import WORKLOADS, RunOutput, Settings, default_log, run_suite

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}

#: Names that select several workloads at once.
SETS = {"edits": EDIT_WORKLOADS}


def size(text: str) -> int:
    """Bytes from '1G', '64M', '4096', '64KiB' (binary units)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1G, 64M, 4096)")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def clients(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of client counts: {text!r}") from exc
    if not out or any(n < 1 or n > 256 for n in out):
        raise argparse.ArgumentTypeError("client counts must be 1..256")
    return out


def sizes(text: str) -> tuple[int, ...]:
    """Sizes from '64M,256M,1G'."""
    out = tuple(size(x) for x in text.split(",") if x.strip())
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"not a list of sizes: {text!r}")
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mydfs bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "workloads",
        nargs="*",
        metavar="WORKLOAD",
        help="workloads to run (all); 'edits' names the four edit workloads",
    )
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    p.add_argument("--out", type=Path, help="results folder (bench-results/<timestamp>/)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1 repetition: a smoke run")
    p.add_argument("--runs", type=int, help="repetitions per figure (3)")
    p.add_argument("--no-warmup", action="store_true", help="skip the unrecorded warm-ups")
    p.add_argument("--clients", type=clients, help="client counts N, comma-separated (1,16)")
    p.add_argument("--large-size", type=size, help="bytes per large-file repetition (1G)")
    p.add_argument(
        "--small-ops", type=int, help="operations per small/meta/churn repetition (1000)"
    )
    p.add_argument("--op-seconds", type=float, help="time cap per small/meta/churn repetition (8)")
    p.add_argument("--meta-files", type=int, help="files created for the meta workload (500)")
    p.add_argument("--meta-dirs", type=int, help="directories they are spread over (10)")
    p.add_argument("--failover-size", type=size, help="bytes per write during failover (64K)")
    p.add_argument(
        "--failover-timeout", type=float, help="seconds to wait for writes after a kill (15)"
    )
    p.add_argument("--edit-size", type=size, help="file of the 4 KiB random overwrites (256M)")
    p.add_argument("--edit-ops", type=int, help="overwrites per edit-4k repetition (1000)")
    p.add_argument("--append-records", type=int, help="records per append-1k repetition (1000)")
    p.add_argument("--overwrite-size", type=size, help="bytes of the overwrite in place (64M)")
    p.add_argument(
        "--insert-sizes", type=sizes, help="file sizes of the middle inserts (64M,256M,1G)"
    )
    p.add_argument("--groups", type=int, help="mydfs storage groups of 3 nodes (1)")
    p.add_argument("--no-peer", action="store_true", help="leave SeaweedFS out")
    p.add_argument(
        "--no-mydfs", action="store_true", help="leave mydfs out (only the peer and the limits)"
    )
    p.add_argument("--scratch", type=Path, help="where the scratch folder goes (system temp)")
    p.add_argument("--keep-scratch", action="store_true", help="keep data and logs afterwards")
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    base = Settings.quick_settings() if args.quick else Settings()
    overrides = {
        "runs": args.runs,
        "clients": args.clients,
        "large_bytes": args.large_size,
        "small_ops": args.small_ops,
        "op_seconds": args.op_seconds,
        "meta_files": args.meta_files,
        "meta_dirs": args.meta_dirs,
        "failover_size": args.failover_size,
        "failover_timeout": args.failover_timeout,
        "groups": args.groups,
    }
    settings = replace(base, **{k: v for k, v in overrides.items() if v is not None})
    edits = {
        "file_bytes": args.edit_size,
        "edit_ops": args.edit_ops,
        "append_records": args.append_records,
        "overwrite_bytes": args.overwrite_size,
        "insert_sizes": args.insert_sizes,
    }
    settings.edits = replace(settings.edits, **{k: v for k, v in edits.items() if v is not None})
    if args.no_warmup:
        settings.warmup = False
    if args.no_peer:
        settings.peer = False
    if args.no_mydfs:
        settings.mydfs = False
    return settings


def main(argv: list[str] | None = None) -> int:
    import mydfs.bench.workloads  # noqa: F401 - registers the workloads

    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        width = max(len(n) for n in WORKLOADS)
        for name, w in WORKLOADS.items():
            print(f"{name:<{width}}  {w.description}")
        for name, members in SETS.items():
            print(f"{name:<{width}}  the set: {' '.join(members)}")
        return 0
    args.workloads = [m for n in args.workloads for m in SETS.get(n, (n,))]
    args.workloads = list(dict.fromkeys(args.workloads))
    unknown = [n for n in args.workloads if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")
    settings = settings_from(args)
    if settings.runs < 1 or settings.groups < 1 or settings.small_ops < 1:
        parser.error("--runs, --groups and --small-ops must be at least 1")
    if settings.large_bytes < max(settings.clients) or settings.meta_files < 1:
        parser.error("--large-size must cover every client; --meta-files must be at least 1")
    e = settings.edits
    if min(e.file_bytes, e.edit_ops, e.append_records, e.overwrite_bytes) < 1:
        parser.error("--edit-size, --edit-ops, --append-records, --overwrite-size: at least 1")
    if e.file_bytes < e.edit_bytes:
        parser.error(f"--edit-size must hold one {e.edit_bytes}-byte edit")
    names = args.workloads or list(WORKLOADS)
    out = args.out or Path("bench-results") / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)

    run = run_suite(
        settings,
        [WORKLOADS[n] for n in names],
        scratch_parent=args.scratch,
        keep_scratch=args.keep_scratch,
        log=default_log,
    )
    return write_outputs(run, out)


def write_outputs(run: RunOutput, out: Path) -> int:
    doc = run.to_dict()
    started = run.meta["started"]
    m = run.meta["machine"]
    title = (
        f"mydfs vs SeaweedFS vs the machine's limits — {started[:10]}, "
        f"{m['cores']} cores {m['cpu']}"
    )
    why = chart(out / "chart.png", run.figures, title, info_lines(doc))
    if why:
        run.notes.append(why)
        doc["notes"] = run.notes
    doc["files"] = {"json": "results.json", "markdown": "results.md"}
    if why is None:
        doc["files"]["chart"] = "chart.png"
    write_json(out / "results.json", doc)
    (out / "results.md").write_text(markdown(doc, run.figures))
    _print_summary(run.figures, doc, out)
    if run.meta.get("interrupted"):
        return 130
    return 1 if run.failures else 0


def _print_summary(figures: list[Figure], doc: dict[str, Any], out: Path) -> None:
    table, foot = markdown_table(figures)
    print(table)
    for i, text in enumerate(foot, 1):
        print(f"  [{i}] {text}")
    for note in doc.get("notes", []) or []:
        print(f"note: {note}")
    failures = doc.get("failures") or {}
    for name, why in failures.items():
        print(f"FAILED: {name}: {why}")
    files = doc.get("files") or {}
    print(f"results in {out}/ ({', '.join(files.values())})")


if __name__ == "__main__":
    sys.exit(main())
