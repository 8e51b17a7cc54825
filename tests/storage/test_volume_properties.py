"""Property-based tests: the format round-trips, and the volume behaves like a simple model."""

from __future__ import annotations

import errno
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from mydfs.common.errors import (
    Conflict,
    Corrupt,
    DiskFull,
    NotFound,
    SliceDeleted,
    SliceMoved,
)
from mydfs.common.location import MAX_GROUP, MAX_SLOT, Location
from mydfs.storage.format import (
    BLOCK_SIZE,
    CHECKPOINT_FIXED,
    CHECKPOINT_MAX_FREE,
    CHECKPOINT_SIZE,
    HEADER_SIZE,
    NODE_ID_MAX,
    NONE32,
    PAYLOAD_CAPACITY,
    Checkpoint,
    SliceOwner,
    SlotHeader,
    SlotState,
    Superblock,
    blocks_for,
    checkpoint_length,
    decode_checkpoint,
    decode_header,
    decode_superblock,
    encode_checkpoint,
    encode_header,
    encode_superblock,
    header_is_blank,
)
from mydfs.storage.volume import Volume

FAST = settings(max_examples=150, deadline=None)

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
locations = st.builds(Location, st.integers(0, MAX_GROUP), st.integers(0, MAX_SLOT))
lengths = st.one_of(
    st.sampled_from([0, 1, BLOCK_SIZE - 1, BLOCK_SIZE, BLOCK_SIZE + 1, PAYLOAD_CAPACITY]),
    st.integers(0, PAYLOAD_CAPACITY),
)
owners = st.builds(SliceOwner, st.binary(min_size=16, max_size=16), st.integers(0, NONE32 - 1))


@st.composite
def slot_headers(draw: st.DrawFn) -> SlotHeader:
    length = draw(lengths)
    state = draw(
        st.sampled_from([SlotState.PENDING, SlotState.LIVE, SlotState.MOVED, SlotState.DELETED])
    )
    target = draw(locations if state == SlotState.MOVED else st.none() | locations)
    n = blocks_for(length)
    return SlotHeader(
        slot=draw(st.integers(0, MAX_SLOT)),
        state=state,
        generation=draw(u64),
        length=length,
        owner=draw(owners),
        next=draw(st.none() | locations),
        target=target,
        seq=draw(u32),
        mtime_ns=draw(u64),
        payload_crc=draw(u32),
        block_crcs=tuple(draw(st.lists(u32, min_size=n, max_size=n))),
    )


node_ids = st.text(
    alphabet=st.characters(exclude_characters="\0", exclude_categories=["Cs"]),
    max_size=NODE_ID_MAX,
).filter(lambda s: len(s.encode()) <= NODE_ID_MAX)

superblocks = st.builds(
    Superblock,
    volume_id=st.binary(min_size=16, max_size=16),
    node_id=node_ids,
    group_id=st.integers(0, MAX_GROUP),
    max_slots=st.integers(1, MAX_SLOT),
    created_ns=u64,
)

checkpoints = st.builds(
    Checkpoint,
    seq=u64,
    clean=st.booleans(),
    slot_end=u64,
    max_generation=u64,
    free=st.lists(u64, max_size=300).map(tuple),
    complete=st.booleans(),
)


# --- slot header --------------------------------------------------------------------------------


@FAST
@given(h=slot_headers())
def test_slot_header_round_trip(h: SlotHeader) -> None:
    raw = encode_header(h)
    assert len(raw) == HEADER_SIZE
    assert not header_is_blank(raw)
    assert encode_header(h) == raw
    assert decode_header(raw, slot=h.slot) == h
    assert decode_header(memoryview(raw), slot=h.slot) == h


@FAST
@given(h=slot_headers(), data=st.data())
def test_slot_header_any_bit_flip_is_caught(h: SlotHeader, data: st.DataObject) -> None:
    raw = bytearray(encode_header(h))
    pos = data.draw(st.integers(0, HEADER_SIZE - 1), label="byte")
    raw[pos] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    with pytest.raises(Corrupt):
        decode_header(bytes(raw), slot=h.slot)


