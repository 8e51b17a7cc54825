"""Golden bytes of the tracker's formats: the examples of ``docs/tracker.md``, byte for byte.

If one of these fails, the on-disk format changed: bump ``FORMAT_VERSION`` and update the doc.
"""

from __future__ import annotations

import dataclasses
import io

import pytest

from mydfs.common.checksum import crc32c
from mydfs.common.errors import Corrupt
from mydfs.common.file_record import FileRecord
from mydfs.common.location import Location
from mydfs.tracker.checkpoint import decode_checkpoint, encode_checkpoint
from mydfs.tracker.framing import (
    CHECKPOINT_HEADER_SIZE,
    FRAME_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    decode_checkpoint_header,
    decode_segment_header,
    encode_checkpoint_header,
    encode_frame,
    encode_segment_header,
)
from mydfs.tracker.namespace import Namespace
from mydfs.tracker.records import (
    ENTRY,
    AddIntent,
    Decide,
    Decision,
    DeleteFile,
    DropIntent,
    DropTrash,
    EditType,
    FileEntry,
    Intent,
    MarkTrash,
    Outcome,
    PurgeTrash,
    PutFile,
    TrashReason,
    TrashRecord,
    TrashState,
    Undelete,
    decode_edit,
    encode_edit,
)

FID = bytes(range(16)).hex()
ENTRY_EXAMPLE = FileEntry(
    FID, 70000, 1, Location(2, 9), "crc32c:deadbeef", 1700000000.5, 1700000001.25, 3
)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("\n", ""))


ENTRY_BYTES = h(
    "000102030405060708090a0b0c0d0e0f"  # file id
    "7011010000000000"  # size 70000
    "01000000"  # slices 1
    "02000000"  # head group 2
    "0900000000000000"  # head slot 9
    "00002040fc54d941"  # ctime 1700000000.5
    "00005040fc54d941"  # mtime 1700000001.25
    "03000000"  # version 3
    "6372633332633a6465616462656566"  # "crc32c:deadbeef"
)


def test_sizes() -> None:
    assert ENTRY.size == 60
    assert FRAME_HEADER_SIZE == 17
    assert SEGMENT_HEADER_SIZE == 20
    assert CHECKPOINT_HEADER_SIZE == 28


def test_file_entry_golden() -> None:
    assert ENTRY_EXAMPLE.pack() == ENTRY_BYTES
    assert FileEntry.unpack(ENTRY_BYTES) == ENTRY_EXAMPLE
    empty = FileEntry("ff" * 16, 0, 0, None, "", 1.0, 1.0, 1)
    assert empty.pack() == h(
        "ffffffffffffffffffffffffffffffff 0000000000000000 00000000"
        " ffffffff ffffffffffffffff 000000000000f03f 000000000000f03f 01000000"
    )
    assert FileEntry.unpack(empty.pack()).head is None


def test_half_empty_location_is_corrupt() -> None:
    bad = bytearray(ENTRY_BYTES)
    bad[28:32] = b"\xff\xff\xff\xff"  # head group none, head slot 9
    with pytest.raises(Corrupt, match="half-empty"):
        FileEntry.unpack(bytes(bad))


def test_put_frame_golden() -> None:
    kind, payload = encode_edit(PutFile("/a/b.bin", ENTRY_EXAMPLE))
    assert kind == EditType.PUT_FILE == 1
    assert payload == h("0800") + b"/a/b.bin" + ENTRY_BYTES
    frame = encode_frame(5, kind, payload)
    assert frame[:FRAME_HEADER_SIZE] == h("46f0d438 55000000 0500000000000000 01")
    assert frame[FRAME_HEADER_SIZE:] == payload
    assert int.from_bytes(frame[:4], "little") == crc32c(frame[4:])


