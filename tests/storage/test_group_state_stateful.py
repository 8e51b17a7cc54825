"""Hypothesis stateful test: the group state machine against a naive reference model.

The model keeps a plain list of slot records and recomputes everything else (the free table,
the pending index, the counters) by scanning it, so it shares no data structure with the real
machine. Every step checks that both agree on the result and on the whole table, that a second
machine fed the same commands has the same digest, and the safety rules: the allocator gives the
lowest free slot, else the next slot at the end; a slot is never free and live at once; a 301
slot is never reused; a refused or malformed command changes nothing; a snapshot restored in
the middle of the run carries on identically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from mydfs.common.checksum import crc32c
from mydfs.common.location import Location
from mydfs.storage.format import PAYLOAD_CAPACITY
from mydfs.storage.group_commands import (
    Abort,
    Assign,
    Command,
    Configure,
    Confirm,
    ConfirmMany,
    Delete,
    Move,
    Noop,
    Put,
    Release,
    Relink,
    Reserve,
    Seal,
    Unconfirm,
)
from mydfs.storage.group_state import GroupState, SlotState

GROUP = 1
UPLOADS = [f"u{i}" for i in range(12)]
LENGTHS = [0, 1, 4096, PAYLOAD_CAPACITY]
FILES = ["0" * 32, "f" * 32]
NODES = ["n1", "n2", "n3"]
MAX_HOLDERS = 16

slot_numbers = st.integers(min_value=0, max_value=12)
locations = st.builds(Location, st.sampled_from([GROUP, GROUP + 1]), slot_numbers)
maybe_locations = st.none() | locations
holder_sets = st.lists(st.sampled_from(NODES), min_size=2, max_size=3, unique=True) | st.lists(
    st.sampled_from(NODES), min_size=1, max_size=1
)


@dataclass
class MSlot:
    state: str
    generation: int
    upload_id: str
    content: tuple[str, int, int, int]  # file id, slice index, length, crc
    next: Location | None
    at_ms: int
    holders: set[str] = field(default_factory=set)
    target: Location | None = None
    inline: bytes | None = None  # the payload of a put, while fewer than min_holders hold it


Outcome = tuple[bool, str | None, dict[str, Any]]  # ok, error code, expected result fields


class Model:
    """The obvious implementation: lists and linear scans."""

    def __init__(self) -> None:
        self.slots: list[MSlot] = []
        self.generation = 0
        self.max_slots: int | None = None
        self.min_holders = 2
        self.window = 4
        self.sealed: list[tuple[str, int, int]] = []  # oldest first

    def free(self) -> list[int]:
        return [i for i, s in enumerate(self.slots) if s.state == "deleted"]

    def allocation(self) -> int | None:
        free = self.free()
        if free:
            return min(free)
        if self.max_slots is not None and len(self.slots) >= self.max_slots:
            return None
        return len(self.slots)

    def trim(self) -> None:
        while len(self.sealed) > self.window:
            self.sealed.pop(0)

    def view(self, i: int, *, duplicate: bool) -> Outcome:
        s = self.slots[i]
        fields: dict[str, Any] = {
            "slot": i,
            "generation": s.generation,
            "state": s.state,
            "duplicate": duplicate,
            "holders": sorted(s.holders),
        }
        return True, None, fields

    def wrong_state(self, i: int) -> Outcome:
        state = self.slots[i].state
        code = {"deleted": "slice_deleted", "moved": "slice_moved"}.get(state, "conflict")
        return False, code, {}

    def drop_inline(self) -> None:
        """The table carries a put's payload only while its slice is live in fewer than
        min_holders volumes."""
        for s in self.slots:
            if s.state != "live" or len(s.holders) >= self.min_holders:
                s.inline = None

    def put(self, c: Put) -> Outcome:
        outcome = self.reserve(c, state="live")
        if outcome[0] and not outcome[2]["duplicate"]:
            slot = outcome[2]["slot"]
            self.slots[slot].inline = c.payload()
            self.sealed.append((c.upload_id, slot, self.slots[slot].generation))
            self.trim()
        return outcome

    def reserve(self, c: Reserve | Put, state: str = "pending") -> Outcome:
        content = (c.file_id, c.slice_index, c.length, c.crc32c)
        for i, s in enumerate(self.slots):
            if s.state == "pending" and s.upload_id == c.upload_id:
                if s.content != content:
                    return False, "already_exists", {}
                return self.view(i, duplicate=True)
        for uid, i, gen in self.sealed:
            if uid == c.upload_id:
                s = self.slots[i]
                if s.generation != gen:
                    fields = {"slot": i, "generation": gen, "state": "deleted", "duplicate": True}
                    return True, None, fields
                if s.content != content:
                    return False, "already_exists", {}
                return self.view(i, duplicate=True)
        slot = self.allocation()
        if slot is None:
            return False, "disk_full", {}
        if c.next == Location(GROUP, slot):
            return False, "invalid_argument", {}
        self.generation += 1
        record = MSlot(state, self.generation, c.upload_id, content, c.next, c.now_ms)
        if slot == len(self.slots):
            self.slots.append(record)
        else:
            self.slots[slot] = record
        return self.view(slot, duplicate=False)

    def known_upload(self, uid: str) -> bool:
        pending = any(s.state == "pending" and s.upload_id == uid for s in self.slots)
        return pending or any(u == uid for u, _, _ in self.sealed)

    def assign(self, c: Assign) -> Outcome:
        if not self.known(c.slot):
            return False, "not_found", {}
        s = self.slots[c.slot]
        if s.upload_id != c.pool_id or s.generation != c.generation:
            return False, "conflict", {}
        if s.state != "pending":
            return self.wrong_state(c.slot)
        if self.known_upload(c.upload_id):
            return False, "already_exists", {}
        if c.next == Location(GROUP, c.slot) or len(c.holders) < self.min_holders:
            return False, "invalid_argument", {}
        s.state, s.upload_id, s.next, s.holders = "live", c.upload_id, c.next, set(c.holders)
        s.content = (c.file_id, c.slice_index, c.length, c.crc32c)
        self.sealed.append((c.upload_id, c.slot, s.generation))
        self.trim()
        return self.view(c.slot, duplicate=False)

    def known(self, slot: int) -> bool:
        return slot < len(self.slots)

    def seal(self, c: Seal) -> Outcome:
        if not self.known(c.slot):
            return False, "not_found", {}
        s = self.slots[c.slot]
        if s.upload_id != c.upload_id or s.generation != c.generation:
            return False, "conflict", {}
        if s.state == "live":
            merged = s.holders | set(c.holders)
            if len(merged) > MAX_HOLDERS:
                return False, "invalid_argument", {}
            s.holders = merged
            return self.view(c.slot, duplicate=True)
        if s.state != "pending":
            return self.wrong_state(c.slot)
        if len(c.holders) < self.min_holders:
            return False, "invalid_argument", {}
        s.state = "live"
        s.holders = set(c.holders)
        self.sealed.append((s.upload_id, c.slot, s.generation))
        self.trim()
        return self.view(c.slot, duplicate=False)

    def to_deleted(self, slot: int) -> None:
        s = self.slots[slot]
        s.state, s.holders, s.target = "deleted", set(), None

    def abort(self, c: Abort) -> Outcome:
        if not self.known(c.slot):
            return False, "not_found", {}
        s = self.slots[c.slot]
        if s.upload_id != c.upload_id or s.generation != c.generation:
            return False, "conflict", {}
        if s.state == "deleted":
            return self.view(c.slot, duplicate=True)
        if s.state != "pending":
            return self.wrong_state(c.slot)
        self.to_deleted(c.slot)
        return self.view(c.slot, duplicate=False)

    def stale(self, slot: int, generation: int | None) -> bool:
        return generation is not None and generation != self.slots[slot].generation

    def delete(self, c: Delete) -> Outcome:
        if not self.known(c.slot):
            return False, "not_found", {}
        if self.stale(c.slot, c.generation):
            return False, "conflict", {}
        s = self.slots[c.slot]
        if s.state == "deleted":
            return self.view(c.slot, duplicate=True)
        if s.state != "live":
            return self.wrong_state(c.slot)
        self.to_deleted(c.slot)
        return self.view(c.slot, duplicate=False)

    def move(self, c: Move) -> Outcome:
        if not self.known(c.slot):
            return False, "not_found", {}
        if self.stale(c.slot, c.generation):
            return False, "conflict", {}
        if c.target == Location(GROUP, c.slot):
            return False, "invalid_argument", {}
        s = self.slots[c.slot]
        if s.state == "moved" and s.target == c.target:
            return self.view(c.slot, duplicate=True)
        if s.state != "live":
            return self.wrong_state(c.slot)
        s.state, s.target = "moved", c.target
        return self.view(c.slot, duplicate=False)

    def relink(self, c: Relink) -> Outcome:
        if not self.known(c.slot):
            return False, "not_found", {}
        if self.stale(c.slot, c.generation):
            return False, "conflict", {}
        if c.next == Location(GROUP, c.slot):
            return False, "invalid_argument", {}
        s = self.slots[c.slot]
        if s.state not in ("pending", "live"):
            return self.wrong_state(c.slot)
        same = s.next == c.next
        s.next = c.next
        return self.view(c.slot, duplicate=same)

    def confirm(self, c: Confirm | Unconfirm) -> Outcome:
        if not self.known(c.slot):
            return False, "not_found", {}
        if self.stale(c.slot, c.generation):
            return False, "conflict", {}
        s = self.slots[c.slot]
        if s.state != "live":
            return self.wrong_state(c.slot)
        if isinstance(c, Confirm):
            same = c.node in s.holders
            s.holders.add(c.node)
        else:
            same = c.node not in s.holders
            s.holders.discard(c.node)
        return self.view(c.slot, duplicate=same)

    def confirm_many(self, c: ConfirmMany) -> Outcome:
        """Each slice confirmed on its own; the refused ones (slot, code) in ``refused``."""
        slots: list[int] = []
        self.refused: list[tuple[int, str | None]] = []
        for slot, generation in c.slices:
            ok, code, _ = self.confirm(Confirm(slot=slot, node=c.node, generation=generation))
            if ok:
                slots.append(slot)
            else:
                self.refused.append((slot, code))
        return True, None, {"slots": slots}

    def release(self, c: Release) -> Outcome:
        if not self.known(c.slot):
            return False, "not_found", {}
        if self.stale(c.slot, c.generation):
            return False, "conflict", {}
        s = self.slots[c.slot]
        if s.state == "deleted":
            return self.view(c.slot, duplicate=True)
        if s.state != "moved":
            return self.wrong_state(c.slot)
        self.to_deleted(c.slot)
        return self.view(c.slot, duplicate=False)

    def configure(self, c: Configure) -> Outcome:
        if c.max_slots is not None and c.max_slots < len(self.slots):
            return False, "conflict", {}
        self.max_slots, self.min_holders, self.window = c.max_slots, c.min_holders, c.upload_window
        self.trim()
        return True, None, {}

    def apply(self, c: Command) -> Outcome:
        outcome = self.apply_one(c)
        self.drop_inline()
        return outcome

    def apply_one(self, c: Command) -> Outcome:
        match c:
            case Reserve():
                return self.reserve(c)
            case Put():
                return self.put(c)
            case Assign():
                return self.assign(c)
            case Seal():
                return self.seal(c)
            case Abort():
                return self.abort(c)
            case Delete():
                return self.delete(c)
            case Move():
                return self.move(c)
            case Relink():
                return self.relink(c)
            case Confirm() | Unconfirm():
                return self.confirm(c)
            case ConfirmMany():
                return self.confirm_many(c)
            case Release():
                return self.release(c)
            case Configure():
                return self.configure(c)
            case _:
                return True, None, {}


class GroupStateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.machine = GroupState(GROUP, upload_window=4)
        self.twin = GroupState(GROUP, upload_window=4)
        self.model = Model()
        self.restores = 0

    # -- driving both machines and the model

    def run(self, command: Command) -> dict[str, Any]:
        before = self.machine.digest()
        result = self.machine.apply(command.to_dict())
        assert self.twin.apply(command.to_dict()) == result  # same result on every node
        ok, code, fields = self.model.apply(command)
        dup = "dup" if result.get("duplicate") else "new"
        event(f"{command.OP}: {result['error'] if not result['ok'] else dup}")
        assert result["ok"] is ok, (command, result)
        if ok:
            for key, value in fields.items():
                assert result[key] == value, (command, key, result, fields)
        else:
            assert result["error"] == code, (command, result, code)
            assert self.machine.digest() == before  # a refusal changes nothing
        return result

    def pick_slot(self, data: st.DataObject, states: tuple[str, ...]) -> int:
        """Mostly a slot in one of ``states``; sometimes any slot number at all."""
        wanted = [i for i, s in enumerate(self.model.slots) if s.state in states]
        if wanted and data.draw(st.integers(0, 4), label="pick") > 0:
            return data.draw(st.sampled_from(wanted), label="slot")
        return data.draw(st.integers(0, len(self.model.slots) + 1), label="slot")

    def pick_generation(self, data: st.DataObject, slot: int, *, nullable: bool) -> int | None:
        real = self.model.slots[slot].generation if self.model.known(slot) else 1
        options: list[int | None] = [real, real, real + 1]
        if nullable:
            options.append(None)
        return data.draw(st.sampled_from(options), label="generation")

    # -- rules

    @rule(
        upload_id=st.sampled_from(UPLOADS),
        same_content=st.integers(0, 9).map(bool),
        now_ms=st.integers(0, 1000),
        next=maybe_locations,
    )
    def reserve(
        self, upload_id: str, same_content: bool, now_ms: int, next: Location | None
    ) -> None:
        # A retry normally carries the same content; one in ten reuses the id for another slice.
        n = UPLOADS.index(upload_id)
        file_id, slice_index, length = FILES[n % 2], n % 3, LENGTHS[n % len(LENGTHS)]
        crc = n if same_content else n + 1
        free_before = sorted(self.machine.free_slots())
        end_before = self.machine.stats().end
        moved_before = {i.slot for i in self.machine.slots(SlotState.MOVED)}
        command = Reserve(
            upload_id=upload_id,
            file_id=file_id,
            slice_index=slice_index,
            length=length,
            crc32c=crc,
            now_ms=now_ms,
            next=next,
        )
        result = self.run(command)
        if result["ok"] and not result["duplicate"]:
            expected = free_before[0] if free_before else end_before
            event("reserve: reused a free slot" if free_before else "reserve: at the end")
            assert result["slot"] == expected  # lowest free slot, else the end
            assert result["slot"] not in moved_before  # 301 slots are never reused
            assert result["generation"] == self.machine.stats().generation

    @rule(upload_id=st.sampled_from(UPLOADS), holders=holder_sets, now_ms=st.integers(0, 9))
    def upload(self, upload_id: str, holders: list[str], now_ms: int) -> None:
        """The happy path in one step: reserve, then seal with the holders the leader saw."""
        self.reserve(upload_id, True, now_ms, None)
        info = self.machine.upload(upload_id)
        if info is not None and info.state is SlotState.PENDING:
            seal = Seal(
                slot=info.slot,
                upload_id=upload_id,
                generation=info.generation,
                holders=tuple(holders),
            )
            self.run(seal)

    @rule(
        upload_id=st.sampled_from(UPLOADS),
        same_content=st.integers(0, 9).map(bool),
        next=maybe_locations,
    )
    def put(self, upload_id: str, same_content: bool, next: Location | None) -> None:
        """An inline upload: a small slice live at once, its payload in the table."""
        n = UPLOADS.index(upload_id)
        payload = bytes([n]) * (n % 5 + (0 if same_content else 1))
        free_before = sorted(self.machine.free_slots())
        end_before = self.machine.stats().end
        command = Put.of(
            payload,
            upload_id=upload_id,
            file_id=FILES[n % 2],
            slice_index=n % 3,
            length=len(payload),
            crc32c=crc32c(payload),
            now_ms=n,
            next=next,
        )
        result = self.run(command)
        if result["ok"] and not result["duplicate"]:
            event("put: a new inline slice")
            assert result["slot"] == (free_before[0] if free_before else end_before)
            assert result["state"] == "live" and result["holders"] == []
            assert self.machine.inline(result["slot"], result["generation"]) == payload

    @rule(k=st.integers(0, 3), now_ms=st.integers(0, 9))
    def reserve_ahead(self, k: int, now_ms: int) -> None:
        """A leader's slot reserved ahead: a reservation with a pool id and no content."""
        pool = Reserve(
            upload_id=f"pool.{k}",
            file_id="0" * 32,
            slice_index=0,
            length=0,
            crc32c=0,
            now_ms=now_ms,
            next=None,
        )
        self.run(pool)

    @rule(
        data=st.data(),
        upload_id=st.sampled_from(UPLOADS),
        holders=holder_sets,
        next=maybe_locations,
        right_pool=st.integers(0, 4).map(bool),
    )
    def assign(
        self,
        data: st.DataObject,
        upload_id: str,
        holders: list[str],
        next: Location | None,
        right_pool: bool,
    ) -> None:
        """A one-slice upload written into a slot reserved ahead, then assigned and sealed."""
        slot = self.pick_slot(data, ("pending", "pending", "live"))
        info = self.machine.get(slot)
        pool_id = info.upload_id if info is not None and right_pool else "pool.9"
        if not pool_id.startswith("pool."):
            pool_id = "pool.8"
        n = UPLOADS.index(upload_id)
        command = Assign(
            slot=slot,
            generation=self.pick_generation(data, slot, nullable=False) or 1,
            pool_id=pool_id,
            upload_id=upload_id,
            file_id=FILES[n % 2],
            slice_index=n % 3,
            length=LENGTHS[n % len(LENGTHS)],
            crc32c=n,
            next=next,
            holders=tuple(holders),
        )
        result = self.run(command)
        if result["ok"]:
            event("assign: a slot reserved ahead became live")
            assert result["state"] == "live"

    @rule(data=st.data(), holders=holder_sets, right_upload=st.booleans())
    def seal(self, data: st.DataObject, holders: list[str], right_upload: bool) -> None:
        slot = self.pick_slot(data, ("pending", "pending", "live"))
        upload_id = self.upload_for(data, slot, right_upload)
        generation = self.pick_generation(data, slot, nullable=False)
        assert generation is not None
        self.run(
            Seal(slot=slot, upload_id=upload_id, generation=generation, holders=tuple(holders))
        )

    @rule(data=st.data(), right_upload=st.booleans())
    def abort(self, data: st.DataObject, right_upload: bool) -> None:
        slot = self.pick_slot(data, ("pending",))
        upload_id = self.upload_for(data, slot, right_upload)
        generation = self.pick_generation(data, slot, nullable=False)
        assert generation is not None
        self.run(Abort(slot=slot, upload_id=upload_id, generation=generation))

    def upload_for(self, data: st.DataObject, slot: int, right: bool) -> str:
        if right and self.model.known(slot):
            return self.model.slots[slot].upload_id
        return data.draw(st.sampled_from(UPLOADS), label="upload_id")

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        slot = self.pick_slot(data, ("live",))
        self.run(Delete(slot=slot, generation=self.pick_generation(data, slot, nullable=True)))

    @rule(data=st.data(), to=locations)
    def move(self, data: st.DataObject, to: Location) -> None:
        slot = self.pick_slot(data, ("live", "moved"))
        generation = self.pick_generation(data, slot, nullable=True)
        self.run(Move(slot=slot, target=to, generation=generation))

    @rule(data=st.data(), next=maybe_locations)
    def relink(self, data: st.DataObject, next: Location | None) -> None:
        slot = self.pick_slot(data, ("pending", "live"))
        generation = self.pick_generation(data, slot, nullable=True)
        self.run(Relink(slot=slot, next=next, generation=generation))

    @rule(data=st.data(), node=st.sampled_from([*NODES, "n4"]), add=st.booleans())
    def confirm(self, data: st.DataObject, node: str, add: bool) -> None:
        slot = self.pick_slot(data, ("live",))
        generation = self.pick_generation(data, slot, nullable=False)
        assert generation is not None
        kind = Confirm if add else Unconfirm
        self.run(kind(slot=slot, node=node, generation=generation))

    @rule(data=st.data(), node=st.sampled_from([*NODES, "n4"]), count=st.integers(1, 4))
    def confirm_many(self, data: st.DataObject, node: str, count: int) -> None:
        picks: dict[int, int] = {}
        for _ in range(count):
            slot = self.pick_slot(data, ("live",))
            generation = self.pick_generation(data, slot, nullable=False)
            assert generation is not None
            picks[slot] = generation
        result = self.run(ConfirmMany(node=node, slices=tuple(picks.items())))
        assert [(r["slot"], r["error"]) for r in result["refused"]] == self.model.refused

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        slot = self.pick_slot(data, ("moved",))
        self.run(Release(slot=slot, generation=self.pick_generation(data, slot, nullable=True)))

    @rule(
        room=st.none() | st.integers(-2, 3),
        min_holders=st.sampled_from([1, 2, 2, 3]),
        window=st.integers(0, 5),
    )
    def configure(self, room: int | None, min_holders: int, window: int) -> None:
        max_slots = None if room is None else max(1, len(self.model.slots) + room)
        self.run(Configure(max_slots=max_slots, min_holders=min_holders, upload_window=window))

    @rule()
    def noop(self) -> None:
        assert self.run(Noop()) == {"ok": True, "op": "noop"}

    @rule(
        wire=st.sampled_from(
            [
                {"op": "reserve"},
                {
                    "op": "seal",
                    "slot": 0,
                    "upload_id": "u0",
                    "generation": 1,
                    "holders": ["n1", "n1"],
                },
                {"op": "abort", "slot": 0, "upload_id": "u0", "generation": 0},
                {"op": "delete", "slot": -1, "generation": None},
                {"op": "delete", "slot": 0, "generation": False},
                {"op": "move", "slot": 0, "target": [1], "generation": None},
                {"op": "configure", "max_slots": 0, "min_holders": 2, "upload_window": 1},
                {"op": "drop_table"},
            ]
        )
        | st.dictionaries(st.sampled_from(["op", "slot", "x"]), st.integers() | st.text(max_size=3))
    )
    def malformed(self, wire: dict[str, Any]) -> None:
        before = self.machine.digest()
        result = self.machine.apply(wire)
        assert self.twin.apply(wire) == result
        assert result["ok"] is False
        assert result["error"] in ("invalid_argument", "slot_out_of_range")
        assert self.machine.digest() == before

    @rule()
    def snapshot_and_restore(self) -> None:
        data = self.machine.snapshot()
        fresh = GroupState(GROUP)
        fresh.restore(data)
        assert fresh.snapshot() == data
        assert fresh.digest() == self.machine.digest()
        self.machine = fresh  # carry on with the restored copy; the twin never restores
        self.restores += 1

    # -- invariants

    @invariant()
    def internal_invariants_hold(self) -> None:
        self.machine.check_invariants()

    @invariant()
    def inline_payloads_match_the_model(self) -> None:
        for info, m in zip(self.machine.slots(), self.model.slots, strict=True):
            assert self.machine.inline(info.slot, info.generation) == m.inline
        assert self.machine.inline_bytes == sum(len(m.inline or b"") for m in self.model.slots)

    @invariant()
    def same_commands_same_digest(self) -> None:
        assert self.machine.digest() == self.twin.digest()

    @invariant()
    def table_matches_the_model(self) -> None:
        records = self.machine.slots()
        assert len(records) == len(self.model.slots)
        for info, m in zip(records, self.model.slots, strict=True):
            assert info.state.value == m.state
            assert info.generation == m.generation
            assert info.upload_id == m.upload_id
            assert (info.file_id, info.slice_index, info.length, info.crc32c) == m.content
            assert info.next == m.next
            assert info.target == m.target
            assert set(info.holders) == m.holders
            assert info.reserved_at_ms == m.at_ms
        assert self.machine.free_slots() == self.model.free()
        assert self.machine.next_slot() == self.model.allocation()
        stats = self.machine.stats()
        assert stats.generation == self.model.generation
        for state in ("live", "moved", "deleted"):
            assert getattr(stats, state) == sum(s.state == state for s in self.model.slots)
        pending = [s for s in self.model.slots if s.state == "pending"]
        ahead = sum(s.upload_id.startswith("pool.") for s in pending)
        assert (stats.pending, stats.ahead) == (len(pending) - ahead, ahead)
        assert stats.bytes_live == sum(s.content[2] for s in self.model.slots if s.state == "live")
        config = self.machine.config
        assert (config.max_slots, config.min_holders, config.upload_window) == (
            self.model.max_slots,
            self.model.min_holders,
            self.model.window,
        )

    @invariant()
    def upload_index_matches_the_model(self) -> None:
        pending = sorted(
            (
                (s.generation, s.upload_id, i)
                for i, s in enumerate(self.model.slots)
                if s.state == "pending"
            )
        )
        refs = self.machine.uploads()
        assert [(r.upload_id, r.slot, r.sealed) for r in refs] == [
            (uid, i, False) for _, uid, i in pending
        ] + [(uid, i, True) for uid, i, _ in self.model.sealed]
        assert [p.slot for p in self.machine.pending()] == [i for _, _, i in pending]

    @invariant()
    def never_free_and_live(self) -> None:
        free = set(self.machine.free_slots())
        for info in self.machine.slots():
            assert (info.slot in free) == (info.state is SlotState.DELETED)
            if info.state in (SlotState.PENDING, SlotState.DELETED):
                assert info.holders == ()


GroupStateMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestGroupStateMachine = GroupStateMachine.TestCase
