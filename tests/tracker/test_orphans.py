"""The collector's decision (pure, ``tracker/orphans.py``) against a simple model: random
files (chains across groups, some through 301 slots), random garbage (chains nothing points
at, some locked by an edit, some of an intent), random ages. Nothing reachable, locked, young
or of a live intent is ever chosen; everything else unreachable and old is. A group without a
report: none of its slots is chosen, nor any slot of a file whose walk enters it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mydfs.common.errors import Corrupt
from mydfs.common.location import Location
from mydfs.storage.group_state import GroupState
from mydfs.storage.http_report import slot_report
from mydfs.tracker.orphans import (
    LIVE,
    MOVED,
    PENDING,
    Report,
    Roots,
    Rules,
    Slot,
    decide,
    parse_report,
    space,
)

GROUPS = (1, 2, 3)
NOW_MS = 10_000_000
NOW = 5_000.0  # the tracker's clock (seconds), for intents
GRACE_MS = 60_000
TTL = 120.0
RULES = Rules(grace_ms=GRACE_MS, intent_ttl=TTL)

Key = tuple[int, int]


@dataclass
class World:
    slots: dict[Key, Slot] = field(default_factory=dict)
    chains: dict[str, list[list[Key]]] = field(default_factory=dict)  # file id -> its chains
    files: list[tuple[str, Location]] = field(default_factory=list)
    trash: list[tuple[str, Location]] = field(default_factory=list)
    intents: list[tuple[str, float]] = field(default_factory=list)
    reachable: set[Key] = field(default_factory=set)
    next_slot: dict[int, int] = field(default_factory=lambda: dict.fromkeys(GROUPS, 0))

    def new(self, group: int, file_id: str, age_ms: int, state: str = LIVE) -> Slot:
        slot = self.next_slot[group]
        self.next_slot[group] += 1
        rec = Slot(group, slot, slot + 1, state, file_id, reserved_at_ms=NOW_MS - age_ms)
        self.slots[rec.key] = rec
        return rec

    def reports(self, skip: frozenset[int] = frozenset()) -> dict[int, Report]:
        out: dict[int, Report] = {}
        for g in GROUPS:
            if g in skip:
                continue
            mine = {k[1]: s for k, s in self.slots.items() if k[0] == g}
            out[g] = Report(g, NOW_MS, mine)
        return out


ages = st.integers(0, 2 * GRACE_MS)


@st.composite
def worlds(draw: st.DrawFn) -> World:
    w = World()
    n = draw(st.integers(0, 8))
    for i in range(n):
        kind = draw(st.sampled_from(["file", "trash", "garbage", "intent", "file_garbage"]))
        fid = f"{i:032x}"
        if kind == "file_garbage":  # a live file plus unreferenced slices of the same id
            kind = "file"
            extra = True
        else:
            extra = False
        chain = _chain(draw, w, fid)
        w.chains.setdefault(fid, []).append(chain)
        head = Location(*chain[0])
        if kind == "file":
            w.files.append((fid, head))
            w.reachable |= set(chain)
        elif kind == "trash":
            w.trash.append((fid, head))
            w.reachable |= set(chain)
        elif kind == "intent":
            w.intents.append((fid, NOW - draw(st.floats(0, 2 * TTL))))
        if kind in ("garbage", "intent") and draw(st.booleans()):
            p = draw(st.integers(0, len(chain) - 1))  # an edit holds this slot locked
            k = chain[p]
            w.slots[k] = replace(w.slots[k], locked=True)
            w.reachable |= set(chain[p:])
        if extra:
            more = _chain(draw, w, fid)
            w.chains[fid].append(more)
    for _ in range(draw(st.integers(0, 3))):  # pending slots of uploads in progress
        w.new(draw(st.sampled_from(GROUPS)), "ff" * 16, draw(ages), PENDING)
    return w


def _chain(draw: st.DrawFn, w: World, fid: str) -> list[Key]:
    """A chain of 1..5 slices across the groups, each maybe behind a 301 of its group; the
    keys in walk order (a 301 before the slot it leads to)."""
    order: list[Key] = []
    slices = draw(st.integers(1, 5))
    for _ in range(slices):
        g = draw(st.sampled_from(GROUPS))
        rec = w.new(g, fid, draw(ages))
        if draw(st.integers(0, 3)) == 0:
            moved = w.new(g, fid, draw(ages), MOVED)
            w.slots[moved.key] = replace(moved, target=Location(g, rec.slot))
            order.append(moved.key)
        order.append(rec.key)
    # next pointers: each live slice points at what follows it (a 301 or a live slot)
    lives = [k for k in order if w.slots[k].state == LIVE]
    for k in lives:
        i = order.index(k)
        nxt = Location(*order[i + 1]) if i + 1 < len(order) else None
        w.slots[k] = replace(w.slots[k], next=nxt)
    return order


def expected(w: World, unseen: frozenset[int] = frozenset()) -> set[Key]:
    """The orphans, judging intents by the slots of the groups not in ``unseen`` (a group the
    collector has no report of cannot show it an upload's recent slices there)."""
    alive: set[str] = set()
    for fid, t in w.intents:
        own = [s for s in w.slots.values() if s.file_id == fid and s.group not in unseen]
        if NOW - t < TTL or any(NOW_MS - s.reserved_at_ms < TTL * 1000 for s in own):
            alive.add(fid)
    return {
        k
        for k, s in w.slots.items()
        if s.state in (LIVE, MOVED)
        and k not in w.reachable
        and not s.locked
        and NOW_MS - s.reserved_at_ms >= GRACE_MS
        and s.file_id not in alive
    }


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_orphans_are_exactly_the_unreachable_old_unprotected_slots(w: World) -> None:
    roots = Roots(w.files, w.trash, w.intents)
    v = decide(w.reports(), roots, NOW, RULES)
    chosen = {o.key for o in v.orphans}
    assert not chosen & w.reachable, "a reachable slot was chosen"
    assert chosen == expected(w)
    assert all(not o.locked for o in v.orphans)
    # 301 slots first
    states = [o.state for o in v.orphans]
    assert states == sorted(states, key=lambda s: s != MOVED)
    # df: every slot counted once by state, files/trash/orphan disjoint
    figures = space(w.reports(), v, GROUPS)
    total = figures["cluster"]
    assert total["live"]["slots"] + total["moved"]["slots"] + total["pending"]["slots"] == len(
        w.slots
    )
    assert total["orphan"]["slots"] == len(chosen)
    assert total["files"]["slots"] + total["trash"]["slots"] == len(
        {k for fid, h in w.files + w.trash for c in w.chains[fid][:1] for k in c}
    )


@settings(max_examples=100, deadline=None)
@given(worlds(), st.sampled_from(GROUPS))
def test_nothing_is_chosen_while_a_group_has_no_report(w: World, missing: int) -> None:
    roots = Roots(w.files, w.trash, w.intents)
    v = decide(w.reports(frozenset({missing})), roots, NOW, RULES, GROUPS)
    assert (v.orphans, v.expired_intents, v.complete) == ([], [], False)
    assert space(w.reports(frozenset({missing})), v, GROUPS)["cluster"]["orphan"]["slots"] == 0
    # Not heard from (a tracker just restarted): known all the same when a root or a pointer
    # names it; otherwise none of its slots matters to the others' reachability.
    names = {h.group for _, h in w.files + w.trash} | {
        loc.group for s in w.slots.values() if s.key[0] != missing
        for loc in (s.next, s.target) if loc is not None
    }  # fmt: skip
    v = decide(w.reports(frozenset({missing})), roots, NOW, RULES)
    assert v.complete == (missing not in names)
    if v.complete:  # (a real lock is on a live file's chain, which names its group)
        locked_there = {
            k for chains in w.chains.values() for c in chains
            if any(w.slots[j].locked and j[0] == missing for j in c) for k in c
        }  # fmt: skip
        assert not {o.key for o in v.orphans} & (w.reachable - locked_there)


@settings(max_examples=200, deadline=None)
@given(worlds(), st.sampled_from(GROUPS))
def test_a_group_without_report_protects_what_it_might_hold(w: World, missing: int) -> None:
    """The walk's own rule (the pass then frees nothing anyway, see above): no slot of the
    group without report, and no slot of a root's file running through it, is chosen."""
    # Locks in the missing group are unknown: the model's locked chains there are left out.
    for chains in w.chains.values():
        for chain in chains:
            if any(w.slots[k].locked and k[0] == missing for k in chain):
                w.reachable -= set(chain)
    roots = Roots(w.files, w.trash, w.intents)
    v = decide(w.reports(frozenset({missing})), roots, NOW, RULES)
    chosen = {o.key for o in v.orphans}
    assert not chosen & w.reachable
    # (An intent kept alive only by slices in the missing group may be judged expired: the
    # pass drops such an intent before freeing anything of its file, so that upload can no
    # longer register a file with freed slices: docs/collector.md, step 5.)
    assert chosen <= expected(w, frozenset({missing}))
    assert all(k[0] != missing for k in chosen)
    # a file whose chain (a root's) runs through the missing group keeps every slot
    for fid, _ in w.files + w.trash:
        if any(k[0] == missing for k in w.chains[fid][0]):
            assert not any(w.slots[k].file_id == fid for k in chosen)


def test_a_pointer_to_a_pending_slot_protects_the_file() -> None:
    w = World()
    head = w.new(1, "aa" * 16, GRACE_MS * 2)
    pending = w.new(2, "aa" * 16, 0, PENDING)
    w.slots[head.key] = replace(head, next=Location(2, pending.slot))
    stray = w.new(1, "aa" * 16, GRACE_MS * 2)  # same file, unreferenced: stays
    other = w.new(1, "bb" * 16, GRACE_MS * 2)  # another file's, unreferenced: goes
    v = decide(w.reports(), Roots(files=[("aa" * 16, Location(1, head.slot))]), NOW, RULES)
    assert {o.key for o in v.orphans} == {other.key}
    assert "aa" * 16 in v.protected
    assert stray.key not in {o.key for o in v.orphans}


def test_expired_intents_are_listed() -> None:
    w = World()
    w.new(1, "aa" * 16, TTL * 1000 * 2)  # old slice of an old intent
    w.new(1, "bb" * 16, 0)  # a fresh slice keeps an old intent alive
    intents = [("aa" * 16, NOW - 2 * TTL), ("bb" * 16, NOW - 2 * TTL), ("cc" * 16, NOW)]
    v = decide(w.reports(), Roots(intents=intents), NOW, RULES)
    assert v.expired_intents == ["aa" * 16]
    assert [o.file_id for o in v.orphans] == ["aa" * 16]


def test_report_round_trip_from_a_group_table() -> None:
    g = GroupState(1)
    fid = "ab" * 16
    g.apply(
        {
            "op": "reserve",
            "upload_id": "u1",
            "file_id": fid,
            "slice_index": 0,
            "length": 10,
            "crc32c": 0,
            "next": None,
            "now_ms": 1234,
        }
    )
    body = slot_report(g, 5000)
    report = parse_report(body, 1)
    assert report.now_ms == 5000
    (rec,) = report.slots.values()
    assert (rec.state, rec.file_id, rec.reserved_at_ms, rec.locked) == (PENDING, fid, 1234, False)
    with pytest.raises(Corrupt):
        parse_report(body, 2)
    with pytest.raises(Corrupt):
        parse_report(dict(body, slots=[{"state": "weird"}]), 1)
