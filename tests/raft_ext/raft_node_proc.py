"""One raft_ext test node in its own process, driven over a small aiohttp control channel.

Used by ``test_raft_cluster_proc.py``: the parent picks the ports, passes the password in the
environment (never on the command line), waits for ``READY`` on stdout, then talks HTTP:

* ``GET  /status``  -> ``RaftNode.status()``
* ``GET  /state``   -> the toy machine's contents, read on the tick thread
* ``POST /submit``  ``{"command": {...}, "timeout": s, "leader_only": bool}``
                    -> 200 ``{"result": ...}`` or the error's status + ``MydfsError.to_dict()``
* ``POST /compact`` -> ``force_log_compaction()``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))

from raft_toy import KVMachine

from mydfs.common.errors import MydfsError
from mydfs.raft_ext import RaftNode, RaftSettings

PASSWORD_ENV = "MYDFS_RAFT_TEST_PASSWORD"


def build_app(node: RaftNode[KVMachine]) -> web.Application:
    async def status(_request: web.Request) -> web.Response:
        return web.json_response(node.status())

    async def state(_request: web.Request) -> web.Response:
        return web.json_response(await node.read(lambda m: m.dump()))

    async def submit(request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        try:
            result = await node.submit(
                body["command"],
                timeout=float(body.get("timeout", 5.0)),
                leader_only=bool(body.get("leader_only", False)),
            )
        except MydfsError as exc:
            return web.json_response(exc.to_dict(), status=exc.status)
        return web.json_response({"result": result})

    async def compact(_request: web.Request) -> web.Response:
        node.force_log_compaction()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/status", status)
    app.router.add_get("/state", state)
    app.router.add_post("/submit", submit)
    app.router.add_post("/compact", compact)
    return app


async def run(args: argparse.Namespace) -> None:
    raft = [f"127.0.0.1:{p}" for p in args.raft_ports]
    urls = {raft[i]: f"http://127.0.0.1:{p}" for i, p in enumerate(args.http_ports)}
    me = raft[args.index]
    settings = RaftSettings(
        self_address=me,
        peers=tuple(a for a in raft if a != me),
        http_urls=urls,
        data_dir=Path(args.data_dir),
        password=os.environ.get(PASSWORD_ENV),
        log_compaction_split=False,
    )
    stop = asyncio.Event()
    node: RaftNode[KVMachine] = RaftNode(settings, KVMachine(), on_fatal=lambda exc: stop.set())
    await node.start()
    runner = web.AppRunner(build_app(node), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.http_ports[args.index])
    await site.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("READY", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await node.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--raft-ports", type=int, nargs=3, required=True)
    parser.add_argument("--http-ports", type=int, nargs=3, required=True)
    parser.add_argument("--data-dir", required=True)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
    )
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
