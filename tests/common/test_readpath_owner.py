"""The reader's rule: every chain run and every slice a node answers is checked against what the
reader expects (file id, slice index, generation), for whole reads and ranges alike. A stale
answer (a node whose table is behind: the slot was freed and reused by another file of the same
size) is tried elsewhere or ends in an error, never in another file's bytes.

The nodes are small in-process aiohttp servers; a "stale" one answers from the old table: the
same slots, the old file's owner, generation and bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from mydfs.common.checksum import crc32c
from mydfs.common.errors import NotFound, Unavailable
from mydfs.common.httprange import parse_range
from mydfs.common.location import Location
from mydfs.common.readpath import (
    ChainRun,
    ReadPath,
    SliceLoc,
    fetch_chain_run,
    fetch_slice,
    foreign_owner,
    owner_mismatch,
    stale_generation,
)
from mydfs.common.web import error_response, json_response

OLD, NEW = "0a" * 16, "0b" * 16  # the deleted file, and the file that reused its slots
SIZE = 1000


def payload(file_id: str, index: int) -> bytes:
    return (f"{file_id}#{index};".encode() * SIZE)[:SIZE]


@dataclass
class Held:
    """What a node's table and disk say a slot holds."""

    file_id: str
    index: int
    generation: int

    @property
    def data(self) -> bytes:
        return payload(self.file_id, self.index)

    def entry(self, group: int, slot: int, replicas: list[str]) -> dict[str, Any]:
        return {
            "group": group,
            "slot": slot,
            "generation": self.generation,
            "length": len(self.data),
            "crc32c": crc32c(self.data),
            "file_id": self.file_id,
            "index": self.index,
            "replicas": replicas,
        }


@dataclass
class Node:
    """A node of group ``group`` answering ``/chain`` and ``/slices`` from ``table`` (slot →
    what it holds; the chain links consecutive slots of ``table`` in order)."""

    group: int
    table: dict[int, Held]
    url: str = ""
    asked: list[tuple[str, str | None, str | None]] = field(default_factory=list)

    def note(self, request: web.Request) -> None:
        h = request.headers
        self.asked.append((request.path_qs, h.get("X-Mydfs-File"), h.get("X-Mydfs-Index")))

    async def chain(self, request: web.Request) -> web.StreamResponse:
        self.note(request)
        slots = sorted(self.table)
        start = slots.index(int(request.match_info["slot"]))
        run = slots[start : start + int(request.query["max"])]
        entries = [self.table[s].entry(self.group, s, [self.url]) for s in run]
        return json_response({"entries": entries, "next": None})

    async def slice(self, request: web.Request) -> web.StreamResponse:
        self.note(request)
        held = self.table.get(int(request.match_info["slot"]))
        if held is None:
            return error_response(NotFound("no such slice"))
        headers = {
            "X-Mydfs-File": held.file_id,
            "X-Mydfs-Index": str(held.index),
            "X-Mydfs-Generation": str(held.generation),
        }
        data = held.data
        rng = parse_range(request.headers.get("Range"), len(data))
        if rng is None:
            return web.Response(body=data, headers=headers)
        lo, n = rng
        headers["Content-Range"] = f"bytes {lo}-{lo + n - 1}/{len(data)}"
        return web.Response(body=data[lo : lo + n], status=206, headers=headers)


def tables() -> tuple[dict[int, Held], dict[int, Held]]:
    """Slots 4, 5 of a group: the stale table (OLD's slices, generations 1, 2) and the
    current one (NEW's, same sizes and count, generations 7, 8)."""
    stale = {4: Held(OLD, 0, 1), 5: Held(OLD, 1, 2)}
    current = {4: Held(NEW, 0, 7), 5: Held(NEW, 1, 8)}
    return stale, current


def nodes_of(mapping: dict[int, list[str]]) -> Callable[[int], Awaitable[list[str]]]:
    async def get(group: int) -> list[str]:
        return mapping.get(group, [])

    return get


def new_bytes() -> bytes:
    return payload(NEW, 0) + payload(NEW, 1)


# --- pure checks ------------------------------------------------------------------------------


