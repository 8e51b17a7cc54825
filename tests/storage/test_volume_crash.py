"""Crash safety of the slice store: torn files, flipped bits, the write protocol's crash windows.

Every test reopens a damaged or interrupted volume and holds it to one rule: a slot reads back
byte-identical to what was acknowledged, or raises a typed error (NotFound, Corrupt...), or is
reported by ``verify()`` / quarantined; it never serves wrong bytes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mydfs.common.checksum import block_crcs, crc32c
from mydfs.common.errors import Conflict, Corrupt, NotFound, SliceDeleted, SliceMoved
from mydfs.common.location import Location
from mydfs.storage import volume as volume_mod
from mydfs.storage.format import (
    BLOCK_SIZE,
    CHECKPOINT_FIXED,
    CHECKPOINT_OFFSETS,
    HEADER_SIZE,
    PAYLOAD_OFFSET,
    SLOT_SIZE,
    SlotHeader,
    SlotState,
    blocks_for,
    encode_header,
    slot_offset,
)
from mydfs.storage.volume import Volume

MAX_SLOTS = 16
HYPOTHESIS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

Obs = tuple[Any, ...]
FREE: Obs = ("free",)
CORRUPT: Obs = ("corrupt",)
DELETED: Obs = ("deleted",)


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def observe(vol: Volume, slot: int) -> Obs:
    """What a reader gets from ``slot``; anything but a typed error fails the test."""
    try:
        got = vol.read(slot, allow_pending=True)
    except SliceMoved as exc:
        return ("moved", exc.target)
    except SliceDeleted:
        return DELETED
    except NotFound:
        return FREE
    except Corrupt as exc:
        assert exc.context.get("slot") == slot
        assert exc.context.get("volume") == vol.name
        return CORRUPT
    kind = "pending" if got.header.state == SlotState.PENDING else "live"
    return (kind, sha(got.data), got.header.next)


def observe_all(vol: Volume) -> dict[int, Obs]:
    return {slot: observe(vol, slot) for slot in range(MAX_SLOTS)}


def pwrite(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def pread(path: Path, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def flip(path: Path, offset: int, bit: int) -> None:
    old = pread(path, offset, 1)
    assert len(old) == 1, f"offset {offset} is past the end of the file"
    pwrite(path, offset, bytes([old[0] ^ (1 << bit)]))


def read_extents(path: Path) -> tuple[list[tuple[int, bytes]], int]:
    """The data regions of a sparse file and its size (to rebuild copies of it quickly)."""
    extents = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    break
                raise
            stop = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            extents.append((start, os.pread(fd, stop - start, start)))
            pos = stop
    finally:
        os.close(fd)
    return extents, size


@dataclass
class Template:
    """A closed volume with a slot in every state, kept as extents to copy fast."""

    extents: list[tuple[int, bytes]]
    size: int
    expected: dict[int, Obs]
    headers: dict[int, SlotHeader]
    payloads: dict[int, bytes]
    workdir: Path

    def stored_end(self, slot: int) -> int:
        return slot_offset(slot) + PAYLOAD_OFFSET + self.headers[slot].length

    def materialize(self, name: str = "case.vol", cut: int | None = None) -> Path:
        dst = self.workdir / name
        end = self.size if cut is None else cut
        # A new file each time: truncating one with dirty pages makes ext4 flush it (slow).
        dst.unlink(missing_ok=True)
        fd = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            for off, data in self.extents:
                if off < end:
                    os.pwrite(fd, data[: end - off], off)
            os.ftruncate(fd, end)
        finally:
            os.close(fd)
        return dst

    def expect(self, slot: int) -> Obs:
        return self.expected.get(slot, FREE)


def build_template(path: Path) -> tuple[dict[int, Obs], dict[int, SlotHeader], dict[int, bytes]]:
    sizes = {
        0: 3000,
        1: 3 * BLOCK_SIZE + 100,
        2: 5000,
        3: 2000,
        4: 70_000,
        5: 10_000,
        6: 2 * BLOCK_SIZE,
    }
    payloads = {slot: payload(n, seed=slot) for slot, n in sizes.items()}
    vol = Volume.open(path, create=True, node_id="crash", group_id=1, max_slots=MAX_SLOTS)
    try:
        for slot, data in payloads.items():
            assert vol.allocate() == slot
            state = SlotState.PENDING if slot == 4 else SlotState.LIVE
            vol.write(slot, data, state=state)
        vol.mark_deleted(2)
        vol.mark_moved(3, Location(9, 99))
        vol.relink(5, Location(1, 2))
        headers = {h.slot: h for h in vol.scan()}
    finally:
        vol.close()
    expected: dict[int, Obs] = {
        0: ("live", sha(payloads[0]), None),
        1: ("live", sha(payloads[1]), None),
        2: DELETED,
        3: ("moved", (9, 99)),
        4: ("pending", sha(payloads[4]), None),
        5: ("live", sha(payloads[5]), Location(1, 2)),
        6: ("live", sha(payloads[6]), None),
    }
    return expected, headers, payloads


@pytest.fixture(autouse=True)
def no_disk_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests model power loss by editing files, so flushing to the platter buys nothing
    and costs most of the run time; the syncer's logic still runs, only the syscall is skipped.
    """
    monkeypatch.setattr(os, "fdatasync", lambda fd: None)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    workdir = tmp_path_factory.mktemp("crash")
    path = workdir / "template.vol"
    expected, headers, payloads = build_template(path)
    extents, size = read_extents(path)
    return Template(extents, size, expected, headers, payloads, workdir)