@FAST
@given(h=slot_headers(), other=st.integers(0, MAX_SLOT))
def test_slot_header_found_at_another_slot_is_refused(h: SlotHeader, other: int) -> None:
    if other == h.slot:
        other = (h.slot + 1) % (MAX_SLOT + 1)
    with pytest.raises(Corrupt) as exc:
        decode_header(encode_header(h), slot=other)
    assert f"belongs to slot {h.slot}" in exc.value.message
    assert exc.value.context["slot"] == other


@FAST
@given(h=slot_headers(), cut=st.integers(0, HEADER_SIZE - 1))
def test_slot_header_of_wrong_size_is_refused(h: SlotHeader, cut: int) -> None:
    with pytest.raises(Corrupt):
        decode_header(encode_header(h)[:cut], slot=h.slot)
    with pytest.raises(Corrupt):
        decode_header(encode_header(h) + b"\0", slot=h.slot)


@FAST
@given(h=slot_headers().filter(lambda h: h.state != SlotState.MOVED), loc=st.none() | locations)
def test_header_update_bumps_seq_only(h: SlotHeader, loc: Location | None) -> None:
    if h.seq == 2**32 - 1:
        h = replace(h, seq=0)
    new = h.with_changes(next=loc)
    assert new.seq == h.seq + 1
    assert new.next == loc
    assert (new.generation, new.length, new.block_crcs, new.owner) == (
        h.generation,
        h.length,
        h.block_crcs,
        h.owner,
    )
    assert decode_header(encode_header(new), slot=h.slot) == new


def test_blank_header() -> None:
    assert header_is_blank(bytes(HEADER_SIZE))
    assert not header_is_blank(b"\0" * 100 + b"\1")


# --- superblock and checkpoints -----------------------------------------------------------------


@FAST
@given(sb=superblocks)
def test_superblock_round_trip(sb: Superblock) -> None:
    raw = encode_superblock(sb)
    assert len(raw) == 512
    assert decode_superblock(raw, volume="v") == sb


@FAST
@given(sb=superblocks, pos=st.integers(0, 511), bit=st.integers(0, 7))
def test_superblock_any_bit_flip_is_refused(sb: Superblock, pos: int, bit: int) -> None:
    raw = bytearray(encode_superblock(sb))
    raw[pos] ^= 1 << bit
    with pytest.raises(Corrupt) as exc:  # or its subclass IncompatibleVolume
        decode_superblock(bytes(raw), volume="v")
    assert exc.value.context["volume"] == "v"


@FAST
@given(cp=checkpoints)
def test_checkpoint_round_trip(cp: Checkpoint) -> None:
    raw = encode_checkpoint(cp)
    assert len(raw) == CHECKPOINT_FIXED + 8 * len(cp.free)
    assert checkpoint_length(raw[:CHECKPOINT_FIXED]) == len(raw)
    assert decode_checkpoint(raw) == cp
    assert decode_checkpoint(raw + b"trailing bytes are ignored") == cp


@FAST
@given(cp=checkpoints, data=st.data())
def test_checkpoint_damage_is_never_taken_for_a_checkpoint(
    cp: Checkpoint, data: st.DataObject
) -> None:
    raw = bytearray(encode_checkpoint(cp))
    pos = data.draw(st.integers(0, len(raw) - 1), label="byte")
    raw[pos] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    assert decode_checkpoint(bytes(raw)) is None
    cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
    assert decode_checkpoint(encode_checkpoint(cp)[:cut]) is None


def test_oversized_free_table_is_cut_and_marked_incomplete() -> None:
    free = tuple(range(CHECKPOINT_MAX_FREE + 5))
    cp = Checkpoint(seq=3, clean=True, slot_end=len(free), max_generation=9, free=free)
    raw = encode_checkpoint(cp)
    assert len(raw) <= CHECKPOINT_SIZE
    got = decode_checkpoint(raw)
    assert got is not None
    assert not got.complete
    assert got.free == free[:CHECKPOINT_MAX_FREE]


# --- range reads ----------------------------------------------------------------------------------


