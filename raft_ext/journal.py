"""A durable pysyncobj journal: pysyncobj's ``FileJournal`` plus msync + fdatasync.

pysyncobj 0.3.17 never flushes its mmap'ed journal (note §2): kill -9 is survived, power loss is
not. :class:`FsyncFileJournal` keeps the on-disk format of ``FileJournal`` (the two are
interchangeable) and adds:

* **Group commit, still safe.** ``add`` only marks a dirty byte range. The range is made durable
  (``msync`` of the dirty pages + ``fdatasync``) by :meth:`FsyncFileJournal.sync`, which the host
  calls (a) at the start of every tick, before the leader counts its own log towards the commit
  index, and (b) right before any ``next_node_idx`` (append acknowledgement) or ``response_vote``
  message leaves the node. So nothing is ever acknowledged, counted or voted on from a
  non-durable log, but a follower receiving 50 entries in one message syncs once.
* **Durable term/vote/commit-index meta**: written with tmp + fsync + rename + directory fsync
  (pysyncobj writes it without any fsync).
* **Atomic compaction**: ``deleteEntriesTo``/``clear`` write the kept tail to a new file, fsync it
  and rename it over the journal (pysyncobj rewrites the file in place, which a power loss can
  tear; it also never shrinks the file).
* **Torn-tail repair at start-up**: records past the last well-formed one (length mismatch, short
  file, non-consecutive index) are dropped. They cannot have been acknowledged, because
  acknowledgements only follow a completed sync.

It relies on private attributes of pysyncobj 0.3.17 (``_FileJournal__*``, ``_ResizableFile__*``);
:func:`check_pysyncobj_internals` refuses other versions.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import threading
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
    FileJournal,
    MetaStorer,
    ResizableFile,
)
from pysyncobj.pickle import dumps as _pysyncobj_dumps
from pysyncobj.pickle import to_bytes as _to_bytes
from pysyncobj.version import VERSION as PYSYNCOBJ_VERSION

from mydfs.common.errors import Corrupt, InvariantViolation
from mydfs.common.fsio import atomic_write, fsync_dir, fsync_file, write_file_synced

log = logging.getLogger(__name__)

SUPPORTED_PYSYNCOBJ_VERSION = "0.3.17"
_PAGE = mmap.PAGESIZE
_RECORD_HEAD = struct.Struct("<I")
_RECORD_IDS = struct.Struct("<QQ")
_MIN_RECORD_DATA = _RECORD_IDS.size
_PRIVATE_ATTRIBUTES = (
    "_FileJournal__journalFile",
    "_FileJournal__currentOffset",
    "_FileJournal__journal",
    "_FileJournal__metaStorer",
)


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
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        if mm[: len(APP_NAME)] != APP_NAME:
            raise Corrupt("not a pysyncobj journal", path=path)
        last = int(_RECORD_HEAD.unpack_from(mm, LAST_RECORD_OFFSET_OFFSET)[0])
        limit = min(last, size)
        pos = int(FIRST_RECORD_OFFSET)
        prev_idx: int | None = None
        while pos < limit:
            if pos + _RECORD_HEAD.size > limit:
                break
            length = int(_RECORD_HEAD.unpack_from(mm, pos)[0])
            end = pos + _RECORD_HEAD.size + length + _RECORD_HEAD.size
            if length < _MIN_RECORD_DATA or end > limit:
                break
            if _RECORD_HEAD.unpack_from(mm, end - _RECORD_HEAD.size)[0] != length:
                break
            idx = _RECORD_IDS.unpack_from(mm, pos + _RECORD_HEAD.size)[0]
            if prev_idx is not None and idx != prev_idx + 1:
                break
            prev_idx = idx
            pos = end
        if pos == last:
            return 0
        log.warning(
            "journal %s: dropping a torn tail (%d bytes after offset %d)", path, last - pos, pos
        )
        mm[LAST_RECORD_OFFSET_OFFSET : LAST_RECORD_OFFSET_OFFSET + 4] = _RECORD_HEAD.pack(pos)
        mm.flush()
        os.fsync(f.fileno())
        return last - pos


class FsyncMetaStorer(MetaStorer):  # type: ignore[misc]
    """pysyncobj's meta file (term, vote, commit index), written durably."""

    def storeMeta(self, meta: dict[str, Any]) -> None:
        atomic_write(self.getPath(), _pysyncobj_dumps(meta))


