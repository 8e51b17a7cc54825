"""``mydfs``: the command line for users of a mydfs cluster."""

from __future__ import annotations

import argparse
import sys

from mydfs.common import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mydfs",
        description="Store and fetch files in a mydfs cluster.",
    )
    parser.add_argument("--version", action="version", version=f"mydfs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser(
        "selfcheck", help="check the local slice store (same as mydfs-storage selfcheck)"
    )
    args = parser.parse_args(argv)
    if args.command == "selfcheck":
        from mydfs.storage.main import main as storage_main

        return storage_main(["selfcheck"])
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