def test_range_reads_equal_slicing(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(4 * BLOCK_SIZE + 999)
    with Volume.open(tmp_path / "r.vol", create=True, max_slots=4) as vol:
        vol.write(0, data)

        @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
        @given(offset=st.integers(0, len(data)), length=st.none() | st.integers(0, len(data)))
        def reads(offset: int, length: int | None) -> None:
            if length is not None:
                length = min(length, len(data) - offset)
            got = vol.read(0, offset, length)
            end = len(data) if length is None else offset + length
            assert got.data == data[offset:end]

        reads()


# --- the volume against a model -------------------------------------------------------------------

MODEL_SLOTS = 10


def sparse_copy(src: Path, dst: Path) -> None:
    """Copy only the data regions of a sparse file (a volume is mostly holes)."""
    fin = os.open(src, os.O_RDONLY)
    fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        size = os.fstat(fin).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fin, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                break
            stop = min(os.lseek(fin, start, os.SEEK_HOLE), size)
            os.pwrite(fout, os.pread(fin, stop - start, start), start)
            pos = stop
        os.ftruncate(fout, size)
    finally:
        os.close(fin)
        os.close(fout)


@dataclass
class Slice:
    state: SlotState
    data: bytes
    owner: SliceOwner
    next: Location | None = None
    target: Location | None = None


class VolumeModel(RuleBasedStateMachine):
    """Random sequences of writes, header updates, reopens and crashes, checked against a dict."""

    used = Bundle("used")

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="volmodel-"))
        self.path = self.dir / "m.vol"
        self.vol = Volume.open(self.path, create=True, max_slots=MODEL_SLOTS)
        self.model: dict[int, Slice] = {}
        self.slot_end = 0
        self.crashes = 0

    def teardown(self) -> None:
        self.vol.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def free(self) -> list[int]:
        return [
            s
            for s in range(self.slot_end)
            if s not in self.model or self.model[s].state == SlotState.DELETED
        ]

    @rule(target=used, size=st.integers(0, 3 * BLOCK_SIZE), seed=u32, pending=st.booleans())
    def write_allocated(self, size: int, seed: int, pending: bool) -> int:
        free = self.free()
        if not free and self.slot_end == MODEL_SLOTS:
            with pytest.raises(DiskFull):
                self.vol.allocate()
            return -1
        slot = self.vol.allocate()
        assert slot == (free[0] if free else self.slot_end)
        return self._write(slot, size, seed, pending)

    @rule(target=used, slot=st.integers(0, MODEL_SLOTS - 1), seed=u32)
    def write_at(self, slot: int, seed: int) -> int:
        """A replica writes the slot its group chose; only a free slot may be written."""
        if slot in self.model and self.model[slot].state != SlotState.DELETED:
            with pytest.raises(Conflict):
                self.vol.write(slot, b"overwrite")
            return slot
        return self._write(slot, seed % 5000, seed, False)

    def _write(self, slot: int, size: int, seed: int, pending: bool) -> int:
        data = random.Random(seed).randbytes(size)
        owner = SliceOwner(random.Random(seed).randbytes(16), seed % 1000)
        state = SlotState.PENDING if pending else SlotState.LIVE
        h = self.vol.write(slot, data, owner=owner, state=state)
        assert (h.slot, h.state, h.length) == (slot, state, size)
        self.model[slot] = Slice(state, data, owner)
        self.slot_end = max(self.slot_end, slot + 1)
        return slot

    def _check_update(self, slot: int, allowed: set[SlotState], fn: object) -> bool:
        """Run an update; it must fail with NotFound/Conflict iff the model says so."""
        current = self.model.get(slot)
        try:
            fn()  # type: ignore[operator]
        except NotFound:
            assert current is None
            return False
        except Conflict:
            assert current is not None and current.state not in allowed
            return False
        assert current is not None and current.state in allowed
        return True

    @rule(slot=used)
    def commit(self, slot: int) -> None:
        if slot < 0:
            return
        if self._check_update(slot, {SlotState.PENDING}, lambda: self.vol.commit(slot)):
            self.model[slot].state = SlotState.LIVE

    @rule(slot=used, nxt=st.none() | locations)
    def relink(self, slot: int, nxt: Location | None) -> None:
        if slot < 0:
            return
        allowed = {SlotState.LIVE, SlotState.PENDING}
        if self._check_update(slot, allowed, lambda: self.vol.relink(slot, nxt)):
            self.model[slot].next = nxt

    @rule(slot=used, to=locations)
    def mark_moved(self, slot: int, to: Location) -> None:
        if slot < 0:
            return
        allowed = {SlotState.LIVE, SlotState.MOVED}  # a 301 may be re-targeted
        if self._check_update(slot, allowed, lambda: self.vol.mark_moved(slot, to)):
            self.model[slot].state = SlotState.MOVED
            self.model[slot].target = to

    @rule(slot=consumes(used))
    def mark_deleted(self, slot: int) -> None:
        if slot < 0:
            return
        allowed = {SlotState.LIVE, SlotState.PENDING, SlotState.MOVED}
        if self._check_update(slot, allowed, lambda: self.vol.mark_deleted(slot)):
            self.model[slot].state = SlotState.DELETED

    @rule()
    def reopen(self) -> None:
        self.vol.close()
        self.vol = Volume.open(self.path)
        assert self.vol.report.clean
        assert self.vol.report.checkpoint_mismatch is None
        assert self.vol.report.repaired_headers == []

    @precondition(lambda self: self.crashes < 2)
    @rule()
    def crash(self) -> None:
        """kill -9: the file as it is right now (every acknowledged write is in it)."""
        self.crashes += 1
        crashed = self.dir / f"crash{self.crashes}.vol"
        sparse_copy(self.path, crashed)
        self.vol.close()
        self.path = crashed
        self.vol = Volume.open(self.path)
        assert not self.vol.report.clean
        assert self.vol.report.repaired_headers == []
        assert self.vol.report.quarantined == []

    @invariant()
    def every_slot_reads_as_modelled(self) -> None:
        for slot in range(MODEL_SLOTS):
            expected = self.model.get(slot)
            try:
                got = self.vol.read(slot, allow_pending=True)
            except SliceMoved as exc:
                assert expected is not None and expected.state == SlotState.MOVED
                assert expected.target is not None
                assert exc.target == (expected.target.group, expected.target.slot)
                continue
            except SliceDeleted:
                assert expected is not None and expected.state == SlotState.DELETED
                continue
            except NotFound:
                assert expected is None
                continue
            assert expected is not None
            assert got.header.state == expected.state
            assert got.data == expected.data
            assert got.header.owner == expected.owner
            assert got.header.next == expected.next

    @invariant()
    def tables_match(self) -> None:
        assert self.vol.free_slots() == self.free()
        st_ = self.vol.stats()
        states = [s.state for s in self.model.values()]
        assert st_.live == states.count(SlotState.LIVE)
        assert st_.pending == states.count(SlotState.PENDING)
        assert st_.moved == states.count(SlotState.MOVED)
        assert st_.deleted == states.count(SlotState.DELETED)
        assert st_.quarantined == 0
        assert [h.slot for h in self.vol.scan()] == sorted(self.model)


TestVolumeModel = VolumeModel.TestCase
TestVolumeModel.settings = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_model_ends_with_a_clean_verify(tmp_path: Path) -> None:
    """One long fixed run of the model, then verify() and a final reopen."""
    machine = VolumeModel()
    try:
        rng = random.Random(3)
        slots: list[int] = []
        for i in range(40):
            roll = rng.random()
            if roll < 0.5 or not slots:
                size, pending = rng.randrange(3 * BLOCK_SIZE), rng.random() < 0.2
                slot = cast(int, machine.write_allocated(size, i, pending))
                if slot >= 0:
                    slots.append(slot)
            elif roll < 0.6:
                machine.commit(rng.choice(slots))
            elif roll < 0.7:
                machine.relink(rng.choice(slots), Location(i, i))
            elif roll < 0.8:
                machine.mark_moved(rng.choice(slots), Location(1, i))
            elif roll < 0.95:
                machine.mark_deleted(slots.pop(rng.randrange(len(slots))))
            else:
                machine.reopen()
            machine.every_slot_reads_as_modelled()
            machine.tables_match()
        assert machine.vol.verify().ok
    finally:
        machine.teardown()
