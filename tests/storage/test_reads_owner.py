"""The node's side of the reader's rule (``storage/reads.py``): told the owner a reader expects,
a node whose table names another answers only once it is proven current. A follower redirects
to its leader (or refuses, retryably, when it knows none); the leader commits a read barrier
and looks again; a leader that cannot commit refuses, retryably. A table that agrees is served
without any barrier."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from mydfs.common.errors import NotFound, OutcomeUnknown, Redirect, Unavailable
from mydfs.common.location import Location
from mydfs.storage.context import LockedGroup
from mydfs.storage.group_commands import Delete, Reserve, Seal
from mydfs.storage.group_state import GroupState
from mydfs.storage.reads import ReadResolver

GROUP = 1
OLD, NEW = "0a" * 16, "0b" * 16
LEADER_URL = "http://leader"


def put(state: GroupState, file_id: str, upload: str, *, length: int = 100) -> int:
    """A sealed one-slice file: its slot (the lowest free one)."""
    reserved = state.apply(
        Reserve(
            upload_id=upload,
            file_id=file_id,
            slice_index=0,
            length=length,
            crc32c=7,
            now_ms=1,
            next=Location(GROUP, 99),
        ).to_dict()
    )
    slot, generation = int(reserved["slot"]), int(reserved["generation"])
    state.apply(
        Seal(slot=slot, upload_id=upload, generation=generation, holders=("n1", "n2")).to_dict()
    )
    return slot


def reuse(state: GroupState) -> None:
    """OLD's slot 0 deleted and reused by NEW (what the stale table has not seen)."""
    info = state.get(0)
    assert info is not None and info.file_id == OLD
    state.apply(Delete(slot=0, generation=info.generation).to_dict())
    assert put(state, NEW, "u-new") == 0


class FakeRaft:
    def __init__(self, on_barrier: Callable[[], None]) -> None:
        self.on_barrier = on_barrier
        self.barriers = 0

    async def barrier(self, *, timeout: float) -> None:
        self.barriers += 1
        self.on_barrier()


class FakeContext:
    """What :class:`ReadResolver` uses of a node: its table, its role, its leader, Raft."""

    def __init__(self, *, leader: bool, leader_url: str | None = LEADER_URL) -> None:
        self.group_id = GROUP
        self.node_id = "n1"
        self.state = GroupState(GROUP)
        self.group = LockedGroup(self.state, lambda slot, bytes_changed: None)
        self.raft = FakeRaft(lambda: None)
        self.changed = asyncio.Event()
        self._leader = leader
        self._leader_url = leader_url
        put(self.state, OLD, "u-old")  # slot 0: the old file, as the stale table has it

    def require(self) -> tuple[Any, FakeRaft, Any]:
        return object(), self.raft, object()

    def info(self, slot: int) -> Any:
        return self.group.read(lambda g: g.get(slot))

    def is_leader(self) -> bool:
        return self._leader

    def leader_url(self) -> str | None:
        return self._leader_url


def resolver(ctx: FakeContext) -> ReadResolver:
    return ReadResolver(ctx, lambda slot, gen: True, lambda slot: None)  # type: ignore[arg-type]


async def test_an_agreeing_table_is_served_without_a_barrier() -> None:
    ctx = FakeContext(leader=False)
    entries, nxt = await resolver(ctx).walk(0, 1, (OLD, 0))
    assert [(e.file_id, e.index) for e in entries] == [(OLD, 0)] and nxt == Location(GROUP, 99)
    info = await resolver(ctx).resolve(0, None, (OLD, 0))
    assert info.file_id == OLD
    assert ctx.raft.barriers == 0


async def test_without_an_expected_owner_the_table_answers_as_it_is() -> None:
    ctx = FakeContext(leader=False)
    entries, _ = await resolver(ctx).walk(0, 1)
    assert entries[0].file_id == OLD  # the reader's own check is what refuses it


@pytest.mark.parametrize("what", ["chain", "slice"])
async def test_a_disagreeing_follower_sends_the_reader_to_its_leader(what: str) -> None:
    ctx = FakeContext(leader=False)
    with pytest.raises(Redirect) as exc:
        if what == "chain":
            await resolver(ctx).walk(0, 1, (NEW, 0))
        else:
            await resolver(ctx).resolve(0, None, (NEW, 0))
    assert exc.value.url == LEADER_URL and ctx.raft.barriers == 0

    alone = FakeContext(leader=False, leader_url=None)
    with pytest.raises(Unavailable, match="knows no leader") as err:
        await resolver(alone).walk(0, 1, (NEW, 0))
    assert err.value.retryable


@pytest.mark.parametrize("what", ["chain", "slice"])
async def test_a_disagreeing_leader_proves_itself_current_then_answers(what: str) -> None:
    ctx = FakeContext(leader=True)
    ctx.raft.on_barrier = lambda: reuse(ctx.state)  # the barrier applies what it had missed
    if what == "chain":
        entries, _ = await resolver(ctx).walk(0, 1, (NEW, 0))
        assert [(e.file_id, e.index) for e in entries] == [(NEW, 0)]
    else:
        info = await resolver(ctx).resolve(0, None, (NEW, 0))
        assert (info.file_id, info.slice_index) == (NEW, 0)
    assert ctx.raft.barriers == 1


@pytest.mark.parametrize("what", ["chain", "slice"])
async def test_a_current_leader_refuses_a_stale_entry(what: str) -> None:
    ctx = FakeContext(leader=True)
    with pytest.raises(NotFound) as exc:
        if what == "chain":
            await resolver(ctx).walk(0, 1, (NEW, 0))
        else:
            await resolver(ctx).resolve(0, None, (NEW, 0))
    assert exc.value.context["reason"] == "another_owner" and ctx.raft.barriers == 1
    with pytest.raises(NotFound):  # another slice of the file is not this one either
        await resolver(ctx).walk(0, 1, (OLD, 1))


async def test_a_leader_that_cannot_commit_refuses_retryably() -> None:
    ctx = FakeContext(leader=True)

    def cut_off() -> None:
        raise OutcomeUnknown("no answer from Raft within the timeout")

    ctx.raft.on_barrier = cut_off
    for attempt in (resolver(ctx).walk(0, 1, (NEW, 0)), resolver(ctx).resolve(0, None, (NEW, 0))):
        with pytest.raises(Unavailable, match="cannot prove its table current") as exc:
            await attempt
        assert type(exc.value) is Unavailable and exc.value.retryable
