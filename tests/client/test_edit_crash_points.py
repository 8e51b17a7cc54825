"""Every crash point of a two-group edit, simulated with the real pure cores.

The participants are two real :class:`GroupState` machines (a command they applied is in their
Raft log, so a leader change keeps it: a crashed leader only loses requests it did not apply,
which the coordinator retries or abandons), the tracker is the real decision rule
(:func:`~mydfs.tracker.decisions.judge`, first decision wins), readers walk the real tables
(:func:`~mydfs.storage.chain.walk`) under the real reader's rule
(:func:`~mydfs.common.readrules.version_check`). The edit is a cut across the two groups: slice
0 in group A and slice 1 in group B become one new slice in A (A's slot becomes a 301, B's a
404, the file goes from 2 slices to 1).

Every schedule is enumerated: the coordinator crashes before any of its steps (or never), each
group's resolver fires (its prepare timed out) before any step or never, and every request is
delivered once or twice (a lost reply, retried). After the crash the resolvers run until
nothing is prepared. Checked after every event: a reader holding the old entry or the current
one reads the old chain, the new chain, or retries, never a mix. Checked at the end: every
edit that prepared anywhere is decided; the groups carry out exactly the decision (all 301/404
for a commit, all old slices live for an abort); no lock, no prepared edit is left; the file
entry agrees with the decision.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest

from mydfs.common.errors import Corrupt
from mydfs.common.location import Location
from mydfs.common.readrules import version_check
from mydfs.storage.chain import walk
from mydfs.storage.edit_commands import Commit, Prepare, Rollback
from mydfs.storage.group_commands import Reserve, Seal
from mydfs.storage.group_state import GroupState, SlotState
from mydfs.tracker.decisions import CommitRequest, abort_of, judge
from mydfs.tracker.records import Decision, FileEntry, Outcome

A, B = 1, 2
FILE = "0123456789abcdef0123456789abcdef"
TXN = "ab" * 16
PATH = "/sim/file.bin"
STEPS = ("write", "prepare_a", "prepare_b", "decide", "finish_a", "finish_b")


def apply(g: GroupState, command: Any) -> dict[str, Any]:
    result = g.apply(command.to_dict())
    g.check_invariants()
    return result


def store(g: GroupState, upload: str, index: int, nxt: Location | None) -> tuple[int, int]:
    got = apply(
        g,
        Reserve(
            upload_id=upload,
            file_id=FILE,
            slice_index=index,
            length=10,
            crc32c=1,
            now_ms=1,
            next=nxt,
        ),
    )
    assert got["ok"], got
    slot, gen = got["slot"], got["generation"]
    assert apply(g, Seal(slot=slot, upload_id=upload, generation=gen, holders=("n1", "n2")))["ok"]
    return slot, gen


@dataclass
class World:
    groups: dict[int, GroupState]
    entry: FileEntry
    old_entry: FileEntry
    s0: tuple[int, int]
    t0: tuple[int, int]
    new: tuple[int, int] | None = None
    decisions: dict[str, Decision] = field(default_factory=dict)
    prepared: set[int] = field(default_factory=set)  # groups whose prepare was applied
    crashed: bool = False

    # --- the tracker ----------------------------------------------------------------------

    def decide_commit(self) -> Decision:
        if TXN in self.decisions:
            return self.decisions[TXN]
        req = CommitRequest.from_dict(
            {
                "path": PATH,
                "file_id": FILE,
                "base": 1,
                "layout_change": True,
                "size": 10,
                "slices": 1,
                "groups": [A, B],
                "if_version": None,
                "offset": None,
            }
        )
        decision = judge(self.entry, req, TXN, now=10.0).decision
        self.record(decision)
        return decision

    def decide_abort(self) -> Decision:
        if TXN not in self.decisions:
            self.record(abort_of(TXN, FILE, PATH, 10.0))
        return self.decisions[TXN]

    def record(self, decision: Decision) -> None:
        self.decisions[TXN] = decision
        if decision.outcome is Outcome.COMMIT:
            assert decision.entry is not None
            self.entry = decision.entry

    # --- the participants --------------------------------------------------------------------

    def carry_out(self, group: int, decision: Decision) -> dict[str, Any]:
        if decision.outcome is Outcome.COMMIT:
            prev = dict(decision.prevs).get(group, 0)
            return apply(self.groups[group], Commit(txn=TXN, version=decision.version, prev=prev))
        return apply(self.groups[group], Rollback(txn=TXN))

    def resolve(self, group: int) -> None:
        """A participant's resolver: a prepared edit asks the tracker (abort if undecided)."""
        for info in self.groups[group].prepared_txns():
            assert info.txn == TXN
            decision = self.decisions.get(TXN) or self.decide_abort()
            assert self.carry_out(group, decision)["ok"]

    # --- the coordinator -------------------------------------------------------------------

    def prepare(self, group: int) -> dict[str, Any]:
        assert self.new is not None
        if group == A:
            s0, n = self.s0, self.new
            command = Prepare(
                txn=TXN,
                file_id=FILE,
                now_ms=100,
                lock=(s0,),
                move=(s0[0], s0[1], Location(A, n[0])),
                new=(n,),
            )
        else:
            command = Prepare(txn=TXN, file_id=FILE, now_ms=100, lock=(self.t0,), move=None, new=())
        result = apply(self.groups[group], command)
        if result["ok"]:
            self.prepared.add(group)
        return result

    def abandon(self) -> None:
        decision = self.decide_abort()
        for g in (A, B):
            self.carry_out(g, decision)

    def step(self, name: str) -> None:
        """One step of the coordinator (``client/editor.py``'s order); a refusal abandons."""
        if self.crashed:
            return
        if name == "write":
            if self.new is None:
                self.new = store(self.groups[A], f"{TXN}.0", 0, None)
        elif name in ("prepare_a", "prepare_b"):
            if not self.prepare(A if name == "prepare_a" else B)["ok"]:
                self.abandon()
                self.crashed = True  # the edit failed: the coordinator stops here
        elif name == "decide":
            decision = self.decide_commit()
            if decision.outcome is Outcome.ABORT:
                self.abandon()
                self.crashed = True
        else:
            decision = self.decisions[TXN]
            assert self.carry_out(A if name == "finish_a" else B, decision)["ok"]

    # --- readers -------------------------------------------------------------------------------

    def read(self, entry: FileEntry) -> list[tuple[int, int]] | None:
        """The chain a reader holding ``entry`` accepts (slot identities), or None (retry)."""
        versions = dict(entry.versions)
        out: list[tuple[int, int]] = []
        current = entry.head
        while current is not None and len(out) < entry.slices:
            g = self.groups[current.group]
            try:
                entries, current = walk(g, current.slot, entry.slices - len(out))
            except Corrupt:
                return None
            if version_check(versions.get(g.group, 0), g.file_version(FILE)) is not None:
                return None
            out += [(e.group, e.slot) for e in entries]
        if len(out) != entry.slices:
            return None
        return out