def test_a_run_must_carry_the_file_id_and_consecutive_indexes() -> None:
    run = [SliceLoc(1, 4, 7, 10, 0, (), NEW, 2), SliceLoc(1, 5, 8, 10, 0, (), NEW, 3)]
    assert owner_mismatch(run, NEW, 2) is None
    assert owner_mismatch(run, "", 0) is None  # a reader that does not know the file
    assert owner_mismatch([], NEW, 0) is None
    why = owner_mismatch(run, OLD, 2)
    assert why is not None and f"{OLD}#2 was expected" in why
    assert owner_mismatch(run, NEW, 0) is not None  # a run starting at the wrong slice
    skipped = [run[0], SliceLoc(1, 6, 9, 10, 0, (), NEW, 4)]
    assert owner_mismatch(skipped, NEW, 2) is not None
    unnamed = [SliceLoc(1, 4, 7, 10, 0, ())]  # an entry without an owner is not the file's
    assert owner_mismatch(unnamed, NEW, 0) is not None


def test_a_replica_answer_must_carry_the_owner_and_generation() -> None:
    loc = SliceLoc(1, 4, 7, 10, 0, (), NEW, 2)
    right = {"X-Mydfs-File": NEW, "X-Mydfs-Index": "2", "X-Mydfs-Generation": "7"}
    assert foreign_owner(loc, right) is None and stale_generation(loc, right) is None
    for key, value in (("X-Mydfs-File", OLD), ("X-Mydfs-Index", "0")):
        err = foreign_owner(loc, dict(right, **{key: value}), slot=4)
        assert isinstance(err, NotFound) and err.context == {"slot": 4}
    assert isinstance(foreign_owner(loc, {"X-Mydfs-Generation": "7"}), NotFound)
    err = stale_generation(loc, dict(right, **{"X-Mydfs-Generation": "6"}))
    assert isinstance(err, Unavailable) and err.retryable
    assert isinstance(stale_generation(loc, {}), Unavailable)
    unknown = SliceLoc(1, 4, 0, 10, 0, (), NEW, 2)  # a one-slice file located from its entry
    assert stale_generation(unknown, dict(right, **{"X-Mydfs-Generation": "6"})) is None


# --- the chain --------------------------------------------------------------------------------


