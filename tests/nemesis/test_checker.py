"""The nemesis checker on hand-made histories: each kind of violation is found, and what the
consistency statement allows is not flagged. Versions are replayed from the operations
(:func:`model.apply`), so the reads below name the bytes of a version by rebuilding it."""

from __future__ import annotations

from typing import Any

from checker import availability, check, classify, versions_of
from model import apply, content, markers

A, B = "/nem/c0/f0", "/nem/c1/f0"


def w(kind: str, seq: int, start: float, end: float, path: str = A, result: str = "ok",
      **args: Any) -> dict[str, Any]:  # fmt: skip
    client = 0 if path == A else 1
    op = {"op": kind, "client": client, "seq": seq, "path": path, "start": start, "end": end,
          "result": result, **args}  # fmt: skip
    return op


def read(path: str, start: float, end: float, data: bytes | None, offset: int = 0,
         length: int | None = None, op: str = "read") -> dict[str, Any]:  # fmt: skip
    got = None if data is None else classify(data)
    return {"op": op, "client": 9, "seq": 0, "path": path, "start": start, "end": end,
            "offset": offset, "length": length,
            "result": "not_found" if data is None else "ok", "got": got}  # fmt: skip


def final(path: str, data: bytes | None) -> dict[str, Any]:
    return read(path, 100, 101, data, op="final")


def contents(*ops: dict[str, Any]) -> list[bytes]:
    """Each version's content after the ops in order (all applied, none a delete)."""
    out: list[bytes] = []
    cur: bytes | None = None
    for op in ops:
        cur = apply(cur, op)
        assert cur is not None
        out.append(cur)
    return out


def kinds(history: list[dict[str, Any]]) -> list[str]:
    return [v.kind for v in check(history).violations]


PUT = w("put", 1, 0, 1, size=3000)
WRITE = w("write", 2, 2, 3, offset=100, n=50)
APPEND = w("append", 3, 4, 5, n=700, landed=3000)
INSERT = w("insert", 4, 6, 7, offset=10, n=20)
CUT = w("cut", 5, 8, 9, offset=500, length=1000)
TRUNC = w("truncate", 6, 10, 11, size=5000)
V1, V2, V3, V4, V5, V6 = contents(PUT, WRITE, APPEND, INSERT, CUT, TRUNC)


def test_content_is_exact_and_its_headers_check() -> None:
    data = content(0, 7, A, 5000)
    assert len(data) == 5000 and len(content(0, 7, A, 10)) == 10
    assert markers(data) == [(0, 7, A)]
    assert markers(data[:30] + data[31:]) == []  # a header cut in two no longer counts
    assert markers(content(1, 2, B, 300) + data)[0] == (1, 2, B)


def test_the_model_applies_each_edit() -> None:
    d = content(0, 2, A, 50)
    assert V1[:100] + d + V1[150:] == V2
    assert V2 + content(0, 3, A, 700) == V3
    assert V3[:10] + content(0, 4, A, 20) + V3[10:] == V4
    assert V4[:500] + V4[1500:] == V5
    assert V5 + bytes(5000 - len(V5)) == V6
    gap = apply(b"abc", w("write", 9, 0, 1, offset=6, n=2))
    assert gap == b"abc\0\0\0" + content(0, 9, A, 2)
    assert apply(b"abcdef", w("cut", 9, 0, 1, offset=1, length=2)) == b"adef"
    assert apply(b"abcdef", w("truncate", 9, 0, 1, size=2)) == b"ab"
    assert apply(b"abc", w("delete", 9, 0, 1)) is None


def test_a_clean_history_with_edits_passes() -> None:
    after = {"file_id": "x", "version": 2, "size": len(V2)}
    history = [
        PUT,
        read(A, 1.5, 1.8, V1),
        {**WRITE, "after": after},
        read(A, 2.5, 2.8, V1),  # concurrent with the write: the old version is fine
        read(A, 2.6, 2.9, V2),  # ... and so is the new one
        read(A, 3.5, 3.8, V2[100:160], offset=100, length=60),  # a range of the current one
        APPEND, INSERT, CUT, TRUNC,
        read(A, 8.5, 8.6, V4),
        read(A, 10.5, 10.6, V6[4000:], offset=4000, length=2000),  # a range past the end: short
        final(A, V6),
    ]  # fmt: skip
    assert kinds(history) == []
    figures = check(history).figures
    assert figures["acknowledged_edits"] == 5 and figures["acknowledged_puts"] == 1
    assert figures["edits_by_kind"]["append"] == 1 and figures["range_reads_ok"] == 2
    assert figures["versions"] == 6 and figures["wrong_reads"] == figures["lost"] == 0


