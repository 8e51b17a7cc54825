"""The nemesis checker: pure functions over a recorded history (no I/O, no clock).

Each path has one writing client, its owner, which applies its operations (``put``,
``delete`` and the in-place edits ``write``, ``append``, ``truncate``, ``insert``, ``cut``)
one at a time, so the path's versions form a single sequence. An operation that failed was
resolved by the owner with a ``stat`` afterwards (``applied``: true, false, or None when even
that failed; ``resolved_at``: when the stat answered). :func:`versions_of` replays each path's
applied operations on a bytes model (:func:`model.apply`): the list of its contents per
version, each with the time span in which it may have been the file's content (from the start
of the operation that made it to the end of the one that replaced it). Then :func:`check`
states:

* every read (whole or a range, by any client) returns exactly the content, or that range of
  the content, of one version of that path that may have existed during the read: never
  another path's bytes (``other_path``), never a mix (``mixed``) or bytes no version held
  (``garbage``), never a version already replaced when the read started (``stale``) or made
  after it ended (``phantom``); NotFound only where the path may have been absent
  (``missing``);
* the final read of each path equals its last version (``lost`` otherwise);
* the owner's own view agrees with the model (``model`` kinds): an acknowledged operation's
  new entry has the model's size and at least the next version number (a 301 compaction in
  between adds one of its own); an append landed at the old end; a refusal (NotFound,
  Conflict, InvalidArgument, AlreadyExists) changed nothing (a delete answered NotFound
  excepted: a retried delete may find its own work done); a failure's stat showed the
  operation applied or not (:mod:`workload`), nothing in between.

:func:`availability` measures, over fault windows, how much of the time a write had succeeded
within the last second, and the longest stretch without one, per fault kind.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from model import EDITS, WRITES, apply, classify, content, expected, sha

__all__ = ["availability", "check", "classify", "content", "versions_of"]

#: The kinds of violations: wrong reads first, then lost writes and final-state problems.
WRONG_READ_KINDS = ("other_path", "mixed", "garbage", "stale", "phantom", "missing")
#: Disagreements between the owner's view and the model.
MODEL_KINDS = ("refused_but_applied", "unaccounted", "size_mismatch", "wrong_offset")
#: Violations of the final listing: entries without a file, files without an entry.
LISTING_KINDS = ("phantom_entry", "dangling", "unlisted")
#: Results of a write operation that mean "refused, nothing changed".
REFUSED = ("not_found", "refused")


@dataclass
class Violation:
    kind: str
    path: str
    detail: str
    op: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        op = {k: v for k, v in self.op.items() if k != "got"}
        if "got" in self.op and self.op["got"] is not None:
            op["got"] = {k: v for k, v in self.op["got"].items() if k != "markers"}
        return {"kind": self.kind, "path": self.path, "detail": self.detail, "op": op}


@dataclass
class Result:
    violations: list[Violation]
    figures: dict[str, Any]

    def of(self, *kinds: str) -> list[Violation]:
        return [v for v in self.violations if v.kind in kinds]


@dataclass
class Version:
    """One content of a path (None: absent) and when it may have been current: from
    ``since`` (the start of the operation that made it) to ``until`` (the end, or the
    resolving stat, of the operation that replaced it). ``maybe``: made by an operation whose
    outcome stayed unknown. ``n``: its place in the path's sequence (0: before any write)."""

    n: int
    content: bytes | None
    since: float
    until: float = math.inf
    maybe: bool = False
    made_by: dict[str, Any] | None = None
    _hashes: dict[tuple[int, int | None], str] = field(default_factory=dict, repr=False)

    def hash_of(self, offset: int, length: int | None) -> str | None:
        if self.content is None:
            return None
        key = (offset, length)
        if key not in self._hashes:
            self._hashes[key] = sha(expected(self.content, offset, length))
        return self._hashes[key]


def _applied(op: dict[str, Any]) -> bool | None:
    if op["result"] == "ok":
        return True
    if op["op"] == "delete" and op["result"] == "not_found":
        return bool(op.get("applied", True))  # a retried delete may find its own work done
    applied = op.get("applied")
    return None if applied is None else bool(applied)


