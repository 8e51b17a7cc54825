"""The compactor's shell (``tracker/compactor.py``) against a stand-in group leader: a
compaction prepares at the group, records its decision, then brings it to the group with the
decision's token; a refused prepare, a file changed since the plan, or an abort a group's
resolver had recorded meanwhile end in a rollback and no commit."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from mydfs.common.location import Location
from mydfs.tracker.compaction import Part, Plan, Rules
from mydfs.tracker.compactor import Compactor, Sources
from mydfs.tracker.decisions import abort_of
from mydfs.tracker.records import Decision, FileEntry

FID = "ab" * 16
PATH = "/f"
ENTRY = FileEntry(FID, 100, 2, Location(1, 0), "h", 0.0, 10.0, 3, ((1, 3),), 0)
#: head -> [0: 301] -> [2] -> [3]: the head moves to 2, slot 0 is freed.
PLAN = Plan(
    PATH,
    FID,
    3,
    Location(1, 2),
    (Location(1, 0),),
    (Part(1, ((0, 1), (2, 1)), ((2, 1, Location(1, 3)),)),),
)


class Group:
    """A group leader answering the participant routes; ``prepare`` is the status its
    prepare gets (200 or a refusal)."""

    def __init__(self, prepare: int = 200) -> None:
        self.prepare_status = prepare
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.on_prepare: list[Any] = []
        self.elections = 0  # the next decisions answered 307 (no leader yet)

    async def handle(self, request: web.Request) -> web.Response:
        step = request.match_info["step"]
        body = await request.json()
        self.calls.append((step, body))
        if step == "prepare":
            for hook in self.on_prepare:
                hook(request.match_info["txn"])
            if self.prepare_status != 200:
                return web.json_response(
                    {"error": "conflict", "message": "locked", "reason": "locked"},
                    status=self.prepare_status,
                )
        if step != "prepare" and self.elections > 0:
            self.elections -= 1
            return web.json_response(
                {"error": "not_leader", "message": "not the leader"}, status=307
            )
        return web.json_response({"ok": True, "state": step})


class World:
    def __init__(self, group: Group, entry: FileEntry | None = ENTRY) -> None:
        self.group = group
        self.entry = entry
        self.decisions: dict[str, Decision] = {}
        self.recorded: list[Decision] = []

    def sources(self, url: str) -> Sources:
        async def record(d: Decision) -> None:
            self.decisions[d.txn] = d
            self.recorded.append(d)

        return Sources(
            nodes_of=lambda g: [url],
            files=lambda ids: [],
            get=lambda path: self.entry,
            decided=self.decisions.get,
            record=record,
            token=lambda d: f"token-{d.txn}-{'commit' if d.committed else 'abort'}",
            grant=lambda file_id: "grant",
        )


async def run(world: World) -> tuple[bool, CollectorRegistry]:
    app = web.Application()
    app.router.add_post("/edits/{txn}/{step}", world.group.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = f"http://127.0.0.1:{server.port}"
        registry = CollectorRegistry()
        c = Compactor(world.sources(url), Rules(1, 10, 0.0), rate=1000.0, registry=registry)
        async with aiohttp.ClientSession() as session:
            return await c.run(session, PLAN), registry
    finally:
        await server.close()


def outcome(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value("mydfs_tracker_compactions_total", {"outcome": name})


async def test_a_compaction_prepares_decides_and_commits() -> None:
    world = World(Group())
    committed, c = await run(world)
    assert committed
    (d,) = world.recorded
    assert d.committed and d.version == 4 and d.entry is not None
    assert d.entry.head == Location(1, 2) and d.entry.layout == 4
    assert d.entry.versions == ((1, 4),) and d.entry.mtime == ENTRY.mtime
    steps = [step for step, _ in world.group.calls]
    assert steps == ["prepare", "commit"]
    assert world.group.calls[0][1]["keep"] == [[2, 1, [1, 3]]]
    assert world.group.calls[1][1] == {"decision": f"token-{d.txn}-commit"}
    assert outcome(c, "committed") == 1


async def test_a_refused_prepare_rolls_back() -> None:
    world = World(Group(prepare=409))
    committed, c = await run(world)
    assert not committed
    (d,) = world.recorded
    assert not d.committed
    assert [step for step, _ in world.group.calls] == ["prepare", "rollback"]
    assert outcome(c, "aborted") == 1


async def test_a_file_changed_since_the_plan_is_not_committed() -> None:
    world = World(Group(), entry=replace(ENTRY, version=4, versions=((1, 4),)))
    committed, c = await run(world)
    assert not committed
    assert [d.committed for d in world.recorded] == [False]
    assert [step for step, _ in world.group.calls] == ["prepare", "rollback"]
    assert outcome(c, "stale") == 1


async def test_an_abort_recorded_meanwhile_stands() -> None:
    group = Group()
    world = World(group)
    # A group's resolver asked about the prepare and the tracker recorded an abort.
    group.on_prepare.append(
        lambda txn: world.decisions.setdefault(txn, abort_of(txn, FID, "", 11.0))
    )
    committed, c = await run(world)
    assert not committed
    assert world.recorded == []  # no second decision, and no commit
    (txn,) = world.decisions
    assert [step for step, _ in group.calls] == ["prepare", "rollback"]
    assert group.calls[1][1] == {"decision": f"token-{txn}-abort"}
    assert outcome(c, "aborted") == 1


async def test_a_decision_is_brought_again_through_an_election() -> None:
    group = Group()
    group.elections = 2
    committed, _ = await run(World(group))
    assert committed
    assert [step for step, _ in group.calls] == ["prepare", "commit", "commit", "commit"]