def test_a_mixed_read_is_caught() -> None:
    base = [PUT, WRITE, final(A, V2)]
    half = 120  # inside the written range: the first part old, the rest new
    assert kinds([*base, read(A, 2.5, 2.8, V1[:half] + V2[half:])]) == ["mixed"]
    # The same mix in a range read.
    assert kinds([*base, read(A, 2.5, 2.8, V1[90:half] + V2[half:200], 90, 110)]) == ["mixed"]
    # Bytes of the right length that no version holds.
    assert kinds([*base, read(A, 2.5, 2.8, bytes(len(V2)))]) == ["mixed"]
    assert kinds([*base, read(A, 2.5, 2.8, b"junk")]) == ["garbage"]


def test_another_paths_bytes_are_caught() -> None:
    put_b = w("put", 1, 0, 1, path=B, size=3000)
    (w1,) = contents(put_b)
    base = [PUT, put_b, final(A, V1), final(B, w1)]
    assert kinds([*base, read(A, 2, 3, w1)]) == ["other_path"]
    assert kinds([*base, read(A, 2, 3, w1[:200], 0, 200)]) == ["other_path"]


def test_stale_and_phantom_versions_are_caught() -> None:
    base = [PUT, WRITE, APPEND, final(A, V3)]
    assert kinds([*base, read(A, 3.5, 3.8, V1)]) == ["stale"]  # the write ended at 3
    assert kinds([*base, read(A, 1.2, 1.5, V3)]) == ["phantom"]  # the append started at 4
    assert kinds([*base, read(A, 3.5, 3.8, V1[:100], 0, 100)]) == []  # the same bytes in V2


def test_a_lost_edit_is_caught() -> None:
    assert kinds([PUT, WRITE, final(A, V1)]) == ["lost"]
    assert kinds([PUT, WRITE, final(A, None)]) == ["lost"]
    assert kinds([PUT, WRITE]) == ["lost"]  # never read back at the end


def test_an_unknown_outcome_resolved_by_the_owners_stat() -> None:
    failed = {**WRITE, "result": "error", "end": 3}
    applied = {**failed, "applied": True, "resolved_at": 4.5}
    # Applied: possible from its start to the stat that saw it; the old one until then.
    history = [PUT, applied, read(A, 4.0, 4.2, V1), read(A, 2.1, 2.2, V2), final(A, V2)]
    assert kinds(history) == []
    assert kinds([PUT, applied, read(A, 4.6, 4.7, V1), final(A, V2)]) == ["stale"]
    assert kinds([PUT, applied, final(A, V1)]) == ["lost"]
    # Not applied: its bytes are never right.
    not_applied = {**failed, "applied": False, "resolved_at": 4.5}
    assert kinds([PUT, not_applied, final(A, V1)]) == []
    assert kinds([PUT, not_applied, read(A, 2.5, 2.6, V2), final(A, V1)]) == ["mixed"]
    # Unresolved (the stat never answered): either, to the end.
    unresolved = {**failed, "applied": None}
    assert kinds([PUT, unresolved, final(A, V1)]) == []
    assert kinds([PUT, unresolved, final(A, V2)]) == []
    figures = check([PUT, applied, not_applied, unresolved]).figures
    assert figures["unknown_outcomes"] == {"applied": 1, "not_applied": 1, "unresolved": 1}


