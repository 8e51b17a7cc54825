"""The durable Raft journal: pysyncobj's file format, written with ``pwrite`` + ``fdatasync``.

pysyncobj 0.3.17's ``FileJournal`` memory-maps its file, never flushes it (note §2), and grows it
with a sparse resize before writing into the map: on a full disk, touching the new pages kills
the process with SIGBUS. :class:`FsyncFileJournal` implements pysyncobj's ``Journal`` interface
itself and keeps the on-disk format (header, then ``len | idx,term,command | len`` records; the
header holds the end of the last record), so either class reads the other's file. It adds:

* **No mmap; space reserved first.** A record is written with ``pwrite`` into space reserved
  beforehand (:func:`mydfs.common.diskspace.reserve_space`), and the header's end offset is
  updated only after the record is complete. If the disk is full, :meth:`add` raises
  :class:`DiskFull` *before* writing anything: the entry is not in the journal, neither in memory
  nor on disk, and nothing else changed. The journal always keeps :data:`RESERVE` bytes reserved
  past its end, so installing a snapshot (``clear`` + two entries) works even on a full disk.
* **Group commit, still safe.** ``add`` only marks the journal dirty. :meth:`sync`
  (``fdatasync``) is called by the host (a) at the start of every tick, before the leader counts
  its own log towards the commit index, and (b) right before any ``next_node_idx`` (append
  acknowledgement) or ``response_vote`` leaves the node. Nothing is acknowledged, counted or
  voted on from a non-durable log, and a follower receiving 50 entries in one message syncs once.
* **Durable term/vote/commit-index meta** (:mod:`.journal_meta`): rewritten in place, so a full
  disk cannot refuse it.
* **Atomic compaction**: ``deleteEntriesTo`` writes the kept tail to a new file, fsyncs it and
  renames it over the journal (pysyncobj rewrites in place and never shrinks the file). Without
  space for the new file, compaction is skipped and the longer journal kept.
* **Torn-tail repair at start-up**: records past the last well-formed one (length mismatch,
  short file, non-consecutive index) are dropped. They cannot have been acknowledged, because
  acknowledgements only follow a completed sync.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pysyncobj.syncobj as _syncobj_module
from pysyncobj.journal import (
    APP_NAME,
    APP_VERSION,
    FIRST_RECORD_OFFSET,
    JOURNAL_FORMAT_VERSION,
    LAST_RECORD_OFFSET_OFFSET,
    NAME_SIZE,
    VERSION_SIZE,
    Journal,
)
from pysyncobj.pickle import to_bytes as _to_bytes
from pysyncobj.version import VERSION as PYSYNCOBJ_VERSION

from mydfs.common.diskspace import is_disk_full, reserve_space
from mydfs.common.errors import Corrupt, DiskFull, InvariantViolation
from mydfs.common.fsio import fsync_dir, write_file_synced

from .journal_meta import JournalMeta

log = logging.getLogger(__name__)

SUPPORTED_PYSYNCOBJ_VERSION = "0.3.17"
_PAGE = 4096
_RECORD_HEAD = struct.Struct("<I")
_RECORD_IDS = struct.Struct("<QQ")
_MIN_RECORD_DATA = _RECORD_IDS.size
#: Record bytes around a command: two length fields and (idx, term).
RECORD_OVERHEAD = 2 * _RECORD_HEAD.size + _RECORD_IDS.size
#: Space kept reserved past the journal's end: room for the two entries a snapshot install
#: writes after ``clear()`` (each at most one command of < 64 KiB, note §4e), with margin.
RESERVE = 192 * 1024
#: Repeated "disk full" warnings are logged at most this often (seconds).
_WARN_EVERY = 10.0


def check_pysyncobj_internals() -> None:
    """raft_ext patches private parts of pysyncobj; refuse any other version."""
    if PYSYNCOBJ_VERSION != SUPPORTED_PYSYNCOBJ_VERSION:
        raise InvariantViolation(
            "raft_ext is pinned to a pysyncobj version (it uses private internals)",
            found=PYSYNCOBJ_VERSION,
            expected=SUPPORTED_PYSYNCOBJ_VERSION,
        )


def _header(last_record_offset: int) -> bytes:
    return (
        bytes(APP_NAME).ljust(NAME_SIZE, b"\0")
        + bytes(APP_VERSION).ljust(VERSION_SIZE, b"\0")
        + struct.pack("<II", JOURNAL_FORMAT_VERSION, last_record_offset)
    )


def _record(command: Any, idx: int, term: int) -> bytes:
    data = _RECORD_IDS.pack(idx, term) + bytes(_to_bytes(command))
    size = _RECORD_HEAD.pack(len(data))
    return size + data + size


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _scan(data: bytes, last: int) -> tuple[int, list[tuple[bytes, int, int]], list[int]]:
    """Walk the records up to ``last``: (end of the last well-formed one, entries, offsets)."""
    limit = min(last, len(data))
    pos = int(FIRST_RECORD_OFFSET)
    entries: list[tuple[bytes, int, int]] = []
    offsets: list[int] = []
    while pos + _RECORD_HEAD.size <= limit:
        length = int(_RECORD_HEAD.unpack_from(data, pos)[0])
        end = pos + _RECORD_HEAD.size + length + _RECORD_HEAD.size
        if length < _MIN_RECORD_DATA or end > limit:
            break
        if _RECORD_HEAD.unpack_from(data, end - _RECORD_HEAD.size)[0] != length:
            break
        idx, term = _RECORD_IDS.unpack_from(data, pos + _RECORD_HEAD.size)
        if entries and idx != entries[-1][1] + 1:
            break
        command = bytes(data[pos + _RECORD_HEAD.size + _RECORD_IDS.size : end - _RECORD_HEAD.size])
        entries.append((command, int(idx), int(term)))
        offsets.append(pos)
        pos = end
    return pos, entries, offsets


def _read_journal(path: str) -> tuple[bytes, int]:
    with open(path, "rb") as f:
        data = f.read()
    if data[: len(APP_NAME)] != APP_NAME:
        raise Corrupt("not a pysyncobj journal", path=path)
    return data, int(_RECORD_HEAD.unpack_from(data, LAST_RECORD_OFFSET_OFFSET)[0])


def repair_torn_tail(path: str) -> int:
    """Drop malformed trailing records of a journal file; returns the number of bytes dropped.

    A file shorter than the header (crash right after creation) is reset to an empty journal.
    """
    if not os.path.exists(path):
        return 0
    size = os.path.getsize(path)
    if size < FIRST_RECORD_OFFSET:
        log.warning("journal %s is shorter than its header; starting it empty", path)
        write_file_synced(path, _header(FIRST_RECORD_OFFSET))
        return size
    data, last = _read_journal(path)
    pos, _, _ = _scan(data, last)
    if pos == last:
        return 0
    log.warning(
        "journal %s: dropping a torn tail (%d bytes after offset %d)", path, last - pos, pos
    )
    fd = os.open(path, os.O_WRONLY)
    try:
        _pwrite_all(fd, _RECORD_HEAD.pack(pos), LAST_RECORD_OFFSET_OFFSET)
        os.fsync(fd)
    finally:
        os.close(fd)
    return last - pos


class FsyncFileJournal(Journal):  # type: ignore[misc]
    """pysyncobj's ``Journal`` on a file written with pwrite + fdatasync. See the module doc."""

    def __init__(self, journal_file: str) -> None:
        check_pysyncobj_internals()
        self._path = journal_file
        self._lock = threading.Lock()
        self._dirty = False
        self._syncs = 0
        self._restoring = False  # after clear(): the next two adds may use the reserve
        self._next_warning = 0.0
        #: How many appends were refused for want of space (for status/metrics).
        self.refused = 0
        if not os.path.exists(journal_file):
            write_file_synced(journal_file, _header(FIRST_RECORD_OFFSET))
            fsync_dir(Path(journal_file).parent)
        repair_torn_tail(journal_file)
        data, last = _read_journal(journal_file)
        self._end, self._entries, self._offsets = _scan(data, last)
        del data
        self._fd = os.open(journal_file, os.O_RDWR)
        os.fchmod(self._fd, 0o600)  # pysyncobj created its files with the process umask
        self._allocated = max(os.fstat(self._fd).st_size, self._end)
        self._meta = JournalMeta(journal_file + ".meta")
        self._meta_saved = True
        try:
            self._reserve(self._end + RESERVE)
        except DiskFull:
            self._warn("raft journal %s: no space for its reserve at start-up", journal_file)

    # -- space --------------------------------------------------------------------------
    def _reserve(self, upto: int) -> None:
        """Make sure ``[0, upto)`` of the file is allocated; DiskFull when it cannot be."""
        if upto <= self._allocated:
            return
        target = -(-upto // _PAGE) * _PAGE
        try:
            reserved = reserve_space(self._fd, self._allocated, target - self._allocated)
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFull("raft journal: no space left on device", path=self._path) from exc
            raise
        if reserved:
            self._allocated = target
        else:  # this filesystem cannot preallocate: pwrite may still fail with ENOSPC
            self._allocated = upto

    def _warn(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now >= self._next_warning:
            self._next_warning = now + _WARN_EVERY
            log.warning(message, *args)

    def has_room(self, command_bytes: int) -> bool:
        """Can a command of ``command_bytes`` be appended now? (Reserves the space if so.)"""
        try:
            self._reserve(self._end + command_bytes + RECORD_OVERHEAD + RESERVE)
        except DiskFull:
            return False
        return True

    # -- pysyncobj's Journal interface ----------------------------------------------------
    def add(self, command: Any, idx: int, term: int) -> None:
        record = _record(command, idx, term)
        end = self._end + len(record)
        try:
            self._reserve(end if self._restoring else end + RESERVE)
            _pwrite_all(self._fd, record, self._end)
            _pwrite_all(self._fd, _RECORD_HEAD.pack(end), LAST_RECORD_OFFSET_OFFSET)
        except DiskFull:
            self.refused += 1
            self._warn("raft journal %s is full: appends are refused", self._path)
            raise
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            self.refused += 1
            raise DiskFull("raft journal: no space left on device", path=self._path) from exc
        self._entries.append((command, idx, term))
        self._offsets.append(self._end)
        self._end = end
        self._dirty = True
        if self._restoring and len(self._entries) >= 2:
            self._restoring = False

    def clear(self) -> None:
        """Empty the journal in place (only the header changes; the file keeps its space)."""
        _pwrite_all(self._fd, _RECORD_HEAD.pack(FIRST_RECORD_OFFSET), LAST_RECORD_OFFSET_OFFSET)
        self._entries, self._offsets = [], []
        self._end = FIRST_RECORD_OFFSET
        self._dirty = True
        self._restoring = True

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[tuple[Any, int, int]]:
        return iter(self._entries)

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        if entryFrom >= len(self._entries):
            return
        end = self._offsets[entryFrom]
        _pwrite_all(self._fd, _RECORD_HEAD.pack(end), LAST_RECORD_OFFSET_OFFSET)
        del self._entries[entryFrom:]
        del self._offsets[entryFrom:]
        self._end = end
        self._dirty = True

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Compaction: atomically replace the file by one holding ``entries[entryTo:]``."""
        kept = self._entries[entryTo:]
        records = [_record(command, idx, term) for command, idx, term in kept]
        offsets, pos = [], int(FIRST_RECORD_OFFSET)
        for record in records:
            offsets.append(pos)
            pos += len(record)
        tmp = self._path + ".rewrite.tmp"
        fd = -1
        try:
            write_file_synced(tmp, _header(pos) + b"".join(records))
            fd = os.open(tmp, os.O_RDWR)
            reserved = reserve_space(fd, 0, pos + RESERVE)
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if not is_disk_full(exc):
                raise
            self._warn("raft journal %s: no space to compact it; keeping it whole", self._path)
            return
        with self._lock:
            try:
                os.replace(tmp, self._path)
                fsync_dir(Path(self._path).parent)
            except BaseException:
                os.close(fd)
                raise
            old, self._fd = self._fd, fd
            os.close(old)
            self._entries, self._offsets = list(kept), offsets
            self._end = pos
            self._allocated = pos + RESERVE if reserved else pos
            self._dirty = False

    def _destroy(self) -> None:
        try:
            self.sync()
            self.onOneSecondTimer()
        finally:
            with self._lock:
                if self._fd >= 0:
                    os.close(self._fd)
                    self._fd = -1
            self._meta.close()

    def flush(self) -> None:
        self.sync()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        self._meta_pending({"raftCommitIndex": raftCommitIndex})

    def getRaftCommitIndex(self) -> int:
        return int(self._meta.meta.get("raftCommitIndex", 1))

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        # Raft needs the term and vote durable before any message reflecting them is sent.
        meta = dict(self._meta.meta, currentTerm=term, votedForNodeId=votedForNodeId)
        self._meta.store(meta)
        self._meta_saved = True

    def getCurrentTerm(self) -> int:
        return int(self._meta.meta.get("currentTerm", 0))

    def getVotedForNodeId(self) -> Any:
        return self._meta.meta.get("votedForNodeId")

    def onOneSecondTimer(self) -> None:
        """Store the commit index (a hint: a stale one is only re-learned from the leader)."""
        if not self._meta_saved:
            self._meta.store(self._meta.meta)
            self._meta_saved = True

    def _meta_pending(self, changes: dict[str, Any]) -> None:
        self._meta.meta = dict(self._meta.meta, **changes)
        self._meta_saved = False

    # -- durability -----------------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        return self._dirty

    @property
    def sync_count(self) -> int:
        return self._syncs

    def sync(self) -> None:
        """Make every change since the last sync durable (fdatasync)."""
        with self._lock:
            if not self._dirty or self._fd < 0:
                return
            os.fdatasync(self._fd)
            self._dirty = False
            self._syncs += 1


JournalFactory = Callable[[str | None], Any]


def make_journal_factory(expected_path: Path, snapshot_path: Path) -> JournalFactory:
    """A ``createJournal`` replacement for one node, with the start-up consistency check."""

    def factory(journal_file: str | None) -> Any:
        if journal_file is None or Path(journal_file) != expected_path:
            raise InvariantViolation("unexpected journal path", path=journal_file)
        journal = FsyncFileJournal(journal_file)
        if len(journal) > 0 and journal[0][1] > 1 and not snapshot_path.exists():
            journal._destroy()
            raise Corrupt(
                "the journal was compacted but the snapshot file is missing; refusing to start "
                "with a silently truncated state",
                journal=journal_file,
                snapshot=str(snapshot_path),
                first_index=journal[0][1],
            )
        return journal

    return factory


_install_lock = threading.Lock()


@contextmanager
def journal_factory_installed(factory: JournalFactory) -> Iterator[None]:
    """Install ``factory`` as pysyncobj's ``createJournal`` while one SyncObj is constructed.

    ``SyncObj.__init__`` calls the module-level ``createJournal`` (syncobj.py:L166); the patch is
    held under a lock and undone right after, so other SyncObj users are unaffected.
    """
    with _install_lock:
        original = _syncobj_module.createJournal
        _syncobj_module.createJournal = factory
        try:
            yield
        finally:
            _syncobj_module.createJournal = original
