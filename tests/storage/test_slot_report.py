"""The group's slot report (``GET /internal/report``, :func:`slot_report`, pure) leaves out the
slots a leader reserved ahead: they hold no slice, so the collector and ``df`` must not count
them as space in use; ``counts.ahead`` says how many there are."""

from __future__ import annotations

from mydfs.storage.group_commands import Reserve
from mydfs.storage.group_state import GroupState
from mydfs.storage.http_report import slot_report


def reserve(g: GroupState, upload_id: str, file_id: str) -> None:
    command = Reserve(
        upload_id=upload_id, file_id=file_id, slice_index=0, length=0, crc32c=0, now_ms=1
    )
    assert g.apply(command.to_dict())["ok"]


def test_slots_reserved_ahead_are_counted_apart_and_not_listed() -> None:
    g = GroupState(1)
    reserve(g, "up-1", "ab" * 16)
    for i in range(3):
        reserve(g, f"pool.g1n1.{i}", "0" * 32)
    report = slot_report(g, now_ms=5)
    assert [s["slot"] for s in report["slots"]] == [0]
    assert report["counts"]["pending"] == 1 and report["counts"]["ahead"] == 3
