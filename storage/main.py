"""``mydfs-storage``: a storage node, and offline tools for its volume."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import orjson

from mydfs.common.errors import MydfsError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mydfs-storage",
        description="A mydfs storage node: keeps 4 MiB slices in a local volume, "
        "replicated in a group of three through Raft.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = sub.add_parser("selfcheck", help="build a scratch volume and check every operation")
    check.add_argument("--dir", type=Path, default=None, help="scratch folder (default: temp)")
    check.add_argument("--slices", type=int, default=8, help="slices to write (default 8)")
    verify = sub.add_parser("verify", help="check every header and block of a volume file")
    verify.add_argument("volume", type=Path)
    stat = sub.add_parser("stat", help="print a volume's identity and statistics as JSON")
    stat.add_argument("volume", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "selfcheck":
            from mydfs.storage.selfcheck import run_selfcheck

            if args.slices < 3:
                print("mydfs-storage: --slices must be at least 3", file=sys.stderr)
                return 2
            run_selfcheck(args.dir, args.slices, sys.stdout)
            return 0
        if args.command in ("verify", "stat"):
            from mydfs.storage.volume import Volume

            with Volume.open(args.volume) as vol:
                if args.command == "stat":
                    info = {
                        "node_id": vol.superblock.node_id,
                        "group_id": vol.superblock.group_id,
                        "volume_id": vol.superblock.volume_id.hex(),
                        "clean": vol.report.clean,
                        "stats": dataclasses.asdict(vol.stats()),
                    }
                    sys.stdout.write(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode() + "\n")
                    return 0
                report = vol.verify()
                for problem in report.problems:
                    print(f"slot {problem.slot}: {problem.reason}")
                print(f"checked {report.checked} slots, {len(report.problems)} problems")
                return 0 if report.ok else 1
        _parser().print_help()
        return 2
    except MydfsError as exc:
        print(f"mydfs-storage: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
