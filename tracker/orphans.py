"""Which slices nothing references: the collector's decision and ``df``'s figures (pure).

Given the slot reports of the groups (``GET /internal/report`` on each group's leader, parsed by
:func:`parse_report`), the tracker's roots (the head of every live file and of every trash
record, the intents) and the clock, :func:`decide` computes:

* the **reachable** slots: from every root head, and from every slot an edit holds locked,
  following next pointers and 301 targets across the reports (a 301's own next pointer is not
  followed: a reader never uses it);
* the **protected owners**: file ids of intents still alive (younger than ``intent_ttl``, or
  with a slot of the file reserved less than ``intent_ttl`` ago: an upload in progress),
  and the owner of every walk that could not be finished (a pointer into a group without a
  report, to a slot the report does not list, or to a pending slot): what lies beyond it is
  unknown, so every slot of that file stays;
* the **orphans**: live or 301 slots that are not reachable, not locked, whose owner is not
  protected, and that were reserved at least ``grace_ms`` before their report (ages are taken
  on each leader's own clock: ``now_ms - reserved_at_ms`` of the same report).

While a group the tracker knows has no report, nothing is chosen at all: a slot there that
an edit holds locked may lead to any slot, and an upload may be writing there. Everything
else stays: a slot the collector cannot prove unreferenced is never chosen. The
rules and the windows they cover are in ``docs/collector.md``. :func:`space` turns reports and
a verdict into ``mydfs df``'s figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mydfs.common.errors import Corrupt
from mydfs.common.location import Location
from mydfs.common.slices import PAYLOAD_CAPACITY

LIVE = "live"
MOVED = "moved"
PENDING = "pending"
STATES = (LIVE, MOVED, PENDING)

Key = tuple[int, int]  # (group, slot)


@dataclass(frozen=True, slots=True)
class Slot:
    """One slot of a group's report (every allocated slot that is not deleted)."""

    group: int
    slot: int
    generation: int
    state: str
    file_id: str
    next: Location | None = None
    target: Location | None = None
    length: int = 0
    locked: bool = False
    reserved_at_ms: int = 0
    file_version: int = 0
    index: int = 0

    @property
    def key(self) -> Key:
        return (self.group, self.slot)


@dataclass(frozen=True)
class Report:
    """A group's slot report: its slots by number and its leader's clock."""

    group: int
    now_ms: int
    slots: Mapping[int, Slot]
    counts: Mapping[str, int] = field(default_factory=dict)
    available: int | None = None
    disk_free_slots: int | None = None


@dataclass(frozen=True)
class Roots:
    """What the tracker's metadata references: (file id, head) of live files and of trash
    records, and (file id, creation time in seconds of the tracker's clock) of intents."""

    files: Sequence[tuple[str, Location]] = ()
    trash: Sequence[tuple[str, Location]] = ()
    intents: Sequence[tuple[str, float]] = ()


@dataclass(frozen=True)
class Rules:
    grace_ms: int
    intent_ttl: float


@dataclass
class Verdict:
    files: set[Key]  # reachable from live files' heads
    trash: set[Key]  # reachable from trash heads (and not from a live file)
    reachable: set[Key]  # files, trash and whatever locked slots reach
    protected: set[str]  # owners every slot of which stays
    orphans: list[Slot]  # 301 slots first, then live ones; by group and slot
    young: int  # unreferenced slots still inside the grace period
    expired_intents: list[str]  # intents neither young nor active: to be forgotten
    complete: bool = True  # every known group reported (else nothing is chosen)


# --- reports -----------------------------------------------------------------------------------


def _loc(value: Any, what: str) -> Location | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise Corrupt(f"report: {what} is not [group, slot]: {value!r}")
    return Location(_int(value[0], what), _int(value[1], what))


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Corrupt(f"report: {what} is not a non-negative integer: {value!r}")
    return value


