"""The nemesis checker on hand-made histories: each kind of violation is found, and what the
consistency statement allows is not flagged."""

from __future__ import annotations

from typing import Any

from checker import availability, check, classify, content


def put(
    client: int, seq: int, path: str, start: float, end: float, result: str = "ok"
) -> dict[str, Any]:
    return {"op": "put", "client": client, "seq": seq, "path": path, "size": 300,
            "start": start, "end": end, "result": result}  # fmt: skip


def delete(
    client: int, seq: int, path: str, start: float, end: float, result: str = "ok"
) -> dict[str, Any]:
    return {"op": "delete", "client": client, "seq": seq, "path": path,
            "start": start, "end": end, "result": result}  # fmt: skip


def read(
    path: str, start: float, end: float, data: bytes | None, op: str = "read"
) -> dict[str, Any]:
    got = None if data is None else classify(data)
    return {"op": op, "client": 9, "seq": 0, "path": path, "start": start, "end": end,
            "result": "not_found" if data is None else "ok", "got": got}  # fmt: skip


A, B = "/nem/c0/f0", "/nem/c1/f0"
V1, V2, W1 = content(0, 1, A, 300), content(0, 2, A, 300), content(1, 1, B, 300)


def kinds(history: list[dict[str, Any]]) -> list[str]:
    return [v.kind for v in check(history).violations]


def test_content_maps_back_to_its_write() -> None:
    got = classify(V1)
    assert got["writer"] == [0, 1] and got["path"] == A and got["intact"]
    assert classify(b"random bytes")["writer"] is None
    mixed = V1[:150] + V2[150:]
    assert classify(mixed)["writer"] == [0, 1] and not classify(mixed)["intact"]


def test_a_clean_history_passes() -> None:
    history = [
        put(0, 1, A, 0, 1),
        read(A, 2, 3, V1),
        put(0, 2, A, 4, 5),
        read(A, 4.5, 4.8, V1),  # concurrent with the overwrite: the old version is fine
        read(A, 4.6, 4.9, V2),  # ... and so is the new one
        read(A, 6, 7, V2),
        put(1, 1, B, 0, 1),
        read(B, 2, 3, W1),
        read(A, 10, 11, V2, op="final"),
        read(B, 10, 11, W1, op="final"),
    ]
    assert kinds(history) == []
    figures = check(history).figures
    assert figures["acknowledged_writes"] == 3 and figures["lost"] == 0
    assert figures["wrong_reads"] == 0


def test_a_read_returning_another_paths_bytes_is_flagged() -> None:
    history = [put(0, 1, A, 0, 1), put(1, 1, B, 0, 1), read(A, 2, 3, W1)]
    assert "other_path" in kinds(history)


def test_a_mixed_read_is_flagged() -> None:
    history = [put(0, 1, A, 0, 1), put(0, 2, A, 2, 3), read(A, 2.5, 2.8, V1[:150] + V2[150:])]
    assert "mixed" in kinds(history)


def test_garbage_and_a_version_that_was_never_written_are_flagged() -> None:
    assert "garbage" in kinds([put(0, 1, A, 0, 1), read(A, 2, 3, b"x" * 300)])
    assert "phantom" in kinds([put(0, 1, A, 0, 1), read(A, 2, 3, content(0, 7, A, 300))])


def test_a_lost_acknowledged_write_is_flagged() -> None:
    history = [put(0, 1, A, 0, 1), put(0, 2, A, 2, 3), read(A, 10, 11, V1, op="final")]
    assert kinds(history) == ["lost"]
    assert kinds([put(0, 1, A, 0, 1), read(A, 10, 11, None, op="final")]) == ["lost"]
    assert kinds([put(0, 1, A, 0, 1)]) == ["lost"]  # never read back at the end


def test_a_failed_write_has_an_unknown_outcome() -> None:
    failed = put(0, 2, A, 2, 3, result="error")
    assert kinds([put(0, 1, A, 0, 1), failed, read(A, 10, 11, V1, op="final")]) == []
    assert kinds([put(0, 1, A, 0, 1), failed, read(A, 10, 11, V2, op="final")]) == []


def test_stale_and_missing_reads_are_flagged() -> None:
    end = read(A, 9, 9.5, V2, op="final")
    assert kinds([put(0, 1, A, 0, 1), put(0, 2, A, 2, 3), read(A, 4, 5, V1), end]) == ["stale"]
    end = read(A, 9, 9.5, V1, op="final")
    assert kinds([put(0, 1, A, 0, 1), read(A, 2, 3, None), end]) == ["missing"]


def test_deletes() -> None:
    # After an acknowledged delete NotFound is right, the old bytes are stale.
    assert kinds([put(0, 1, A, 0, 1), delete(0, 2, A, 2, 3), read(A, 4, 5, None)]) == []
    assert kinds([put(0, 1, A, 0, 1), delete(0, 2, A, 2, 3), read(A, 4, 5, V1)]) == ["stale"]
    # Concurrent with a delete, either answer.
    assert kinds([put(0, 1, A, 0, 1), delete(0, 2, A, 2, 4), read(A, 3, 3.5, V1)]) == []
    assert kinds([put(0, 1, A, 0, 1), delete(0, 2, A, 2, 4), read(A, 3, 3.5, None)]) == []
    # A delete that failed may have happened.
    history = [put(0, 1, A, 0, 1), delete(0, 2, A, 2, 3, "error"), read(A, 9, 9.5, None, "final")]
    assert kinds(history) == []
    # A put after the delete brings the path back.
    history = [put(0, 1, A, 0, 1), delete(0, 2, A, 2, 3), put(0, 3, A, 4, 5),
               read(A, 9, 9.5, None, "final")]  # fmt: skip
    assert kinds(history) == ["lost"]


def listing(folder: str, names: list[str]) -> dict[str, Any]:
    return {"op": "list", "client": -1, "seq": 0, "path": folder, "start": 20, "end": 21,
            "result": "ok", "names": names}  # fmt: skip


def test_the_final_listing_matches_the_final_reads() -> None:
    base = [put(0, 1, A, 0, 1), read(A, 10, 11, V1, op="final")]
    assert kinds([*base, listing("/nem/c0", ["f0"])]) == []
    assert kinds([*base, listing("/nem/c0", [])]) == ["unlisted"]
    assert kinds([*base, listing("/nem/c0", ["f0", "f9"])]) == ["phantom_entry"]
    gone = [put(0, 1, A, 0, 1), delete(0, 2, A, 2, 3), read(A, 10, 11, None, op="final")]
    assert kinds([*gone, listing("/nem/c0", ["f0"])]) == ["dangling"]
    assert check([*gone, listing("/nem/c0", ["f0"])]).figures["listing_violations"] == 1


def test_availability_over_fault_windows() -> None:
    windows = [{"kind": "kill_node", "start": 10.0, "end": 20.0}]
    acks = [9.5, 11.0, 12.0, 18.0]
    got = availability(windows, acks)
    # Covered: [10, 10.5] from 9.5, [11, 13] from 11 and 12, [18, 19] from 18: 3.5 of 10 s.
    assert got["availability"] == 0.35
    assert got["longest_gap_by_kind"] == {"kill_node": 6.0}
    assert got["availability_by_kind"] == {"kill_node": 0.35}
    assert availability([], acks)["availability"] is None