def test_the_owners_view_must_agree_with_the_model() -> None:
    end = final(A, V2)
    wrong_size = {**WRITE, "after": {"file_id": "x", "version": 2, "size": 1}}
    assert kinds([PUT, wrong_size, end]) == ["size_mismatch"]
    went_back = {**WRITE, "after": {"file_id": "x", "version": 1, "size": len(V2)}}
    assert kinds([PUT, went_back, end]) == ["unaccounted"]
    compacted_between = {**WRITE, "after": {"file_id": "x", "version": 3, "size": len(V2)}}
    assert kinds([PUT, compacted_between, end]) == []
    refused = {**WRITE, "result": "refused", "applied": True, "resolved_at": 3.5}
    assert kinds([PUT, refused, end]) == ["refused_but_applied"]
    odd = {**WRITE, "result": "error", "applied": None, "resolution": "inconsistent"}
    assert "unaccounted" in kinds([PUT, odd, end])
    assert kinds([PUT, WRITE, {**APPEND, "landed": 7}, final(A, V3)]) == ["wrong_offset"]
    # A versions' replay lists them in order, absent first.
    versions = versions_of([PUT, WRITE])
    assert [v.content for v in versions] == [None, V1, V2]
    assert versions[1].until == WRITE["end"] and versions[2].until == float("inf")


def test_deletes_and_missing_reads() -> None:
    delete = w("delete", 2, 2, 3)
    gone = [PUT, delete, final(A, None)]
    assert kinds([*gone, read(A, 4, 5, None)]) == []
    assert kinds([*gone, read(A, 4, 5, V1)]) == ["stale"]
    assert kinds([*gone, read(A, 2.5, 2.6, V1), read(A, 2.5, 2.6, None)]) == []
    assert kinds([PUT, read(A, 2, 3, None), final(A, V1)]) == ["missing"]
    assert kinds([read(A, 2, 3, None)]) == []  # never written
    again = w("put", 3, 4, 5, size=100)
    assert kinds([PUT, delete, again, final(A, None)]) == ["lost"]
    # A delete answered NotFound (a retry finding its own work done) that the stat confirms.
    found_done = {**delete, "result": "not_found", "applied": True, "resolved_at": 3.5}
    assert kinds([PUT, found_done, final(A, None)]) == []


def listing(folder: str, names: list[str]) -> dict[str, Any]:
    return {"op": "list", "client": -1, "seq": 0, "path": folder, "start": 20, "end": 21,
            "result": "ok", "names": names}  # fmt: skip


def test_the_final_listing_matches_the_final_reads() -> None:
    base = [PUT, final(A, V1)]
    assert kinds([*base, listing("/nem/c0", ["f0"])]) == []
    assert kinds([*base, listing("/nem/c0", [])]) == ["unlisted"]
    assert kinds([*base, listing("/nem/c0", ["f0", "f9"])]) == ["phantom_entry"]
    gone = [PUT, w("delete", 2, 2, 3), final(A, None)]
    assert kinds([*gone, listing("/nem/c0", ["f0"])]) == ["dangling"]
    assert check([*gone, listing("/nem/c0", ["f0"])]).figures["listing_violations"] == 1


def test_availability_over_fault_windows() -> None:
    windows = [{"kind": "kill_node", "start": 10.0, "end": 20.0}]
    acks = [9.5, 11.0, 12.0, 18.0, 21.0]
    got = availability(windows, acks)
    # Covered: [10, 10.5] from 9.5, [11, 13] from 11 and 12, [18, 19] from 18: 3.5 of 10 s.
    assert got["availability"] == 0.35
    assert got["longest_gap_by_kind"] == {"kill_node": 6.0}
    assert got["availability_by_kind"] == {"kill_node": 0.35}
    assert got["availability_storage_faults"] == 0.35
    assert got["longest_recovery_by_kind"] == {"kill_node": 1.0}  # end 20, next ack at 21
    assert got["windows"][0]["recovery"] == 1.0
    assert availability([], acks)["availability"] is None
    # a tracker fault counts in the whole figure only; no ack after a window: no recovery
    both = [*windows, {"kind": "kill_tracker", "start": 30.0, "end": 40.0}]
    got = availability(both, [*acks, 21.0])
    assert got["availability"] == round(3.5 / 20, 3)
    assert got["availability_storage_faults"] == 0.35
    assert got["longest_recovery_by_kind"] == {"kill_node": 1.0}
    assert got["windows"][1]["recovery"] is None
