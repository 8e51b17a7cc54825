"""The journal's meta file (current term, vote, commit index), rewritten in place.

Raft must never forget a term or a vote it acted on, and pysyncobj updates its in-memory term
*before* it asks the journal to store it: a store that fails half-way leaves a node that believes
in a term it never made durable (a leader could even keep leading into a term it was not elected
in). So the store must not fail for want of space. pysyncobj writes a new file and renames it
(which needs a free block); this file is instead created once with two fixed 4 KiB slots, fully
written, and each store overwrites the older slot in place with ``pwrite`` + ``fdatasync``:
overwriting written blocks needs no new space, so a full disk cannot refuse it. A torn write
damages one slot only; the loader takes the valid slot with the higher sequence number.

A slot is pysyncobj's own encoding (protocol-2 pickle) of the meta dict plus two keys,
``rx_seq`` and ``rx_crc`` (crc32 of the encoded dict without ``rx_crc``), padded with zeros.
pysyncobj's ``MetaStorer`` reads the first slot (pickle ignores the padding), which may be one
store behind: good for inspection, not for a downgrade. A meta file in pysyncobj's own layout
(one pickle) is read once and rewritten in this layout.
"""

from __future__ import annotations

import os
import threading
import zlib
from pathlib import Path
from typing import Any

from pysyncobj.pickle import dumps as _dumps
from pysyncobj.pickle import loads as _loads

from mydfs.common.errors import Corrupt, InvariantViolation, SyncFailed
from mydfs.common.fsio import fsync_dir, write_file_synced

SLOT_SIZE = 4096
SLOTS = 2
_SEQ = "rx_seq"
_CRC = "rx_crc"


def encode_slot(meta: dict[str, Any], seq: int) -> bytes:
    body = {k: v for k, v in meta.items() if k not in (_SEQ, _CRC)}
    body[_SEQ] = seq
    body[_CRC] = zlib.crc32(_dumps(body))
    blob = bytes(_dumps(body))
    if len(blob) > SLOT_SIZE:
        raise InvariantViolation("raft meta does not fit its slot", size=len(blob))
    return blob.ljust(SLOT_SIZE, b"\0")


def decode_slot(blob: bytes) -> tuple[int, dict[str, Any]] | None:
    """``(seq, meta)`` of a valid slot, None for a damaged or empty one."""
    try:
        value = _loads(blob)
    except Exception:
        return None
    if not isinstance(value, dict) or not isinstance(value.get(_SEQ), int):
        return None
    crc = value.pop(_CRC, None)
    if crc != zlib.crc32(_dumps(value)):
        return None
    seq = int(value.pop(_SEQ))
    return seq, value


class JournalMeta:
    """The two-slot meta file of one journal. ``store`` never needs new disk space."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.meta: dict[str, Any] = {}
        self._seq = 0
        if os.path.exists(path):
            self._load()
        else:
            self._create({}, 0)
        self._fd = os.open(path, os.O_RDWR)

    def _load(self) -> None:
        with open(self.path, "rb") as f:
            data = f.read()
        if len(data) == SLOT_SIZE * SLOTS:
            slots = [decode_slot(data[i * SLOT_SIZE : (i + 1) * SLOT_SIZE]) for i in range(SLOTS)]
            valid = [s for s in slots if s is not None]
            if valid:
                self._seq, self.meta = max(valid, key=lambda s: s[0])
                return
        try:  # pysyncobj's own layout: one pickled dict (migrated once)
            legacy = _loads(data)
        except Exception:
            legacy = None
        if not isinstance(legacy, dict) or _CRC in legacy:
            raise Corrupt("raft meta file is damaged (term and vote unknown)", path=self.path)
        self._create(legacy, 0)

    def _create(self, meta: dict[str, Any], seq: int) -> None:
        """Write both slots and rename into place (start-up only; this does need space)."""
        tmp = self.path + ".tmp"
        slot = encode_slot(meta, seq)
        write_file_synced(tmp, slot * SLOTS)
        os.replace(tmp, self.path)
        fsync_dir(Path(self.path).parent)
        self.meta, self._seq = dict(meta), seq

    def store(self, meta: dict[str, Any]) -> None:
        """Durably replace the meta: overwrite the older slot in place, then fdatasync."""
        with self._lock:
            seq = self._seq + 1
            blob = encode_slot(meta, seq)
            offset = ((seq - 1) % SLOTS) * SLOT_SIZE
            try:
                view = memoryview(blob)
                pos = offset
                while view:
                    written = os.pwrite(self._fd, view, pos)
                    view, pos = view[written:], pos + written
                os.fdatasync(self._fd)
            except OSError as exc:
                raise SyncFailed(
                    f"raft meta store failed: {exc}", errno=exc.errno, path=self.path
                ) from exc
            self._seq = seq
            self.meta = dict(meta)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


__all__ = ["SLOTS", "SLOT_SIZE", "JournalMeta", "decode_slot", "encode_slot"]
