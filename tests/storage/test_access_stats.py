"""The storage node's access counters: request kinds, rates, per-slice reads, the hot-slice
window and the persisted totals (pure, no I/O)."""

from __future__ import annotations

import pytest

from mydfs.storage.access_stats import AccessStats, op_kind

F1 = "a" * 32
F2 = "b" * 32


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("GET", "/slices/7", "read"),
        ("HEAD", "/slices/7", "read"),
        ("GET", "/files/a/b.txt", "read"),
        ("GET", "/chain/3", "read"),
        ("GET", "/slices/7/meta", "other"),
        ("PUT", "/slices", "write"),
        ("PUT", "/slices/9", "write"),
        ("POST", "/slices/reserve", "other"),
        ("POST", "/slices/9/relink", "edit"),
        ("DELETE", "/internal/slices/9", "edit"),
        ("PUT", "/internal/slices/9", "replicate"),
        ("GET", "/internal/slices/9", "other"),
        ("GET", "/metrics", "other"),
    ],
)
def test_op_kind(method: str, path: str, kind: str) -> None:
    assert op_kind(method, path) == kind


def test_rates_and_inflight() -> None:
    stats = AccessStats(0.0)
    for _ in range(4):
        stats.begin("GET", "/slices/1", None)
    stats.begin("PUT", "/slices", 1000)
    assert stats.inflight == 5
    for _ in range(5):
        stats.end()
    stats.slice_read(F1, 0, 1, 500)
    rates = stats.rates(2.0)
    assert rates["read_per_s"] == 2.0
    assert rates["write_per_s"] == 0.5
    assert rates["bytes_in_per_s"] == 500.0
    assert rates["bytes_out_per_s"] == 250.0
    assert stats.inflight == 0
    assert stats.rates(3.0)["read_per_s"] == 0.0  # a new reading starts at the previous one


def test_hot_ranks_by_recent_reads_and_the_window_slides() -> None:
    stats = AccessStats(0.0, window=60.0, buckets=12)  # 5 s buckets
    for _ in range(3):
        stats.slice_read(F1, 0, 10, 1)
    stats.slice_read(F2, 4, 11, 1)
    hot = stats.hot(10, 1.0)
    assert [(h["file_id"], h["index"], h["recent"]) for h in hot] == [(F1, 0, 3), (F2, 4, 1)]
    assert hot[0]["slot"] == 10 and hot[0]["since_start"] == 3 and hot[0]["total"] == 3
    assert len(stats.hot(1, 1.0)) == 1
    # 30 s later F2 is read 5 times: it leads; F1's reads are still in the window.
    for _ in range(5):
        stats.slice_read(F2, 4, 11, 1)
    hot = stats.hot(10, 30.0)
    assert [(h["file_id"], h["recent"]) for h in hot] == [(F2, 6), (F1, 3)]
    # Past the window nothing is hot, but the counters since start remain.
    assert stats.hot(10, 200.0) == []
    assert stats.reads_since_start() == 9


def test_totals_survive_a_restart() -> None:
    first = AccessStats(0.0)
    assert not first.dirty
    first.slice_read(F1, 0, 10, 1)
    first.slice_read(F1, 0, 10, 1)
    assert first.dirty
    blob = first.totals_blob()
    assert not first.dirty
    second = AccessStats(100.0)
    assert second.load_totals(blob) == 1
    second.slice_read(F1, 0, 12, 1)
    hot = second.hot(5, 101.0)
    assert hot[0]["since_start"] == 1 and hot[0]["total"] == 3 and hot[0]["slot"] == 12
    assert second.reads_total() == 3 and second.reads_since_start() == 1
    third = AccessStats(0.0)
    third.load_totals(second.totals_blob())
    assert third.reads_total() == 3


@pytest.mark.parametrize(
    "blob",
    [b"[]", b'{"version": 99}', b'{"version": 1, "slices": [["x", -1, 2]]}', b"not json"],
)
def test_bad_totals_files_are_refused(blob: bytes) -> None:
    with pytest.raises(ValueError):
        AccessStats(0.0).load_totals(blob)
