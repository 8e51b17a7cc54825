"""``mydfs-storage``: a storage node, and offline tools for its volume."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
from pathlib import Path

import orjson

from mydfs.common.config import add_arguments, render_default
from mydfs.common.errors import MydfsError
from mydfs.common.tracing import configure_logging
from mydfs.storage import allocator
from mydfs.storage.config import OPTIONS, StorageConfig, from_args

log = logging.getLogger("mydfs.storage")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mydfs-storage",
        description="A mydfs storage node: keeps 4 MiB slices in a local volume, "
        "replicated in a group of three through Raft. Without a COMMAND it runs the node.",
    )
    add_arguments(parser, OPTIONS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = sub.add_parser("selfcheck", help="build a scratch volume and check every operation")
    check.add_argument("--dir", type=Path, default=None, help="scratch folder (default: temp)")
    check.add_argument("--slices", type=int, default=8, help="slices to write (default 8)")
    verify = sub.add_parser("verify", help="check every header and block of a volume file")
    verify.add_argument("volume", type=Path)
    stat = sub.add_parser("stat", help="print a volume's identity and statistics as JSON")
    stat.add_argument("volume", type=Path)
    return parser


async def serve(config: StorageConfig) -> None:
    """Run one storage node until SIGTERM or SIGINT."""

    # Everything this process creates (volume, journal, snapshots, edit logs, checkpoints,
    # temporary files of pysyncobj) is owner-only, whatever the caller's umask.
    os.umask(0o077)

    from mydfs.common.limits import LimitedRunner
    from mydfs.common.tls import listening_site
    from mydfs.storage.http_api import make_app
    from mydfs.storage.node import StorageNode

    allocator.tune()  # freed slices go back to the system (see storage/allocator.py)
    node = StorageNode(config)
    await node.start()
    runner = LimitedRunner(make_app(node), config.limits, access_log=None, handle_signals=False)
    await runner.setup()
    site, scheme = listening_site(
        runner, config.listen_host, config.listen_port, config.tls_cert, config.tls_key
    )
    try:
        await site.start()
        log.info(
            "serving %s on %s (advertised %s)",
            scheme,
            config.listen_port,
            config.advertise,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()
        await node.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.print_config:
        print(render_default(OPTIONS, "mydfs-storage configuration (TOML)"))
        return 0
    try:
        if args.command is None:
            config = from_args(args)
            configure_logging(config.log_level, config.log_format, config.node_id)
            asyncio.run(serve(config))
            return 0
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
