"""The one slot state enum: its JSON names, its header bytes, and both import paths."""

from __future__ import annotations

import pytest

from mydfs.storage import format as fmt
from mydfs.storage import group_state
from mydfs.storage.slot_state import RECORD_STATES, SlotState


def test_both_import_paths_name_the_same_enum() -> None:
    assert fmt.SlotState is SlotState
    assert group_state.SlotState is SlotState


def test_wire_forms_are_fixed() -> None:
    names = {s: s.value for s in SlotState}
    assert names == {
        SlotState.FREE: "free",
        SlotState.PENDING: "pending",
        SlotState.LIVE: "live",
        SlotState.MOVED: "moved",
        SlotState.DELETED: "deleted",
    }
    assert [s.byte for s in SlotState] == [0, 1, 2, 3, 4]
    for state in SlotState:
        assert SlotState.from_byte(state.byte) is state
        assert SlotState(state.value) is state


@pytest.mark.parametrize("byte", [-1, 5, 255])
def test_unknown_bytes_are_refused(byte: int) -> None:
    with pytest.raises(ValueError):
        SlotState.from_byte(byte)


def test_a_group_record_is_never_free() -> None:
    assert SlotState.FREE not in RECORD_STATES
    assert set(RECORD_STATES) == set(SlotState) - {SlotState.FREE}