def test_other_edit_payloads_golden() -> None:
    cases = [
        (
            DeleteFile("/a/b.bin", 1700000002.0),
            EditType.DELETE_FILE,
            h("00008040fc54d941") + b"/a/b.bin",
        ),
        (
            AddIntent(Intent(FID, "/up", 1700000003.0)),
            EditType.ADD_INTENT,
            bytes(range(16)) + h("0000c040fc54d941") + b"/up",
        ),
        (DropIntent(FID), EditType.DROP_INTENT, bytes(range(16))),
        (DropTrash(FID), EditType.DROP_TRASH, bytes(range(16))),
    ]
    for edit, kind, payload in cases:
        assert encode_edit(edit) == (kind, payload)
        assert decode_edit(kind, payload) == edit
    frame = encode_frame(6, EditType.DELETE_FILE, cases[0][2])
    assert frame == h("4ad0c5f0 10000000 0600000000000000 02 00008040fc54d941") + b"/a/b.bin"


def test_trash_record_golden() -> None:
    record = TrashRecord(
        FID, "/a/b.bin", 70000, 1, Location(2, 9), 1700000002.0, TrashReason.DELETED
    )
    packed = record.pack()
    assert packed == (
        bytes(range(16))
        + h("7011010000000000 01000000 02000000 0900000000000000 00008040fc54d941 01")
        + b"/a/b.bin"
    )
    assert TrashRecord.unpack(packed) == record


def test_headers_golden() -> None:
    seg = encode_segment_header(1)
    assert seg == h("4d44454c 0300 0000 0100000000000000 c41f5bb1")
    assert decode_segment_header(seg) == 1
    ck = encode_checkpoint_header(42, 1700000000.0)
    assert ck == h("4d44434b 0300 0000 2a00000000000000 00000040fc54d941 5928041e")
    assert decode_checkpoint_header(ck) == (42, 1700000000.0)
    # Version 2 files (before the trash states) still read.
    assert decode_segment_header(h("4d44454c 0200 0000 0100000000000000 f4cb2a80")) == 1
    v2_ck = h("4d44434b 0200 0000 2a00000000000000 00000040fc54d941 e4df4729")
    assert decode_checkpoint_header(v2_ck) == (42, 1700000000.0)
    # Version 1 files (before edits) still read.
    assert decode_segment_header(h("4d44454c 0100 0000 0100000000000000 a4b7b8d3")) == 1
    old_ck = h("4d44434b 0100 0000 2a00000000000000 00000040fc54d941 23c78370")
    assert decode_checkpoint_header(old_ck) == (42, 1700000000.0)
    for damaged in (seg[:-1], b"XDEL" + seg[4:], seg[:8] + b"\x02" + seg[9:]):
        with pytest.raises(Corrupt):
            decode_segment_header(damaged)
    newer = bytearray(encode_segment_header(1))
    newer[4] = 4
    newer[16:20] = crc32c(bytes(newer[:16])).to_bytes(4, "little")
    with pytest.raises(Corrupt, match="version 4"):
        decode_segment_header(bytes(newer))


def test_checkpoint_file_golden() -> None:
    ns = Namespace()
    ns.load_file("/a/b.bin", ENTRY_EXAMPLE.pack())
    ns.load_trash(
        TrashRecord("ff" * 16, "/old", 5, 1, Location(1, 1), 1700000000.0, TrashReason.REPLACED)
    )
    ns.load_intent(Intent("ee" * 16, "/up", 1700000003.0))
    out = io.BytesIO()
    size = encode_checkpoint(42, ns.snapshot(), 1700000000.0, out)
    data = out.getvalue()
    # the trash record as CK_TRASH3 (format 3): 12 + 4 (path) + 60 (entry, version 0: no entry)
    assert size == len(data) == 28 + (17 + 10 + 75) + (17 + 76) + (17 + 27) + (17 + 32)
    assert data[:28] == encode_checkpoint_header(42, 1700000000.0)
    # frames: records numbered from 1, END last with (files, trash, intents, decisions) counts
    assert data[28 + 8 : 28 + 17] == h("0100000000000000 10")
    end = h("0100000000000000 0100000000000000 0100000000000000 0000000000000000")
    assert data[-49:] == encode_frame(4, EditType.CK_END, end)
    seq, created, back = decode_checkpoint(data)
    assert (seq, created) == (42, 1700000000.0)
    assert back.state() == ns.state()


