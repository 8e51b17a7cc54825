"""Compaction of 301 redirects: which chains to rewrite, and the decision (pure, no I/O).

An edit leaves a 301 where a chain entered the slices it replaced (``docs/transactions.md``):
the slice before (or the tracker's head) still points at the 301, which points at the
replacement. Compaction rewrites the chain around its redirects and frees them:

    before:  head -> [p] -> [s: 301] -> [t] -> ...        after:  head -> [p] -> [t] -> ...
    before:  head -> [s: 301] -> [t] -> ...                after:  head -> [t] -> ...

It runs as an edit of its own, coordinated by the tracker (:mod:`mydfs.tracker.compactor`):
every group holding ``p``, ``s`` or ``t`` prepares it (``lock`` all three, ``keep`` ``p`` with
its next pointer set to ``t`` and ``t`` with its own, so ``s`` alone is freed at commit;
``docs/group_state.md``), then the tracker decides it with a new version and a new layout (an
edit planned on the old chain is refused ``layout_changed`` and planned again), moving the head
when the head was the 301. The content of the file never changes.

* :func:`plan` picks, from the groups' slot reports and the live files, the files to compact:
  idle for ``Rules.idle`` seconds, with at least ``Rules.file_redirects`` 301s, or with a 301 in
  a group that holds at least ``Rules.group_redirects`` of them; and only files whose chain the
  reports show whole, unlocked, and at exactly the versions of the tracker's entry.
* :func:`decide` is the commit decision: only on the entry the plan was made on (same file id,
  same version), else nothing (the plan is stale; a later pass plans again).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from mydfs.common.location import Location
from mydfs.tracker.orphans import LIVE, MOVED, Report, Slot
from mydfs.tracker.records import MAX_U32, Decision, FileEntry, Outcome, merge_versions

SlotRef = tuple[int, int]
Keep = tuple[int, int, Location | None]


@dataclass(frozen=True, slots=True)
class Rules:
    file_redirects: int
    """Compact a file whose chain has at least this many 301s."""
    group_redirects: int
    """... or that has a 301 in a group holding at least this many 301 slots."""
    idle: float
    """Seconds since the file last changed (its mtime) before it is compacted."""
    max_redirects: int = 256
    """At most this many 301s released by one compaction (one prepare per group stays small)."""


@dataclass(frozen=True, slots=True)
class Part:
    """What one group prepares: the slots locked (``lock``), and of those the ones kept with
    their next pointer after the commit (``keep``); the others (the 301s) are freed."""

    group: int
    lock: tuple[SlotRef, ...]
    keep: tuple[Keep, ...]

    def body(self, file_id: str) -> dict[str, object]:
        """The body of ``POST /edits/{txn}/prepare``."""
        return {
            "file_id": file_id,
            "lock": [list(ref) for ref in self.lock],
            "move": None,
            "new": [],
            "keep": [[s, g, None if n is None else [n.group, n.slot]] for s, g, n in self.keep],
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """One compaction: the file, the entry version it was planned on, the 301s it frees."""

    path: str
    file_id: str
    base: int
    head: Location
    """The file's head after the compaction (its first live slice)."""
    redirects: tuple[Location, ...]
    parts: tuple[Part, ...]

    @property
    def groups(self) -> tuple[int, ...]:
        return tuple(p.group for p in self.parts)


@dataclass(frozen=True, slots=True)
class _Hop:
    pred: Slot | None  # None: the tracker's head points at the 301
    moved: Slot
    target: Slot


def _loc(rec: Slot) -> Location:
    return Location(rec.group, rec.slot)


def _walk(reports: Mapping[int, Report], entry: FileEntry) -> list[_Hop] | None:
    """The 301s of the file's chain with their predecessors and targets, or None when the
    reports do not show the chain whole, as the file's, unlocked and settled."""
    hops: list[_Hop] = []
    pred: Slot | None = None
    current = entry.head
    steps = 0
    limit = 2 * entry.slices + 2
    while current is not None:
        steps += 1
        if steps > limit:
            return None  # longer than the file: a loop, or a chain being rewritten
        rec = _slot(reports, current, entry.file_id)
        if rec is None:
            return None
        if rec.state == MOVED:
            target = None if rec.target is None else _slot(reports, rec.target, entry.file_id)
            if target is None or target.state != LIVE:
                return None  # a 301 leads to one live slice, else this is no settled chain
            hops.append(_Hop(pred, rec, target))
            rec = target
        elif rec.state != LIVE:
            return None
        pred = rec
        current = rec.next
    return hops


