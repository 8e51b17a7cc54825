"""The ``mydfs`` commands that edit a stored file in place: ``write``, ``append``,
``truncate``, ``insert``, ``cut`` (``client/editor.py`` does the work).

Data comes from a local file, or standard input when LOCAL is ``-`` or left out. ``append``
prints the offset where its data landed; the others print nothing. ``--if-version V`` refuses
the edit (exit 1, ``conflict``) unless the file is at version ``V`` (``mydfs stat``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mydfs.common.errors import NotFound

COMMANDS = ("write", "append", "truncate", "insert", "cut")


def add_edit_commands(sub: Any) -> None:
    """The edit commands' parsers, on the ``mydfs`` subparsers ``sub``."""

    def common(p: argparse.ArgumentParser, data: bool) -> None:
        if data:
            p.add_argument(
                "local", nargs="?", default="-", help="local file, or - for standard input (-)"
            )
        p.add_argument(
            "--if-version",
            type=int,
            default=None,
            metavar="V",
            help="edit only if the file is at version V",
        )

    p = sub.add_parser("write", help="write data into a file at an offset: write REMOTE --offset N")
    p.add_argument("remote")
    p.add_argument("--offset", type=int, required=True, help="where (past the end: zeros between)")
    common(p, True)
    p = sub.add_parser("append", help="add data at the end of a file; prints its offset")
    p.add_argument("remote")
    common(p, True)
    p = sub.add_parser("truncate", help="cut a file to SIZE bytes, or grow it with zeros")
    p.add_argument("remote")
    p.add_argument("size", type=int)
    common(p, False)
    p = sub.add_parser("insert", help="insert data into a file at an offset, shifting the rest")
    p.add_argument("remote")
    p.add_argument("--offset", type=int, required=True)
    common(p, True)
    p = sub.add_parser("cut", help="remove LENGTH bytes at an offset, shifting the rest")
    p.add_argument("remote")
    p.add_argument("--offset", type=int, required=True)
    p.add_argument("--length", type=int, required=True)
    common(p, False)


def take_local_after_options(
    parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]
) -> argparse.Namespace:
    """``args`` with LOCAL taken from after the options (``write REMOTE --offset N LOCAL``:
    argparse fills an optional positional from the first run of positionals only); any other
    leftover argument is the usual usage error (exit 2)."""
    if (
        len(extra) == 1
        and getattr(args, "local", None) == "-"
        and args.command in COMMANDS
        and (extra[0] == "-" or not extra[0].startswith("-"))
    ):
        args.local = extra[0]
        return args
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def run_edit(client: Any, args: argparse.Namespace) -> int:
    """Run the edit command ``args.command`` with the blocking ``client``."""
    cmd, remote, version = args.command, args.remote, args.if_version
    if cmd == "truncate":
        client.truncate(remote, args.size, if_version=version)
        return 0
    if cmd == "cut":
        client.cut(remote, args.offset, args.length, if_version=version)
        return 0
    data: Any = sys.stdin.buffer
    if args.local != "-":
        data = Path(args.local)
        if not data.is_file():
            raise NotFound("local file does not exist or is not a regular file", local=args.local)
    if cmd == "write":
        client.write(remote, args.offset, data, if_version=version)
    elif cmd == "insert":
        client.insert(remote, args.offset, data, if_version=version)
    else:
        print(client.append(remote, data, if_version=version))
    return 0
