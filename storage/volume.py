"""The slice store: one node's volume of fixed 4 MiB slots on its local disk.

The byte layout is in :mod:`mydfs.storage.format` and ``docs/format.md``. This module adds the
I/O and the rules that keep the volume consistent:

* **Write protocol.** A slot is written in two steps, each made durable through the group syncer:
  (1) the header area is zeroed and the payload written in one ``pwritev`` → ``fdatasync``;
  (2) both header copies are written → ``fdatasync``. A valid header therefore always means a
  durable payload; a crash before (2) leaves a blank slot, which reopens as free.
* **Header updates** (relink, 301, 404, commit) rewrite copy A, sync, then copy B, sync, so one
  intact copy survives any crash. At open, copies that disagree are settled (newest valid wins)
  and repaired; after open, copies that disagree can only mean corruption, and a read says so.
* **Reads** check both header copies and the CRC32C of every 64 KiB block they touch. Readers
  never take a lock in the common case; if they see a header mid-update they retry under the
  slot's lock. Slots are write-once: a payload never changes while its slot is in use.
* **The local free list** (:mod:`mydfs.storage.volume_slots`; not the group's free-slice
  table, which alone decides slots in a cluster) **is rebuilt by a scan of the slot headers at
  every open**, the only source of truth (:mod:`mydfs.storage.volume_file`). A checkpoint of it,
  written at clean close, is compared with the scan; a difference goes into the open report.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from mydfs.common.checksum import block_crcs, crc32c
from mydfs.common.errors import (
    Conflict,
    Corrupt,
    DiskFull,
    InvalidArgument,
    NotFound,
    SlotOutOfRange,
    StorageIOError,
)
from mydfs.common.fsio import fsync_dir as _fsync_dir
from mydfs.common.location import Location
from mydfs.storage.format import (
    BLOCK_SIZE,
    CHECKPOINT_OFFSETS,
    DEFAULT_MAX_SLOTS,
    HEADER_SIZE,
    PAYLOAD_CAPACITY,
    PAYLOAD_OFFSET,
    Checkpoint,
    SliceOwner,
    SlotHeader,
    SlotState,
    Superblock,
    decode_header,
    encode_checkpoint,
    encode_header,
    header_is_blank,
    slot_offset,
)
from mydfs.storage.syncer import GroupSyncer, SyncFailed
from mydfs.storage.volume_file import (
    HEADER_PAIR,
    bad_block,
    check_location,
    check_readable,
    check_write,
    checkpoint_mismatch,
    copy_damaged,
    create_file,
    open_locked,
    payload_problem,
    read_checkpoint,
    scan_slots,
    slots_in_file,
)

# The volume's disk calls go through these module-level names (tests wrap them here).
from mydfs.storage.volume_file import pread_exact as _pread_exact
from mydfs.storage.volume_file import pwrite_all as _pwrite_all
from mydfs.storage.volume_reports import OpenReport, Problem, SliceData, VerifyReport, VolumeStats
from mydfs.storage.volume_slots import ClaimRefused, LocalSlots

__all__ = ["OpenReport", "Problem", "SliceData", "VerifyReport", "Volume", "VolumeStats"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_ZERO_HEAD = bytes(PAYLOAD_OFFSET)


class Volume:
    """A volume file of 4 MiB slots. Thread-safe; open with :meth:`open`."""

    capacity = PAYLOAD_CAPACITY

    def __init__(self, path: Path, fd: int, superblock: Superblock) -> None:
        self.path = path
        self.name = str(path)
        self.superblock = superblock
        self._fd = fd
        self._syncer = GroupSyncer(fd)
        self._lock = threading.Lock()  # guards the tables below
        self._slot_locks: dict[int, threading.Lock] = {}
        self._headers: dict[int, SlotHeader] = {}  # every slot with a valid header
        self._quarantined: dict[int, str] = {}
        # The local free list and write claims (not the group's free-slice table).
        self._local = LocalSlots(superblock.max_slots)
        self._max_generation = 0
        self._checkpoint_seq = 0
        self._closed = False
        self.report = OpenReport()

    # --- opening and closing ------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        create: bool = False,
        node_id: str | None = None,
        group_id: int | None = None,
        max_slots: int = DEFAULT_MAX_SLOTS,
    ) -> Volume:
        """Open (or with ``create=True`` create) the volume at ``path``.

        ``node_id``/``group_id``, when given, must match the volume's identity: a volume of
        another node or group raises :class:`IncompatibleVolume` and is left untouched.
        """
        p = Path(path)
        if not p.exists():
            if not create:
                raise NotFound("volume file does not exist", volume=str(p))
            cls._create(p, node_id=node_id or "node", group_id=group_id or 0, max_slots=max_slots)
        fd, sb = open_locked(p, node_id=node_id, group_id=group_id)
        try:
            vol = cls(p, fd, sb)
            vol._load()
        except BaseException:
            os.close(fd)
            raise
        return vol

    @staticmethod
    def _create(path: Path, *, node_id: str, group_id: int, max_slots: int) -> None:
        sb = Superblock(
            volume_id=uuid.uuid4().bytes,
            node_id=node_id,
            group_id=group_id,
            max_slots=max_slots,
            created_ns=time.time_ns(),
        )
        create_file(path, sb)
        _fsync_dir(path.parent)

    def _load(self) -> None:
        """Rebuild the header table and the local free list from a scan of every slot header;
        settle header copies that disagree; compare with the last clean close's checkpoint."""
        checkpoint = read_checkpoint(self._fd)
        found = scan_slots(self._fd, volume=self.name, max_slots=self.superblock.max_slots)
        self._local.end = found.slot_end
        for slot in found.free:
            self._local.add_free(slot)
        for problem in found.quarantined:
            self._quarantine(problem.slot, problem.reason)
        self._headers = found.headers
        self._max_generation = found.max_generation
        for header in found.repairs:
            self._write_header_copies(header)
            self.report.repaired_headers.append(header.slot)
        mismatch = checkpoint_mismatch(checkpoint, found.slot_end, self._local.free())
        if mismatch is not None:
            self.report.checkpoint_mismatch = mismatch
            log.warning("volume %s changed since its clean close: %s", self.name, mismatch)
        if checkpoint is not None:
            self._max_generation = max(self._max_generation, checkpoint.max_generation)
            self._checkpoint_seq = checkpoint.seq
        self.report.clean = checkpoint is not None and checkpoint.clean
        if not self.report.clean:
            log.warning("volume %s was not closed cleanly; recovered by scan", self.name)
        self._write_checkpoint(clean=False)

    def _write_checkpoint(self, *, clean: bool) -> None:
        disk_end = slots_in_file(os.fstat(self._fd).st_size)
        with self._lock:
            disk_end = min(self._local.end, disk_end)
            self._checkpoint_seq += 1
            # Record what a scan of the file will find: slots allocated past the end of the file
            # (never written, or released) are not in it.
            cp = Checkpoint(
                seq=self._checkpoint_seq,
                clean=clean,
                slot_end=disk_end,
                max_generation=self._max_generation,
                free=self._local.free_on_disk(disk_end),
            )
        # Alternate between the two areas so a torn checkpoint leaves the other one intact.
        off = CHECKPOINT_OFFSETS[cp.seq % 2]
        self._io(_pwrite_all, self._fd, [encode_checkpoint(cp)], off)
        self._durable()

    def close(self) -> None:
        """Write a clean checkpoint and close. Idempotent."""
        if self._closed:
            return
        try:
            if not self._syncer.failed:
                self._write_checkpoint(clean=True)
        finally:
            self._closed = True
            os.close(self._fd)

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the local free list -----------------------------------------------------------------

    def _quarantine(self, slot: int, reason: str) -> None:
        self._quarantined[slot] = reason
        self.report.quarantined.append(Problem(slot, reason))
        log.error("volume %s slot %d quarantined: %s", self.name, slot, reason)

    def allocate(self) -> int:
        """Standalone store only: reserve a slot from the volume's local free list (its lowest
        entry, else the next slot at the end). A node in a group never calls this: the group's
        replicated table decides its slots."""
        self._check_open()
        with self._lock:
            slot = self._local.allocate()
        if slot is None:
            raise DiskFull(f"volume is full ({self.superblock.max_slots} slots)", volume=self.name)
        return slot

    def release(self, slot: int) -> None:
        """Standalone store only: give back a slot reserved by :meth:`allocate` and never
        written."""
        with self._lock:
            self._local.release(slot)

    def _claim(self, slot: int) -> None:
        """Claim ``slot`` for a write: it must be reserved by us, free, or beyond the end."""
        self._check_slot(slot)
        with self._lock:
            refused = self._local.claim(slot)
            if refused is None:
                return
            if refused is ClaimRefused.WRITING:
                raise Conflict("slot is being written right now", volume=self.name, slot=slot)
            if slot in self._quarantined:
                raise Conflict("slot is quarantined; reclaim it first", volume=self.name, slot=slot)
            state = self._headers[slot].state.name if slot in self._headers else "?"
            raise Conflict(
                f"slot is in use ({state}); slices are write-once", volume=self.name, slot=slot
            )

    # --- writing --------------------------------------------------------------------------------

    def write(
        self,
        slot: int,
        payload: bytes | bytearray | memoryview,
        *,
        owner: SliceOwner | None = None,
        next: Location | None = None,
        state: SlotState = SlotState.LIVE,
        generation: int | None = None,
    ) -> SlotHeader:
        """Write a slice into ``slot`` and return once it is durable (fdatasync'ed).

        ``slot`` must come from :meth:`allocate`, or be free (a replica writes the slot its
        group decided). ``state`` is LIVE, or PENDING for a write that is not visible until
        :meth:`commit`. ``generation`` defaults to the volume's next one; replicas pass the
        group's so that every copy carries the same header.
        """
        self._check_open()
        check_write(self.name, slot, len(payload), state, owner, next, generation)
        self._claim(slot)
        try:
            with self._lock:
                if generation is None:
                    generation = self._max_generation + 1
                old = self._headers.get(slot)
                # A slot is claimed only when free, so ``old`` is a 404 marker here; the same
                # generation again is a repair rewriting the very slice that was dropped.
                if old is not None and generation < old.generation:
                    raise Conflict(
                        f"generation {generation} is older than {old.generation}",
                        volume=self.name,
                        slot=slot,
                    )
                self._max_generation = max(self._max_generation, generation)
            header = SlotHeader(
                slot=slot,
                state=state,
                generation=generation,
                length=len(payload),
                owner=owner or SliceOwner(),
                next=next,
                mtime_ns=time.time_ns(),
                payload_crc=crc32c(payload),
                block_crcs=tuple(block_crcs(payload, BLOCK_SIZE)),
            )
            raw = encode_header(header)  # bad input (e.g. a location out of range) fails here
            off = slot_offset(slot)
            # Under the slot lock, so that a reader who catches the header copies half-written
            # and retries under that lock sees them whole (as for header updates).
            with self._slot_lock(slot):
                self._io(_pwrite_all, self._fd, [_ZERO_HEAD, payload], off)
            with self._lock:
                self._headers.pop(slot, None)  # the old 404 marker is gone from the disk now
            self._durable()
            with self._slot_lock(slot):
                self._io(_pwrite_all, self._fd, [raw, raw], off)
            self._durable()
        except BaseException:
            with self._lock:
                self._local.abandoned(slot)
            raise
        with self._lock:
            self._local.written(slot)
            self._headers[slot] = header
        return header

    def _update(self, slot: int, allowed: set[SlotState], **changes: object) -> SlotHeader:
        """A header-only update: copy A, sync, copy B, sync."""
        self._check_open()
        self._check_slot(slot)
        with self._slot_lock(slot):
            current = self._headers.get(slot)
            if current is None:
                raise NotFound("slot holds no slice", volume=self.name, slot=slot)
            if current.state not in allowed:
                names = "/".join(sorted(s.name for s in allowed))
                raise Conflict(
                    f"slot is {current.state.name}, expected {names}", volume=self.name, slot=slot
                )
            header = current.with_changes(mtime_ns=time.time_ns(), **changes)
            self._write_header_copies(header)
            with self._lock:
                self._headers[slot] = header
                if header.state == SlotState.DELETED:
                    self._local.add_free(slot)
            return header

    def _write_header_copies(self, header: SlotHeader) -> None:
        raw = encode_header(header)
        off = slot_offset(header.slot)
        self._io(_pwrite_all, self._fd, [raw], off)
        self._durable()
        self._io(_pwrite_all, self._fd, [raw], off + HEADER_SIZE)
        self._durable()

    def commit(self, slot: int) -> SlotHeader:
        """PENDING → LIVE (the commit of a prepared write)."""
        return self._update(slot, {SlotState.PENDING}, state=SlotState.LIVE)

    def mark_deleted(self, slot: int) -> SlotHeader:
        """Leave a 404 marker; the slot joins the free-slice table for reuse."""
        allowed = {SlotState.LIVE, SlotState.PENDING, SlotState.MOVED}
        return self._update(slot, allowed, state=SlotState.DELETED)

    def mark_moved(self, slot: int, target: Location) -> SlotHeader:
        """Leave a 301 redirect to ``target`` (or re-target a 301). The slot is not reused
        until it is released."""
        check_location(target, "target", self.name, slot)
        allowed = {SlotState.LIVE, SlotState.MOVED}
        return self._update(slot, allowed, state=SlotState.MOVED, target=target)

    def relink(self, slot: int, next: Location | None) -> SlotHeader:
        """Point the slice's next pointer at ``next`` (None: the last slice of its file)."""
        if next is not None:
            check_location(next, "next", self.name, slot)
        return self._update(slot, {SlotState.LIVE, SlotState.PENDING}, next=next)

    def reclaim(self, slot: int) -> None:
        """Return a quarantined slot to the free table (after its data was restored elsewhere)."""
        self._check_slot(slot)
        with self._lock:
            if self._quarantined.pop(slot, None) is not None:
                self._local.add_free(slot)

    # --- reading --------------------------------------------------------------------------------

    def header(self, slot: int) -> SlotHeader:
        """The slot's current header (from memory); NotFound for a free slot."""
        self._check_slot(slot)
        with self._lock:
            if slot in self._quarantined:
                raise Corrupt(self._quarantined[slot], volume=self.name, slot=slot)
            header = self._headers.get(slot)
        if header is None:
            raise NotFound("slot holds no slice", volume=self.name, slot=slot)
        return header

    def read(
        self,
        slot: int,
        offset: int = 0,
        length: int | None = None,
        *,
        allow_pending: bool = False,
        expect_owner: SliceOwner | None = None,
    ) -> SliceData:
        """Read a whole slice or a byte range, verifying the CRC of every block it touches.

        Raises SliceMoved (301) with the target, SliceDeleted (404), NotFound, or Corrupt.
        """
        self._check_open()
        self._check_slot(slot)
        for attempt in range(3):
            header = self._read_header(slot)
            check_readable(
                header, volume=self.name, allow_pending=allow_pending, expect_owner=expect_owner
            )
            if offset < 0 or offset > header.length:
                raise InvalidArgument(
                    f"offset {offset} outside slice of {header.length} bytes",
                    volume=self.name,
                    slot=slot,
                )
            want = header.length - offset if length is None else length
            if want < 0 or offset + want > header.length:
                raise InvalidArgument(
                    f"range {offset}+{want} outside slice of {header.length} bytes",
                    volume=self.name,
                    slot=slot,
                )
            if want == 0:
                return SliceData(header, offset, b"")
            first = offset // BLOCK_SIZE
            last = (offset + want - 1) // BLOCK_SIZE
            start = first * BLOCK_SIZE
            stop = min((last + 1) * BLOCK_SIZE, header.length)
            where = slot_offset(slot) + PAYLOAD_OFFSET + start
            data = self._io(_pread_exact, self._fd, stop - start, where)
            bad = bad_block(header, data, first, stop - start)
            if bad is None:
                if start == offset and len(data) == want:
                    return SliceData(header, offset, data)
                lo = offset - start
                return SliceData(header, offset, data[lo : lo + want])
            # A failed check on a slot that changed under us (deleted and reused) is a race,
            # not corruption: look again.
            if self._read_header(slot) != header and attempt < 2:
                continue
            raise Corrupt(
                f"payload block {bad} checksum mismatch", volume=self.name, slot=slot, block=bad
            )
        raise Corrupt("slot kept changing during the read", volume=self.name, slot=slot)

    def _read_header(self, slot: int) -> SlotHeader:
        """Read and check both header copies of ``slot`` from the disk."""
        with self._lock:
            if slot in self._quarantined:
                raise Corrupt(self._quarantined[slot], volume=self.name, slot=slot)
            if slot >= self._local.end:
                raise NotFound("slot holds no slice", volume=self.name, slot=slot)
        raw = self._io(_pread_exact, self._fd, HEADER_PAIR, slot_offset(slot))
        if raw[:HEADER_SIZE] != raw[HEADER_SIZE:]:
            # Maybe an update is between its two copies: look again under the slot lock.
            with self._slot_lock(slot):
                raw = self._io(_pread_exact, self._fd, HEADER_PAIR, slot_offset(slot))
            if raw[:HEADER_SIZE] != raw[HEADER_SIZE:]:
                which = "A" if copy_damaged(slot, raw[:HEADER_SIZE]) else "B"
                raise Corrupt(
                    f"slot header copy {which} damaged (copies differ)",
                    volume=self.name,
                    slot=slot,
                )
        if header_is_blank(raw[:HEADER_SIZE]):
            raise NotFound("slot holds no slice", volume=self.name, slot=slot)
        try:
            return decode_header(raw[:HEADER_SIZE], slot=slot)
        except Corrupt as exc:
            raise Corrupt(exc.message, volume=self.name, slot=slot) from None

    # --- listing, statistics, verification -------------------------------------------------

    def scan(self) -> Iterator[SlotHeader]:
        """Every slot holding a header (LIVE, PENDING, MOVED, DELETED), in slot order."""
        with self._lock:
            headers = sorted(self._headers.items())
        for _slot, header in headers:
            yield header

    def free_slots(self) -> list[int]:
        """The volume's local free list, lowest first: slots holding no header or a 404 marker
        (never quarantined ones). Not the group's free-slice table (``GroupState.free_slots``),
        which decides slots in a cluster."""
        with self._lock:
            return sorted(self._local.free())

    def quarantined(self) -> dict[int, str]:
        with self._lock:
            return dict(self._quarantined)

    def stats(self) -> VolumeStats:
        if self._closed:
            raise StorageIOError("volume is closed", volume=self.name)
        with self._lock:
            headers = list(self._headers.values())
            free = self._local.free_count()
            quarantined = len(self._quarantined)
            slot_end = self._local.end
        return VolumeStats.tally(
            headers,
            free=free,
            quarantined=quarantined,
            slot_end=slot_end,
            disk_bytes=os.fstat(self._fd).st_blocks * 512,
            syncs=self._syncer.syncs,
        )

    def verify(self) -> VerifyReport:
        """Check every slot's header copies and every payload block; report each bad slot."""
        self._check_open()
        with self._lock:
            slot_end = self._local.end
            quarantined = dict(self._quarantined)
        problems = [Problem(s, r) for s, r in sorted(quarantined.items())]
        checked = 0
        for slot in range(slot_end):
            if slot in quarantined:
                continue
            header, problem = self.check_slot(slot)
            if header is not None:
                checked += 1
            if problem is not None:
                problems.append(Problem(slot, problem))
        return VerifyReport(checked=checked, problems=problems)

    def check_slot(self, slot: int) -> tuple[SlotHeader | None, str | None]:
        """Read ``slot`` back from the disk and check it whole: both header copies (equal, and
        the header CRC), the header against the volume's table, and for a slice in use every
        64 KiB block CRC and the payload CRC. Returns the header read (None when the disk
        holds none or could not be read) and what is wrong (None: nothing); a read the disk
        fails is a problem too. Used by :meth:`verify` and the scrub. A quarantined slot is
        reported as such."""
        self._check_open()
        self._check_slot(slot)
        try:
            return self._check_slot_on_disk(slot)
        except StorageIOError as exc:  # the disk failed to read it back (EIO: a bad sector)
            return None, f"disk read failed: {exc.message}"

    def _check_slot_on_disk(self, slot: int) -> tuple[SlotHeader | None, str | None]:
        try:
            header = self._read_header(slot)
        except NotFound:
            with self._lock:
                known = self._headers.get(slot)
            if known is not None and known.state != SlotState.DELETED:
                # Both copies wiped under a slice in use (a reused slot was a 404 first).
                return None, "slot header missing on disk"
            return None, None
        except Corrupt as exc:
            return None, exc.message
        with self._lock:
            known = self._headers.get(slot)
        if known is not None and known != header:
            return header, "header on disk differs from the volume's table"
        if header.state == SlotState.DELETED:
            # A 404 marker's payload is never served, and a reuse interrupted by a crash
            # may have overwritten part of it: only the header matters.
            return header, None
        where = slot_offset(slot) + PAYLOAD_OFFSET
        data = self._io(_pread_exact, self._fd, header.length, where)
        return header, payload_problem(header, data)

    # --- plumbing ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StorageIOError("volume is closed", volume=self.name)
        if self._syncer.failed:
            raise StorageIOError("volume failed after an fsync error", volume=self.name)

    def _check_slot(self, slot: int) -> None:
        if not isinstance(slot, int) or isinstance(slot, bool):
            raise InvalidArgument(f"slot must be an integer, got {slot!r}", volume=self.name)
        if not 0 <= slot < self.superblock.max_slots:
            raise SlotOutOfRange(
                f"slot {slot} outside 0..{self.superblock.max_slots - 1}",
                volume=self.name,
                slot=slot,
            )

    def _slot_lock(self, slot: int) -> threading.Lock:
        lock = self._slot_locks.get(slot)
        if lock is None:
            lock = self._slot_locks.setdefault(slot, threading.Lock())
        return lock

    def _durable(self) -> None:
        try:
            self._syncer.wait_durable(self._syncer.ticket())
        except SyncFailed as exc:
            raise StorageIOError(f"fdatasync failed: {exc}", volume=self.name) from exc

    def _io(self, fn: Callable[..., _T], *args: Any) -> _T:
        try:
            return fn(*args)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskFull("no space left on device", volume=self.name) from exc
            raise StorageIOError(f"disk I/O failed: {exc.strerror}", volume=self.name) from exc