def parse_report(body: Any, group: int) -> Report:
    """Check and parse a ``GET /internal/report`` answer of ``group``'s leader; a malformed
    one (or one of another group) raises :class:`Corrupt` and is not used."""
    if not isinstance(body, dict) or body.get("group") != group:
        raise Corrupt(f"report of group {group}: not this group's report", group=group)
    slots: dict[int, Slot] = {}
    for item in body.get("slots") or []:
        if not isinstance(item, dict) or item.get("state") not in STATES:
            raise Corrupt(f"report of group {group}: bad slot entry {item!r}", group=group)
        file_id = item.get("file_id")
        if not isinstance(file_id, str):
            raise Corrupt(f"report of group {group}: bad owner {file_id!r}", group=group)
        s = Slot(
            group=group,
            slot=_int(item.get("slot"), "slot"),
            generation=_int(item.get("generation"), "generation"),
            state=item["state"],
            file_id=file_id,
            next=_loc(item.get("next"), "next"),
            target=_loc(item.get("target"), "target"),
            length=_int(item.get("length", 0), "length"),
            locked=bool(item.get("locked")),
            reserved_at_ms=_int(item.get("reserved_at_ms", 0), "reserved_at_ms"),
            file_version=_int(item.get("file_version", 0), "file_version"),
            index=_int(item.get("index", 0), "index"),
        )
        slots[s.slot] = s
    counts = body.get("counts") or {}
    available = body.get("available")
    disk_free = body.get("disk_free_slots")
    return Report(
        group=group,
        now_ms=_int(body.get("now_ms"), "now_ms"),
        slots=slots,
        counts={k: _int(v, k) for k, v in counts.items()} if isinstance(counts, dict) else {},
        available=None if available is None else _int(available, "available"),
        disk_free_slots=None if disk_free is None else _int(disk_free, "disk_free_slots"),
    )


# --- the decision ------------------------------------------------------------------------------


class _Walker:
    """Marks what root heads reach in the reports; records the owners of unfinished walks."""

    def __init__(self, reports: Mapping[int, Report]) -> None:
        self.reports = reports
        self.seen: set[Key] = set()
        self.protected: set[str] = set()

    def slot(self, loc: Location) -> Slot | None:
        report = self.reports.get(loc.group)
        return None if report is None else report.slots.get(loc.slot)

    def walk(self, owner: str, start: Location) -> set[Key]:
        """Everything reachable from ``start`` not seen before (``owner``: the root's file)."""
        found: set[Key] = set()
        stack: list[tuple[Location, str]] = [(start, owner)]
        while stack:
            loc, via = stack.pop()
            key = (loc.group, loc.slot)
            if key in self.seen:
                continue
            rec = self.slot(loc)
            if rec is None or rec.state == PENDING:
                # Unknown beyond here: the file whose pointer led here keeps all its slots.
                self.protected.add(via)
                continue
            self.seen.add(key)
            found.add(key)
            if rec.state == MOVED:
                if rec.target is not None:
                    stack.append((rec.target, rec.file_id))
            elif rec.next is not None:
                stack.append((rec.next, rec.file_id))
        return found


def live_intents(
    reports: Mapping[int, Report], intents: Iterable[tuple[str, float]], now: float, ttl: float
) -> tuple[set[str], list[str]]:
    """(file ids of intents alive, file ids of intents expired). An intent is alive while it
    is younger than ``ttl`` or its file has a slot (pending or not) reserved less than ``ttl``
    ago (on its leader's clock): an upload still writing. A reservation older than that was
    left by an upload that stopped (its pending slots are the storage settler's to abort)."""
    intents = list(intents)
    wanted = {fid for fid, _ in intents}
    active: set[str] = set()
    ttl_ms = ttl * 1000
    for report in reports.values():
        for rec in report.slots.values():
            if rec.file_id in wanted and report.now_ms - rec.reserved_at_ms < ttl_ms:
                active.add(rec.file_id)
    alive = {fid for fid, t in intents if now - t < ttl or fid in active}
    return alive, [fid for fid, _ in intents if fid not in alive]


