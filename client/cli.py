"""``mydfs``: the command line for users of a mydfs cluster.

Exit codes: 0 success, 1 an operation failed (one line on stderr says why), 2 bad usage.
The tracker comes from ``--tracker URL``, else ``$MYDFS_TRACKER``, else the credentials file's
``default``, else the embedded default ``http://127.0.0.1:8100`` that ``mydfs cluster up``
starts. The API key: ``--token``, else ``$MYDFS_TOKEN``, else the credentials file
(:mod:`mydfs.client.credentials`).
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from mydfs.client import credentials
from mydfs.client.cli_edit import COMMANDS as EDIT_COMMANDS
from mydfs.client.cli_edit import add_edit_commands, run_edit, take_local_after_options
from mydfs.client.cli_trash import COMMANDS as TRASH_COMMANDS
from mydfs.client.cli_trash import add_trash_commands, run_trash
from mydfs.common import __version__
from mydfs.common.errors import InvalidArgument, MydfsError

DEFAULT_TRACKER = "http://127.0.0.1:8100"
PROGRESS_MIN_BYTES = 8 * 1024 * 1024


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mydfs",
        description="Store and fetch files in a mydfs cluster.",
        epilog="The tracker: --tracker URL, else $MYDFS_TRACKER, else the credentials file's "
        "default, else " + DEFAULT_TRACKER + ". The API key: --token, else $MYDFS_TOKEN, else "
        "the credentials file ($MYDFS_CREDENTIALS or ~/.config/mydfs/credentials.json).",
    )
    parser.add_argument("--version", action="version", version=f"mydfs {__version__}")
    parser.add_argument("--tracker", help="tracker URL (default: $MYDFS_TRACKER or %(default)s)")
    parser.add_argument(
        "--token", help="API key (default: $MYDFS_TOKEN, else the credentials file's)"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="give up retrying after this many seconds"
    )
    parser.add_argument(
        "--ca", default=None, help="PEM CA bundle trusted for https:// (default: $MYDFS_CA)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("put", help="store a local file: put LOCAL REMOTE")
    p.add_argument("local", help="local file, or - for standard input")
    p.add_argument("remote", help="absolute path in mydfs, e.g. /data/a.bin")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")

    p = sub.add_parser("get", help="fetch a file: get REMOTE LOCAL")
    p.add_argument("remote")
    p.add_argument("local", help="local file to write, or - for standard output")

    p = sub.add_parser("cat", help="write a file to standard output")
    p.add_argument("remote")

    p = sub.add_parser("ls", help="list a directory")
    p.add_argument("dir", nargs="?", default="/")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("stat", help="show a file's entry")
    p.add_argument("remote")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("rm", help="delete a file (kept in the trash for undelete; see trash)")
    p.add_argument("remote")
    p.add_argument("--now", action="store_true", help="skip the trash: free it at once")
    add_trash_commands(sub)  # trash ls|purge, undelete (client/cli_trash.py)

    add_edit_commands(sub)  # write, append, truncate, insert, cut (client/cli_edit.py)

    p = sub.add_parser("status", help="groups, nodes, roles, free space and health")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("df", help="space per group: free, live, 301, pending, trash, orphans")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("top", help="live view of the cluster: nodes, ops/s, hot slices, events")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument("--interval", type=float, default=1.5, help="seconds between frames")

    p = sub.add_parser("share", help="print a URL that downloads a file without a key, for a while")
    p.add_argument("remote")
    p.add_argument("--ttl", default="1h", help="how long it works: 90s, 30m, 1h, 2d (%(default)s)")

    sub.add_parser("token", help="print the API key this command line uses")
    sub.add_parser("ui", help="print the dashboard's URL, with the API key in its fragment")

    p = sub.add_parser("keys", help="manage API keys (admin): keys create|ls|rm")
    ksub = p.add_subparsers(dest="keys_command", metavar="ACTION")
    kp = ksub.add_parser("create", help="make a key and print its token (shown only once)")
    kp.add_argument("name")
    kp.add_argument("--role", required=True, choices=("read", "write", "admin"))
    ksub.add_parser("ls", help="list the keys: name, role, created")
    kp = ksub.add_parser("rm", help="revoke a key")
    kp.add_argument("name")

    p = sub.add_parser("cluster", help="run a local cluster: cluster up")
    csub = p.add_subparsers(dest="cluster_command", metavar="ACTION")
    up = csub.add_parser("up", help="start a tracker and N groups of 3 nodes on loopback")
    up.add_argument(
        "--data", type=Path, default=Path("mydfs-data"), help="data folder (%(default)s)"
    )
    up.add_argument("--groups", type=int, default=2, help="storage groups (%(default)s)")
    up.add_argument("--port", type=int, default=None, help="base port (default 8100, or as before)")
    up.add_argument(
        "--tls-dir",
        type=Path,
        default=None,
        help="serve HTTPS with ca.pem/cert.pem/key.pem from this folder (made if missing)",
    )
    up.add_argument(
        "--trash-retention",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="seconds a removed file stays undeletable before its space is freed (%(default)s)",
    )

    sub.add_parser(
        "selfcheck", help="check the local slice store (same as mydfs-storage selfcheck)"
    )

    sub.add_parser(
        "bench",
        help="benchmark mydfs beside SeaweedFS and the machine's limits (mydfs bench --help)",
        add_help=False,
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # its own parser: every remaining argument is the benchmark's
        from mydfs.bench.cli import main as bench_main

        return bench_main(argv[1:])
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    args = take_local_after_options(parser, args, extra)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "selfcheck":
            from mydfs.storage.main import main as storage_main

            return storage_main(["selfcheck"])
        if args.command == "cluster":
            if args.cluster_command != "up":
                parser.parse_args(["cluster", "--help"])
                return 2
            return cluster_up(args.data, args.groups, args.port, args.tls_dir, args.trash_retention)
        tracker = (
            args.tracker
            or os.environ.get("MYDFS_TRACKER")
            or credentials.default_tracker()
            or DEFAULT_TRACKER
        ).rstrip("/")
        token = credentials.token_for(tracker, args.token)
        if args.command == "keys" and args.keys_command is None:
            parser.parse_args(["keys", "--help"])
            return 2
        if args.command in ("token", "ui"):
            if token is None:
                print(
                    f"mydfs: no API key for {tracker} (--token, $MYDFS_TOKEN, or "
                    f"{credentials.path()})",
                    file=sys.stderr,
                )
                return 1
            print(token if args.command == "token" else f"{tracker}/ui#token={token}")
            return 0
        if args.command == "top":
            from mydfs.client.top import run as top

            return top(tracker, once=args.once, interval=args.interval, token=token, ca=args.ca)
        return _run(args, tracker, token)
    except MydfsError as exc:
        print(f"mydfs: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mydfs: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except OSError as exc:  # e.g. a local file or folder that cannot be read or written
        detail = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
        print(f"mydfs: {detail}", file=sys.stderr)
        return 1


def _one_line(text: str) -> str:
    """``text`` with control characters (a newline in a hostile path) escaped: one line."""
    return "".join(repr(ch)[1:-1] if ch.isprintable() is False and ch != " " else ch for ch in text)


def _run(args: argparse.Namespace, tracker: str, token: str | None) -> int:
    from mydfs.client.sync import Client

    with Client(tracker, deadline=args.timeout, token=token, ca=args.ca) as client:
        cmd = args.command
        if cmd == "share":
            print(client.share(args.remote, parse_ttl(args.ttl)))
            return 0
        if cmd == "keys":
            return _keys(client, args)
        if cmd == "put":
            return _put(client, args.local, args.remote, args.overwrite)
        if cmd in EDIT_COMMANDS:
            return run_edit(client, args)
        if cmd in TRASH_COMMANDS:
            return run_trash(client, args)
        if cmd in ("get", "cat"):
            local = "-" if cmd == "cat" else args.local
            return _get(client, args.remote, local)
        if cmd == "ls":
            entries = client.listdir(args.dir)
            if args.json:
                _print_json(
                    [
                        {"name": e.name, "type": e.type, **(e.info.to_dict() if e.info else {})}
                        for e in entries
                    ]
                )
            else:
                for e in entries:
                    if e.type == "dir":
                        print(f"{'dir':>12}  {'':19}  {e.name}/")
                    else:
                        assert e.info is not None
                        print(f"{e.info.size:>12}  {_time(e.info.mtime)}  {e.name}")
            return 0
        if cmd == "stat":
            info = client.stat(args.remote)
            if args.json:
                _print_json(info.to_dict())
            else:
                for key, value in info.to_dict().items():
                    print(f"{key:>8}: {value}")
            return 0
        if cmd == "rm":
            client.delete(args.remote, now=args.now)
            return 0
        if cmd == "status":
            status = client.status()
            if args.json:
                _print_json(status)
            else:
                _print_status(status)
            return 0
        if cmd == "df":
            from mydfs.client.cli_df import print_df

            space = client.df()
            if args.json:
                _print_json(space)
            else:
                print_df(space)
            return 0
    raise AssertionError(args.command)


def parse_ttl(text: str) -> int:
    """``90s``, ``30m``, ``1h``, ``2d`` or plain seconds → seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip().lower()
    scale = units.get(value[-1:])
    digits = value[:-1] if scale is not None else value
    if not digits.isascii() or not digits.isdigit() or len(digits) > 9 or int(digits) < 1:
        raise InvalidArgument(f"bad --ttl {text!r}: use e.g. 90s, 30m, 1h or 2d", ttl=text)
    return int(digits) * (scale or 1)


