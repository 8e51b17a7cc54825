"""The edit log: framing on disk, torn tails cut at every byte, bit flips caught, group commit,
rolling, and replay equal to the live state."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest

from mydfs.common.errors import AlreadyExists, Corrupt, StorageIOError
from mydfs.tracker.editlog import EditLog, list_segments, recover_log, segment_name
from mydfs.tracker.framing import (
    FRAME_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    Damage,
    Frame,
    Stop,
    classify_damage,
    encode_frame,
    encode_segment_header,
    scan_frames,
)
from mydfs.tracker.namespace import Namespace, Registration
from mydfs.tracker.records import decode_edit, encode_edit


def payloads(n: int, seed: int = 1) -> list[bytes]:
    rnd = random.Random(seed)
    return [rnd.randbytes(rnd.randint(0, 40)) for _ in range(n)]


def write_segment(directory: Path, first: int, items: list[bytes]) -> tuple[Path, list[int]]:
    """A segment file with one frame per payload; returns it and each frame's end offset."""
    path = directory / segment_name(first)
    data = bytearray(encode_segment_header(first))
    ends = []
    for i, payload in enumerate(items):
        data += encode_frame(first + i, 1, payload)
        ends.append(len(data))
    path.write_bytes(bytes(data))
    return path, ends


def replay(directory: Path, after: int = 0) -> tuple[list[Frame], int, int]:
    frames: list[Frame] = []
    rec = recover_log(directory, after, frames.append)
    return frames, rec.next_seq, rec.cut_bytes


def test_clean_log_replays_everything(tmp_path: Path) -> None:
    items = payloads(5)
    write_segment(tmp_path, 1, items)
    frames, next_seq, cut = replay(tmp_path)
    assert [f.payload for f in frames] == items
    assert [f.seq for f in frames] == [1, 2, 3, 4, 5]
    assert (next_seq, cut) == (6, 0)
    frames, next_seq, _ = replay(tmp_path, after=3)
    assert [f.seq for f in frames] == [4, 5] and next_seq == 6


def test_torn_tail_is_cut_at_every_byte(tmp_path: Path) -> None:
    items = payloads(6, seed=2)
    path, ends = write_segment(tmp_path, 1, items)
    full = path.read_bytes()
    for cut in range(SEGMENT_HEADER_SIZE, len(full)):
        path.write_bytes(full[:cut])
        frames, next_seq, cut_bytes = replay(tmp_path)
        complete = sum(1 for e in ends if e <= cut)
        assert [f.payload for f in frames] == items[:complete], cut
        assert next_seq == complete + 1
        boundary = ends[complete - 1] if complete else SEGMENT_HEADER_SIZE
        assert path.stat().st_size == boundary  # the torn part was cut off the file
        assert cut_bytes == cut - boundary


@pytest.mark.parametrize("tail", [b"\x00" * 100, b"\xab" * 5, os.urandom(300)])
def test_garbage_or_zeros_after_the_last_record_are_a_torn_tail(
    tmp_path: Path, tail: bytes
) -> None:
    items = payloads(4)
    path, ends = write_segment(tmp_path, 1, items)
    path.write_bytes(path.read_bytes() + tail)
    frames, next_seq, cut = replay(tmp_path)
    assert len(frames) == 4 and next_seq == 5 and cut == len(tail)
    assert path.stat().st_size == ends[-1]


def test_a_bit_flip_inside_acknowledged_records_is_detected_not_cut(tmp_path: Path) -> None:
    items = payloads(5, seed=3)
    path, ends = write_segment(tmp_path, 1, items)
    good = path.read_bytes()
    starts = [SEGMENT_HEADER_SIZE, *ends[:-1]]
    # every bit of every byte of records 1..4 (they have intact records after them)
    for pos in range(SEGMENT_HEADER_SIZE, ends[-2]):
        for bit in range(8):
            bad = bytearray(good)
            bad[pos] ^= 1 << bit
            path.write_bytes(bytes(bad))
            with pytest.raises(Corrupt) as info:
                replay(tmp_path)
            damaged = max(i for i, s in enumerate(starts) if s <= pos)
            assert info.value.context["seq"] == damaged + 1, (pos, bit)
            assert path.read_bytes() == bytes(bad)  # nothing was cut
    # a flip in the last record looks exactly like a torn write: it is cut
    bad = bytearray(good)
    bad[ends[-2] + FRAME_HEADER_SIZE] ^= 0x10
    path.write_bytes(bytes(bad))
    frames, _, cut = replay(tmp_path)
    assert len(frames) == 4 and cut == ends[-1] - ends[-2]


def test_damage_in_an_older_segment_is_corrupt(tmp_path: Path) -> None:
    old, _ends = write_segment(tmp_path, 1, payloads(3))
    write_segment(tmp_path, 4, payloads(2))
    old.write_bytes(old.read_bytes()[:-3])  # torn, but not the last segment
    with pytest.raises(Corrupt, match="damaged"):
        replay(tmp_path)


def test_gaps_and_mismatched_headers_are_corrupt(tmp_path: Path) -> None:
    write_segment(tmp_path, 1, payloads(3))
    write_segment(tmp_path, 5, payloads(2))  # seq 4 is missing
    with pytest.raises(Corrupt, match="gap"):
        replay(tmp_path)
    (tmp_path / segment_name(5)).unlink()
    (tmp_path / segment_name(9)).write_bytes(encode_segment_header(4))
    with pytest.raises(Corrupt, match="name says 9"):
        replay(tmp_path)
    (tmp_path / segment_name(9)).unlink()
    # the checkpoint covers up to 10 but the log starts at 20: edits 11..19 are lost
    for _, p in list_segments(tmp_path):
        p.unlink()
    write_segment(tmp_path, 20, payloads(1))
    with pytest.raises(Corrupt, match="gap"):
        replay(tmp_path, after=10)