def world() -> World:
    ga, gb = GroupState(A), GroupState(B)
    t0 = store(gb, "put.1", 1, None)
    s0 = store(ga, "put.0", 0, Location(B, t0[0]))
    entry = FileEntry(FILE, 20, 2, Location(A, s0[0]), "", 0.0, 0.0, 1)
    return World({A: ga, B: gb}, entry, entry, s0, t0)


def check_reads(w: World) -> None:
    old_chain = [(A, w.s0[0]), (B, w.t0[0])]
    new_chain = None if w.new is None else [(A, w.new[0])]
    for entry in (w.old_entry, w.entry):
        got = w.read(entry)
        assert got is None or got in (old_chain, new_chain), (entry, got)
        if got is not None:  # the chain read is the one of the entry's own version
            assert got == (old_chain if entry.version == 1 else new_chain)


def schedules() -> list[tuple[int, int | None, int | None, bool]]:
    """(crash before step k (len(STEPS): never), resolver of A before step i or never, of B,
    every request delivered twice)."""
    n = len(STEPS)
    fires = [None, *range(n + 1)]
    return [
        (crash, ra, rb, dup)
        for crash, ra, rb, dup in itertools.product(range(n + 1), fires, fires, (False, True))
        if (ra is None or ra <= crash) and (rb is None or rb <= crash)
    ]


@pytest.mark.parametrize(("crash", "resolve_a", "resolve_b", "twice"), schedules())
def test_every_crash_point_ends_decided_and_atomic(
    crash: int, resolve_a: int | None, resolve_b: int | None, twice: bool
) -> None:
    w = world()
    check_reads(w)
    for k in range(len(STEPS) + 1):
        if resolve_a == k:
            w.resolve(A)
            check_reads(w)
        if resolve_b == k:
            w.resolve(B)
            check_reads(w)
        if k == crash:
            w.crashed = True
        if k == len(STEPS):
            break
        for _ in range(2 if twice else 1):
            w.step(STEPS[k])
            check_reads(w)
    # The coordinator is gone; the participants' resolvers finish what is prepared.
    for _ in range(3):
        w.resolve(A)
        w.resolve(B)
        check_reads(w)
    ga, gb = w.groups[A], w.groups[B]
    for g in (ga, gb):
        assert g.prepared_txns() == []
        assert all(g.lock_of(info.slot) is None for info in g.slots())
    decision = w.decisions.get(TXN)
    if w.prepared:
        assert decision is not None, "an edit that prepared somewhere ended undecided"
    s0, t0 = ga.get(w.s0[0]), gb.get(w.t0[0])
    assert s0 is not None and t0 is not None
    if decision is not None and decision.outcome is Outcome.COMMIT:
        assert w.new is not None
        assert s0.state is SlotState.MOVED and s0.target == Location(A, w.new[0])
        assert t0.state is SlotState.DELETED
        assert ga.file_version(FILE) == gb.file_version(FILE) == w.entry.version == 2
        assert w.read(w.entry) == [(A, w.new[0])]
    else:
        assert s0.state is SlotState.LIVE and t0.state is SlotState.LIVE
        assert w.entry.version == 1
        assert ga.file_version(FILE) == gb.file_version(FILE) == 0
        assert w.read(w.entry) == [(A, w.s0[0]), (B, w.t0[0])]
        if w.new is not None:
            # Prepared at A: rolled back, its new slice is back in the free table. Never
            # prepared there: an unreferenced live slot (left to a collector).
            new = ga.get(w.new[0])
            assert new is not None
            want = SlotState.DELETED if A in w.prepared else SlotState.LIVE
            assert new.state is want