def test_version_1_checkpoint_still_loads() -> None:
    """A checkpoint of format version 1: old header, END with three counts."""
    ns = Namespace()
    ns.load_file("/a/b.bin", ENTRY_EXAMPLE.pack())
    frames = encode_frame(1, EditType.CK_FILE, h("0800") + b"/a/b.bin" + ENTRY_BYTES)
    end = h("0100000000000000 0000000000000000 0000000000000000")
    old = (
        h("4d44434b 0100 0000 2a00000000000000 00000040fc54d941 23c78370")
        + frames
        + encode_frame(2, EditType.CK_END, end)
    )
    seq, _, back = decode_checkpoint(old)
    assert seq == 42 and back.state() == ns.state()


# --- format version 2: edits in place -------------------------------------------------------

EDITED = dataclasses.replace(ENTRY_EXAMPLE, version=5, versions=((2, 4), (7, 5)), layout=4)
EXTENSION = h(
    "00"  # marker (after the hash: a hash is printable ASCII)
    "04000000"  # layout 4
    "02000000"  # 2 pairs
    "02000000 04000000"  # group 2 at version 4
    "07000000 05000000"  # group 7 at version 5
)


def test_edited_entry_golden() -> None:
    packed = EDITED.pack()
    assert packed == ENTRY_BYTES[:56] + h("05000000") + ENTRY_BYTES[60:] + EXTENSION
    back = FileEntry.unpack(packed)
    assert back == EDITED and back.hash == "crc32c:deadbeef"
    assert back.version_of(7) == 5 and back.version_of(3) == 0
    no_hash = dataclasses.replace(EDITED, hash="")
    assert FileEntry.unpack(no_hash.pack()) == no_hash
    record = EDITED.record("/a/b.bin").to_dict()
    assert record["versions"] == [[2, 4], [7, 5]] and record["layout"] == 4
    assert "versions" not in ENTRY_EXAMPLE.record("/a").to_dict()  # never edited: as before
    assert FileRecord.from_dict(record) == EDITED.record("/a/b.bin")
    old_wire = {k: v for k, v in record.items() if k not in ("versions", "layout")}
    assert (
        FileRecord.from_dict(old_wire).versions == () and FileRecord.from_dict(old_wire).layout == 0
    )
    assert EDITED.record("/a").version_of(2) == 4
    for bad in (packed[:-1], packed[:-8] + h("01000000 01000000"), packed + b"\x00"):
        with pytest.raises(Corrupt):
            FileEntry.unpack(bad)
    unsorted = ENTRY_BYTES + h("00 00000000 02000000 07000000 01000000 02000000 01000000")
    with pytest.raises(Corrupt, match="ascending"):
        FileEntry.unpack(unsorted)


DECISION_EXAMPLE = Decision(
    "ab" * 16,
    FID,
    "/a/b.bin",
    Outcome.COMMIT,
    5,
    ((2, 4), (7, 0)),
    70000,
    1700000004.0,
    EDITED,
)
DECISION_BYTES = (
    h("abababababababababababababababab")  # txn
    + bytes(range(16))  # file id
    + h("01 05000000 00000041fc54d941")  # commit, version 5, at 1700000004.0
    + h("7011010000000000 02000000")  # offset 70000, 2 prevs
    + h("02000000 04000000 07000000 00000000")  # prevs: group 2 from 4, group 7 from 0
    + h("0800")
    + b"/a/b.bin"
    + EDITED.pack()
)


def test_decision_golden() -> None:
    kind, payload = encode_edit(Decide(DECISION_EXAMPLE))
    assert kind == EditType.DECIDE == 6
    assert payload == DECISION_BYTES
    assert decode_edit(kind, payload) == Decide(DECISION_EXAMPLE)
    abort = Decision("cd" * 16, FID, "", Outcome.ABORT, 0, (), None, 1700000004.0)
    packed = abort.pack()
    assert packed == (
        h("cd" * 16)
        + bytes(range(16))
        + h("02 00000000 00000041fc54d941 ffffffffffffffff 00000000 0000")
    )
    assert Decision.unpack(packed) == abort
    with pytest.raises(Corrupt, match="carries the new entry"):
        Decision.unpack(packed + EDITED.pack())
    with pytest.raises(Corrupt):
        Decision.unpack(DECISION_BYTES[:60])


