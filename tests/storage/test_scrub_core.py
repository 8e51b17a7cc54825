"""The scrub's pure core: the pass schedule, the rate pacer, what a check result means, and the
bad copies waiting for their repair."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mydfs.storage.format import HEADER_SIZE, PAYLOAD_OFFSET, SliceOwner, SlotHeader, slot_offset
from mydfs.storage.format import SlotState as Disk
from mydfs.storage.group_state import SlotInfo, SlotState
from mydfs.storage.scrub_core import BadCopies, Pacer, Schedule, Verdict, judge
from mydfs.storage.volume import Volume


def record(
    slot: int, gen: int, *, state: SlotState = SlotState.LIVE, holders: tuple[str, ...] = ("a", "b")
) -> SlotInfo:
    return SlotInfo(
        slot=slot,
        state=state,
        generation=gen,
        upload_id=f"u{slot}",
        file_id="0" * 32,
        slice_index=0,
        length=10,
        crc32c=1,
        next=None,
        holders=holders,
        target=None,
        reserved_at_ms=0,
    )


def header(slot: int, gen: int, *, state: Disk = Disk.LIVE, seq: int = 0) -> SlotHeader:
    return SlotHeader(
        slot=slot,
        state=state,
        generation=gen,
        length=10,
        owner=SliceOwner(),
        block_crcs=(0,),
        seq=seq,
    )


# --- judge --------------------------------------------------------------------------------------


def test_judge_ok_repair_unrepairable() -> None:
    h = header(3, 7)
    assert judge(h, None, h, record(3, 7), "a", 7) is Verdict.OK
    assert judge(h, "payload block 2 checksum mismatch", h, record(3, 7), "a", 7) is Verdict.REPAIR
    # The damaged header itself (nothing decoded) is bad too.
    assert judge(None, "slot header checksum mismatch", h, record(3, 7), "a", 7) is Verdict.REPAIR
    # Only this node is listed: nobody can serve the slice intact.
    alone = record(3, 7, holders=("a",))
    assert judge(h, "payload checksum mismatch", h, alone, "a", 7) is Verdict.UNREPAIRABLE
    nobody = record(3, 7, holders=())
    assert judge(h, "payload checksum mismatch", h, nobody, "a", 7) is Verdict.UNREPAIRABLE


def test_judge_ignores_a_slot_that_changed_during_the_read() -> None:
    h = header(3, 7)
    bad = "payload block 0 checksum mismatch"
    # Deleted, reused, moved in the table since the pass chose it.
    assert judge(h, bad, h, None, "a", 7) is Verdict.STALE
    assert judge(h, bad, h, record(3, 7, state=SlotState.DELETED), "a", 7) is Verdict.STALE
    assert judge(h, bad, h, record(3, 8), "a", 7) is Verdict.STALE
    assert judge(h, bad, h, record(3, 7, state=SlotState.MOVED), "a", 7) is Verdict.STALE
    # The local copy was dropped, reused or rewritten (a repair) since the read.
    assert judge(h, bad, None, record(3, 7), "a", 7) is Verdict.STALE
    assert judge(h, bad, header(3, 7, state=Disk.DELETED, seq=1), record(3, 7), "a", 7) is (
        Verdict.STALE
    )
    assert judge(h, bad, header(3, 8), record(3, 7), "a", 7) is Verdict.STALE
    assert judge(h, bad, header(3, 7, seq=1), record(3, 7), "a", 7) is Verdict.STALE


# --- pacer --------------------------------------------------------------------------------------


@given(
    rate=st.floats(min_value=1.0, max_value=1e9),
    reads=st.lists(
        st.tuples(st.integers(0, 4_200_000), st.floats(min_value=0.0, max_value=5.0)),
        min_size=1,
        max_size=50,
    ),
)
def test_pacer_never_exceeds_the_rate(rate: float, reads: list[tuple[int, float]]) -> None:
    """A scrub that waits as told reads at most ``rate`` bytes a second over any prefix: the
    bytes of the reads started by time t, minus the last one, fit in rate * (t - first)."""
    pacer = Pacer(rate)
    now = 0.0
    first = now
    total = 0
    for nbytes, extra in reads:
        ready = pacer.spend(now, nbytes)
        total += nbytes
        assert ready >= now
        # The next read starts no earlier than ready (plus whatever else delayed it).
        assert total <= rate * (ready - first) * (1 + 1e-9) + 1
        now = ready + extra


def test_pacer_waits_in_proportion_and_forgets_idle_time() -> None:
    pacer = Pacer(1000.0)
    assert pacer.spend(0.0, 500) == pytest.approx(0.5)
    assert pacer.spend(0.1, 500) == pytest.approx(1.0)  # started early: waits for the first
    # Idle time is not saved up for a burst: a read after a long pause waits its own share.
    assert pacer.spend(60.0, 1000) == pytest.approx(61.0)
    with pytest.raises(ValueError):
        Pacer(0).spend(0.0, 1)


# --- schedule -----------------------------------------------------------------------------------


def run_pass(schedule: Schedule, now: float, slots: list[int]) -> list[int]:
    step = schedule.next(now)
    assert step.new_pass
    schedule.start(now, slots)
    seen = []
    while True:
        step = schedule.next(now)
        if step.slot is None:
            assert step.ended is not None
            return seen
        seen.append(step.slot)
        schedule.checked(10)


def test_schedule_visits_each_slot_once_in_order_then_waits_for_the_interval() -> None:
    schedule = Schedule(interval=100.0)
    assert run_pass(schedule, 5.0, [9, 2, 5, 2]) == [2, 5, 9]
    assert schedule.passes == 1
    assert schedule.last is not None and schedule.last.slots == 3 and schedule.last.bytes == 30
    step = schedule.next(50.0)
    assert step.slot is None and not step.new_pass and step.wait == pytest.approx(55.0)
    assert schedule.next(105.0).new_pass


def test_schedule_pass_longer_than_the_interval_starts_the_next_at_once() -> None:
    schedule = Schedule(interval=10.0)
    schedule.next(0.0)
    schedule.start(0.0, [1, 2])
    assert schedule.next(1.0).slot == 1
    assert schedule.next(30.0).slot == 2
    end = schedule.next(40.0)
    assert end.slot is None and end.wait == 0.0 and end.ended is not None
    assert end.ended.duration == pytest.approx(40.0)
    assert schedule.next(40.0).new_pass


def test_schedule_again_hands_the_same_slot_out_again() -> None:
    schedule = Schedule(interval=10.0)
    schedule.next(0.0)
    schedule.start(0.0, [4, 8])
    assert schedule.next(0.0).slot == 4
    schedule.again()
    assert schedule.progress == (0, 2)
    assert schedule.next(0.0).slot == 4
    assert schedule.next(0.0).slot == 8


def test_schedule_empty_pass_ends_at_once() -> None:
    schedule = Schedule(interval=10.0)
    assert run_pass(schedule, 0.0, []) == []
    assert schedule.passes == 1 and schedule.progress == (0, 0)


@given(st.lists(st.sets(st.integers(0, 50), max_size=20), min_size=1, max_size=5))
def test_schedule_every_pass_covers_its_slots(passes: list[set[int]]) -> None:
    schedule = Schedule(interval=1.0)
    now = 0.0
    for slots in passes:
        while not (step := schedule.next(now)).new_pass:
            now += step.wait
        assert run_pass_started(schedule, now, slots) == sorted(slots)
        now += 0.5


def run_pass_started(schedule: Schedule, now: float, slots: set[int]) -> list[int]:
    schedule.start(now, slots)
    seen = []
    while (step := schedule.next(now)).slot is not None:
        seen.append(step.slot)
    return seen


# --- bad copies ---------------------------------------------------------------------------------


def test_bad_copies_repaired_gone_and_unrepairable() -> None:
    bad = BadCopies()
    for slot in (1, 2, 3, 4):
        bad.add(slot, 7)
    records = {
        1: record(1, 7, holders=("b",)),  # refetched here: repaired
        2: record(2, 8),  # reused since: nothing to repair
        3: record(3, 7, holders=()),  # nobody else holds it
        4: record(4, 7, holders=("b", "c")),  # waiting for the fetch
    }
    assert bad.unrepairable(records, "a") == [3]
    repaired, gone = bad.settle(records, {1: True, 2: False, 3: False, 4: False})
    assert (repaired, gone) == ([1], [2])
    assert bad.slots() == [3, 4] and 3 in bad and len(bad) == 2
    # A deleted slot leaves the list too.
    repaired, gone = bad.settle({3: record(3, 7, state=SlotState.DELETED), 4: None}, {})
    assert (repaired, gone) == ([], [3, 4])
    assert len(bad) == 0


# --- the check itself (Volume.check_slot) -------------------------------------------------------


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x01]))


@pytest.mark.parametrize(
    ("where", "problem"),
    [
        (PAYLOAD_OFFSET + 70_000, "payload block 1 checksum mismatch"),
        (PAYLOAD_OFFSET + 129_999, "payload block 1 checksum mismatch"),  # the last byte
        (100, "header copy A damaged"),
        (HEADER_SIZE + 100, "header copy B damaged"),
    ],
)
def test_check_slot_finds_any_flipped_bit(tmp_path: Path, where: int, problem: str) -> None:
    path = tmp_path / "v.dat"
    with Volume.open(path, create=True) as volume:
        data = random.Random(1).randbytes(130_000)
        volume.write(0, data)
        volume.write(1, b"other")
        header, found = volume.check_slot(0)
        assert found is None and header is not None and header.length == 130_000
        _flip(path, slot_offset(0) + where)
        header, found = volume.check_slot(0)
        assert found is not None and problem in found, found
        assert volume.check_slot(1)[1] is None  # its neighbour is untouched
        assert volume.check_slot(5) == (None, None)  # never written
        assert [p.slot for p in volume.verify().problems] == [0]


def test_check_slot_reports_a_read_the_disk_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from mydfs.storage import volume as volume_module

    with Volume.open(tmp_path / "v.dat", create=True) as volume:
        volume.write(0, b"x" * 1000)
        real = volume_module._pread_exact

        def failing(fd: int, length: int, offset: int) -> bytes:
            if offset == slot_offset(0) + PAYLOAD_OFFSET:
                raise OSError(errno.EIO, "Input/output error")
            return real(fd, length, offset)

        monkeypatch.setattr(volume_module, "_pread_exact", failing)
        header, problem = volume.check_slot(0)
        assert header is None and problem is not None and "disk read failed" in problem