def test_segments_covered_by_the_checkpoint_are_skipped(tmp_path: Path) -> None:
    write_segment(tmp_path, 1, payloads(3))
    write_segment(tmp_path, 4, payloads(3))
    frames, next_seq, _ = replay(tmp_path, after=4)
    assert [f.seq for f in frames] == [5, 6] and next_seq == 7
    # a log that ends before the checkpoint: appending continues after the checkpoint
    rec = recover_log(tmp_path, 10, lambda f: None)
    assert rec.next_seq == 11 and rec.last_segment is None


def test_classify_damage_directly() -> None:
    data = encode_segment_header(1) + encode_frame(1, 1, b"abc") + encode_frame(2, 1, b"def")
    scan = scan_frames(data, SEGMENT_HEADER_SIZE, 1)
    assert scan.stop is Stop.END and classify_damage(data, scan) is Damage.NONE
    wrong_seq = encode_segment_header(1) + encode_frame(1, 1, b"a") + encode_frame(7, 1, b"b")
    scan = scan_frames(wrong_seq, SEGMENT_HEADER_SIZE, 1)
    assert scan.stop is Stop.SEQ and classify_damage(wrong_seq, scan) is Damage.CORRUPT
    huge = encode_segment_header(1) + b"\x00\x00\x00\x00\xff\xff\xff\x7f" + b"\x01" * 9
    scan = scan_frames(huge, SEGMENT_HEADER_SIZE, 1)
    assert scan.stop is Stop.LENGTH and classify_damage(huge, scan) is Damage.TORN_TAIL


# --- the live writer -------------------------------------------------------------------------


async def open_log(directory: Path, **kw: object) -> tuple[EditLog, list[Frame]]:
    frames: list[Frame] = []
    rec = recover_log(directory, 0, frames.append)
    return await EditLog.start(directory, rec, **kw), frames  # type: ignore[arg-type]


async def test_group_commit_shares_syncs(tmp_path: Path) -> None:
    log, _ = await open_log(tmp_path)
    try:
        n = 300

        async def one(i: int) -> int:
            seq = log.append(1, b"x%d" % i)
            await log.wait_durable(seq)
            return seq

        seqs = await asyncio.gather(*(one(i) for i in range(n)))
        assert sorted(seqs) == list(range(1, n + 1))
        assert log.durable_seq == n
        assert log.syncs < n / 5, log.syncs  # many appends per fdatasync
    finally:
        await log.close()
    frames, next_seq, _ = replay(tmp_path)
    assert len(frames) == n and next_seq == n + 1


async def test_roll_and_drop_segments(tmp_path: Path) -> None:
    log, _ = await open_log(tmp_path)
    try:
        for i in range(3):
            await log.wait_durable(log.append(1, bytes([i])))
        first = await log.roll()
        assert first == 4
        assert await log.roll() == 4  # an empty segment is not rolled again
        for i in range(2):
            await log.wait_durable(log.append(1, bytes([i])))
        assert [s for s, _ in list_segments(tmp_path)] == [1, 4]
        assert await log.drop_segments_upto(2) == []  # segment 1 still holds seq 3
        dropped = await log.drop_segments_upto(3)
        assert [p.name for p in dropped] == [segment_name(1)]
        await log.roll()
        assert await log.drop_segments_upto(100) == [tmp_path / segment_name(4)]
    finally:
        await log.close()
    assert [s for s, _ in list_segments(tmp_path)] == [6]
    frames, next_seq, _ = replay(tmp_path, after=5)
    assert frames == [] and next_seq == 6


async def test_a_failed_write_is_fatal(tmp_path: Path) -> None:
    fatal: list[BaseException] = []
    log, _ = await open_log(tmp_path, on_fatal=fatal.append)
    try:
        await log.wait_durable(log.append(1, b"ok"))
        os.close(log._fd)  # the next write fails with EBADF
        log._fd = os.open(os.devnull, os.O_RDONLY)
        with pytest.raises(StorageIOError, match="must restart"):
            await log.wait_durable(log.append(1, b"lost"))
        assert log.failed and len(fatal) == 1
        with pytest.raises(StorageIOError):
            log.append(1, b"refused")
    finally:
        await log.close()


async def test_replay_equals_the_live_namespace(tmp_path: Path) -> None:
    rnd = random.Random(7)
    ns = Namespace()
    log, _ = await open_log(tmp_path)
    try:
        for i in range(400):
            path = f"/d{rnd.randint(0, 5)}/f{rnd.randint(0, 30)}"
            op = rnd.random()
            if op < 0.7:
                body = {
                    "file_id": f"{i:032x}",
                    "size": 5,
                    "slices": 1,
                    "head": [1, i],
                    "hash": "crc32c:1",
                }
                try:
                    edit = ns.plan_put(
                        path,
                        Registration.from_dict(body),
                        now=float(i),
                        overwrite=rnd.random() < 0.5,
                    )
                except AlreadyExists:
                    continue
            elif op < 0.85 and ns.get(path) is not None:
                edit = ns.plan_delete(path, now=float(i))
            else:
                edit = ns.plan_intent(f"{i:032x}", path, now=float(i))
            if edit is None:
                continue
            seq = log.append(*encode_edit(edit))
            ns.apply(edit)
            if i % 7 == 0:
                await log.wait_durable(seq)
            if i == 200:
                await log.roll()
    except Exception:
        await log.close()
        raise
    await log.close()
    replayed = Namespace()
    recover_log(tmp_path, 0, lambda f: replayed.apply(decode_edit(f.kind, f.payload)))
    assert replayed.state() == ns.state()
    assert ns.files > 10
