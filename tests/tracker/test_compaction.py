"""The compaction planner and decision (pure): which chains, what each group prepares, and
that the rewritten chain holds the same live slices in the same order, without a 301."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from mydfs.common.location import Location
from mydfs.tracker.compaction import Part, Plan, Rules, decide, plan
from mydfs.tracker.orphans import LIVE, MOVED, Report, Slot
from mydfs.tracker.records import FileEntry, Outcome

FID = "ab" * 16
OTHER = "cd" * 16
RULES = Rules(file_redirects=1, group_redirects=10**6, idle=30.0)
NOW = 1_000.0


def entry(
    head: Location | None,
    *,
    slices: int = 8,
    version: int = 0,
    mtime: float = 0.0,
    versions: tuple[tuple[int, int], ...] = (),
) -> FileEntry:
    return FileEntry(FID, 100, slices, head, "h", 0.0, mtime, version, versions, 0)


def reports(*slots: Slot) -> dict[int, Report]:
    out: dict[int, dict[int, Slot]] = {}
    for s in slots:
        out.setdefault(s.group, {})[s.slot] = s
    return {g: Report(g, 0, m) for g, m in out.items()}


def live(g: int, n: int, nxt: Location | None, *, gen: int = 1, **kw: object) -> Slot:
    return Slot(g, n, gen, LIVE, kw.pop("file_id", FID), next=nxt, **kw)  # type: ignore[arg-type]


def moved(g: int, n: int, target: Location, *, gen: int = 1, **kw: object) -> Slot:
    return Slot(g, n, gen, MOVED, kw.pop("file_id", FID), target=target, **kw)  # type: ignore[arg-type]


L = Location


def test_a_301_after_a_slice_of_another_group() -> None:
    r = reports(live(1, 5, L(2, 7)), moved(2, 7, L(2, 9), gen=3), live(2, 9, None, gen=4))
    (p,) = plan(r, [("/f", entry(L(1, 5)))], NOW, RULES)
    assert p.head == L(1, 5) and p.redirects == (L(2, 7),) and p.base == 0
    assert p.parts == (
        Part(1, ((5, 1),), ((5, 1, L(2, 9)),)),
        Part(2, ((7, 3), (9, 4)), ((9, 4, None),)),
    )
    assert p.parts[1].body(FID) == {
        "file_id": FID,
        "lock": [[7, 3], [9, 4]],
        "move": None,
        "new": [],
        "keep": [[9, 4, None]],
    }


def test_a_301_at_the_head_moves_the_head() -> None:
    r = reports(moved(1, 0, L(1, 2)), live(1, 2, L(1, 3)), live(1, 3, None))
    (p,) = plan(r, [("/f", entry(L(1, 0)))], NOW, RULES)
    assert p.head == L(1, 2)
    assert p.parts == (Part(1, ((0, 1), (2, 1)), ((2, 1, L(1, 3)),)),)


def test_a_target_that_is_also_a_predecessor_is_relinked_once() -> None:
    # p -> s1 -> t1 -> s2 -> t2
    r = reports(
        live(1, 0, L(1, 1)),
        moved(1, 1, L(1, 2)),
        live(1, 2, L(1, 3)),
        moved(1, 3, L(1, 4)),
        live(1, 4, None),
    )
    (p,) = plan(r, [("/f", entry(L(1, 0)))], NOW, RULES)
    assert p.redirects == (L(1, 1), L(1, 3))
    assert p.parts == (
        Part(
            1,
            ((0, 1), (1, 1), (2, 1), (3, 1), (4, 1)),
            ((0, 1, L(1, 2)), (2, 1, L(1, 4)), (4, 1, None)),
        ),
    )


def test_what_is_left_alone() -> None:
    chain = [live(1, 0, L(1, 1)), moved(1, 1, L(1, 2)), live(1, 2, None)]
    files = [("/f", entry(L(1, 0)))]
    assert plan(reports(*chain), files, NOW, RULES)  # the base case is compacted
    # busy: changed less than `idle` seconds ago
    assert not plan(reports(*chain), [("/f", entry(L(1, 0), mtime=NOW - 5))], NOW, RULES)
    # under both thresholds
    strict = Rules(file_redirects=2, group_redirects=2, idle=0)
    assert not plan(reports(*chain), files, NOW, strict)
    # ... but a group over its threshold compacts every file with a 301 there
    crowded = reports(*chain, moved(1, 9, L(1, 8), file_id=OTHER))  # type: ignore[arg-type]
    assert plan(crowded, files, NOW, strict)
    # a locked slot (an edit holds it), a missing report, another owner, a pending target
    assert not plan(reports(chain[0], replace(chain[1], locked=True), chain[2]), files, NOW, RULES)
    assert not plan(reports(chain[0], chain[1]), files, NOW, RULES)
    assert not plan(
        reports(chain[0], chain[1], replace(chain[2], file_id=OTHER)), files, NOW, RULES
    )
    assert not plan(
        reports(chain[0], chain[1], replace(chain[2], state="pending")), files, NOW, RULES
    )
    # a group whose view of the file is not the entry's version (a commit not applied there)
    behind = [("/f", entry(L(1, 0), version=3, versions=((1, 3),)))]
    assert not plan(reports(*chain), behind, NOW, RULES)
    ahead = [replace(s, file_version=3) for s in chain]
    assert plan(reports(*ahead), behind, NOW, RULES)
    # no 301, no head
    assert not plan(reports(live(1, 0, None)), files, NOW, RULES)
    assert not plan(reports(*chain), [("/f", entry(None))], NOW, RULES)


def test_a_looping_chain_is_left_alone() -> None:
    r = reports(live(1, 0, L(1, 1)), moved(1, 1, L(1, 2)), live(1, 2, L(1, 0)))
    assert not plan(r, [("/f", entry(L(1, 0), slices=2))], NOW, RULES)


def test_decide_only_on_the_planned_version() -> None:
    r = reports(moved(1, 0, L(1, 2)), live(1, 2, None), live(2, 4, L(1, 0)))
    current = entry(L(2, 4), version=6, versions=((1, 6), (3, 2)))
    r = {
        g: Report(g, 0, {k: replace(s, file_version=6) for k, s in rep.slots.items()})
        for g, rep in r.items()
    }
    r[2] = Report(2, 0, {4: live(2, 4, L(1, 0))})
    (p,) = plan(r, [("/f", current)], NOW, RULES)
    d = decide(current, p, "t" * 32, NOW)
    assert d is not None and d.outcome is Outcome.COMMIT and d.version == 7
    assert d.prevs == ((1, 6), (2, 0))
    assert d.entry is not None
    assert d.entry.version == 7 and d.entry.layout == 7 and d.entry.head == L(2, 4)
    assert d.entry.versions == ((1, 7), (2, 7), (3, 2))
    assert (d.entry.size, d.entry.mtime, d.entry.hash) == (current.size, current.mtime, "h")
    assert decide(replace(current, version=7), p, "t" * 32, NOW) is None  # edited since
    assert decide(replace(current, file_id=OTHER), p, "t" * 32, NOW) is None  # replaced
    assert decide(None, p, "t" * 32, NOW) is None  # removed


# --- against a model: the compacted chain reads the same slices --------------------------------


def apply(r: dict[int, Report], p: Plan) -> dict[Location, Slot]:
    """What the groups hold after every part of ``p`` committed (the participant's rules)."""
    table = {Location(s.group, s.slot): s for rep in r.values() for s in rep.slots.values()}
    for part in p.parts:
        kept = {slot: nxt for slot, _, nxt in part.keep}
        for slot, gen in part.lock:
            loc = Location(part.group, slot)
            assert table[loc].generation == gen and not table[loc].locked
            if slot in kept:
                assert table[loc].state == LIVE
                table[loc] = replace(table[loc], next=kept[slot])
            else:
                assert table[loc].state == MOVED
                del table[loc]
    return table


def read(table: dict[Location, Slot], head: Location | None) -> tuple[list[Location], int]:
    """The live slices from ``head`` and the number of 301s passed."""
    out, hops, cur = [], 0, head
    while cur is not None:
        s = table[cur]
        if s.state == MOVED:
            hops += 1
            assert s.target is not None
            s = table[s.target]
        out.append(Location(s.group, s.slot))
        cur = s.next
    return out, hops


@st.composite
def chains(draw: st.DrawFn) -> tuple[dict[int, Report], Location]:
    """A chain of live slices over groups 1-3, some reached through a 301 in their group."""
    n = draw(st.integers(1, 12))
    groups = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    redirected = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    slots: list[Slot] = []
    nxt: Location | None = None
    counter = {1: 0, 2: 0, 3: 0}

    def new_slot(g: int) -> int:
        counter[g] += 1
        return counter[g]

    for g, r in reversed(list(zip(groups, redirected, strict=True))):
        t = Location(g, new_slot(g))
        slots.append(live(g, t.slot, nxt, gen=draw(st.integers(1, 5))))
        nxt = t
        if r:
            s = Location(g, new_slot(g))
            slots.append(moved(g, s.slot, t, gen=draw(st.integers(1, 5))))
            nxt = s
    assert nxt is not None
    return reports(*slots), nxt


@settings(max_examples=300, deadline=None)
@given(chains(), st.integers(1, 4))
def test_compaction_keeps_the_content_and_removes_every_301(
    case: tuple[dict[int, Report], Location], most: int
) -> None:
    r, head = case
    table = {Location(s.group, s.slot): s for rep in r.values() for s in rep.slots.values()}
    before, hops = read(table, head)
    rules = Rules(file_redirects=1, group_redirects=10**6, idle=0, max_redirects=most)
    plans = plan(r, [("/f", entry(head, slices=len(before)))], NOW, rules)
    if hops == 0:
        assert plans == []
        return
    (p,) = plans
    after, left = read(apply(r, p), p.head)
    assert after == before
    assert left == hops - min(hops, most) and len(p.redirects) == min(hops, most)