def _slot(reports: Mapping[int, Report], loc: Location, file_id: str) -> Slot | None:
    report = reports.get(loc.group)
    rec = None if report is None else report.slots.get(loc.slot)
    if rec is None or rec.file_id != file_id or rec.locked:
        return None
    return rec


def redirect_counts(reports: Mapping[int, Report]) -> Counter[int]:
    """301 slots per group."""
    return Counter(
        r.group for report in reports.values() for r in report.slots.values() if r.state == MOVED
    )


def plan(
    reports: Mapping[int, Report],
    files: Iterable[tuple[str, FileEntry]],
    now: float,
    rules: Rules,
    counts: Counter[int] | None = None,
) -> list[Plan]:
    """The compactions to run, most redirects first (``counts``: :func:`redirect_counts` of
    ``reports``, when the caller has it already)."""
    counts = redirect_counts(reports) if counts is None else counts
    heavy = {g for g, n in counts.items() if n >= rules.group_redirects}
    plans: list[Plan] = []
    for path, entry in files:
        if entry.head is None or now - entry.mtime < rules.idle:
            continue
        hops = _walk(reports, entry)
        if not hops:
            continue
        if len(hops) < rules.file_redirects and not any(h.moved.group in heavy for h in hops):
            continue
        hops = hops[: rules.max_redirects]
        # Each group's view must be of the entry's version (no commit of the file pending
        # there), so the chain walked is the one the entry describes.
        seen = [r for h in hops for r in (h.pred, h.moved, h.target) if r is not None]
        if any(r.file_version != entry.version_of(r.group) for r in seen):
            continue
        plans.append(_plan_of(path, entry, hops))
    plans.sort(key=lambda p: -len(p.redirects))
    return plans


def _plan_of(path: str, entry: FileEntry, hops: list[_Hop]) -> Plan:
    assert entry.head is not None
    head = entry.head
    nexts: dict[Location, tuple[int, Location | None]] = {}  # kept slot -> (gen, next after)
    dropped: dict[Location, int] = {}
    for hop in hops:
        t = hop.target
        nexts.setdefault(_loc(t), (t.generation, t.next))
        dropped[_loc(hop.moved)] = hop.moved.generation
        if hop.pred is None:
            head = _loc(t)
        else:
            nexts[_loc(hop.pred)] = (hop.pred.generation, _loc(t))
    by_group: dict[int, tuple[list[SlotRef], list[Keep]]] = {}
    for loc, (gen, nxt) in nexts.items():
        lock, keep = by_group.setdefault(loc.group, ([], []))
        lock.append((loc.slot, gen))
        keep.append((loc.slot, gen, nxt))
    for loc, gen in dropped.items():
        by_group.setdefault(loc.group, ([], []))[0].append((loc.slot, gen))
    parts = tuple(
        Part(g, tuple(sorted(lock)), tuple(sorted(keep, key=lambda k: k[0])))
        for g, (lock, keep) in sorted(by_group.items())
    )
    return Plan(path, entry.file_id, entry.version, head, tuple(dropped), parts)


def decide(current: FileEntry | None, p: Plan, txn: str, now: float) -> Decision | None:
    """The commit decision of ``p`` on the file's ``current`` entry, or None when the plan is
    stale (the file is gone, another file took its path, or it changed since ``p.base``)."""
    if current is None or current.file_id != p.file_id or current.version != p.base:
        return None
    if current.version >= MAX_U32:
        return None
    version = current.version + 1
    entry = replace(
        current,
        head=p.head,
        version=version,
        versions=merge_versions(current.versions, p.groups, version),
        layout=version,
    )
    prevs = tuple((g, current.version_of(g)) for g in p.groups)
    return Decision(txn, p.file_id, p.path, Outcome.COMMIT, version, prevs, None, now, entry)


__all__ = ["Part", "Plan", "Rules", "decide", "plan", "redirect_counts"]