def test_edited_trash_record_golden() -> None:
    record = TrashRecord(
        FID, "/a/b.bin", 70000, 1, Location(2, 9), 1700000002.0, TrashReason.DELETED, ((2, 4),)
    )
    plain = dataclasses.replace(record, versions=())
    assert record.pack() == plain.pack() + h("00 01000000 02000000 04000000")
    assert TrashRecord.unpack(record.pack()) == record and record.edited
    assert TrashRecord.unpack(plain.pack()) == plain and not plain.edited


def test_checkpoint_with_decisions_round_trips() -> None:
    ns = Namespace()
    ns.load_file("/a/b.bin", EDITED.pack())
    ns.load_decision(DECISION_EXAMPLE)
    ns.load_decision(Decision("cd" * 16, FID, "", Outcome.ABORT, 0, (), None, 1700000005.0))
    out = io.BytesIO()
    encode_checkpoint(43, ns.snapshot(), 1700000006.0, out)
    data = out.getvalue()
    end = h("0100000000000000 0000000000000000 0000000000000000 0200000000000000")
    assert data.endswith(encode_frame(4, EditType.CK_END, end))
    _, _, back = decode_checkpoint(data)
    assert back.state() == ns.state()
    assert back.decisions.get("ab" * 16) == DECISION_EXAMPLE


# --- format version 3: trash states, undelete -------------------------------------------------


def test_trash_record_v3_golden() -> None:
    """``CK_TRASH3``: u8 state | f64 time | u8 reason | u16 path length | path | packed entry."""
    record = TrashRecord.of("/a/b.bin", ENTRY_EXAMPLE, 1700000002.0, TrashReason.DELETED)
    packed = record.pack3()
    assert packed == h("00 00008040fc54d941 01 0800") + b"/a/b.bin" + ENTRY_BYTES
    assert TrashRecord.unpack3(packed) == record and record.entry() == ENTRY_EXAMPLE
    marked = record.with_state(TrashState.RECLAIMING)
    assert marked.pack3()[:1] == h("02") and TrashRecord.unpack3(marked.pack3()) == marked
    edited = TrashRecord.of("/a/b.bin", EDITED, 1700000002.0, TrashReason.REPLACED)
    assert TrashRecord.unpack3(edited.pack3()).entry() == EDITED
    # A format 2 record (CK_TRASH) lacks the entry: loadable, not restorable.
    old = TrashRecord.unpack(record.pack())
    assert old.entry() is None and old.to_dict()["restorable"] is False
    for bad in (packed[:20], h("07") + packed[1:], packed[:9] + h("09") + packed[10:]):
        with pytest.raises(Corrupt):
            TrashRecord.unpack3(bad)


def test_trash_edits_golden() -> None:
    fid = bytes(range(16))
    assert encode_edit(MarkTrash(FID)) == (EditType.MARK_TRASH, fid)
    assert encode_edit(PurgeTrash(FID)) == (EditType.PURGE_TRASH, fid)
    assert encode_edit(Undelete(FID, "/x")) == (EditType.UNDELETE, fid + b"/x")
    assert (EditType.MARK_TRASH, EditType.PURGE_TRASH, EditType.UNDELETE) == (7, 8, 9)
    assert EditType.CK_TRASH3 == 21
    for edit in (MarkTrash(FID), PurgeTrash(FID), Undelete(FID, "/x")):
        assert decode_edit(*encode_edit(edit)) == edit
    with pytest.raises(Corrupt):
        decode_edit(EditType.UNDELETE, fid)
    with pytest.raises(Corrupt):
        decode_edit(EditType.MARK_TRASH, fid + b"x")


def test_checkpoint_keeps_trash_state_and_entry() -> None:
    ns = Namespace()
    ns.apply(PutFile("/a/b.bin", ENTRY_EXAMPLE))
    ns.apply(DeleteFile("/a/b.bin", 1700000009.0))
    ns.apply(MarkTrash(FID))
    out = io.BytesIO()
    encode_checkpoint(44, ns.snapshot(), 1700000010.0, out)
    _, _, back = decode_checkpoint(out.getvalue())
    assert back.state() == ns.state()
    [record] = back.trash()
    assert record.state is TrashState.RECLAIMING and record.entry() == ENTRY_EXAMPLE