def check_recovered(
    vol: Volume,
    t: Template,
    intact: set[int],
    damaged: frozenset[int] = frozenset(),
    override: dict[int, Obs] | None = None,
) -> dict[int, Obs]:
    """Intact slots read exactly as before; damaged ones never serve wrong bytes.

    Slots outside the template are intact (free) unless listed in ``damaged``; ``override``
    replaces the template's expectation of a slot.
    """
    seen = observe_all(vol)
    for slot, obs in seen.items():
        exp = (override or {}).get(slot, t.expect(slot))
        if slot in intact or (exp == FREE and slot not in damaged):
            assert obs == exp, f"slot {slot}: {obs} != {exp}"
        else:
            assert obs in (exp, FREE, CORRUPT), f"slot {slot}: wrong answer {obs}"
    problems = {p.slot for p in vol.verify().problems}
    for slot, obs in seen.items():
        if obs == CORRUPT:
            assert slot in problems, f"slot {slot} fails reads but verify() does not say so"
    assert not problems & intact, f"verify() blames intact slots {problems & intact}"
    assert set(vol.quarantined()) <= problems
    return seen


def check_still_usable(path: Path, before: dict[int, Obs], t: Template) -> None:
    """The recovered volume takes new slices, and a reopen finds the same settled state.

    A slot quarantined because the file ended inside its payload may come back once a new
    slice grows the file past it; its lost blocks then fail their checksums, so it may read as
    its old self, as free, or as corrupt, but never as wrong bytes.
    """
    vol = Volume.open(path)
    try:
        assert vol.report.repaired_headers == []
        assert observe_all(vol) == before
        slot = vol.allocate()
        data = payload(5000, seed=777)
        vol.write(slot, data)
        assert vol.read(slot).data == data
    finally:
        vol.close()
    vol = Volume.open(path)
    try:
        assert vol.read(slot).data == data
        after = observe_all(vol)
        after[slot] = before[slot]
        for s, obs in after.items():
            if before[s] == CORRUPT:
                assert obs in (t.expect(s), FREE, CORRUPT), f"slot {s}: wrong answer {obs}"
            else:
                assert obs == before[s], f"slot {s}: {obs} != {before[s]}"
    finally:
        vol.close()


# --- torn files: cut the volume file at many points ---------------------------------------------