def decide(
    reports: Mapping[int, Report],
    roots: Roots,
    now: float,
    rules: Rules,
    groups: Iterable[int] = (),
) -> Verdict:
    """The collector's verdict (see the module docstring). Pure. ``groups``: every group the
    tracker has heard from; with the groups a root head or a reported pointer names, these
    are the groups known. While one of them has no report, nothing is chosen and no intent
    expires (its slots' locks, pointers and reservations are unknown: a locked slot there may
    lead anywhere, an upload may be writing there)."""
    known = set(groups) | {h.group for _, h in (*roots.files, *roots.trash)}
    for report in reports.values():  # a group a pointer names exists, heard from or not
        for rec in report.slots.values():
            known |= {loc.group for loc in (rec.next, rec.target) if loc is not None}
    complete = known <= set(reports)
    walker = _Walker(reports)
    files: set[Key] = set()
    for fid, head in roots.files:
        files |= walker.walk(fid, head)
    trash: set[Key] = set()
    for fid, head in roots.trash:
        trash |= walker.walk(fid, head)
    for report in reports.values():
        for rec in report.slots.values():
            if rec.locked:
                walker.walk(rec.file_id, Location(rec.group, rec.slot))
    alive, expired = live_intents(reports, roots.intents, now, rules.intent_ttl)
    protected = walker.protected | alive
    orphans: list[Slot] = []
    young = 0
    for group in sorted(reports):
        report = reports[group]
        for number in sorted(report.slots):
            rec = report.slots[number]
            if (
                rec.state == PENDING
                or rec.key in walker.seen
                or rec.locked
                or rec.file_id in protected
            ):
                continue
            if report.now_ms - rec.reserved_at_ms < rules.grace_ms:
                young += 1
                continue
            orphans.append(rec)
    orphans.sort(key=lambda r: (r.state != MOVED, r.group, r.slot))
    if not complete:
        orphans, expired = [], []
    return Verdict(files, trash, set(walker.seen), protected, orphans, young, expired, complete)


# --- df ----------------------------------------------------------------------------------------


def _figure(slots: int, size: int) -> dict[str, int]:
    return {"slots": slots, "bytes": size}


def space(reports: Mapping[int, Report], verdict: Verdict, groups: Iterable[int]) -> dict[str, Any]:
    """``mydfs df``: per group and for the cluster, slots and bytes that are free, live, 301,
    pending, of live files, of trash records and orphans. A group without a report is listed
    with ``"report": false`` and left out of the totals (and no slot is an orphan then)."""
    orphan_keys = {o.key for o in verdict.orphans}
    kinds = ("free", "live", "moved", "pending", "files", "trash", "orphan")
    total = {k: _figure(0, 0) for k in kinds}
    out: list[dict[str, Any]] = []
    for group in sorted(set(groups) | set(reports)):
        report = reports.get(group)
        if report is None:
            out.append({"group": group, "report": False})
            continue
        row: dict[str, Any] = {k: _figure(0, 0) for k in kinds}
        free = report.available if report.available is not None else report.disk_free_slots
        row["free"] = _figure(free or 0, (free or 0) * PAYLOAD_CAPACITY)
        for rec in report.slots.values():
            cells = [rec.state]
            if rec.key in verdict.files:
                cells.append("files")
            elif rec.key in verdict.trash:
                cells.append("trash")
            elif rec.key in orphan_keys:
                cells.append("orphan")
            for cell in cells:
                row[cell]["slots"] += 1
                row[cell]["bytes"] += rec.length
        for k in kinds:
            total[k]["slots"] += row[k]["slots"]
            total[k]["bytes"] += row[k]["bytes"]
        out.append({"group": group, "report": True, **row})
    return {"groups": out, "cluster": total, "complete": verdict.complete}


__all__ = [
    "LIVE",
    "MOVED",
    "PENDING",
    "Report",
    "Roots",
    "Rules",
    "Slot",
    "Verdict",
    "decide",
    "live_intents",
    "parse_report",
    "space",
]
