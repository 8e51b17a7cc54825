"""The leader's fill checks against the slot's table record (pure :func:`check_fill`) and the
payload check of an upload."""

from __future__ import annotations

import pytest

from mydfs.common.checksum import crc32c
from mydfs.common.errors import Conflict, InvalidArgument, PayloadTooLarge, SliceDeleted
from mydfs.storage.format import PAYLOAD_CAPACITY
from mydfs.storage.group_state import SlotInfo, SlotState
from mydfs.storage.writer import INLINE_BUDGET, FillStep, check_fill, check_payload, goes_inline


def record(state: SlotState = SlotState.PENDING, **kw: object) -> SlotInfo:
    args: dict[str, object] = {
        "slot": 7,
        "state": state,
        "generation": 3,
        "upload_id": "u1",
        "file_id": "0" * 32,
        "slice_index": 0,
        "length": 10,
        "crc32c": 99,
        "next": None,
        "holders": ("a", "b") if state == SlotState.LIVE else (),
        "target": None,
        "reserved_at_ms": 0,
    }
    args.update(kw)
    return SlotInfo(**args)  # type: ignore[arg-type]


def fill(info: SlotInfo | None, **kw: object) -> FillStep:
    args: dict[str, object] = {
        "slot": 7,
        "upload_id": "u1",
        "generation": 3,
        "length": 10,
        "crc": 99,
        "in_progress": False,
    }
    args.update(kw)
    return check_fill(info, **args)  # type: ignore[arg-type]


def test_a_pending_reservation_is_written() -> None:
    assert fill(record()) == FillStep.WRITE


def test_a_live_slot_of_the_same_upload_is_a_duplicate() -> None:
    assert fill(record(SlotState.LIVE)) == FillStep.DUPLICATE
    assert fill(record(SlotState.LIVE), in_progress=True) == FillStep.DUPLICATE


@pytest.mark.parametrize(
    ("info", "kw"),
    [
        (None, {}),
        (record(upload_id="other"), {}),
        (record(generation=4), {}),
    ],
)
def test_a_stale_reservation_is_refused(info: SlotInfo | None, kw: dict[str, object]) -> None:
    with pytest.raises(SliceDeleted) as exc:
        fill(info, **kw)
    assert exc.value.context == {"slot": 7, "upload_id": "u1", "reason": "stale_reservation"}


@pytest.mark.parametrize("state", [SlotState.DELETED, SlotState.MOVED])
def test_a_dropped_reservation_is_refused(state: SlotState) -> None:
    with pytest.raises(SliceDeleted, match="dropped"):
        fill(record(state))


@pytest.mark.parametrize("kw", [{"length": 11}, {"crc": 98}])
def test_a_payload_unlike_its_reservation_is_refused(kw: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument, match="does not match its reservation"):
        fill(record(), **kw)


def test_a_fill_already_running_is_a_conflict() -> None:
    with pytest.raises(Conflict, match="in progress"):
        fill(record(), in_progress=True)


def test_check_payload() -> None:
    assert check_payload(b"abc", None, "u") == crc32c(b"abc")
    assert check_payload(b"abc", crc32c(b"abc"), "u") == crc32c(b"abc")
    with pytest.raises(InvalidArgument, match="does not match the declared"):
        check_payload(b"abc", 1, "u")
    with pytest.raises(PayloadTooLarge):
        check_payload(bytes(PAYLOAD_CAPACITY + 1), None, "u")


def test_only_a_small_new_upload_goes_inline() -> None:
    assert goes_inline(4096, inline_max=4096, carried=0, known=False)
    assert goes_inline(0, inline_max=4096, carried=INLINE_BUDGET - 1, known=False)
    assert not goes_inline(4097, inline_max=4096, carried=0, known=False)  # too large
    assert not goes_inline(1, inline_max=0, carried=0, known=False)  # switched off
    assert not goes_inline(1, inline_max=4096, carried=INLINE_BUDGET, known=False)  # budget
    assert not goes_inline(1, inline_max=4096, carried=0, known=True)  # a two-round retry