def cut_points(t: Template) -> list[int]:
    points = {0, 1, 8, 100, 511, 512, 513, 4096, SLOT_SIZE - 1}
    for ck in CHECKPOINT_OFFSETS:
        points |= {ck, ck + 1, ck + 32, ck + CHECKPOINT_FIXED - 1, ck + CHECKPOINT_FIXED}
        points |= {ck + CHECKPOINT_FIXED + 4, ck + CHECKPOINT_FIXED + 8}
    for slot, header in t.headers.items():
        base = slot_offset(slot)
        for d in (0, 1, 100, 511, 512, 513, 1000, 1023, 1024, 2048, 4095, 4096, 4097):
            points.add(base + d)
        for b in range(1, blocks_for(header.length) + 1):
            for e in (-1, 0, 1):
                points.add(base + PAYLOAD_OFFSET + min(b * BLOCK_SIZE + e, header.length))
        points.add(base + PAYLOAD_OFFSET + header.length // 2)
        points.add(t.stored_end(slot) - 1)
    points.add(t.size)
    return sorted(p for p in points if p <= t.size)


def check_cut(t: Template, cut: int) -> None:
    path = t.materialize(cut=cut)
    if cut < 512:
        with pytest.raises(Corrupt):  # IncompatibleVolume is a Corrupt
            Volume.open(path)
        return
    vol = Volume.open(path)
    try:
        intact = {s for s in t.headers if t.stored_end(s) <= cut}
        seen = check_recovered(vol, t, intact)
        for slot in t.headers:
            if slot not in intact and slot_offset(slot) < cut:
                # Part of the slot survived: it is quarantined or reads as free, never as data.
                assert seen[slot] in (FREE, CORRUPT)
        if cut < t.size:
            assert vol.report.repaired_headers == []
    finally:
        vol.close()
    check_still_usable(path, seen, t)


def test_cut_at_many_points(template: Template) -> None:
    points = cut_points(template)
    assert len(points) > 100
    for cut in points:
        check_cut(template, cut)


@HYPOTHESIS
@given(data=st.data())
def test_cut_at_random_points(template: Template, data: st.DataObject) -> None:
    slot = data.draw(st.sampled_from(sorted(template.headers)), label="slot")
    cut = data.draw(
        st.integers(slot_offset(slot), template.stored_end(slot)) | st.integers(0, SLOT_SIZE),
        label="cut",
    )
    check_cut(template, cut)


def test_cut_inside_the_latest_checkpoint_falls_back(template: Template) -> None:
    # create wrote seq 1 (area 1), the first open seq 2 (area 0), the clean close seq 3 (area 1).
    path = template.materialize()
    pwrite(path, CHECKPOINT_OFFSETS[1] + 10, b"\xff" * 20)
    vol = Volume.open(path)
    try:
        assert not vol.report.clean  # seq 2, written at open, is not a clean one
        check_recovered(vol, template, set(template.headers))
    finally:
        vol.close()


# --- flipped bits at many points ---------------------------------------------------------------

#: Offsets inside a header copy: magic, version, state, slot, generation, seq, length, owner,
#: next, target, mtime, payload crc, block crc table, reserved tail, the header's own crc.
HEADER_POINTS = (0, 4, 6, 8, 16, 24, 28, 32, 48, 52, 56, 64, 72, 80, 88, 128, 200, 383, 400, 508)


@dataclass(frozen=True)
class Flip:
    region: str  # A, B, AB, payload, pad, super, ckpt
    slot: int
    offsets: tuple[int, ...]  # absolute file offsets
    bit: int


def make_flips(t: Template) -> list[Flip]:
    flips = []
    for slot, header in t.headers.items():
        base = slot_offset(slot)
        for i, d in enumerate(HEADER_POINTS):
            bit = i % 8
            flips.append(Flip("A", slot, (base + d,), bit))
            flips.append(Flip("B", slot, (base + HEADER_SIZE + d,), bit))
            flips.append(Flip("AB", slot, (base + d, base + HEADER_SIZE + d), bit))
        flips.append(Flip("AB", slot, (base + 6, base + HEADER_SIZE + 300), 1))
        for p in {0, 1, header.length // 2, header.length - 1, BLOCK_SIZE - 1, BLOCK_SIZE}:
            if 0 <= p < header.length:
                flips.append(Flip("payload", slot, (base + PAYLOAD_OFFSET + p,), p % 8))
        for d in (2 * HEADER_SIZE, 2000, PAYLOAD_OFFSET - 1):
            flips.append(Flip("pad", slot, (base + d,), 3))
    for d in (0, 7, 8, 10, 16, 24, 40, 56, 100, 130, 200, 500, 508, 511):
        flips.append(Flip("super", -1, (d,), d % 8))
    for ck in CHECKPOINT_OFFSETS:
        for d in (0, 4, 6, 8, 16, 32, 40, 60, 63, 64, 70):
            flips.append(Flip("ckpt", -1, (ck + d,), d % 8))
    return flips


def check_flip(t: Template, f: Flip) -> None:
    path = t.materialize()
    for off in f.offsets:
        flip(path, off, f.bit)
    if f.region == "super":
        with pytest.raises(Corrupt):
            Volume.open(path)
        return
    vol = Volume.open(path)
    try:
        others = set(t.headers) - {f.slot}
        if f.region in ("A", "B"):
            # One copy survives: the slot reads as before and the other copy is rewritten.
            assert vol.report.repaired_headers == [f.slot]
            seen = check_recovered(vol, t, set(t.headers))
            raw = pread(path, slot_offset(f.slot), 2 * HEADER_SIZE)
            assert raw[:HEADER_SIZE] == raw[HEADER_SIZE:]
        elif f.region == "AB":
            assert set(vol.quarantined()) == {f.slot}
            assert [p.slot for p in vol.report.quarantined] == [f.slot]
            seen = check_recovered(vol, t, others)
            assert seen[f.slot] == CORRUPT
            with pytest.raises(Corrupt):
                vol.header(f.slot)
            assert f.slot not in vol.free_slots()
        elif f.region == "payload":
            seen = check_recovered(vol, t, others)
            state = t.headers[f.slot].state
            problems = {p.slot for p in vol.verify().problems}
            if state == SlotState.DELETED:
                assert seen[f.slot] == DELETED  # a 404 marker's payload is never served
            elif state == SlotState.MOVED:
                assert seen[f.slot] == t.expect(f.slot)
                assert f.slot in problems
            else:
                assert seen[f.slot] == CORRUPT
                assert f.slot in problems
                block = (f.offsets[0] - slot_offset(f.slot) - PAYLOAD_OFFSET) // BLOCK_SIZE
                with pytest.raises(Corrupt) as exc:
                    vol.read(f.slot, block * BLOCK_SIZE, 1, allow_pending=True)
                assert exc.value.context["block"] == block
                for other in range(blocks_for(t.headers[f.slot].length)):
                    if other != block:
                        got = vol.read(f.slot, other * BLOCK_SIZE, 1, allow_pending=True)
                        assert got.data == t.payloads[f.slot][other * BLOCK_SIZE :][:1]
        else:  # pad, ckpt: nothing that matters was touched
            assert vol.report.repaired_headers == []
            seen = check_recovered(vol, t, set(t.headers))
            assert vol.verify().ok
    finally:
        vol.close()
    check_still_usable(path, seen, t)


def test_flip_bits_at_many_points(template: Template) -> None:
    flips = make_flips(template)
    assert len(flips) > 400
    for f in flips:
        check_flip(template, f)


@HYPOTHESIS
@given(data=st.data())
def test_flip_random_bits(template: Template, data: st.DataObject) -> None:
    region = data.draw(st.sampled_from(["A", "B", "AB", "payload", "pad", "super", "ckpt"]))
    slot = data.draw(st.sampled_from(sorted(template.headers)))
    bit = data.draw(st.integers(0, 7))
    base = slot_offset(slot)
    if region in ("A", "B"):
        d = data.draw(st.integers(0, HEADER_SIZE - 1))
        offsets: tuple[int, ...] = (base + d + (HEADER_SIZE if region == "B" else 0),)
    elif region == "AB":
        da, db = data.draw(st.integers(0, HEADER_SIZE - 1)), data.draw(st.integers(0, 511))
        offsets = (base + da, base + HEADER_SIZE + db)
    elif region == "payload":
        p = data.draw(st.integers(0, template.headers[slot].length - 1))
        offsets = (base + PAYLOAD_OFFSET + p,)
    elif region == "pad":
        offsets = (base + data.draw(st.integers(2 * HEADER_SIZE, PAYLOAD_OFFSET - 1)),)
    elif region == "super":
        offsets, slot = (data.draw(st.integers(0, 511)),), -1
    else:
        ck = data.draw(st.sampled_from(CHECKPOINT_OFFSETS))
        offsets, slot = (ck + data.draw(st.integers(0, CHECKPOINT_FIXED + 8 * 4)),), -1
    check_flip(template, Flip(region, slot, offsets, bit))


# --- the write protocol's crash windows, made by hand -------------------------------------------


def new_header(t: Template, slot: int, data: bytes, **changes: Any) -> SlotHeader:
    fields: dict[str, Any] = dict(
        slot=slot,
        state=SlotState.LIVE,
        generation=max(h.generation for h in t.headers.values()) + 10,
        length=len(data),
        payload_crc=crc32c(data),
        block_crcs=tuple(block_crcs(data, BLOCK_SIZE)),
    )
    fields.update(changes)
    return SlotHeader(**fields)


def reopen_case(t: Template, path: Path, slot: int, expect: Obs) -> tuple[Volume, dict[int, Obs]]:
    vol = Volume.open(path)
    seen = check_recovered(vol, t, set(t.headers) | {slot}, override={slot: expect})
    assert seen[slot] == expect
    assert vol.verify().ok
    return vol, seen


@pytest.mark.parametrize("length", [0, 9000, 3 * BLOCK_SIZE])
@pytest.mark.parametrize("torn", [False, True])
def test_window_a_payload_without_header_reopens_free(
    template: Template, length: int, torn: bool
) -> None:
    """Crash after step 1 of a write to a new slot: a payload but no header."""
    path = template.materialize()
    data = payload(length, seed=42)
    if torn:
        data = data[: length // 2]
    pwrite(path, slot_offset(7), bytes(PAYLOAD_OFFSET) + data)
    vol, _ = reopen_case(template, path, 7, FREE)
    try:
        assert 7 in vol.free_slots()
        assert vol.report.repaired_headers == []
        assert vol.report.quarantined == []
        # The clean checkpoint no longer matches the file: the change is reported.
        assert vol.report.checkpoint_mismatch is not None
        fresh = payload(4000, seed=43)
        vol.write(7, fresh)
        assert vol.read(7).data == fresh
    finally:
        vol.close()


def test_window_a_header_copy_a_only_of_a_new_slice(template: Template) -> None:
    """Crash inside step 2: the payload is durable and only copy A of the header landed."""
    path = template.materialize()
    data = payload(20_000, seed=44)
    header = new_header(template, 7, data)
    pwrite(path, slot_offset(7), encode_header(header) + bytes(PAYLOAD_OFFSET - HEADER_SIZE) + data)
    vol, _ = reopen_case(template, path, 7, ("live", sha(data), None))
    try:
        assert vol.report.repaired_headers == [7]
        assert vol.header(7) == header
        raw = pread(path, slot_offset(7), 2 * HEADER_SIZE)
        assert raw[:HEADER_SIZE] == raw[HEADER_SIZE:]
    finally:
        vol.close()


def test_window_a_torn_copy_a_with_blank_copy_b_is_quarantined(template: Template) -> None:
    """A copy A torn mid-sector next to a blank copy B: not servable, quarantined, reclaimable."""
    path = template.materialize()
    data = payload(20_000, seed=45)
    raw = encode_header(new_header(template, 7, data))
    pwrite(path, slot_offset(7), raw[:100] + bytes(PAYLOAD_OFFSET - 100) + data)
    vol = Volume.open(path)
    try:
        seen = check_recovered(vol, template, set(template.headers), frozenset({7}))
        assert seen[7] == CORRUPT
        assert set(vol.quarantined()) == {7}
        with pytest.raises(Conflict):
            vol.write(7, b"refused while quarantined")
        vol.reclaim(7)
        assert 7 in vol.free_slots()
        vol.write(7, b"reclaimed")
        assert vol.read(7).data == b"reclaimed"
        assert vol.verify().ok
    finally:
        vol.close()


UPDATES: dict[str, tuple[int, dict[str, Any], Callable[[Template], Obs]]] = {
    "relink": (0, {"next": Location(4, 44)}, lambda t: (*t.expect(0)[:2], Location(4, 44))),
    "mark_moved": (
        0,
        {"state": SlotState.MOVED, "target": Location(5, 55)},
        lambda t: ("moved", (5, 55)),
    ),
    "mark_deleted": (6, {"state": SlotState.DELETED}, lambda t: DELETED),
    "commit": (4, {"state": SlotState.LIVE}, lambda t: ("live", *t.expect(4)[1:])),
}


@pytest.mark.parametrize("op", sorted(UPDATES))
@pytest.mark.parametrize(
    "window", ["A-new", "B-new", "A-torn", "B-torn", "A-new-B-torn", "A-torn-B-new"]
)
def test_window_b_header_update_between_copies(template: Template, op: str, window: str) -> None:
    """Crash inside a header update (copy A, sync, copy B): reopen settles on one state."""
    slot, changes, new_obs = UPDATES[op]
    old = template.headers[slot]
    new = old.with_changes(mtime_ns=old.mtime_ns + 1, **changes)
    raw_old, raw_new = encode_header(old), encode_header(new)
    torn = raw_new[:256] + raw_old[256:]
    copies = {
        "A-new": (raw_new, raw_old),
        "B-new": (raw_old, raw_new),
        "A-torn": (torn, raw_old),
        "B-torn": (raw_old, torn),
        "A-new-B-torn": (raw_new, torn),
        "A-torn-B-new": (torn, raw_new),
    }[window]
    path = template.materialize()
    pwrite(path, slot_offset(slot), copies[0] + copies[1])
    settled_new = raw_new in copies
    expect = new_obs(template) if settled_new else template.expect(slot)
    vol, seen = reopen_case(template, path, slot, expect)
    try:
        assert vol.report.repaired_headers == [slot]
        assert vol.header(slot) == (new if settled_new else old)
        raw = pread(path, slot_offset(slot), 2 * HEADER_SIZE)
        assert raw == 2 * (raw_new if settled_new else raw_old)
        deleted = settled_new and op == "mark_deleted"
        assert (slot in vol.free_slots()) == deleted
    finally:
        vol.close()
    check_still_usable(path, seen, template)


REUSE_WINDOWS = {
    # step 1 torn after the header area was zeroed: no header, a partial new payload
    "zeroed-partial-payload": FREE,
    # step 1 torn before the header area: the 404 marker with a half-overwritten old payload
    "marker-partial-payload": DELETED,
    # step 1 torn inside the header area: copy A zeroed, copy B still the 404 marker
    "a-zeroed": DELETED,
    # step 1 durable, step 2 not started
    "no-header": FREE,
    # step 1 durable, step 2 torn after copy A
    "copy-a-only": "new",
}


@pytest.mark.parametrize("window", sorted(REUSE_WINDOWS))
def test_window_c_crash_while_reusing_a_404_slot(template: Template, window: str) -> None:
    slot = 2
    assert template.headers[slot].state == SlotState.DELETED
    old_len = template.headers[slot].length
    data = payload(old_len + 7000, seed=46)
    header = new_header(template, slot, data)
    base = slot_offset(slot)
    path = template.materialize()
    if window == "zeroed-partial-payload":
        pwrite(path, base, bytes(PAYLOAD_OFFSET) + data[:3000])
    elif window == "marker-partial-payload":
        pwrite(path, base + PAYLOAD_OFFSET, data[:3000])
    elif window == "a-zeroed":
        pwrite(path, base, bytes(HEADER_SIZE))
    elif window == "no-header":
        pwrite(path, base, bytes(PAYLOAD_OFFSET) + data)
    else:
        pwrite(path, base, bytes(PAYLOAD_OFFSET) + data)
        pwrite(path, base, encode_header(header))
    wanted = REUSE_WINDOWS[window]
    expect: Obs = ("live", sha(data), None) if wanted == "new" else tuple(wanted)
    vol = Volume.open(path)
    try:
        seen = check_recovered(vol, template, set(template.headers), override={slot: expect})
        assert vol.verify().ok
        assert vol.report.quarantined == []
        repaired = window in ("a-zeroed", "copy-a-only")
        assert vol.report.repaired_headers == ([slot] if repaired else [])
        assert (slot in vol.free_slots()) == (expect in (FREE, DELETED))
        if expect in (FREE, DELETED):
            assert vol.allocate() == slot
            again = payload(1234, seed=47)
            vol.write(slot, again)
            assert vol.read(slot).data == again
            seen[slot] = ("live", sha(again), None)
    finally:
        vol.close()
    vol = Volume.open(path)
    try:
        assert observe_all(vol) == seen
        assert vol.verify().ok
    finally:
        vol.close()


# --- power loss at every step of a recorded workload --------------------------------------------

SECTOR = 512


@dataclass
class Call:
    slot: int | None
    before: Obs | None
    after: Obs | None
    is_write: bool


@dataclass
class Recording:
    ops: list[tuple[Any, ...]]  # ("w", offset, data) | ("s",) | ("begin", i) | ("ack", i)
    calls: list[Call]
    states: list[dict[int, Obs]]  # states[i]: every slot after call i (states[-1]: before any)


@pytest.fixture(scope="module")
def recording(template: Template) -> Recording:
    path = template.materialize("recorded.vol")
    ops: list[tuple[Any, ...]] = []
    calls: list[Call] = []
    state = {slot: template.expect(slot) for slot in range(MAX_SLOTS)}
    states = [dict(state)]
    real_pwrite_all = volume_mod._pwrite_all
    real_fdatasync = os.fdatasync

    def pwrite_all(fd: int, buffers: list[bytes | memoryview], offset: int) -> None:
        ops.append(("w", offset, b"".join(bytes(b) for b in buffers)))
        real_pwrite_all(fd, buffers, offset)

    def fdatasync(fd: int) -> None:
        real_fdatasync(fd)
        ops.append(("s",))

    def call(slot: int | None, after: Obs | None, fn: Callable[[], object], write: bool) -> object:
        i = len(calls)
        calls.append(Call(slot, state.get(slot) if slot is not None else None, after, write))
        ops.append(("begin", i))
        result = fn()
        ops.append(("ack", i))
        if slot is not None:
            state[slot] = after  # type: ignore[assignment]
        states.append(dict(state))
        return result

    p = {n: payload(n, seed=n) for n in (9000, 150_000, 1000)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(volume_mod, "_pwrite_all", pwrite_all)
        mp.setattr(os, "fdatasync", fdatasync)
        vol: Volume = call(None, None, lambda: Volume.open(path), False)  # type: ignore[assignment]
        assert vol.allocate() == 2  # the 404 slot is reused first
        call(2, ("live", sha(p[9000]), None), lambda: vol.write(2, p[9000]), True)
        assert vol.allocate() == 7
        after7 = ("live", sha(p[150_000]), Location(3, 3))
        call(7, after7, lambda: vol.write(7, p[150_000], next=Location(3, 3)), True)
        call(0, (*state[0][:2], Location(4, 44)), lambda: vol.relink(0, Location(4, 44)), False)
        call(1, ("moved", (5, 55)), lambda: vol.mark_moved(1, Location(5, 55)), False)
        call(4, ("live", *state[4][1:]), lambda: vol.commit(4), False)
        call(5, DELETED, lambda: vol.mark_deleted(5), False)
        pending = ("pending", sha(p[1000]), None)

        def write9() -> object:  # a replica's write past the end, with the group's generation
            return vol.write(9, p[1000], state=SlotState.PENDING, generation=10_000)

        call(9, pending, write9, True)
        call(3, DELETED, lambda: vol.mark_deleted(3), False)
        call(None, None, vol.close, False)
    return Recording(ops, calls, states)


def crash_image(t: Template, rec: Recording, k: int, lost: str | random.Random) -> Path:
    """The file after the first ``k`` ops and then a power cut.

    Writes before the last completed sync are on disk. Of each later write, at 512-byte sector
    granularity (a sector is atomic, the page cache writes back in any order): every sector
    lands (``"keep"``, what kill -9 leaves), none does (``"lose"``), the first half does
    (``"head"``), the second half does (``"tail"``), or a random subset (an rng).
    """
    done = rec.ops[:k]
    last_sync = max((j for j, op in enumerate(done) if op[0] == "s"), default=-1)
    path = t.materialize("power.vol")
    fd = os.open(path, os.O_RDWR)
    try:
        for j, op in enumerate(done):
            if op[0] != "w":
                continue
            _, offset, data = op
            if j < last_sync or lost == "keep":
                os.pwrite(fd, data, offset)
                continue
            sectors = []
            pos = offset
            while pos < offset + len(data):
                stop = min((pos // SECTOR + 1) * SECTOR, offset + len(data))
                sectors.append((pos, data[pos - offset : stop - offset]))
                pos = stop
            half = (len(sectors) + 1) // 2
            if lost == "lose":
                sectors = []
            elif lost == "head":
                sectors = sectors[:half]
            elif lost == "tail":
                sectors = sectors[half:]
            else:
                assert isinstance(lost, random.Random)
                keep = lost.random()
                sectors = [sector for sector in sectors if lost.random() < keep]
            for pos, chunk in sectors:
                os.pwrite(fd, chunk, pos)
    finally:
        os.close(fd)
    return path


def check_power_cut(t: Template, rec: Recording, k: int, lost: str | random.Random) -> None:
    path = crash_image(t, rec, k, lost)
    done = rec.ops[:k]
    acked = [op[1] for op in done if op[0] == "ack"]
    begun = [op[1] for op in done if op[0] == "begin"]
    expected = rec.states[len(acked)]  # states[0] is the template; states[i+1] after call i
    in_flight = rec.calls[begun[-1]] if begun and len(begun) > len(acked) else None
    vol = Volume.open(path)
    try:
        seen = observe_all(vol)
        for slot, obs in seen.items():
            if in_flight is not None and slot == in_flight.slot:
                allowed = [in_flight.before, in_flight.after]
                if in_flight.is_write:
                    allowed.append(FREE)
                assert obs in allowed, f"k={k}: in-flight slot {slot}: {obs} not in {allowed}"
            else:
                assert obs == expected[slot], f"k={k}: slot {slot}: {obs} != {expected[slot]}"
        assert vol.report.quarantined == []
        assert vol.verify().ok
        opened, closing = 0, len(rec.calls) - 1
        if len(acked) > opened and len(begun) <= closing:
            assert not vol.report.clean, f"k={k}: an interrupted session must not look clean"
        if vol.report.repaired_headers:
            assert in_flight is not None and vol.report.repaired_headers == [in_flight.slot]
    finally:
        vol.close()
    vol = Volume.open(path)
    try:
        assert vol.report.repaired_headers == []
        assert observe_all(vol) == seen
    finally:
        vol.close()


def test_power_cut_after_every_step(template: Template, recording: Recording) -> None:
    """Crash after each recorded write or sync; unsynced writes kept, lost or torn in half."""
    n = len(recording.ops)
    assert sum(op[0] == "s" for op in recording.ops) >= 2 * (len(recording.calls) - 2)
    for k in range(n + 1):
        for lost in ("keep", "lose", "head", "tail"):
            check_power_cut(template, recording, k, lost)


@HYPOTHESIS
@given(data=st.data())
def test_power_cut_with_random_lost_sectors(
    template: Template, recording: Recording, data: st.DataObject
) -> None:
    """Unsynced writes reach the disk as a random subset of their 512-byte sectors."""
    k = data.draw(st.integers(0, len(recording.ops)), label="k")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    check_power_cut(template, recording, k, random.Random(seed))


# --- kill -9 of a real writer process -----------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import hashlib, random, sys
    from mydfs.storage.format import SlotState
    from mydfs.storage.volume import Volume

    path, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    vol = Volume.open(path, create=True, node_id="killed", group_id=1, max_slots=64)
    live = [h.slot for h in vol.scan() if h.state == SlotState.LIVE]
    print("ready", flush=True)
    step = 0
    while True:
        step += 1
        if live and (step % 3 == 0 or len(live) > 40):
            slot = live.pop(rng.randrange(len(live)))
            print(f"D {slot}", flush=True)
            vol.mark_deleted(slot)
            print(f"X {slot}", flush=True)
        else:
            slot = vol.allocate()
            data = rng.randbytes(rng.choice([100, 5000, 70000, 200000]))
            digest = hashlib.sha256(data).hexdigest()
            print(f"W {slot} {digest}", flush=True)
            vol.write(slot, data)
            print(f"A {slot} {digest}", flush=True)
            live.append(slot)
    """
)


def run_child_until_killed(path: Path, seed: int, rng: random.Random) -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=path.parent,
    )
    lines: list[str] = []
    acks = threading.Semaphore(0)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.endswith("\n"):
                lines.append(line.rstrip("\n"))
                if line.startswith("A "):
                    acks.release()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        for _ in range(5):  # let it acknowledge a few writes first
            while not acks.acquire(timeout=0.1):
                assert proc.poll() is None, f"writer died: {proc.stderr.read()}"  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "writer made no progress"
        # While the writer holds the volume, nobody else may open it.
        with pytest.raises(Conflict):
            Volume.open(path)
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        reader.join(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()
    return lines


def test_kill_9_never_loses_an_acknowledged_slice(tmp_path: Path) -> None:
    path = tmp_path / "killed.vol"
    rng = random.Random(1234)
    state: dict[int, tuple[str, ...]] = {}  # slot -> latest event
    totals = {"A": 0, "X": 0}
    for round_ in range(4):
        lines = run_child_until_killed(path, seed=round_, rng=rng)
        assert lines[0] == "ready"
        for line in lines[1:]:
            kind, slot_text, *rest = line.split()
            if kind in totals:
                totals[kind] += 1
            slot = int(slot_text)
            prev = state.get(slot)
            if kind == "W":
                state[slot] = ("writing", rest[0])
            elif kind == "A":
                assert prev == ("writing", rest[0])
                state[slot] = ("live", rest[0])
            elif kind == "D":
                assert prev is not None and prev[0] == "live"
                state[slot] = ("deleting", prev[1])
            else:
                assert prev is not None and prev[0] == "deleting"
                state[slot] = ("deleted",)
        assert sum(1 for line in lines if line.startswith("A ")) >= 5
        vol = Volume.open(path)
        try:
            assert not vol.report.clean
            assert vol.report.quarantined == []
            for slot, event in sorted(state.items()):
                obs = observe(vol, slot)
                if event[0] == "live":
                    assert obs == ("live", event[1], None), f"round {round_} slot {slot}"
                elif event[0] == "deleted":
                    assert obs == DELETED
                elif event[0] == "writing":
                    assert obs in (FREE, DELETED, ("live", event[1], None))
                else:
                    assert obs in (DELETED, ("live", event[1], None))
                # Settle the in-flight operation to what the volume now says.
                if obs == FREE:
                    state.pop(slot)
                elif obs == DELETED:
                    state[slot] = ("deleted",)
                else:
                    state[slot] = ("live", obs[1])
            assert vol.verify().ok
        finally:
            vol.close()
    assert totals["X"] >= 4  # the writer deletes every third step: 404 slots were reused
    assert totals["A"] >= 20
    assert any(e[0] == "live" for e in state.values())