async def test_a_stale_walk_of_another_file_is_tried_elsewhere_never_used(
    serve: Callable[[Node], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    stale_table, current_table = tables()
    stale, current = Node(1, stale_table), Node(1, current_table)
    surl, curl = await serve(stale), await serve(current)
    # Same count and size: the entry's count/size check alone would take the stale chain.
    run = await fetch_chain_run(
        session, [surl, curl], Location(1, 4), 2, timeout=5, file_id=NEW, first=0
    )
    assert [(e.file_id, e.index, e.generation) for e in run.entries] == [(NEW, 0, 7), (NEW, 1, 8)]
    # The node was told what the reader expects, so a real one can redirect or refuse.
    assert stale.asked == [("/chain/4?max=2", NEW, "0")]

    with pytest.raises(Unavailable, match="stale answer") as exc:
        await fetch_chain_run(session, [surl], Location(1, 4), 2, timeout=5, file_id=NEW)
    assert exc.value.retryable

    reader = ReadPath(session, nodes_of({1: [surl]}))
    with pytest.raises(Unavailable):
        await reader.chain(Location(1, 4), 2, 2 * SIZE, file_id=NEW, path="/f")
    reader = ReadPath(session, nodes_of({1: [surl, curl]}))
    for _ in range(5):  # whichever node the shuffle asks first
        locs = await reader.chain(Location(1, 4), 2, 2 * SIZE, file_id=NEW, path="/f")
        assert [loc.generation for loc in locs] == [7, 8]
        assert b"".join([p async for p in reader.stream(locs, 0, 2 * SIZE)]) == new_bytes()


async def test_a_later_run_must_continue_the_slice_indexes(
    serve: Callable[[Node], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    node = Node(2, {9: Held(NEW, 0, 3)})  # the file's slice 0 where slice 5 is expected
    url = await serve(node)
    with pytest.raises(Unavailable, match=f"{NEW}#5 was expected"):
        await fetch_chain_run(session, [url], Location(2, 9), 1, timeout=5, file_id=NEW, first=5)
    assert node.asked == [("/chain/9?max=1", NEW, "5")]


async def test_a_stale_local_table_is_not_trusted(
    serve: Callable[[Node], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    stale_table, current_table = tables()
    current = Node(1, current_table)
    url = await serve(current)

    async def local_run(start: Location, limit: int) -> ChainRun:  # this node's stale table
        entries = [SliceLoc.from_wire(stale_table[s].entry(1, s, [])) for s in (4, 5)]
        return ChainRun(entries, None)

    reader = ReadPath(session, nodes_of({1: [url]}), local_run=local_run)
    locs = await reader.chain(Location(1, 4), 2, 2 * SIZE, file_id=NEW)
    assert [(loc.file_id, loc.generation) for loc in locs] == [(NEW, 7), (NEW, 8)]
    assert current.asked == [("/chain/4?max=2", NEW, "0")]


# --- a slice ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("what", "offset", "length"), [("whole", 0, None), ("range", 10, 100), ("tail", 900, None)]
)
async def test_a_stale_replica_never_serves_its_bytes(
    serve: Callable[[Node], Awaitable[str]],
    session: aiohttp.ClientSession,
    what: str,
    offset: int,
    length: int | None,
) -> None:
    stale_table, current_table = tables()
    stale, current = Node(1, stale_table), Node(1, current_table)
    surl, curl = await serve(stale), await serve(current)
    want = payload(NEW, 0)[offset : None if length is None else offset + length]
    loc = SliceLoc.from_wire(current_table[4].entry(1, 4, [surl, curl]))
    got = await fetch_slice(session, [surl, curl], loc, offset, length, timeout=5)
    assert got == want
    assert stale.asked == [("/slices/4?gen=7", NEW, "0")]
    with pytest.raises(NotFound, match="another file"):
        await fetch_slice(session, [surl], loc, offset, length, timeout=5)

    # Same owner, another generation (a slice rewritten since): a stale answer, retryable.
    stale.table[4] = Held(NEW, 0, 6)
    with pytest.raises(Unavailable, match="generation 6, not 7"):
        await fetch_slice(session, [surl], loc, offset, length, timeout=5)
    # Another slice of the same file in that slot: not this slice.
    stale.table[4] = Held(NEW, 1, 7)
    with pytest.raises(NotFound, match=f"{NEW}#1, not {NEW}#0"):
        await fetch_slice(session, [surl], loc, offset, length, timeout=5)


async def test_a_one_slice_file_located_from_its_entry_checks_the_owner(
    serve: Callable[[Node], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    stale_table, current_table = tables()
    stale, current = Node(1, stale_table), Node(1, current_table)
    surl, curl = await serve(stale), await serve(current)
    data = payload(NEW, 0)
    one = SliceLoc(1, 4, 0, len(data), crc32c(data), (), NEW, 0)  # no generation known
    reader = ReadPath(session, nodes_of({1: [surl]}))
    for offset, end in ((0, SIZE), (100, 300)):
        with pytest.raises(NotFound, match="another file"):
            _ = [p async for p in reader.stream([one], offset, end)]
    reader = ReadPath(session, nodes_of({1: [surl, curl]}))
    for _ in range(5):
        assert b"".join([p async for p in reader.stream([one], 100, 300)]) == data[100:300]
    assert {a[1:] for a in stale.asked} == {(NEW, "0")}


async def test_retry_turns_a_stale_answer_into_a_read_of_the_current_one(
    serve: Callable[[Node], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    """With the SDK's retry policy, a group whose only reachable node is stale retries; once
    it has caught up, the read returns the new file's bytes."""
    stale_table, current_table = tables()
    node = Node(1, stale_table)
    url = await serve(node)
    tries: list[str] = []

    async def retry(what: str, attempt: Callable[[], Awaitable[Any]], **context: Any) -> Any:
        for _ in range(3):
            try:
                return await attempt()
            except Unavailable:
                tries.append(what)
                node.table = current_table  # the node catches up
        raise AssertionError("never caught up")

    reader = ReadPath(session, nodes_of({1: [url]}), retry=retry)
    locs = await reader.chain(Location(1, 4), 2, 2 * SIZE, file_id=NEW)
    assert b"".join([p async for p in reader.stream(locs, 0, 2 * SIZE)]) == new_bytes()
    assert tries == ["chain walk"]
