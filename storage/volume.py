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
* **The free-slice table is rebuilt by a scan of the slot headers at every open** (the headers
  are the only source of truth). The superblock keeps a checkpoint of the table, written at
  clean close; the scan is compared with it and any difference is reported in the open report.
"""

from __future__ import annotations

import errno
import fcntl
import heapq
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mydfs.common.checksum import block_crcs, crc32c
from mydfs.common.errors import (
    Conflict,
    Corrupt,
    DiskFull,
    IncompatibleVolume,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    SliceDeleted,
    SliceMoved,
    SlotOutOfRange,
    StorageIOError,
)
from mydfs.common.fsio import fsync_dir as _fsync_dir
from mydfs.common.location import Location
from mydfs.storage.format import (
    BLOCK_SIZE,
    CHECKPOINT_FIXED,
    CHECKPOINT_OFFSETS,
    DEFAULT_MAX_SLOTS,
    HEADER_SIZE,
    PAYLOAD_CAPACITY,
    PAYLOAD_OFFSET,
    SLOT_SIZE,
    Checkpoint,
    SliceOwner,
    SlotHeader,
    SlotState,
    Superblock,
    checkpoint_length,
    decode_checkpoint,
    decode_header,
    decode_superblock,
    encode_checkpoint,
    encode_header,
    encode_superblock,
    header_is_blank,
    slot_offset,
)
from mydfs.storage.syncer import GroupSyncer, SyncFailed

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_ZERO_HEAD = bytes(PAYLOAD_OFFSET)
_HEADER_PAIR = 2 * HEADER_SIZE


@dataclass(frozen=True)
class SliceData:
    """What a read returns: the slot's header and the requested payload bytes."""

    header: SlotHeader
    offset: int
    data: bytes


@dataclass(frozen=True)
class VolumeStats:
    live: int
    pending: int
    moved: int
    deleted: int
    free: int  # entries in the free-slice table (404 slots and never-written slots)
    quarantined: int  # slots whose headers are damaged; never reused, never served
    slot_end: int  # slots [0, slot_end) are inside the file
    bytes_live: int  # payload bytes of LIVE slots
    bytes_stored: int  # payload bytes of every slot holding a header
    disk_bytes: int  # bytes the file really occupies on disk (it is sparse)
    syncs: int


@dataclass(frozen=True)
class Problem:
    """One bad slot found by :meth:`Volume.verify` or by the open-time scan."""

    slot: int
    reason: str


@dataclass
class OpenReport:
    """What reopening found: an unclean shutdown, settled header copies, damaged slots."""

    clean: bool = True
    repaired_headers: list[int] = field(default_factory=list)
    quarantined: list[Problem] = field(default_factory=list)
    checkpoint_mismatch: str | None = None


@dataclass(frozen=True)
class VerifyReport:
    checked: int
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems


def _pread_exact(fd: int, length: int, offset: int) -> bytes:
    """pread that loops over short reads; returns fewer bytes only at end of file."""
    chunks: list[bytes] = []
    got = 0
    while got < length:
        chunk = os.pread(fd, length - got, offset + got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _pwrite_all(fd: int, buffers: list[bytes | memoryview], offset: int) -> None:
    """pwritev that loops over short writes."""
    views = [memoryview(b) for b in buffers if len(b)]
    while views:
        n = os.pwritev(fd, views, offset)
        offset += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]


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
        self._free_heap: list[int] = []
        self._free: set[int] = set()
        self._claimed: set[int] = set()  # allocated or being written, not yet holding a header
        self._writing: set[int] = set()  # a write() is in progress (at most one per slot)
        self._slot_end = 0
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
        try:
            fd = os.open(p, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise StorageIOError(f"cannot open volume: {exc.strerror}", volume=str(p)) from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Conflict("volume is already open in another process", volume=str(p)) from None
            sb = decode_superblock(_pread_exact(fd, 512, 0), volume=str(p))
            if node_id is not None and sb.node_id != node_id:
                raise IncompatibleVolume(
                    f"volume belongs to node {sb.node_id!r}, not {node_id!r}", volume=str(p)
                )
            if group_id is not None and sb.group_id != group_id:
                raise IncompatibleVolume(
                    f"volume belongs to group {sb.group_id}, not {group_id}", volume=str(p)
                )
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
        tmp = path.with_name(path.name + ".creating")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            _pwrite_all(fd, [encode_superblock(sb)], 0)
            empty = Checkpoint(seq=1, clean=True, slot_end=0, max_generation=0)
            _pwrite_all(fd, [encode_checkpoint(empty)], CHECKPOINT_OFFSETS[1])
            os.ftruncate(fd, SLOT_SIZE)  # the superblock slot; sparse
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        _fsync_dir(path.parent)

    def _load(self) -> None:
        """Scan every slot header; rebuild the index and the free-slice table."""
        checkpoint = self._read_checkpoint()
        size = os.fstat(self._fd).st_size
        self._slot_end = max(0, -(-(size - SLOT_SIZE) // SLOT_SIZE))
        if self._slot_end > self.superblock.max_slots:
            raise Corrupt(
                f"file holds {self._slot_end} slots, more than max_slots", volume=self.name
            )
        repairs: list[SlotHeader] = []
        for slot in range(self._slot_end):
            raw = _pread_exact(self._fd, _HEADER_PAIR, slot_offset(slot))
            raw = raw.ljust(_HEADER_PAIR, b"\0")
            try:
                header, settled = self._settle_copies(slot, raw)
            except IncompatibleVolume as exc:
                raise IncompatibleVolume(exc.message, volume=self.name, slot=slot) from None
            except Corrupt as exc:
                self._quarantine(slot, exc.message)
                continue
            if header is None:
                self._add_free(slot)
                continue
            end = slot_offset(slot) + PAYLOAD_OFFSET + header.length
            if end > size:
                self._quarantine(slot, f"payload cut short: file ends {end - size} bytes early")
                continue
            if not settled:
                repairs.append(header)
            self._headers[slot] = header
            self._max_generation = max(self._max_generation, header.generation)
            if header.state == SlotState.DELETED:
                self._add_free(slot)
        for header in repairs:
            self._write_header_copies(header)
            self.report.repaired_headers.append(header.slot)
        self._compare_checkpoint(checkpoint)
        if checkpoint is not None:
            self._max_generation = max(self._max_generation, checkpoint.max_generation)
            self._checkpoint_seq = checkpoint.seq
        self.report.clean = checkpoint is not None and checkpoint.clean
        if not self.report.clean:
            log.warning("volume %s was not closed cleanly; recovered by scan", self.name)
        self._write_checkpoint(clean=False)

    def _settle_copies(self, slot: int, raw: bytes) -> tuple[SlotHeader | None, bool]:
        """Pick the header of ``slot`` from its two copies at open time.

        Returns ``(header or None if blank, settled)``; settled is False when the copies
        disagree and must be rewritten. Raises Corrupt when no copy is usable but one is not
        blank (damage, or a header from another slot).
        """
        raw_a, raw_b = raw[:HEADER_SIZE], raw[HEADER_SIZE:]
        if raw_a == raw_b:
            if header_is_blank(raw_a):
                return None, True
            return decode_header(raw_a, slot=slot), True
        decoded: list[SlotHeader] = []
        errors: list[Corrupt] = []
        for copy in (raw_a, raw_b):
            if header_is_blank(copy):
                continue
            try:
                decoded.append(decode_header(copy, slot=slot))
            except IncompatibleVolume:
                raise
            except Corrupt as exc:
                errors.append(exc)
        if decoded:
            newest = max(decoded, key=lambda h: (h.generation, h.seq))
            return newest, False
        if errors:
            raise errors[0]
        return None, True

    def _read_checkpoint(self) -> Checkpoint | None:
        found: list[Checkpoint] = []
        for off in CHECKPOINT_OFFSETS:
            fixed = _pread_exact(self._fd, CHECKPOINT_FIXED, off)
            length = checkpoint_length(fixed)
            if not length:
                continue
            cp = decode_checkpoint(_pread_exact(self._fd, length, off))
            if cp is not None:
                found.append(cp)
        return max(found, key=lambda c: c.seq) if found else None

    def _compare_checkpoint(self, cp: Checkpoint | None) -> None:
        if cp is None or not cp.clean:
            return
        problems = []
        if cp.slot_end != self._slot_end:
            problems.append(f"slot_end {cp.slot_end} != scanned {self._slot_end}")
        if cp.complete and set(cp.free) != self._free:
            problems.append(
                f"free table of {len(cp.free)} slots != scanned {len(self._free)} slots"
            )
        if problems:
            self.report.checkpoint_mismatch = "; ".join(problems)
            log.warning("volume %s changed since its clean close: %s", self.name, problems)

    def _write_checkpoint(self, *, clean: bool) -> None:
        size = os.fstat(self._fd).st_size
        disk_end = min(self._slot_end, max(0, -(-(size - SLOT_SIZE) // SLOT_SIZE)))
        with self._lock:
            self._checkpoint_seq += 1
            # Record what a scan of the file will find: slots allocated past the end of the file
            # (never written, or released) are not in it.
            cp = Checkpoint(
                seq=self._checkpoint_seq,
                clean=clean,
                slot_end=disk_end,
                max_generation=self._max_generation,
                # claimed slots are free on disk
                free=tuple(sorted(s for s in self._free | self._claimed if s < disk_end)),
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

    # --- allocation ---------------------------------------------------------------------------

    def _add_free(self, slot: int) -> None:
        if slot not in self._free:
            self._free.add(slot)
            heapq.heappush(self._free_heap, slot)

    def _quarantine(self, slot: int, reason: str) -> None:
        self._quarantined[slot] = reason
        self.report.quarantined.append(Problem(slot, reason))
        log.error("volume %s slot %d quarantined: %s", self.name, slot, reason)

    def allocate(self) -> int:
        """Reserve a slot: the lowest entry of the free-slice table, else the next at the end."""
        self._check_open()
        with self._lock:
            while self._free_heap:
                slot = heapq.heappop(self._free_heap)
                if slot in self._free:
                    self._free.discard(slot)
                    self._claimed.add(slot)
                    return slot
            if self._slot_end >= self.superblock.max_slots:
                raise DiskFull(
                    f"volume is full ({self.superblock.max_slots} slots)", volume=self.name
                )
            slot = self._slot_end
            self._slot_end += 1
            self._claimed.add(slot)
            return slot

    def release(self, slot: int) -> None:
        """Give back a slot reserved by :meth:`allocate` and never written."""
        with self._lock:
            if slot in self._claimed and slot not in self._writing:
                self._claimed.discard(slot)
                self._add_free(slot)

    def _claim(self, slot: int) -> None:
        """Claim ``slot`` for a write: it must be reserved by us, free, or beyond the end."""
        self._check_slot(slot)
        with self._lock:
            if slot in self._writing:
                raise Conflict("slot is being written right now", volume=self.name, slot=slot)
            if slot in self._claimed:
                self._writing.add(slot)
                return
            if slot in self._free:
                self._free.discard(slot)
            elif slot >= self._slot_end:
                for gap in range(self._slot_end, slot):
                    self._add_free(gap)
                self._slot_end = slot + 1
            elif slot in self._quarantined:
                raise Conflict("slot is quarantined; reclaim it first", volume=self.name, slot=slot)
            else:
                state = self._headers[slot].state.name if slot in self._headers else "?"
                raise Conflict(
                    f"slot is in use ({state}); slices are write-once", volume=self.name, slot=slot
                )
            self._claimed.add(slot)
            self._writing.add(slot)

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
        if len(payload) > PAYLOAD_CAPACITY:
            raise PayloadTooLarge(
                f"payload of {len(payload)} bytes exceeds slice capacity {PAYLOAD_CAPACITY}",
                volume=self.name,
                slot=slot,
            )
        if state not in (SlotState.LIVE, SlotState.PENDING):
            raise InvalidArgument(f"a write makes a LIVE or PENDING slice, not {state.name}")
        if owner is not None and not isinstance(owner, SliceOwner):
            raise InvalidArgument(f"owner must be a SliceOwner, got {owner!r}", slot=slot)
        if next is not None:
            _check_location(next, "next", self.name, slot)
        if generation is not None and not 0 <= generation < 1 << 64:
            raise InvalidArgument(f"generation {generation} out of range", slot=slot)
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
                self._writing.discard(slot)
                if slot in self._claimed:
                    self._claimed.discard(slot)
                    self._add_free(slot)
            raise
        with self._lock:
            self._writing.discard(slot)
            self._claimed.discard(slot)
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
                    self._add_free(slot)
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
        """Leave a 301 redirect to ``target``. The slot is not reused until compaction."""
        _check_location(target, "target", self.name, slot)
        return self._update(slot, {SlotState.LIVE}, state=SlotState.MOVED, target=target)

    def relink(self, slot: int, next: Location | None) -> SlotHeader:
        """Point the slice's next pointer at ``next`` (None: the last slice of its file)."""
        if next is not None:
            _check_location(next, "next", self.name, slot)
        return self._update(slot, {SlotState.LIVE, SlotState.PENDING}, next=next)

    def reclaim(self, slot: int) -> None:
        """Return a quarantined slot to the free table (after its data was restored elsewhere)."""
        self._check_slot(slot)
        with self._lock:
            if self._quarantined.pop(slot, None) is not None:
                self._add_free(slot)

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
            self._check_readable(header, allow_pending=allow_pending, expect_owner=expect_owner)
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
            bad = self._bad_block(header, data, first, stop - start)
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

    def _bad_block(self, header: SlotHeader, data: bytes, first: int, expect: int) -> int | None:
        if len(data) != expect:
            return first + len(data) // BLOCK_SIZE
        view = memoryview(data)
        for i in range(0, len(data), BLOCK_SIZE):
            block = first + i // BLOCK_SIZE
            if crc32c(view[i : i + BLOCK_SIZE]) != header.block_crcs[block]:
                return block
        return None

    def _check_readable(
        self, header: SlotHeader, *, allow_pending: bool, expect_owner: SliceOwner | None
    ) -> None:
        slot = header.slot
        if header.state == SlotState.DELETED:
            raise SliceDeleted("slice was deleted (404)", volume=self.name, slot=slot)
        if header.state == SlotState.MOVED:
            assert header.target is not None
            raise SliceMoved(
                "slice moved (301)",
                target=(header.target.group, header.target.slot),
                volume=self.name,
                slot=slot,
            )
        if header.state == SlotState.PENDING and not allow_pending:
            raise NotFound("slice is pending, not committed", volume=self.name, slot=slot)
        if expect_owner is not None and header.owner != expect_owner:
            raise NotFound(
                f"slot holds slice {header.owner}, not {expect_owner}", volume=self.name, slot=slot
            )

    def _read_header(self, slot: int) -> SlotHeader:
        """Read and check both header copies of ``slot`` from the disk."""
        with self._lock:
            if slot in self._quarantined:
                raise Corrupt(self._quarantined[slot], volume=self.name, slot=slot)
            if slot >= self._slot_end:
                raise NotFound("slot holds no slice", volume=self.name, slot=slot)
        raw = self._io(_pread_exact, self._fd, _HEADER_PAIR, slot_offset(slot))
        if raw[:HEADER_SIZE] != raw[HEADER_SIZE:]:
            # Maybe an update is between its two copies: look again under the slot lock.
            with self._slot_lock(slot):
                raw = self._io(_pread_exact, self._fd, _HEADER_PAIR, slot_offset(slot))
            if raw[:HEADER_SIZE] != raw[HEADER_SIZE:]:
                which = "A" if self._copy_damaged(slot, raw[:HEADER_SIZE]) else "B"
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

    def _copy_damaged(self, slot: int, raw: bytes) -> bool:
        try:
            decode_header(raw, slot=slot)
        except Corrupt:
            return True
        return False

    # --- listing, statistics, verification -------------------------------------------------

    def scan(self) -> Iterator[SlotHeader]:
        """Every slot holding a header (LIVE, PENDING, MOVED, DELETED), in slot order."""
        with self._lock:
            headers = sorted(self._headers.items())
        for _slot, header in headers:
            yield header

    def free_slots(self) -> list[int]:
        """The free-slice table, lowest first."""
        with self._lock:
            return sorted(self._free)

    def quarantined(self) -> dict[int, str]:
        with self._lock:
            return dict(self._quarantined)

    def stats(self) -> VolumeStats:
        if self._closed:
            raise StorageIOError("volume is closed", volume=self.name)
        with self._lock:
            headers = list(self._headers.values())
            free = len(self._free)
            quarantined = len(self._quarantined)
            slot_end = self._slot_end
        counts = dict.fromkeys(SlotState, 0)
        for h in headers:
            counts[h.state] += 1
        return VolumeStats(
            live=counts[SlotState.LIVE],
            pending=counts[SlotState.PENDING],
            moved=counts[SlotState.MOVED],
            deleted=counts[SlotState.DELETED],
            free=free,
            quarantined=quarantined,
            slot_end=slot_end,
            bytes_live=sum(h.length for h in headers if h.state == SlotState.LIVE),
            bytes_stored=sum(h.length for h in headers),
            disk_bytes=os.fstat(self._fd).st_blocks * 512,
            syncs=self._syncer.syncs,
        )

    def verify(self) -> VerifyReport:
        """Check every slot's header copies and every payload block; report each bad slot."""
        self._check_open()
        with self._lock:
            slot_end = self._slot_end
            quarantined = dict(self._quarantined)
        problems = [Problem(s, r) for s, r in sorted(quarantined.items())]
        checked = 0
        for slot in range(slot_end):
            if slot in quarantined:
                continue
            try:
                header = self._read_header(slot)
            except NotFound:
                with self._lock:
                    known = self._headers.get(slot)
                if known is not None and known.state != SlotState.DELETED:
                    # Both copies wiped under a slice in use (a reused slot was a 404 first).
                    problems.append(Problem(slot, "slot header missing on disk"))
                continue
            except Corrupt as exc:
                problems.append(Problem(slot, exc.message))
                continue
            checked += 1
            with self._lock:
                known = self._headers.get(slot)
            if known is not None and known != header:
                problems.append(Problem(slot, "header on disk differs from the volume's table"))
                continue
            if header.state == SlotState.DELETED:
                # A 404 marker's payload is never served, and a reuse interrupted by a crash
                # may have overwritten part of it: only the header matters.
                continue
            data = _pread_exact(self._fd, header.length, slot_offset(slot) + PAYLOAD_OFFSET)
            bad = self._bad_block(header, data, 0, header.length)
            if bad is not None:
                problems.append(Problem(slot, f"payload block {bad} checksum mismatch"))
            elif crc32c(data) != header.payload_crc:
                problems.append(Problem(slot, "payload checksum mismatch"))
        return VerifyReport(checked=checked, problems=problems)

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


def _check_location(loc: object, what: str, volume: str, slot: int) -> None:
    if not isinstance(loc, Location):
        raise InvalidArgument(
            f"{what} must be a Location(group, slot), got {loc!r}", volume=volume, slot=slot
        )
