"""``mydfs-tracker``: the scheduler and namespace of a mydfs cluster.

This module only parses arguments, sets up logging and runs :func:`serve`; the work is in
:mod:`mydfs.tracker.service` and the pure cores it drives.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

from mydfs.common.config import add_arguments, render_default
from mydfs.common.errors import MydfsError
from mydfs.common.tracing import configure_logging
from mydfs.tracker.config import OPTIONS, TrackerConfig, from_args

log = logging.getLogger("mydfs.tracker")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mydfs-tracker",
        description="The mydfs tracker: knows every storage group from its heartbeats, "
        "places new files, and keeps the durable file table (edit log + checkpoints).",
    )
    add_arguments(parser, OPTIONS)
    return parser


async def serve(config: TrackerConfig) -> int:
    """Run the tracker until SIGTERM/SIGINT (exit 0) or an edit-log failure (exit 1)."""

    # Everything this process creates (volume, journal, snapshots, edit logs, checkpoints,
    # temporary files of pysyncobj) is owner-only, whatever the caller's umask.
    os.umask(0o077)

    from mydfs.common.limits import LimitedRunner
    from mydfs.common.tls import listening_site
    from mydfs.tracker.http_api import make_app
    from mydfs.tracker.keys import open_store
    from mydfs.tracker.metrics import TrackerMetrics
    from mydfs.tracker.reclaim import Cluster, Reclaimer
    from mydfs.tracker.service import Tracker
    from mydfs.tracker.space import COLLECTOR_KEY, make_collector
    from mydfs.tracker.store import MetaStore

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    fatal: list[BaseException] = []

    def on_fatal(exc: BaseException) -> None:
        fatal.append(exc)
        stop.set()

    metrics = TrackerMetrics()
    store = await MetaStore.open(
        config.data_dir,
        checkpoint_interval=config.checkpoint_interval,
        checkpoint_edits=config.checkpoint_edits,
        on_fatal=on_fatal,
        on_flush=metrics.log_batch.observe,
    )
    tracker = Tracker(config, store, metrics)
    keys, bootstrap = open_store(config.data_dir)
    if bootstrap is not None:
        log.info("no API keys yet: created key 'admin'; its token is in %s", bootstrap)
    else:
        log.info("%d API keys in %s", len(keys.keys), keys.path)
    collector = make_collector(tracker)  # the orphan collector and GET /space
    app = make_app(tracker, keys)
    app[COLLECTOR_KEY] = collector
    runner = LimitedRunner(app, config.limits, access_log=None, handle_signals=False)
    ticker: asyncio.Task[None] | None = None
    reclaiming: asyncio.Task[None] | None = None
    collecting: asyncio.Task[None] | None = None
    try:
        await runner.setup()
        site, scheme = listening_site(
            runner, config.listen_host, config.listen_port, config.tls_cert, config.tls_key
        )
        await site.start()
        log.info(
            "serving %s on %s:%d (advertised %s), data in %s",
            scheme,
            config.listen_host,
            config.listen_port,
            config.advertise,
            config.data_dir,
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        async def tick() -> None:
            period = min(0.5, config.heartbeat_timeout / 4)
            while True:
                await asyncio.sleep(period)
                tracker.tick()

        ticker = loop.create_task(tick(), name="liveness")
        reclaimer = Reclaimer(
            Cluster(
                config.secret,
                tracker.group_urls,
                tracker.trash_records,
                tracker.drop_trash,
                tracker.mark_reclaiming,
            ),
            rate=config.reclaim_rate,
            interval=config.reclaim_interval,
            ca=config.tls_ca,
            on_freed=metrics.reclaimed.inc,
        )
        reclaiming = loop.create_task(reclaimer.run(), name="reclaim")
        collecting = loop.create_task(collector.run(), name="collect")
        await stop.wait()
        log.info("stopping" if not fatal else "stopping after a fatal edit-log error")
    finally:
        for task in (ticker, reclaiming, collecting):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await runner.cleanup()
        await collector.close()
        await store.close(final_checkpoint=not fatal)
    return 1 if fatal else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.print_config:
        print(render_default(OPTIONS, "mydfs-tracker configuration (TOML)"))
        return 0
    try:
        config = from_args(args)
        configure_logging(config.log_level, config.log_format, "tracker")
        return asyncio.run(serve(config))
    except MydfsError as exc:
        print(f"mydfs-tracker: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"mydfs-tracker: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
