"""The snapshot file (pysyncobj ``fullDumpFile``) written by a custom, pickle-free serializer.

pysyncobj's default dump forks the process (the child inherits the listening sockets, note §4d)
and pickles the whole object without fsync. We install our own ``serializer`` /
``deserializer`` / ``serializeChecker`` instead (config.py:L147-160):

* ``serializer(tmp, raft_data)`` runs synchronously on the tick thread, right after the last
  applied entry, so ``machine.snapshot()`` is consistent with ``raft_data``. It writes ``tmp``
  and fsyncs it; pysyncobj then renames ``tmp`` over the snapshot file (serializer.py:L84-90).
* ``serializeChecker()`` is polled at the start of the next compaction step: it fsyncs the
  directory (making the rename durable) **before** reporting SUCCESS, and only SUCCESS lets
  pysyncobj drop the compacted journal prefix (syncobj.py:L1423-1428).
* On a full disk the write fails, the partial ``tmp`` is removed, and pysyncobj keeps the whole
  journal (a FAILED compaction): nothing is lost, the next compaction tries again. A snapshot
  sent by the leader that cannot be written is dropped by pysyncobj unacknowledged and resent.
* ``deserializer(path)`` fsyncs the file first (a snapshot received from the leader is renamed
  into place by pysyncobj without fsync, serializer.py:L171-203), then restores the machine.

File format (all integers big-endian)::

    magic    16 bytes  b"MYDFS-RAFT-SNAP\\x01"
    hlen     u32       length of the header
    header   hlen      orjson object: {"format": 1, "last": E, "prev": E, "cluster": [addr...],
                                       "state_len": n}
                       E = [idx, term, "b64", base64(command bytes)]
    state    n bytes   machine.snapshot() (opaque to raft_ext)
    crc      u32       zlib.crc32 of everything before it

``raft_data`` (pysyncobj's opaque tuple: last applied entry, the entry before it, the cluster's
node set) is stored structurally and rebuilt unchanged; nothing in the file is unpickled. The two
log entries' command bytes are pysyncobj's own encoding of already-applied commands (the same
bytes the journal holds); they are carried verbatim and never executed.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from pysyncobj import SERIALIZER_STATE
from pysyncobj.node import TCPNode

from mydfs.common.diskspace import is_disk_full
from mydfs.common.errors import Corrupt, InvariantViolation
from mydfs.common.fsio import fsync_dir, fsync_file, write_file_synced

from .machine import StateMachine

log = logging.getLogger(__name__)

MAGIC = b"MYDFS-RAFT-SNAP\x01"
FORMAT_VERSION = 1
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
#: A sanity bound for the JSON header (two log entries of at most ~64 KiB each + addresses).
_MAX_HEADER = 1 << 20


def _encode_entry(entry: Any) -> list[Any]:
    if not isinstance(entry, tuple) or len(entry) != 3:
        raise InvariantViolation("unexpected pysyncobj log entry shape", entry=repr(entry)[:80])
    command, idx, term = entry
    if isinstance(command, bytes):
        return [int(idx), int(term), "b64", base64.b64encode(command).decode("ascii")]
    if isinstance(command, str):
        return [int(idx), int(term), "str", command]
    raise InvariantViolation("unexpected pysyncobj command type", type=type(command).__name__)


def _decode_entry(value: Any) -> tuple[Any, int, int]:
    if not (isinstance(value, list) and len(value) == 4):
        raise Corrupt("bad log entry in snapshot header")
    idx, term, kind, data = value
    if not (isinstance(idx, int) and isinstance(term, int) and isinstance(data, str)):
        raise Corrupt("bad log entry in snapshot header")
    if kind == "b64":
        return (base64.b64decode(data, validate=True), idx, term)
    if kind == "str":
        return (data, idx, term)
    raise Corrupt("bad log entry kind in snapshot header", kind=str(kind))


def encode_snapshot(raft_data: Any, state: bytes) -> bytes:
    """Encode pysyncobj's ``raft_data`` tuple and the machine's state into the file format."""
    if not isinstance(raft_data, tuple) or len(raft_data) != 3:
        raise InvariantViolation("unexpected pysyncobj raft_data shape")
    if not isinstance(state, bytes | bytearray | memoryview):
        raise InvariantViolation("StateMachine.snapshot() must return bytes")
    last, prev, cluster = raft_data
    addresses = []
    for node in cluster:
        if not isinstance(node, TCPNode):
            raise InvariantViolation("only TCPNode cluster members are supported")
        addresses.append(node.address)
    state = bytes(state)
    header = orjson.dumps(
        {
            "format": FORMAT_VERSION,
            "last": _encode_entry(last),
            "prev": _encode_entry(prev),
            "cluster": sorted(addresses),
            "state_len": len(state),
        }
    )
    body = MAGIC + _U32.pack(len(header)) + header + _U64.pack(len(state)) + state
    return body + _U32.pack(zlib.crc32(body))


def decode_snapshot(blob: bytes) -> tuple[tuple[Any, Any, set[Any]], bytes]:
    """Verify and decode a snapshot file; returns ``(raft_data, state)``. Raises Corrupt."""
    minimum = len(MAGIC) + _U32.size + _U64.size + _U32.size
    if len(blob) < minimum or not blob.startswith(MAGIC):
        raise Corrupt("not a raft_ext snapshot (bad magic or too short)", size=len(blob))
    body, crc = blob[:-4], _U32.unpack(blob[-4:])[0]
    if zlib.crc32(body) != crc:
        raise Corrupt("snapshot checksum mismatch")
    pos = len(MAGIC)
    hlen = _U32.unpack_from(body, pos)[0]
    pos += _U32.size
    if hlen > _MAX_HEADER or pos + hlen + _U64.size > len(body):
        raise Corrupt("snapshot header length out of range", header_len=hlen)
    try:
        header = orjson.loads(body[pos : pos + hlen])
    except orjson.JSONDecodeError as exc:
        raise Corrupt(f"snapshot header is not JSON: {exc}") from exc
    pos += hlen
    if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
        raise Corrupt("unsupported snapshot format", format=str(header.get("format", "?")))
    state_len = _U64.unpack_from(body, pos)[0]
    pos += _U64.size
    if state_len != header.get("state_len") or pos + state_len != len(body):
        raise Corrupt("snapshot state length mismatch")
    cluster = header.get("cluster")
    if not isinstance(cluster, list) or not all(isinstance(a, str) for a in cluster):
        raise Corrupt("bad cluster list in snapshot header")
    raft_data = (
        _decode_entry(header.get("last")),
        _decode_entry(header.get("prev")),
        {TCPNode(address) for address in cluster},
    )
    return raft_data, bytes(body[pos:])


def read_snapshot_file(path: str | os.PathLike[str]) -> tuple[tuple[Any, Any, set[Any]], bytes]:
    with open(path, "rb") as f:
        return decode_snapshot(f.read())


class SnapshotStore:
    """The serializer / deserializer / checker triple handed to pysyncobj for one node.

    All three run on the tick thread. ``on_fatal`` is told when a snapshot cannot be loaded
    (pysyncobj itself only logs that and carries on with a wrong state, syncobj.py:L1472-1511).
    """

    _IDLE, _WRITTEN, _FAILED = 0, 1, 2

    def __init__(
        self,
        path: Path,
        machine: StateMachine,
        on_fatal: Callable[[BaseException], None],
    ) -> None:
        self.path = path
        self._machine = machine
        self._on_fatal = on_fatal
        self._lock = threading.Lock()
        self._state = self._IDLE
        self._pending_tmp: str | None = None
        self._pending_inode: int | None = None
        self.saved = 0
        self.loaded = 0
        self.failed = 0
        self.last_saved_index: int | None = None
        self.last_size = 0

    def serialize(self, tmp_file: str, raft_data: Any) -> None:
        """pysyncobj ``serializer``: write + fsync ``tmp_file`` (pysyncobj renames it)."""
        try:
            blob = encode_snapshot(raft_data, self._machine.snapshot())
            # Round-trip guard: what we return on load must equal what pysyncobj gave us.
            if decode_snapshot(blob)[0] != raft_data:
                raise InvariantViolation("snapshot raft_data does not round-trip")
            write_file_synced(tmp_file, blob)
            inode = os.stat(tmp_file).st_ino
        except Exception as exc:
            with self._lock:
                self._state = self._FAILED
                self.failed += 1
            # A partial file must neither be renamed nor keep holding space (a full disk).
            with contextlib.suppress(OSError):
                os.unlink(tmp_file)
            if is_disk_full(exc):
                log.warning("raft snapshot: no space left on device; the journal is kept whole")
            else:
                log.exception("raft snapshot: serialization failed; the journal is kept")
            raise  # pysyncobj must not rename a partial file (serializer.py:L90-96)
        with self._lock:
            self._state = self._WRITTEN
            self._pending_tmp = tmp_file
            self._pending_inode = inode
            self.last_saved_index = int(raft_data[0][1])
            self.last_size = len(blob)

    def check(self) -> int:
        """pysyncobj ``serializeChecker``: SUCCESS only once the rename is durable."""
        with self._lock:
            state, tmp, inode = self._state, self._pending_tmp, self._pending_inode
            self._state, self._pending_tmp, self._pending_inode = self._IDLE, None, None
        if state == self._FAILED:
            return int(SERIALIZER_STATE.FAILED)
        if state != self._WRITTEN or tmp is None:
            return int(SERIALIZER_STATE.NOT_SERIALIZING)
        try:
            in_place = not os.path.exists(tmp) and os.stat(self.path).st_ino == inode
        except OSError:
            in_place = False
        if not in_place:
            # Either the rename failed, or a snapshot received from the leader replaced ours
            # in between: compacting the journal up to *our* index would then be wrong.
            self.failed += 1
            log.error("raft snapshot: %s is not the file just written; journal kept", self.path)
            return int(SERIALIZER_STATE.FAILED)
        try:
            fsync_dir(self.path.parent)
        except OSError:
            self.failed += 1
            log.exception("raft snapshot: directory fsync failed; the journal is kept")
            return int(SERIALIZER_STATE.FAILED)
        self.saved += 1
        return int(SERIALIZER_STATE.SUCCESS)

    def deserialize(self, file_name: str) -> tuple[Any, Any, set[Any]]:
        """pysyncobj ``deserializer``: make the file durable, restore the machine."""
        try:
            os.chmod(file_name, 0o600)  # a received snapshot is created with the umask
            fsync_file(file_name)
            fsync_dir(Path(file_name).parent)
            raft_data, state = read_snapshot_file(file_name)
            self._machine.restore(state)
        except Exception as exc:
            log.critical("raft snapshot: cannot load %s: %s", file_name, exc)
            self._on_fatal(exc)
            raise
        self.loaded += 1
        return raft_data
