"""Hypothesis stateful test: the edit commands (prepare, commit, rollback) against a naive model.

The model keeps plain dicts: each slot's state, generation, owner and 301 target; the prepared
txns with their slots; the finished txns; each file's version. It derives locks by scanning the
prepared txns, so it shares no structure with the machine. Interleaved with the edit commands
run the ordinary commands a lock must refuse (delete, move, release) and new uploads. Every step
checks the result (accepted or refused, and the outcome), that a refused command changed
nothing, the machine's own invariants, that the machine's view equals the model's, and that a
snapshot restored mid-run carries on identically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mydfs.common.location import Location
from mydfs.storage.edit_commands import Commit, Prepare, Rollback
from mydfs.storage.group_commands import Command, Delete, Move, Release, Reserve, Seal
from mydfs.storage.group_state import GroupState, SlotState

GROUP = 2
FILES = ("aa" * 16, "bb" * 16)
TXNS = tuple(f"{i:032x}" for i in range(1, 13))
LIVE, MOVED, DELETED = "live", "moved", "deleted"


@dataclass
class MSlot:
    state: str
    generation: int
    file_id: str
    target: Location | None = None


@dataclass
class MTxn:
    file_id: str
    lock: tuple[tuple[int, int], ...]
    move: tuple[int, int, Location] | None
    new: tuple[tuple[int, int], ...]


class Model:
    def __init__(self) -> None:
        self.slots: dict[int, MSlot] = {}
        self.prepared: dict[str, MTxn] = {}
        self.finished: dict[str, tuple[str, int]] = {}  # txn -> (state, version)
        self.versions: dict[str, int] = {}

    def locks(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for txn, t in self.prepared.items():
            for slot, _ in t.lock + t.new:
                out[slot] = txn
        return out

    def slot_ok(self, ref: tuple[int, int], file_id: str, states: tuple[str, ...]) -> bool:
        s = self.slots.get(ref[0])
        return (
            s is not None
            and s.generation == ref[1]
            and s.state in states
            and s.file_id == file_id
            and ref[0] not in self.locks()
        )

    def prepare(self, c: Prepare) -> tuple[bool, str]:
        """(accepted, state or refusal reason)."""
        if c.txn in self.finished:
            state = self.finished[c.txn][0]
            return (True, state) if state == "committed" else (False, "rolled_back")
        if c.txn in self.prepared:
            t = self.prepared[c.txn]
            same = (t.file_id, sorted(t.lock), sorted(t.new), t.move) == (
                c.file_id,
                sorted(c.lock),
                sorted(c.new),
                c.move,
            )
            return (True, "prepared") if same else (False, "txn_mismatch")
        if c.move is not None:
            slot, _, target = c.move
            drop = {s for s, _ in c.lock if s != slot}
            if target.group != GROUP or target.slot == slot or target.slot in drop:
                return False, "move"
        if not all(self.slot_ok(r, c.file_id, (LIVE, MOVED)) for r in c.lock):
            return False, "lock"
        if not all(self.slot_ok(r, c.file_id, (LIVE,)) for r in c.new):
            return False, "new"
        locked = {s for s, _ in c.lock}
        targets = [self.slots[s].target for s in locked if self.slots[s].state == MOVED]
        if any(t is not None and t.slot not in locked for t in targets):
            return False, "stale_chain"  # a 301 locked without the slot it leads to
        self.prepared[c.txn] = MTxn(c.file_id, c.lock, c.move, c.new)
        return True, "prepared"

    def commit(self, c: Commit) -> tuple[bool, str]:
        if c.txn in self.finished:
            state = self.finished[c.txn][0]
            return (True, state) if state == "committed" else (False, "rolled_back")
        t = self.prepared.get(c.txn)
        if t is None:
            return False, "unknown_txn"
        current = self.versions.get(t.file_id, 0)
        if current != c.prev:
            return False, "out_of_order" if current < c.prev else "version_mismatch"
        moved = None
        if t.move is not None:
            moved = t.move[0]
            s = self.slots[moved]
            s.state, s.target = MOVED, t.move[2]
        for slot, _ in t.lock:
            if slot != moved:
                s = self.slots[slot]
                s.state, s.target = DELETED, None
        del self.prepared[c.txn]
        self.finished[c.txn] = ("committed", c.version)
        self.versions[t.file_id] = c.version
        return True, "committed"

    def rollback(self, c: Rollback) -> tuple[bool, str]:
        if c.txn in self.finished:
            state = self.finished[c.txn][0]
            return (True, state) if state == "rolled_back" else (False, "committed")
        t = self.prepared.pop(c.txn, None)
        if t is not None:
            for slot, _ in t.new:
                s = self.slots[slot]
                s.state, s.target = DELETED, None
        self.finished[c.txn] = ("rolled_back", 0)
        return True, "rolled_back"


class EditMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.g = GroupState(GROUP)
        self.model = Model()
        self.uploads = 0

    def run(self, command: Command) -> dict[str, Any]:
        before = self.g.digest()
        result = self.g.apply(command.to_dict())
        outcome = "ok" if result["ok"] else result.get("context", {}).get("reason", "refused")
        event(f"{command.OP}: {outcome}")
        if not result["ok"]:
            assert self.g.digest() == before, result
        return result

    def ref(self, data: st.DataObject, slot: int) -> tuple[int, int]:
        gen = self.model.slots[slot].generation
        return slot, gen if data.draw(st.integers(0, 9)) else gen + 1

    @rule(file_id=st.sampled_from(FILES))
    def upload(self, file_id: str) -> None:
        self.uploads += 1
        uid = f"u{self.uploads}"
        r = self.run(
            Reserve(upload_id=uid, file_id=file_id, slice_index=0, length=1, crc32c=0, now_ms=1)
        )
        assert r["ok"], r
        free = sorted(s for s, m in self.model.slots.items() if m.state == DELETED)
        assert r["slot"] == (free[0] if free else len(self.model.slots))
        self.run(
            Seal(slot=r["slot"], upload_id=uid, generation=r["generation"], holders=("n1", "n2"))
        )
        self.model.slots[r["slot"]] = MSlot(LIVE, r["generation"], file_id)

    @precondition(lambda self: self.model.slots)
    @rule(data=st.data())
    def prepare(self, data: st.DataObject) -> None:
        m = self.model
        txn = data.draw(st.sampled_from(TXNS))
        if data.draw(st.integers(0, 3)):
            c = self.good_prepare(data, txn)
        else:
            c = self.random_prepare(data, txn)
        if c is None:
            return
        expect = m.prepare(c)
        got = self.run(c)
        assert got["ok"] == expect[0], (got, expect)
        if got["ok"]:
            assert got["state"] == expect[1]
        elif expect[1] in ("rolled_back", "txn_mismatch"):
            assert got["context"]["reason"] == expect[1]

    def pick_txn(self, data: st.DataObject) -> str:
        """A prepared txn most of the time, else any."""
        prepared = sorted(self.model.prepared)
        if prepared and data.draw(st.integers(0, 3)):
            return data.draw(st.sampled_from(prepared))
        return data.draw(st.sampled_from(TXNS))

    def good_prepare(self, data: st.DataObject, txn: str) -> Prepare | None:
        """A prepare that the table should accept (unless its txn is known already)."""
        m = self.model
        file_id = data.draw(st.sampled_from(FILES))
        locks = m.locks()
        mine = [
            s
            for s, v in sorted(m.slots.items())
            if v.file_id == file_id and v.state != DELETED and s not in locks
        ]
        news = [s for s in mine if m.slots[s].state == LIVE]
        new = data.draw(st.lists(st.sampled_from(news), unique=True, max_size=2)) if news else []
        olds = [s for s in mine if s not in new]
        lock = data.draw(st.lists(st.sampled_from(olds), unique=True, max_size=3)) if olds else []
        if not lock and not new:
            return None
        move = None
        if lock and new and data.draw(st.booleans()):
            move = (lock[0], m.slots[lock[0]].generation, Location(GROUP, new[0]))
        return Prepare(
            txn=txn,
            file_id=file_id,
            now_ms=data.draw(st.integers(0, 100)),
            lock=tuple((s, m.slots[s].generation) for s in lock),
            move=move,
            new=tuple((s, m.slots[s].generation) for s in new),
        )

    def random_prepare(self, data: st.DataObject, txn: str) -> Prepare | None:
        """Any well-formed prepare: stale generations, other owners, bad 301 targets..."""
        m = self.model
        slots = sorted(m.slots)
        chosen = data.draw(st.lists(st.sampled_from(slots), unique=True, max_size=5))
        cut = data.draw(st.integers(0, len(chosen)))
        lock = tuple(self.ref(data, s) for s in chosen[:cut])
        new = tuple(self.ref(data, s) for s in chosen[cut:])
        if not lock and not new:
            return None
        move = None
        if lock and data.draw(st.booleans()):
            slot, gen = data.draw(st.sampled_from(lock))
            to = data.draw(st.sampled_from(slots))
            group = GROUP if data.draw(st.integers(0, 9)) else GROUP + 1
            move = (slot, gen, Location(group, to))
        return Prepare(
            txn=txn,
            file_id=data.draw(st.sampled_from(FILES)),
            now_ms=data.draw(st.integers(0, 100)),
            lock=lock,
            move=move,
            new=new,
        )

    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        txn = self.pick_txn(data)
        t = self.model.prepared.get(txn)
        current = 0 if t is None else self.model.versions.get(t.file_id, 0)
        prev = data.draw(st.sampled_from([current, current, current + 1, max(0, current - 1)]))
        c = Commit(txn=txn, version=prev + data.draw(st.integers(1, 3)), prev=prev)
        expect = self.model.commit(c)
        got = self.run(c)
        assert got["ok"] == expect[0], (got, expect)
        if got["ok"]:
            assert got["state"] == expect[1]
        else:
            assert got["context"]["reason"] == expect[1], got

    @rule(data=st.data())
    def rollback(self, data: st.DataObject) -> None:
        c = Rollback(txn=self.pick_txn(data) if data.draw(st.integers(0, 2)) == 0 else "ff" * 16)
        expect = self.model.rollback(c)
        got = self.run(c)
        assert got["ok"] == expect[0], (got, expect)
        if not got["ok"]:
            assert got["context"]["reason"] == expect[1]

    @precondition(lambda self: self.model.slots)
    @rule(data=st.data())
    def delete_or_release(self, data: st.DataObject) -> None:
        slot = data.draw(st.sampled_from(sorted(self.model.slots)))
        s = self.model.slots[slot]
        locked = slot in self.model.locks()
        got = self.run(Release(slot=slot) if s.state == MOVED else Delete(slot=slot))
        if locked:
            assert not got["ok"] and got["context"]["reason"] == "locked", got
            return
        assert got["ok"], got
        s.state, s.target = DELETED, None

    @precondition(lambda self: self.model.slots)
    @rule(data=st.data())
    def move(self, data: st.DataObject) -> None:
        slot = data.draw(st.sampled_from(sorted(self.model.slots)))
        to = Location(GROUP, data.draw(st.integers(0, 20)))
        s = self.model.slots[slot]
        got = self.run(Move(slot=slot, target=to))
        if to.slot == slot:
            assert not got["ok"], got  # a self-redirect: refused before anything else
        elif slot in self.model.locks():
            assert not got["ok"] and got["context"]["reason"] == "locked", got
        elif s.state == LIVE:
            assert got["ok"], got
            s.state, s.target = MOVED, to
        elif s.state == MOVED and s.target == to:
            assert got["ok"] and got["duplicate"]
        else:
            assert not got["ok"]

    @rule()
    def snapshot_and_restore(self) -> None:
        fresh = GroupState(GROUP)
        fresh.restore(self.g.snapshot())
        assert fresh.digest() == self.g.digest()
        self.g = fresh

    @invariant()
    def machine_matches_model(self) -> None:
        g, m = self.g, self.model
        g.check_invariants()
        for slot, s in m.slots.items():
            info = g.get(slot)
            assert info is not None
            assert (info.state.value, info.generation, info.file_id, info.target) == (
                s.state,
                s.generation,
                s.file_id,
                s.target,
            ), (slot, info, s)
            assert g.lock_of(slot) == m.locks().get(slot)
        assert [t.txn for t in g.prepared_txns()] == list(m.prepared)
        for txn in TXNS:
            info = g.txn(txn)
            if txn in m.prepared:
                assert info is not None and info.state == "prepared"
            elif txn in m.finished:
                assert info is not None
                assert (info.state, info.version) == m.finished[txn]
            else:
                assert info is None
        for f in FILES:
            assert g.file_version(f) == m.versions.get(f, 0)
        assert g.stats().deleted == sum(1 for s in m.slots.values() if s.state == DELETED)
        assert all(g.get(s).state is not SlotState.PENDING for s in m.slots)  # type: ignore[union-attr]


EditMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_edit_commands = EditMachine.TestCase