def versions_of(
    ops: Sequence[dict[str, Any]], violations: list[Violation] | None = None
) -> list[Version]:
    """Replay one path's write operations (in the owner's order) into its versions; the
    owner's disagreements with the model go to ``violations``."""
    out = violations if violations is not None else []
    versions = [Version(0, None, -math.inf)]
    number: int | None = 0  # the file's version number as the tracker counts it, when known
    for op in sorted(ops, key=lambda o: int(o["seq"])):
        path = op["path"]
        last = versions[-1]
        if last.maybe:
            out.append(Violation("unaccounted", path, "an operation after an unresolved one", op))
            continue
        applied = _applied(op)
        retried_delete = op["op"] == "delete" and op["result"] == "not_found"
        if op["result"] in REFUSED and applied and not retried_delete:
            out.append(Violation("refused_but_applied", path, f"{op['result']}, yet applied", op))
        if op.get("resolution") == "inconsistent":
            out.append(
                Violation("unaccounted", path, f"the stat after it showed {op.get('after')}", op)
            )
            applied = None
        if applied is False:
            continue
        try:
            new = apply(last.content, op)
        except ValueError as exc:  # an edit of an absent file acknowledged
            out.append(Violation("unaccounted", path, str(exc), op))
            continue
        made = Version(len(versions), new, float(op["start"]), made_by=op)
        if applied is None:
            made.maybe = True
            versions.append(made)
            continue
        last.until = float(op.get("resolved_at") or op["end"])
        versions.append(made)
        landed = op.get("landed") if op["op"] == "append" and op["result"] == "ok" else None
        if landed is not None and last.content is not None and int(landed) != len(last.content):
            detail = f"appended at {landed}, the end was {len(last.content)}"
            out.append(Violation("wrong_offset", path, detail, op))
        if new is None or last.content is None:
            number = 0 if new is None else 1
        elif number is not None:
            number += 1
        after = op.get("after")
        if after is not None and new is not None:
            if int(after["size"]) != len(new):
                out.append(
                    Violation("size_mismatch", path,
                              f"entry size {after['size']}, model {len(new)}", op)
                )  # fmt: skip
            # At least the next number: a compaction adds versions of its own (docs/space.md).
            if number is not None and int(after["version"]) < number:
                out.append(
                    Violation("unaccounted", path,
                              f"entry version {after['version']}, expected {number} or more", op)
                )  # fmt: skip
            number = int(after["version"])
    return versions


def _candidates(versions: Sequence[Version], start: float, end: float) -> list[Version]:
    return [v for v in versions if v.since < end and v.until > start]


def _check_read(read: dict[str, Any], versions: Sequence[Version]) -> Violation | None:
    path = read["path"]
    final = read["op"] == "final"
    cands = _candidates(versions, float(read["start"]), float(read["end"]))
    names = [f"v{v.n}{'?' if v.maybe else ''}" for v in cands]
    if read["result"] == "not_found":
        if any(v.content is None for v in cands):
            return None
        return Violation("lost" if final else "missing", path, f"NotFound, expected {names}", read)
    if read["result"] != "ok":
        return None
    got = read["got"]
    offset, length = int(read.get("offset") or 0), read.get("length")
    for v in cands:
        if v.hash_of(offset, length) == got["sha256"]:
            return None
    where = "" if length is None and not offset else f" [{offset}, +{length}]"
    foreign = [m for m in got.get("markers", []) if m[2] != path]
    if foreign:
        return Violation(
            "other_path", path, f"holds bytes of {foreign[0][2]} (op {foreign[0][:2]}){where}", read
        )
    for v in versions:
        if v.hash_of(offset, length) == got["sha256"]:
            if v.since >= float(read["end"]):
                return Violation("phantom", path, f"v{v.n}, made after the read{where}", read)
            kind = "lost" if final else "stale"
            return Violation(kind, path, f"v{v.n}, expected one of {names}{where}", read)
    sizes = {len(expected(v.content, offset, length)) for v in cands if v.content is not None}
    own = any(m[2] == path for m in got.get("markers", []))
    kind = "mixed" if own or got["size"] in sizes else "garbage"
    return Violation(
        kind, path, f"{got['size']} B equal to no version (expected {names}){where}", read
    )


def check(history: Iterable[dict[str, Any]]) -> Result:
    """Check a history: write operations (``op`` in :data:`model.WRITES`, ``client``,
    ``seq``, ``path``, their arguments, ``start``, ``end``, ``result`` ok / not_found /
    refused / error, ``applied`` and ``resolved_at`` for failures, ``after`` the new entry),
    reads (``read``, ``final``: ``offset``, ``length``, ``got`` from :func:`classify`) and
    final listings (``list``: ``names``)."""
    ops = sorted(history, key=lambda o: (o["start"], o["end"]))
    writes: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for op in ops:
        if op["op"] in WRITES:
            writes[op["path"]].append(op)
    violations: list[Violation] = []
    models = {path: versions_of(ws, violations) for path, ws in writes.items()}
    absent = [Version(0, None, -math.inf)]
    for op in ops:
        if op["op"] in ("read", "final"):
            v = _check_read(op, models.get(op["path"], absent))
            if v is not None:
                violations.append(v)
    violations += _check_listings(ops, writes)
    finals = {op["path"] for op in ops if op["op"] == "final"}
    for path, versions in models.items():
        if path not in finals and versions[-1].content is not None:
            violations.append(Violation("lost", path, "a written path was not read at the end"))
    return Result(violations, _figures(ops, violations, models))


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


