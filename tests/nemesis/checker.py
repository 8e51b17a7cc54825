"""The nemesis checker: pure functions over a recorded history (no I/O, no clock).

File contents are derived from (client, seq): :func:`content` makes them, :func:`classify`
maps bytes read back to the write that made them, and tells whether they are exactly that
write's bytes (intact), a mix or garbage, and which path they were written to.

Each path has one writer (its client issues its puts and deletes one after another), so the
writes of a path are totally ordered. The consistency statement checked by :func:`check`:

* acknowledged means durable: the final read of a path returns the effect of its last
  acknowledged write (or of a later write whose outcome is unknown);
* a read returns exactly the bytes of one version of that path: the last write acknowledged
  before the read started, or a write that may have taken effect during the read (acknowledged
  or not, started before the read ended) — never another path's bytes, never a mix, never a
  version overwritten before the read started;
* NotFound is a right answer only if the path may have been absent (deleted, never written,
  or an overwrite/delete was in flight during the read);
* a failed write's outcome is unknown (it may or may not have taken effect).

:func:`availability` measures, over fault windows, how much of the time a write had succeeded
within the last second, and the longest stretch without one, per fault kind.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

MAGIC = b"NEM1"
#: The kinds of violations: wrong reads first, then lost writes and final-state problems.
WRONG_READ_KINDS = ("other_path", "mixed", "garbage", "stale", "phantom", "missing")
#: Violations of the final listing: entries without a file, files without an entry.
LISTING_KINDS = ("phantom_entry", "dangling", "unlisted")
ABSENT = "absent"


def content(client: int, seq: int, path: str, size: int) -> bytes:
    """The bytes write ``seq`` of ``client`` puts at ``path``: a header naming all three, then
    pseudo-random bytes from (client, seq), ``size`` bytes in all (at least the header)."""
    head = b"%s %d %d %d %s\n" % (MAGIC, client, seq, size, path.encode())
    body = random.Random(f"{client}:{seq}").randbytes(max(0, size - len(head)))
    return head + body


def classify(data: bytes) -> dict[str, Any]:
    """What ``data`` read back is: ``writer`` [client, seq], ``path``, ``intact`` (exactly that
    write's bytes), ``size`` and ``sha256``; ``writer`` is None for bytes no write made."""
    info: dict[str, Any] = {
        "writer": None,
        "path": None,
        "intact": False,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    line = data[:600].split(b"\n", 1)[0]
    parts = line.split(b" ", 4)
    if len(parts) != 5 or parts[0] != MAGIC:
        return info
    try:
        client, seq, size = int(parts[1]), int(parts[2]), int(parts[3])
        path = parts[4].decode()
    except ValueError:
        return info
    info.update(writer=[client, seq], path=path)
    info["intact"] = len(data) == size and data == content(client, seq, path, size)
    return info


@dataclass
class Violation:
    kind: str
    path: str
    detail: str
    op: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "detail": self.detail, "op": self.op}


@dataclass
class Result:
    violations: list[Violation]
    figures: dict[str, Any]

    def of(self, *kinds: str) -> list[Violation]:
        return [v for v in self.violations if v.kind in kinds]


def _effect(op: dict[str, Any]) -> str | tuple[int, int]:
    if op["op"] == "delete":
        return ABSENT
    return (int(op["client"]), int(op["seq"]))


def _acked(op: dict[str, Any]) -> bool:
    """Did the write surely take effect? (A delete answered NotFound leaves the path absent.)"""
    return op["result"] == "ok" or (op["op"] == "delete" and op["result"] == "not_found")


def allowed_effects(
    writes: Sequence[dict[str, Any]], start: float, end: float
) -> tuple[set[str | tuple[int, int]], bool]:
    """What a read of a path over [start, end] may return, given the path's writes in issue
    order: (the allowed effects, whether a write overlapped the read or a delete's outcome is
    unknown, either of which makes NotFound a possible answer)."""
    last = -1
    for i, w in enumerate(writes):
        if _acked(w) and w["end"] < start:
            last = i
    allowed: set[str | tuple[int, int]] = set()
    if last >= 0:
        allowed.add(_effect(writes[last]))
    else:
        allowed.add(ABSENT)
    overlapping = False
    for w in writes[last + 1 :]:
        if w["start"] >= end:
            continue
        allowed.add(_effect(w))  # it may have taken effect before or during the read
        if w["end"] > start or (w["op"] == "delete" and not _acked(w)):
            overlapping = True
    return allowed, overlapping


def _check_read(
    read: dict[str, Any], writes: Sequence[dict[str, Any]], put_paths: dict[tuple[int, int], str]
) -> Violation | None:
    path = read["path"]
    allowed, overlapping = allowed_effects(writes, read["start"], read["end"])
    final = read["op"] == "final"
    if read["result"] == "not_found":
        if ABSENT in allowed or overlapping:
            return None
        kind = "lost" if final else "missing"
        return Violation(kind, path, f"NotFound, expected one of {sorted(map(str, allowed))}", read)
    if read["result"] != "ok":
        return None
    got = read["got"]
    writer = tuple(got["writer"]) if got.get("writer") is not None else None
    if writer is None:
        return Violation("garbage", path, f"bytes no write made ({got['size']} B)", read)
    if got.get("path") != path or put_paths.get(writer) not in (None, path):
        return Violation(
            "other_path", path, f"returned the bytes of {got.get('path')} (write {writer})", read
        )
    if not got.get("intact"):
        return Violation("mixed", path, f"header of write {writer} but not its bytes", read)
    if writer not in put_paths:
        return Violation("phantom", path, f"write {writer} was never issued", read)
    if writer in allowed:
        return None
    issued = next((w for w in writes if _effect(w) == writer), None)
    if issued is not None and issued["start"] >= read["end"]:
        return Violation("phantom", path, f"write {writer} started after the read ended", read)
    kind = "lost" if final else "stale"
    return Violation(
        kind, path, f"version {writer}, expected one of {sorted(map(str, allowed))}", read
    )


def check(history: Iterable[dict[str, Any]]) -> Result:
    """Check a history (ops with ``op`` put/delete/read/final, ``client``, ``seq``, ``path``,
    ``start``, ``end``, ``result`` ok/not_found/error, and ``got`` for reads)."""
    ops = sorted(history, key=lambda o: (o["start"], o["end"]))
    writes: dict[str, list[dict[str, Any]]] = defaultdict(list)
    put_paths: dict[tuple[int, int], str] = {}
    for op in ops:
        if op["op"] in ("put", "delete"):
            writes[op["path"]].append(op)
        if op["op"] == "put":
            put_paths[(int(op["client"]), int(op["seq"]))] = op["path"]
    violations = [
        v
        for op in ops
        if op["op"] in ("read", "final")
        and (v := _check_read(op, writes[op["path"]], put_paths)) is not None
    ]
    violations += _check_listings(ops, writes)
    finals = {op["path"] for op in ops if op["op"] == "final"}
    for path, ws in writes.items():
        acked = [w for w in ws if _acked(w)]
        if path not in finals and acked and acked[-1]["op"] == "put":
            violations.append(Violation("lost", path, "a written path was not read at the end"))
    return Result(violations, _figures(ops, violations))


def _check_listings(
    ops: Sequence[dict[str, Any]], writes: dict[str, list[dict[str, Any]]]
) -> list[Violation]:
    """At the end, a folder lists exactly the files whose final read found them: a listed
    file that was never put, or that reads NotFound, is a half-made entry; a file that reads
    but is not listed is missing from its folder."""
    found = {o["path"]: o["result"] for o in ops if o["op"] == "final"}
    out = []
    for op in ops:
        if op["op"] != "list" or op["result"] != "ok":
            continue
        listed = {f"{op['path']}/{name}" for name in op["names"]}
        for path in sorted(listed):
            if not any(w["op"] == "put" for w in writes.get(path, [])):
                out.append(Violation("phantom_entry", path, "listed, but never written", op))
            elif found.get(path) == "not_found":
                out.append(Violation("dangling", path, "listed, but reads NotFound", op))
        for path, result in sorted(found.items()):
            in_folder = path.rsplit("/", 1)[0] == op["path"]
            if in_folder and result == "ok" and path not in listed:
                out.append(
                    Violation("unlisted", path, "reads, but its folder does not list it", op)
                )
    return out


def _figures(ops: Sequence[dict[str, Any]], violations: Sequence[Violation]) -> dict[str, Any]:
    count: dict[str, int] = defaultdict(int)
    for op in ops:
        count[f"{op['op']}_{op['result']}"] += 1
    errors: dict[str, int] = defaultdict(int)
    for op in ops:
        if op["result"] == "error":
            errors[f"{op['op']}: {str(op.get('error', '')).split(':')[0]}"] += 1
    kinds: dict[str, int] = defaultdict(int)
    for v in violations:
        kinds[v.kind] += 1
    workload = [o for o in ops if o["op"] not in ("final", "list")]
    return {
        "ops": len(workload),
        "by_result": dict(sorted(count.items())),
        "acknowledged_writes": sum(
            1 for o in workload if o["op"] in ("put", "delete") and o["result"] == "ok"
        ),
        "acknowledged_puts": sum(1 for o in workload if o["op"] == "put" and o["result"] == "ok"),
        "reads_ok": sum(1 for o in workload if o["op"] == "read" and o["result"] == "ok"),
        "lost": kinds.get("lost", 0),
        "wrong_reads": sum(kinds.get(k, 0) for k in WRONG_READ_KINDS),
        "listing_violations": sum(kinds.get(k, 0) for k in LISTING_KINDS),
        "violations_by_kind": dict(sorted(kinds.items())),
        "errors": dict(sorted(errors.items())),
    }


def availability(
    windows: Sequence[dict[str, Any]], acks: Sequence[float], horizon: float = 1.0
) -> dict[str, Any]:
    """Over the fault windows (``kind``, ``start``, ``end``): the fraction of their time with a
    write acknowledged within the last ``horizon`` seconds, and per kind the longest stretch
    inside a window without an acknowledged write."""
    times = sorted(acks)
    covered_total = length_total = 0.0
    longest: dict[str, float] = defaultdict(float)
    kind_time: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    per_window = []
    for w in windows:
        start, end = float(w["start"]), float(w["end"])
        if end <= start:
            continue
        covered = 0.0
        cursor = start
        for t in times:
            lo, hi = max(t, cursor), min(t + horizon, end)
            if hi > lo:
                covered += hi - lo
                cursor = hi
        inside = [t for t in times if start <= t <= end]
        marks = [start, *inside, end]
        gap = max(b - a for a, b in itertools.pairwise(marks))
        longest[w["kind"]] = max(longest[w["kind"]], gap)
        covered_total += covered
        length_total += end - start
        kind_time[w["kind"]][0] += covered
        kind_time[w["kind"]][1] += end - start
        per_window.append(
            {**w, "availability": round(covered / (end - start), 3), "longest_gap": round(gap, 2)}
        )
    return {
        "availability": round(covered_total / length_total, 3) if length_total else None,
        "availability_by_kind": {k: round(c / n, 3) for k, (c, n) in sorted(kind_time.items())},
        "longest_gap_by_kind": {k: round(v, 2) for k, v in sorted(longest.items())},
        "windows": per_window,
    }