def _keys(client: Any, args: argparse.Namespace) -> int:
    if args.keys_command == "create":
        print(client.create_key(args.name, args.role))
    elif args.keys_command == "ls":
        for key in client.list_keys():
            print(f"{key['name']:<24} {key['role']:<6} {_time(float(key['created']))}")
    elif args.keys_command == "rm":
        client.delete_key(args.name)
    return 0


def _put(client: Any, local: str, remote: str, overwrite: bool) -> int:
    if local == "-":
        client.put(remote, sys.stdin.buffer, overwrite=overwrite)
        return 0
    path = Path(local)
    if not path.is_file():
        print(
            f"mydfs: local file {local!r} does not exist or is not a regular file", file=sys.stderr
        )
        return 1
    with _progress(path.stat().st_size, f"put {remote}") as tick:
        client.put(remote, path, overwrite=overwrite, progress=tick)
    return 0


def _get(client: Any, remote: str, local: str) -> int:
    if local == "-":
        client.get(remote, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return 0
    info = client.stat(remote)
    target = Path(local)
    if target.is_dir():
        target = target / remote.rsplit("/", 1)[-1]
    partial = target.with_name(target.name + ".mydfs-partial")
    try:
        with _progress(info.size, f"get {remote}") as tick:
            client.get(remote, partial, progress=tick)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return 0


class _progress:
    """A tqdm bar on stderr for transfers of more than a moment, when stderr is a terminal."""

    def __init__(self, total: int, label: str) -> None:
        self._bar: Any = None
        if total >= PROGRESS_MIN_BYTES and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="B", unit_scale=True, desc=label, leave=False)

    def __enter__(self) -> Callable[[int], None] | None:
        bar = self._bar
        if bar is None:
            return None
        lock = threading.Lock()

        def tick(n: int) -> None:
            with lock:
                bar.update(n)

        return tick

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