class FsyncFileJournal(FileJournal):  # type: ignore[misc]
    """``FileJournal`` with group-committed msync + fdatasync. See the module docstring."""

    # pysyncobj 0.3.17 private attributes used here (checked at construction).
    _FileJournal__journalFile: Any
    _FileJournal__currentOffset: int
    _FileJournal__journal: list[Any]
    _FileJournal__metaStorer: Any

    def __init__(self, journal_file: str) -> None:
        check_pysyncobj_internals()
        existed = os.path.exists(journal_file)
        repair_torn_tail(journal_file)
        super().__init__(journal_file)
        self._rx_path = journal_file
        self._rx_lock = threading.Lock()
        self._rx_dirty_lo: int | None = None
        self._rx_dirty_hi = 0
        self._rx_syncs = 0
        for name in _PRIVATE_ATTRIBUTES:
            if not hasattr(self, name):
                raise InvariantViolation("pysyncobj FileJournal internals changed", missing=name)
        self._FileJournal__metaStorer = FsyncMetaStorer(journal_file + ".meta")
        os.chmod(journal_file, 0o600)  # pysyncobj creates it with the process umask
        if not existed:
            fsync_file(journal_file)
            fsync_dir(Path(journal_file).parent)

    # -- dirty tracking -----------------------------------------------------------------
    def _rx_mark(self, lo: int, hi: int) -> None:
        self._rx_dirty_lo = lo if self._rx_dirty_lo is None else min(self._rx_dirty_lo, lo)
        self._rx_dirty_hi = max(self._rx_dirty_hi, hi)

    @property
    def dirty(self) -> bool:
        return self._rx_dirty_lo is not None

    @property
    def sync_count(self) -> int:
        return self._rx_syncs

    def add(self, command: Any, idx: int, term: int) -> None:
        start = int(self._FileJournal__currentOffset)
        super().add(command, idx, term)
        self._rx_mark(start, int(self._FileJournal__currentOffset))

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        super().deleteEntriesFrom(entryFrom)
        # Only the header's "last record offset" changed.
        self._rx_mark(0, FIRST_RECORD_OFFSET)

    def sync(self) -> None:
        """Make every change since the last sync durable (msync of dirty pages + fdatasync)."""
        with self._rx_lock:
            lo = self._rx_dirty_lo
            if lo is None:
                return
            resizable = self._FileJournal__journalFile
            mm: mmap.mmap = resizable._ResizableFile__mm
            fobj = resizable._ResizableFile__f
            size = mm.size()
            header_end = min(_PAGE, size)
            mm.flush(0, header_end)
            start = max(lo - lo % _PAGE, header_end)
            end = min(self._rx_dirty_hi, size)
            if end > start:
                mm.flush(start, end - start)
            os.fdatasync(fobj.fileno())
            self._rx_dirty_lo = None
            self._rx_dirty_hi = 0
            self._rx_syncs += 1

    # -- atomic rewrites ----------------------------------------------------------------
    def _rx_rewrite(self, entries: list[Any]) -> None:
        body = b"".join(_record(command, idx, term) for command, idx, term in entries)
        end = FIRST_RECORD_OFFSET + len(body)
        tmp = self._rx_path + ".rewrite.tmp"
        write_file_synced(tmp, _header(end) + body)
        with self._rx_lock:
            self._FileJournal__journalFile._destroy()
            try:
                os.replace(tmp, self._rx_path)
                fsync_dir(Path(self._rx_path).parent)
            finally:
                self._FileJournal__journalFile = ResizableFile(self._rx_path)
            self._FileJournal__journal = list(entries)
            self._FileJournal__currentOffset = end
            self._rx_dirty_lo = None
            self._rx_dirty_hi = 0

    def clear(self) -> None:
        self._rx_rewrite([])

    def deleteEntriesTo(self, entryTo: int) -> None:
        self._rx_rewrite(list(self._FileJournal__journal[entryTo:]))

    def _destroy(self) -> None:
        try:
            self.sync()
        finally:
            super()._destroy()


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
