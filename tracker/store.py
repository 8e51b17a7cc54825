"""The durable namespace: the pure :class:`Namespace` behind an edit log and checkpoints.

Opening the store recovers the state: the newest valid checkpoint (an older one if the newest
does not check), then every later edit-log record, cutting a torn tail. A change then goes:
plan (checks, may raise) → append to the log → apply to memory → wait for the group-committed
``fdatasync`` → acknowledge. On a full disk the append raises :class:`DiskFull` (507) before
anything is applied, so that one change fails and the store goes on (see :mod:`.editlog`).
Planning, appending and applying run without yielding to the event loop, so the log order is
the order of application. Reads first wait until everything applied so far is durable
(:meth:`MetaStore.barrier`; free when nothing is pending), so no one ever sees a change that a
crash could still undo.

Checkpoints run in the background every ``checkpoint_interval`` seconds or ``checkpoint_edits``
edits, whichever comes first: snapshot the state (one shallow copy per directory), roll the log
to a new segment, write the checkpoint in a worker thread, then delete what the *previous*
checkpoint no longer needs; a checkpoint that fails (a full disk) deletes nothing and is
retried. Two checkpoints are kept, with the log segments from the older one
on, so a damaged newest checkpoint still leaves a way back.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mydfs.common.errors import Conflict, Corrupt, DiskFull, InvariantViolation
from mydfs.common.fsio import ensure_dir, restrict_tree, write_all
from mydfs.tracker.checkpoint import list_checkpoints, read_checkpoint, write_checkpoint
from mydfs.tracker.editlog import EditLog, LogRecovery, recover_log
from mydfs.tracker.framing import Frame
from mydfs.tracker.namespace import Namespace
from mydfs.tracker.records import Edit, FileEntry, decode_edit, encode_edit

log = logging.getLogger(__name__)

#: Checkpoints kept on disk (the newest and one fallback).
KEEP_CHECKPOINTS = 2


class DirLock:
    """An exclusive ``flock`` on ``<dir>/LOCK``: one tracker per data folder."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "LOCK"
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            self._fd = None
            raise Conflict(
                "another tracker is using this data folder", data_dir=str(directory)
            ) from None
        os.ftruncate(self._fd, 0)
        write_all(self._fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class RecoveryReport:
    checkpoint_seq: int
    checkpoint: Path | None
    skipped_checkpoints: list[str]
    replayed: int
    cut_bytes: int
    next_seq: int
    seconds: float


def recover(directory: Path) -> tuple[Namespace, LogRecovery, RecoveryReport]:
    """Rebuild the namespace from the data folder (synchronous; run before serving)."""
    started = time.monotonic()
    skipped: list[str] = []
    ns = Namespace()
    ckpt_seq = 0
    ckpt_path: Path | None = None
    for _seq, path in list_checkpoints(directory):
        try:
            ckpt_seq, ns = read_checkpoint(path)
            ckpt_path = path
            break
        except Corrupt as exc:
            log.error("skipping checkpoint %s: %s (renamed to *.corrupt)", path.name, exc)
            skipped.append(f"{path.name}: {exc.message}")
            path.rename(path.with_name(path.name + ".corrupt"))
        except OSError as exc:
            log.error("skipping checkpoint %s: %s", path.name, exc)
            skipped.append(f"{path.name}: {exc}")

    def replay(frame: Frame) -> None:
        edit = decode_edit(frame.kind, frame.payload)
        try:
            ns.apply(edit)
        except InvariantViolation as exc:
            raise Corrupt(
                f"edit log record {frame.seq} does not apply to the state: {exc}", seq=frame.seq
            ) from None

    recovery = recover_log(directory, ckpt_seq, replay)
    report = RecoveryReport(
        checkpoint_seq=ckpt_seq,
        checkpoint=ckpt_path,
        skipped_checkpoints=skipped,
        replayed=recovery.replayed,
        cut_bytes=recovery.cut_bytes,
        next_seq=recovery.next_seq,
        seconds=time.monotonic() - started,
    )
    return ns, recovery, report


class MetaStore:
    """The namespace plus its durability. Build with :meth:`open` inside a running loop."""

    def __init__(
        self,
        directory: Path,
        ns: Namespace,
        editlog: EditLog,
        lock: DirLock,
        report: RecoveryReport,
        *,
        checkpoint_interval: float,
        checkpoint_edits: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.ns = ns
        self.log = editlog
        self.report = report
        self._lock = lock
        self._interval = checkpoint_interval
        self._edits = checkpoint_edits
        self._clock = clock
        self._ckpt_lock = asyncio.Lock()
        self._kick = asyncio.Event()
        self._ckpt_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._task: asyncio.Task[None] | None = None
        kept = list_checkpoints(directory)
        self.checkpoint_seq = report.checkpoint_seq
        self._older_seq = kept[1][0] if len(kept) > 1 else 0
        self._last_checkpoint_at = time.monotonic()
        #: Statistics for metrics and tests.
        self.checkpoints = 0
        self.last_checkpoint_seconds = 0.0
        self.last_checkpoint_bytes = 0

    @classmethod
    async def open(
        cls,
        directory: Path,
        *,
        checkpoint_interval: float = 60.0,
        checkpoint_edits: int = 100_000,
        on_fatal: Callable[[BaseException], None] | None = None,
        on_flush: Callable[[int], None] | None = None,
    ) -> MetaStore:
        ensure_dir(directory)
        # Edit logs and checkpoints: owner-only (files 0600, folder 0700).
        refused = restrict_tree(directory)
        if refused:
            log.warning("cannot make owner-only (not ours): %s", ", ".join(refused[:5]))
        lock = DirLock(directory)
        try:
            for stale in directory.glob("*.tmp"):
                stale.unlink()
            loop = asyncio.get_running_loop()
            ns, recovery, report = await loop.run_in_executor(None, recover, directory)
            editlog = await EditLog.start(directory, recovery, on_fatal=on_fatal, on_flush=on_flush)
        except BaseException:
            lock.release()
            raise
        log.info(
            "recovered %d files from checkpoint seq %d (%s) + %d edits in %.2fs%s",
            ns.files,
            report.checkpoint_seq,
            report.checkpoint.name if report.checkpoint else "none",
            report.replayed,
            report.seconds,
            f"; cut a torn log tail of {report.cut_bytes} bytes" if report.cut_bytes else "",
        )
        store = cls(
            directory,
            ns,
            editlog,
            lock,
            report,
            checkpoint_interval=checkpoint_interval,
            checkpoint_edits=checkpoint_edits,
        )
        store._task = loop.create_task(store._checkpoint_loop(), name="checkpointer")
        return store

    # --- changes and reads -----------------------------------------------------------------------

    def submit(self, edit: Edit) -> tuple[int, FileEntry | None]:
        """Log and apply ``edit`` now (not yet durable); returns its seq and apply's result."""
        kind, payload = encode_edit(edit)
        seq = self.log.append(kind, payload)
        try:
            result = self.ns.apply(edit)
        except InvariantViolation:
            log.critical("edit %d was logged but does not apply: %r", seq, edit)
            raise
        if seq - self.checkpoint_seq >= self._edits:
            self._kick.set()
        return seq, result

    async def commit(self, edit: Edit) -> FileEntry | None:
        """Apply ``edit`` and return once it is durable (the caller may then acknowledge)."""
        seq, result = self.submit(edit)
        await self.log.wait_durable(seq)
        return result

    async def barrier(self) -> None:
        """Wait until every change applied so far is durable (before answering a read)."""
        await self.log.barrier()

    @property
    def edits_since_checkpoint(self) -> int:
        return self.log.last_seq - self.checkpoint_seq

    # --- checkpoints ------------------------------------------------------------------------------

    async def checkpoint(self) -> int:
        """Write a checkpoint of the current state now; returns the seq it covers."""
        async with self._ckpt_lock:
            seq = self.log.last_seq
            if seq == self.checkpoint_seq:
                return seq
            started = time.monotonic()
            snapshot = self.ns.snapshot()  # consistent with `seq`: nothing yielded in between
            await self.log.roll()
            await self.log.wait_durable(seq)
            loop = asyncio.get_running_loop()
            path = await loop.run_in_executor(
                self._ckpt_pool, write_checkpoint, self.directory, seq, snapshot, self._clock()
            )
            previous = self.checkpoint_seq
            self.checkpoint_seq = seq
            self._older_seq = previous
            self._last_checkpoint_at = time.monotonic()
            await self.log.drop_segments_upto(self._older_seq)
            await loop.run_in_executor(self._ckpt_pool, self._drop_old_checkpoints)
            self.checkpoints += 1
            self.last_checkpoint_seconds = time.monotonic() - started
            self.last_checkpoint_bytes = path.stat().st_size
            log.info(
                "checkpoint %s: %d files, %d bytes in %.2fs",
                path.name,
                snapshot.files,
                self.last_checkpoint_bytes,
                self.last_checkpoint_seconds,
            )
            return seq

    def _drop_old_checkpoints(self) -> None:
        for _, path in list_checkpoints(self.directory)[KEEP_CHECKPOINTS:]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def checkpoint_due(self, now: float) -> bool:
        pending = self.edits_since_checkpoint
        if pending <= 0:
            return False
        return pending >= self._edits or now - self._last_checkpoint_at >= self._interval

    async def _checkpoint_loop(self) -> None:
        poll = min(1.0, max(0.05, self._interval / 4))
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), poll)
            self._kick.clear()
            if self.log.failed:
                return
            if self.checkpoint_due(time.monotonic()):
                try:
                    await self.checkpoint()
                except DiskFull as exc:
                    # Nothing lost: the previous checkpoint and every log segment are kept.
                    log.warning("checkpoint skipped: %s; will retry", exc)
                    self._last_checkpoint_at = time.monotonic()
                except Exception:
                    # A failed checkpoint loses nothing (the log still has every edit); retry later.
                    log.exception("checkpoint failed; will retry")
                    self._last_checkpoint_at = time.monotonic()

    async def close(self, *, final_checkpoint: bool = False) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            if final_checkpoint and not self.log.failed:
                await self.checkpoint()
        finally:
            await self.log.close()
            self._ckpt_pool.shutdown(wait=True)
            self._lock.release()