def _figures(
    ops: Sequence[dict[str, Any]],
    violations: Sequence[Violation],
    models: dict[str, list[Version]],
) -> dict[str, Any]:
    count: dict[str, int] = defaultdict(int)
    errors: dict[str, int] = defaultdict(int)
    for op in ops:
        count[f"{op['op']}_{op['result']}"] += 1
        if op["result"] == "error":
            errors[f"{op['op']}: {str(op.get('error', '')).split(':')[0]}"] += 1
    kinds: dict[str, int] = defaultdict(int)
    for v in violations:
        kinds[v.kind] += 1
    workload = [o for o in ops if o["op"] not in ("final", "list")]
    acked = [o for o in workload if o["op"] in WRITES and o["result"] == "ok"]
    failed = [o for o in workload if o["op"] in WRITES and o["result"] == "error"]
    reads = [o for o in workload if o["op"] == "read" and o["result"] == "ok"]
    return {
        "ops": len(workload),
        "by_result": dict(sorted(count.items())),
        "acknowledged_writes": len(acked),
        "acknowledged_puts": sum(1 for o in acked if o["op"] == "put"),
        "acknowledged_edits": sum(1 for o in acked if o["op"] in EDITS),
        "edits_by_kind": {k: sum(1 for o in acked if o["op"] == k) for k in EDITS},
        "unknown_outcomes": {
            "applied": sum(1 for o in failed if o.get("applied") is True),
            "not_applied": sum(1 for o in failed if o.get("applied") is False),
            "unresolved": sum(1 for o in failed if o.get("applied") is None),
        },
        "versions": sum(len(v) - 1 for v in models.values()),
        "reads_ok": len(reads),
        "range_reads_ok": sum(1 for o in reads if o.get("length") is not None),
        "lost": kinds.get("lost", 0),
        "wrong_reads": sum(kinds.get(k, 0) for k in WRONG_READ_KINDS),
        "model_violations": sum(kinds.get(k, 0) for k in MODEL_KINDS),
        "listing_violations": sum(kinds.get(k, 0) for k in LISTING_KINDS),
        "violations_by_kind": dict(sorted(kinds.items())),
        "errors": dict(sorted(errors.items())),
    }


def availability(
    windows: Sequence[dict[str, Any]], acks: Sequence[float], horizon: float = 1.0
) -> dict[str, Any]:
    """Over the fault windows (``kind``, ``start``, ``end``): the fraction of their time with a
    write acknowledged within the last ``horizon`` seconds (over all windows, and over those
    of the storage nodes alone: a write needs the tracker, whose log is its commit point); per
    kind the longest stretch inside a window without an acknowledged write, and the longest
    **recovery**: from the end of the fault (the process restarted, resumed, the network
    healed) to the first write acknowledged after it."""
    times = sorted(acks)
    covered_total = length_total = 0.0
    storage_covered = storage_length = 0.0
    longest: dict[str, float] = defaultdict(float)
    recovery: dict[str, float] = defaultdict(float)
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
        if "tracker" not in w["kind"]:
            storage_covered += covered
            storage_length += end - start
        after = next((t for t in times if t >= end), None)
        back = None if after is None else round(after - end, 2)
        if back is not None:
            recovery[w["kind"]] = max(recovery[w["kind"]], back)
        kind_time[w["kind"]][0] += covered
        kind_time[w["kind"]][1] += end - start
        per_window.append(
            {
                **w,
                "availability": round(covered / (end - start), 3),
                "longest_gap": round(gap, 2),
                "recovery": back,
            }
        )
    return {
        "availability": round(covered_total / length_total, 3) if length_total else None,
        "availability_storage_faults": (
            round(storage_covered / storage_length, 3) if storage_length else None
        ),
        "availability_by_kind": {k: round(c / n, 3) for k, (c, n) in sorted(kind_time.items())},
        "longest_gap_by_kind": {k: round(v, 2) for k, v in sorted(longest.items())},
        "longest_recovery_by_kind": {k: round(v, 2) for k, v in sorted(recovery.items())},
        "windows": per_window,
    }
