"""Checkpoints of the namespace (HDFS's fsimage): the whole state as of one edit seq.

A checkpoint file ``checkpoint-<seq, 20 digits>.ckpt`` holds a header naming the last edit it
covers, then one frame per file, trash record, intent and edit decision (oldest first), then an
END frame with the counts
(format: :mod:`mydfs.tracker.framing`, ``docs/tracker.md``). It is written to a ``.tmp`` name,
fsync'ed, renamed into place and the folder fsync'ed, so a checkpoint either exists whole or not
at all: on a full disk the partial ``.tmp`` is removed, :class:`DiskFull` is raised, and the
previous checkpoint and the log are untouched. Writing runs in a worker thread from a
:class:`~mydfs.tracker.namespace.Snapshot`, so requests keep being served meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import BinaryIO

from mydfs.common.diskspace import is_disk_full
from mydfs.common.errors import Corrupt, DiskFull, InvariantViolation
from mydfs.common.fsio import fsync_dir
from mydfs.tracker.framing import (
    CHECKPOINT_HEADER_SIZE,
    Frame,
    Stop,
    decode_checkpoint_header,
    encode_checkpoint_header,
    encode_frame,
    scan_frames,
)
from mydfs.tracker.namespace import Namespace, Snapshot
from mydfs.tracker.records import (
    COUNTS,
    COUNTS4,
    Decision,
    EditType,
    TrashRecord,
    decode_intent,
    decode_path_entry,
    encode_intent,
    encode_path_entry,
)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d{20})\.ckpt$")
_BUFFER = 1 << 20


def checkpoint_name(seq: int) -> str:
    return f"checkpoint-{seq:020d}.ckpt"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(seq, path)`` of every checkpoint, newest first."""
    out = []
    for path in directory.iterdir():
        m = CHECKPOINT_RE.match(path.name)
        if m:
            out.append((int(m.group(1)), path))
    return sorted(out, reverse=True)


def encode_checkpoint(seq: int, snapshot: Snapshot, created: float, out: BinaryIO) -> int:
    """Write the checkpoint bytes to ``out``; returns the number of bytes."""
    total = out.write(encode_checkpoint_header(seq, created)) or 0
    n = 0
    files = 0
    for path, packed in snapshot.iter_files():
        n += 1
        files += 1
        total += out.write(encode_frame(n, EditType.CK_FILE, encode_path_entry(path, packed))) or 0
    for record in snapshot.trash:
        n += 1
        total += out.write(encode_frame(n, EditType.CK_TRASH3, record.pack3())) or 0
    for intent in snapshot.intents:
        n += 1
        total += out.write(encode_frame(n, EditType.CK_INTENT, encode_intent(intent))) or 0
    for decision in snapshot.decisions:
        n += 1
        total += out.write(encode_frame(n, EditType.CK_DECISION, decision.pack())) or 0
    if files != snapshot.files:
        raise InvariantViolation(
            "snapshot file count drifted", files=files, expected=snapshot.files
        )
    counts = COUNTS4.pack(
        files, len(snapshot.trash), len(snapshot.intents), len(snapshot.decisions)
    )
    total += out.write(encode_frame(n + 1, EditType.CK_END, counts)) or 0
    return total


def _private_opener(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def write_checkpoint(directory: Path, seq: int, snapshot: Snapshot, created: float) -> Path:
    """Durably create the checkpoint for ``seq`` (synchronous: run it in a worker thread)."""
    path = directory / checkpoint_name(seq)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb", buffering=_BUFFER, opener=_private_opener) as f:
            encode_checkpoint(seq, snapshot, created, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if is_disk_full(exc):
            raise DiskFull(
                "no space left on device for a checkpoint", checkpoint=str(path)
            ) from exc
        raise
    fsync_dir(directory)
    return path


def decode_checkpoint(data: bytes) -> tuple[int, float, Namespace]:
    """``(seq covered, created, namespace)``; anything malformed raises :class:`Corrupt`."""
    seq, created = decode_checkpoint_header(data)
    ns = Namespace()
    counts = [0, 0, 0]  # trash, intents, decisions
    end: list[bytes] = []

    def load(frame: Frame) -> None:
        if end:
            raise Corrupt("checkpoint has records after its END record")
        if frame.kind == EditType.CK_FILE:
            path, packed = decode_path_entry(frame.payload)
            ns.load_file(path, packed)
        elif frame.kind == EditType.CK_TRASH:
            ns.load_trash(TrashRecord.unpack(frame.payload))
            counts[0] += 1
        elif frame.kind == EditType.CK_TRASH3:  # format 3: the whole entry and the state
            ns.load_trash(TrashRecord.unpack3(frame.payload))
            counts[0] += 1
        elif frame.kind == EditType.CK_INTENT:
            ns.load_intent(decode_intent(frame.payload))
            counts[1] += 1
        elif frame.kind == EditType.CK_DECISION:
            ns.load_decision(Decision.unpack(frame.payload))
            counts[2] += 1
        elif frame.kind == EditType.CK_END:
            end.append(frame.payload)
        else:
            raise Corrupt(f"unexpected record type {frame.kind} in a checkpoint")

    try:
        scan = scan_frames(data, CHECKPOINT_HEADER_SIZE, 1, load)
    except InvariantViolation as exc:
        raise Corrupt(f"checkpoint content is inconsistent: {exc}") from None
    if scan.stop is not Stop.END:
        raise Corrupt(f"checkpoint damaged at byte {scan.end} ({scan.stop.value})")
    if not end:
        raise Corrupt("checkpoint has no END record (incomplete)")
    # Format version 1 counted files, trash and intents; version 2 adds decisions.
    if len(end[0]) == COUNTS.size:
        said: tuple[int, ...] = (*COUNTS.unpack(end[0]), 0)
    elif len(end[0]) == COUNTS4.size:
        said = COUNTS4.unpack(end[0])
    else:
        raise Corrupt("checkpoint END record has the wrong size")
    found = (ns.files, counts[0], counts[1], counts[2])
    if said != found:
        raise Corrupt(f"checkpoint END counts {said} do not match the records {found}")
    return seq, created, ns


def read_checkpoint(path: Path) -> tuple[int, Namespace]:
    data = path.read_bytes()
    try:
        seq, _, ns = decode_checkpoint(data)
    except Corrupt as exc:
        raise Corrupt(f"checkpoint {path.name}: {exc.message}", checkpoint=str(path)) from None
    m = CHECKPOINT_RE.match(path.name)
    if m and int(m.group(1)) != seq:
        raise Corrupt(f"checkpoint {path.name} says it covers seq {seq}", checkpoint=str(path))
    return seq, ns