def _time(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _print_status(status: dict[str, Any]) -> None:
    rows = [("GROUP", "NODE", "ROLE", "UP", "FREE SLOTS", "LIVE SLICES", "URL")]
    for g in status.get("groups", []):
        for n in g.get("nodes", []):
            free = n.get("free_slots")
            rows.append(
                (
                    str(g["group_id"]) + ("" if g.get("writable") else " (read-only)"),
                    str(n.get("node_id")),
                    str(n.get("role")),
                    "yes" if n.get("up") else "DOWN",
                    "-" if free is None else str(free),
                    str(n.get("used_slots", "-")),
                    str(n.get("url")),
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    groups = status.get("groups", [])
    writable = sum(1 for g in groups if g.get("writable"))
    print(f"{len(groups)} groups, {writable} writable")
    for g in groups:
        for n in g.get("nodes", []):
            if n.get("unrepairable"):
                slots = ", ".join(str(s) for s in n["unrepairable"])
                print(
                    f"ALERT group {g['group_id']} node {n.get('node_id')}: no node holds an "
                    f"intact copy of slots {slots} (found by the scrub; never served)"
                )


def cluster_up(
    data: Path,
    groups: int,
    port: int | None,
    tls_dir: Path | None = None,
    trash_retention: float = 60.0,
) -> int:
    """Run a tracker and ``groups`` groups in the foreground until Ctrl-C or SIGTERM."""
    from mydfs.client.local_cluster import LocalCluster

    if groups < 1:
        print("mydfs: --groups must be at least 1", file=sys.stderr)
        return 2
    if not 0 < trash_retention < float("inf"):
        print("mydfs: --trash-retention must be a number of seconds > 0", file=sys.stderr)
        return 2
    base = port
    if base is None and not (data / "cluster.json").exists():
        base = 8100
    cluster = LocalCluster(
        data.resolve(),
        groups=groups,
        base_port=base,
        tls_dir=None if tls_dir is None else tls_dir.resolve(),
        trash_retention=trash_retention,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        print(
            f"starting a tracker and {cluster.groups} groups of 3 storage nodes in {data} ...",
            flush=True,
        )
        cluster.start()
        print(f"tracker {cluster.tracker_url}", flush=True)
        if cluster.ca is not None:
            print(f"  export MYDFS_CA={cluster.ca}    # curl --cacert {cluster.ca}", flush=True)
        print(
            f"admin API key saved in {cluster.credentials_path} (mydfs token prints it)\n"
            f"  mydfs put ./some.file /some.file && mydfs ls / && mydfs get /some.file ./copy\n"
            f'  curl -LO -H "Authorization: Bearer $(mydfs token)" '
            f"{cluster.tracker_url}/files/some.file\n"
            f'  curl -LO "$(mydfs share /some.file --ttl 1h)"\n'
            f"logs in {data}/*.log; Ctrl-C stops the cluster",
            flush=True,
        )
        while not stop.wait(1.0):
            for proc in cluster.processes():
                if not proc.alive() and proc.proc is not None and proc.proc.returncode is not None:
                    print(f"{proc.name} exited ({proc.proc.returncode}); restarting", flush=True)
                    proc.start()
    finally:
        print("stopping the cluster ...", flush=True)
        cluster.stop()
        print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
