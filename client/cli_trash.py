"""The ``mydfs`` commands of the trash: ``trash ls``, ``trash purge``, ``undelete``
(``docs/space.md``, Trash). ``mydfs rm --now`` is in ``client/cli.py``.

``trash ls`` prints one line per trashed file, oldest first: size, removed at, reason, state,
when it will be freed, file id, path (``--json``: the tracker's records). ``undelete PATH
[NEWPATH] [--id FILE_ID]`` restores the newest trashed file of PATH (or the one of FILE_ID),
under NEWPATH if given. ``trash purge PATH [--id FILE_ID]`` frees one at the reclaimer's next
pass, ``trash purge --all --yes`` all of them.
"""

from __future__ import annotations

import datetime
import sys
from typing import Any

import orjson

from mydfs.common.errors import InvalidArgument

COMMANDS = ("trash", "undelete")


def add_trash_commands(sub: Any) -> None:
    """The trash commands' parsers, on the ``mydfs`` subparsers ``sub``."""
    p = sub.add_parser("trash", help="removed files kept for undelete: trash ls|purge")
    tsub = p.add_subparsers(dest="trash_command", metavar="ACTION")
    tp = tsub.add_parser("ls", help="list the trash: path, size, removed at, state, freed at")
    tp.add_argument("--json", action="store_true", help="machine-readable output")
    tp = tsub.add_parser(
        "purge", help="free trashed files now: purge PATH [--id FILE_ID] | purge --all --yes"
    )
    tp.add_argument("remote", nargs="?", default=None, help="the path the file had")
    tp.add_argument("--id", dest="file_id", default=None, help="this record (see trash ls)")
    tp.add_argument("--all", action="store_true", help="every record in the trash")
    tp.add_argument("--yes", action="store_true", help="confirm --all")

    p = sub.add_parser(
        "undelete", help="restore a removed file: undelete PATH [NEWPATH] [--id FILE_ID]"
    )
    p.add_argument("remote", help="the path the file had")
    p.add_argument("new", nargs="?", default=None, help="restore under this path instead")
    p.add_argument("--id", dest="file_id", default=None, help="this record (see trash ls)")


def run_trash(client: Any, args: Any) -> int:
    """Run one trash command with the sync ``client``."""
    if args.command == "undelete":
        info = client.undelete(args.remote, args.new, file_id=args.file_id)
        print(f"restored {info.path} ({info.size} bytes)")
        return 0
    if args.trash_command == "ls":
        records = client.trash()
        if args.json:
            sys.stdout.write(orjson.dumps(records, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            for r in records:
                print(_line(r))
        return 0
    if args.trash_command == "purge":
        if args.all:
            if args.remote is not None or args.file_id is not None:
                raise InvalidArgument("trash purge --all takes no PATH or --id")
            if not args.yes:
                raise InvalidArgument(
                    "trash purge --all frees every removed file for good: add --yes"
                )
            purged = client.purge(everything=True)
        elif args.remote is None and args.file_id is None:
            raise InvalidArgument("trash purge needs a PATH, --id FILE_ID, or --all --yes")
        else:
            purged = client.purge(args.remote, file_id=args.file_id)
        for r in purged:
            print(f"purged {r['path']} ({r['file_id']})")
        return 0
    print("mydfs: trash needs an action: ls or purge (mydfs trash --help)", file=sys.stderr)
    return 2


def _line(r: dict[str, Any]) -> str:
    free_at = r.get("free_at")
    freed = "next pass" if free_at is None else _time(float(free_at))
    return (
        f"{r['size']:>12}  {_time(float(r['time']))}  {r['reason']:<8}  {r['state']:<10}  "
        f"free {freed:<19}  {r['file_id']}  {r['path']}"
    )


def _time(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
