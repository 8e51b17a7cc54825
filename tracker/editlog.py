"""The edit log: every namespace change, appended and fdatasync'ed before it is acknowledged.

The log is a series of **segment** files ``edits-<first seq, 20 digits>.log`` in the data folder
(format: :mod:`mydfs.tracker.framing`, ``docs/tracker.md``). Records carry consecutive sequence
numbers across segments.

*Recovery* (:func:`recover_log`, synchronous, before serving) reads the segments after the newest
checkpoint, hands every good record to a callback, and cuts a torn tail off the last segment. Damage
anywhere else (an older segment, or intact records after a bad one) raises :class:`Corrupt`: an
acknowledged edit may be behind it, so the tracker refuses to start rather than guess.

*Appending* (:class:`EditLog`) is group commit: :meth:`EditLog.append` frames a record into an
in-memory batch and returns its seq at once (on the event loop, so the order of records is the
order in which the namespace applied them); a single flusher task writes the batch and runs one
``fdatasync`` in a worker thread, then wakes every :meth:`EditLog.wait_durable` caller it covers.
Records appended while a sync runs form the next batch, so N concurrent changes cost about two
syncs, not N. A failed write or sync is fatal: the log refuses everything afterwards and
``on_fatal`` is called (after a failed fsync, Linux may have dropped the dirty pages).

*A full disk* is not fatal. The namespace applies a change right after :meth:`EditLog.append`
returns, so the space for a record is reserved *before* that: each segment keeps blocks
allocated past its end (:func:`mydfs.common.diskspace.reserve_space`, the file size unchanged),
``append`` grows the reservation when a record would not fit, and when the disk refuses it
raises :class:`DiskFull` with nothing logged or applied: that one request fails (507), the log
goes on, and appends work again once space returns. A roll that finds no space for the new
segment fails alone (the checkpoint that asked for it is retried later) and the log continues in
the current segment; records appended while a roll runs are charged to both segments, so either
outcome has room for them. (On a filesystem without ``fallocate`` the reservation is a no-op and
a full disk is fatal as before.)

*Rolling* (:meth:`EditLog.roll`) starts a new segment; a checkpoint rolls the log so older
segments can be deleted once the checkpoint is durable (:meth:`EditLog.drop_segments_upto`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mydfs.common.diskspace import is_disk_full, reserve_space
from mydfs.common.errors import Corrupt, DiskFull, StorageIOError, Unavailable
from mydfs.common.fsio import atomic_write, fsync_dir, truncate_synced, write_all
from mydfs.tracker.framing import (
    SEGMENT_HEADER_SIZE,
    Damage,
    Frame,
    classify_damage,
    decode_segment_header,
    encode_frame,
    encode_segment_header,
    scan_frames,
)

log = logging.getLogger(__name__)

SEGMENT_RE = re.compile(r"^edits-(\d{20})\.log$")
#: Space reserved at a time past a segment's end (one fallocate per this many log bytes).
RESERVE_CHUNK = 64 * 1024
#: Space a new segment is created with; records appended while a roll runs must fit in it.
ROLL_RESERVE = 128 * 1024


def segment_name(first_seq: int) -> str:
    return f"edits-{first_seq:020d}.log"


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """``(first seq, path)`` of every segment, oldest first."""
    out = []
    for path in directory.iterdir():
        m = SEGMENT_RE.match(path.name)
        if m:
            out.append((int(m.group(1)), path))
    return sorted(out)


@dataclass
class LogRecovery:
    """What :func:`recover_log` found."""

    next_seq: int  # the seq the next appended record gets
    last_segment: tuple[int, Path] | None  # the segment to append to (None: create one)
    segments: list[tuple[int, Path]] = field(default_factory=list)
    replayed: int = 0
    cut_bytes: int = 0  # torn tail removed from the last segment
    cut_path: Path | None = None


def recover_log(directory: Path, after_seq: int, on_record: Callable[[Frame], None]) -> LogRecovery:
    """Replay every record with seq > ``after_seq`` (in order) through ``on_record``.

    Cuts a torn tail off the last segment (truncate + fsync). Raises :class:`Corrupt` for damage
    that is not a torn tail, for a gap in the sequence numbers, or for a segment whose header
    does not match its name.
    """
    segments = list_segments(directory)
    out = LogRecovery(next_seq=after_seq + 1, last_segment=None, segments=segments)
    # Skip segments wholly covered by the checkpoint: the next one starts at or before it ends.
    start = 0
    while start + 1 < len(segments) and segments[start + 1][0] <= after_seq + 1:
        start += 1
    if start < len(segments) and segments[start][0] > after_seq + 1:
        raise Corrupt(
            f"edit log gap: the checkpoint covers up to seq {after_seq} but the oldest segment "
            f"starts at {segments[start][0]}",
            segment=str(segments[start][1]),
        )
    expected = segments[start][0] if start < len(segments) else after_seq + 1
    for index in range(start, len(segments)):
        first, path = segments[index]
        is_last = index == len(segments) - 1
        data = path.read_bytes()
        try:
            header_first = decode_segment_header(data)
        except Corrupt as exc:
            raise Corrupt(f"edit-log segment header: {exc.message}", segment=str(path)) from None
        if header_first != first:
            raise Corrupt(
                f"segment header says first seq {header_first}, its name says {first}",
                segment=str(path),
            )
        if first != expected:
            raise Corrupt(
                f"edit log gap: segment starts at seq {first}, expected {expected}",
                segment=str(path),
            )
        scan = scan_frames(data, SEGMENT_HEADER_SIZE, first)
        damage = classify_damage(data, scan)
        if damage is Damage.CORRUPT or (damage is Damage.TORN_TAIL and not is_last):
            raise Corrupt(
                f"edit log damaged at byte {scan.end} ({scan.stop.value}) with records after it; "
                "refusing to cut acknowledged edits (restore the file, or truncate it at that "
                "offset by hand to accept losing what follows)",
                segment=str(path),
                offset=scan.end,
                seq=scan.next_seq,
            )
        for frame in scan.frames:
            if frame.seq > after_seq:
                on_record(frame)
                out.replayed += 1
        scan.frames.clear()
        if damage is Damage.TORN_TAIL:
            out.cut_bytes = len(data) - scan.end
            out.cut_path = path
            log.warning(
                "edit log %s: cut a torn tail of %d bytes at offset %d (%s)",
                path.name,
                out.cut_bytes,
                scan.end,
                scan.stop.value,
            )
            truncate_synced(path, scan.end)
        expected = scan.next_seq
        out.last_segment = (first, path)
    out.next_seq = max(expected, after_seq + 1)
    if out.last_segment is not None and expected != out.next_seq:
        out.last_segment = None  # the log ends before the checkpoint: start a fresh segment
    return out


class EditLog:
    """Append-only, group-committed log writer. Create with :meth:`start` on a running loop."""

    def __init__(
        self,
        directory: Path,
        recovery: LogRecovery,
        *,
        on_fatal: Callable[[BaseException], None] | None = None,
        on_flush: Callable[[int], None] | None = None,
    ) -> None:
        self.directory = directory
        self._on_flush = on_flush
        self._segments: list[tuple[int, Path]] = list(recovery.segments)
        self._next_seq = recovery.next_seq
        self._written = recovery.next_seq - 1  # last seq handed to write()
        self._durable = recovery.next_seq - 1
        self._pending: list[bytes] = []
        self._pending_last = self._durable
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_ids = 0
        self._rolls: list[asyncio.Future[int]] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._failure: StorageIOError | None = None
        self._on_fatal = on_fatal
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="editlog")
        self._fd = -1
        self._task: asyncio.Task[None] | None = None
        # Space accounting of the current segment: its size once every appended record is
        # written, and how far its blocks are reserved; while a roll runs, what the records
        # appended meanwhile take of the new segment's reservation.
        self._end = 0
        self._reserved = 0
        self._rolling = False
        self._roll_used = 0
        self._roll_limit = ROLL_RESERVE
        #: Statistics for metrics and tests.
        self.syncs = 0
        self.records = 0
        self.bytes_written = 0
        self.last_batch = 0
        self.refused = 0  # appends refused for want of space
        if recovery.last_segment is not None:
            self._fd = os.open(recovery.last_segment[1], os.O_WRONLY | os.O_APPEND)
            self._end = self._reserved = os.fstat(self._fd).st_size
            try:
                self._reserve(self._end + RESERVE_CHUNK)
            except DiskFull:
                log.warning("edit log: no free space at start-up; changes are refused until some")
        else:
            first, path, self._fd, self._end, self._reserved = _new_segment(
                directory, self._next_seq
            )
            self._segments.append((first, path))

    @classmethod
    async def start(
        cls,
        directory: Path,
        recovery: LogRecovery,
        *,
        on_fatal: Callable[[BaseException], None] | None = None,
        on_flush: Callable[[int], None] | None = None,
    ) -> EditLog:
        self = cls(directory, recovery, on_fatal=on_fatal, on_flush=on_flush)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="editlog-flusher")
        return self

    # --- the event-loop side ----------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The seq of the last appended record (durable or not)."""
        return self._next_seq - 1

    @property
    def durable_seq(self) -> int:
        return self._durable

    @property
    def failed(self) -> bool:
        return self._failure is not None

    @property
    def segments(self) -> list[tuple[int, Path]]:
        return list(self._segments)

    def append(self, kind: int, payload: bytes) -> int:
        """Frame one record into the next batch; returns its seq. Never blocks."""
        if self._failure is not None:
            raise self._failure
        if self._closing:
            raise StorageIOError("the edit log is closed")
        seq = self._next_seq
        frame = encode_frame(seq, kind, payload)
        size = len(frame)
        if self._rolling and SEGMENT_HEADER_SIZE + self._roll_used + size > self._roll_limit:
            raise Unavailable("the edit log is starting a new segment; retry", seq=seq)
        try:
            self._reserve(self._end + size)
        except DiskFull:
            self.refused += 1
            raise
        self._end += size
        if self._rolling:
            self._roll_used += size
        self._pending.append(frame)
        self._next_seq = seq + 1
        self._pending_last = seq
        self._wake.set()
        return seq

    async def wait_durable(self, seq: int) -> None:
        """Return once record ``seq`` (and so every earlier one) is on stable storage."""
        if seq <= self._durable:
            return
        if self._failure is not None:
            raise self._failure
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter_ids += 1
        heapq.heappush(self._waiters, (seq, self._waiter_ids, fut))
        await fut

    async def barrier(self) -> None:
        """Wait until everything appended so far is durable (for reads of the state)."""
        await self.wait_durable(self.last_seq)

    async def roll(self) -> int:
        """Flush, then continue in a new segment; returns its first seq."""
        if self._failure is not None:
            raise self._failure
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._rolls.append(fut)
        self._wake.set()
        return await fut

    async def drop_segments_upto(self, seq: int) -> list[Path]:
        """Delete every segment all of whose records have seq <= ``seq`` (never the current)."""
        doomed: list[Path] = []
        while len(self._segments) >= 2 and self._segments[1][0] <= seq + 1:
            doomed.append(self._segments.pop(0)[1])
        if doomed:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._pool, _unlink_all, doomed, self.directory)
        return doomed

    async def close(self) -> None:
        """Flush what is pending, stop the flusher, close the file."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._pool.shutdown(wait=True)

    # --- the flusher ------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._pending:
                    batch, upto = self._pending, self._pending_last
                    self._pending = []
                    data = b"".join(batch)
                    self._written = upto
                    await loop.run_in_executor(self._pool, self._write_sync, data)
                    self.records += len(batch)
                    self.last_batch = len(batch)
                    self._durable = upto
                    self._release()
                    if self._on_flush is not None:
                        self._on_flush(len(batch))
                if self._rolls:
                    # Records appended during the flush above (seq > _written) go to the new one.
                    rolls, self._rolls = self._rolls, []
                    first = self._written + 1
                    error: DiskFull | None = None
                    if not (self._segments and self._segments[-1][0] == first):
                        error = await self._roll(loop, first)
                    for fut in rolls:  # (an empty current segment is not rolled again)
                        if fut.done():
                            continue
                        if error is None:
                            fut.set_result(first)
                        else:
                            fut.set_exception(error)
                if self._closing and not self._pending and not self._rolls:
                    return
        except OSError as exc:
            self._fail(exc)
        except BaseException as exc:  # cancelled or a bug: nothing may wait forever
            self._fail(exc)
            raise

    def _release(self) -> None:
        while self._waiters and self._waiters[0][0] <= self._durable:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        self._failure = StorageIOError(
            f"the edit log cannot be written ({exc}); the tracker must restart",
            data_dir=str(self.directory),
        )
        log.critical("edit log failure: %s", exc)
        for _, _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(self._failure)
        self._waiters.clear()
        for roll in self._rolls:
            if not roll.done():
                roll.set_exception(self._failure)
        self._rolls.clear()
        if self._on_fatal is not None:
            self._on_fatal(self._failure)

    # --- worker thread ----------------------------------------------------------------------------

    def _write_sync(self, data: bytes) -> None:
        write_all(self._fd, data)
        os.fdatasync(self._fd)
        self.syncs += 1
        self.bytes_written += len(data)

    async def _roll(self, loop: asyncio.AbstractEventLoop, first: int) -> DiskFull | None:
        """Continue in a new segment starting at ``first``; the error if there is no space."""
        # Records still pending (appended during the last write) go to the new segment too.
        self._roll_used = sum(len(frame) for frame in self._pending)
        self._roll_limit = max(ROLL_RESERVE, SEGMENT_HEADER_SIZE + self._roll_used + RESERVE_CHUNK)
        self._rolling = True
        try:
            made = await loop.run_in_executor(
                self._pool, _new_segment, self.directory, first, self._roll_limit
            )
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            log.warning("edit log: no space for a new segment; continuing in the current one")
            return DiskFull("no space left on device for a new edit-log segment", seq=first)
        finally:
            self._rolling = False
        _, path, fd, end, reserved = made
        self._segments.append((first, path))
        old, self._fd = self._fd, fd
        self._end, self._reserved = end + self._roll_used, reserved
        if old >= 0:
            os.close(old)
        return None

    def _reserve(self, upto: int) -> None:
        """Have the current segment's blocks reserved up to ``upto`` (DiskFull if impossible)."""
        if upto <= self._reserved:
            return
        start = self._reserved
        for target in (max(upto, start + RESERVE_CHUNK), upto):
            try:
                if not reserve_space(self._fd, start, target - start):
                    target = 1 << 62  # no fallocate here: writes go unreserved
                self._reserved = target
                return
            except OSError as exc:
                if not is_disk_full(exc):
                    raise StorageIOError(
                        f"edit log: cannot reserve space: {exc}", data_dir=str(self.directory)
                    ) from exc
        raise DiskFull("no space left on device for the edit log", data_dir=str(self.directory))


def _new_segment(
    directory: Path, first: int, reserve: int = ROLL_RESERVE
) -> tuple[int, Path, int, int, int]:
    """Create segment ``first`` with ``reserve`` bytes reserved (worker thread).

    Returns ``(first, path, fd, size, reserved end)``; raises OSError (ENOSPC) with nothing left
    behind.
    """
    path = directory / segment_name(first)
    header = encode_segment_header(first)
    try:
        atomic_write(path, header, mode=0o600)
    except OSError:
        with contextlib.suppress(OSError):
            path.with_name(path.name + ".tmp").unlink()  # atomic_write's partial file
        raise
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        reserved = reserve if reserve_space(fd, 0, reserve) else 1 << 62
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
            fsync_dir(directory)
        raise
    return first, path, fd, len(header), reserved


def _unlink_all(paths: list[Path], directory: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    fsync_dir(directory)
