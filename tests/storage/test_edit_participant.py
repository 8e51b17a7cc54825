"""The storage node's side of an edit (``storage/edits.py``, ``storage/http_edits.py``, the
version of ``GET /chain`` in ``storage/reads.py``), without a cluster: a fake node context whose
Raft applies commands straight to a :class:`GroupState`, a fake tracker (an aiohttp test
server) for the resolver, and the HTTP routes of a node that was never started."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import test_utils, web

from mydfs.common import grants
from mydfs.common.auth import AUTH_HEADER, verify
from mydfs.common.errors import Conflict, Forbidden, Redirect, Unauthorized
from mydfs.common.location import Location
from mydfs.storage import config as storage_config
from mydfs.storage.context import LockedGroup
from mydfs.storage.edits import Action, EditParticipant, resolver_action
from mydfs.storage.group_commands import Reserve, Seal
from mydfs.storage.group_records import TxnInfo
from mydfs.storage.group_state import GroupState, SlotState, raise_for_result
from mydfs.storage.http_api import make_app
from mydfs.storage.metrics import StorageMetrics
from mydfs.storage.node import StorageNode
from mydfs.storage.reads import ReadResolver

GROUP = 3
SECRET = "edit-participant-secret-0123456789"
FILE = "0f" * 16
TXN = "a1" * 16
TXN2 = "b2" * 16


class FakeRaft:
    def __init__(self) -> None:
        self.barriers = 0

    async def barrier(self, *, timeout: float) -> None:
        self.barriers += 1


class FakeContext:
    """What the edit participant and the read resolver use of a node."""

    def __init__(self, *, leader: bool = True, tracker: str = "") -> None:
        self.group_id = GROUP
        self.node_id = "n1"
        self.state = GroupState(GROUP)
        self.group = LockedGroup(self.state, lambda slot, bytes_changed: None)
        self.metrics = StorageMetrics()
        self.config = SimpleNamespace(secret=SECRET, edit_timeout=3.0, tracker=tracker)
        self.session: aiohttp.ClientSession | None = None
        self.raft = FakeRaft()
        self.changed = asyncio.Event()
        self._leader = leader

    def require(self) -> tuple[Any, FakeRaft, Any]:
        return object(), self.raft, object()

    def is_leader(self) -> bool:
        return self._leader

    def leader_url(self) -> str | None:
        return "http://leader"

    def not_leader_error(self) -> Exception:
        return Redirect("http://leader")

    async def submit(self, command: dict[str, Any]) -> Any:
        return raise_for_result(self.group.apply(command))


def live(state: GroupState, upload: str, *, next: Location | None = None) -> tuple[int, int]:
    got = state.apply(
        Reserve(
            upload_id=upload, file_id=FILE, slice_index=0, length=5, crc32c=1, now_ms=1, next=next
        ).to_dict()
    )
    slot, gen = got["slot"], got["generation"]
    state.apply(Seal(slot=slot, upload_id=upload, generation=gen, holders=("n1", "n2")).to_dict())
    return slot, gen


def decision(op: str, txn: str = TXN, *, ver: int = 1, prev: int = 0, ttl: int = 600) -> str:
    grant = grants.Grant(
        op,
        int(time.time()) + ttl,
        file_id=FILE,
        txn=txn,
        version=ver if op == "commit" else 0,
        prevs=((GROUP, prev), (GROUP + 1, 7)),
    )
    return grants.issue(SECRET, grant)


def metric(ctx: FakeContext, outcome: str) -> float:
    value = ctx.metrics.registry.get_sample_value("mydfs_storage_edits_total", {"outcome": outcome})
    return value or 0.0


# --- the pure rule and the tokens ----------------------------------------------------------------


def test_resolver_action() -> None:
    info = TxnInfo(TXN, "prepared", FILE, prepared_at_ms=10_000)
    assert resolver_action(info, 12_000, 3.0, False) is Action.WAIT
    assert resolver_action(info, 13_001, 3.0, False) is Action.ASK
    assert resolver_action(info, 10_000, 3.0, True) is Action.RETRY


def test_decision_tokens_verify_only_for_their_txn_and_outcome() -> None:
    token = decision("commit", ver=4, prev=2)
    got = grants.decision_of(SECRET, token, TXN)
    assert (got.op, got.file_id, got.version, got.prev_for(GROUP), got.prev_for(99)) == (
        "commit",
        FILE,
        4,
        2,
        0,
    )
    with pytest.raises(Forbidden):
        grants.decision_of(SECRET, token, TXN2)
    with pytest.raises(Forbidden):
        grants.decision_of(SECRET, decision("commit", ttl=-10), TXN)
    with pytest.raises(Unauthorized):
        grants.decision_of("another-secret-0123456789", token, TXN)
    with pytest.raises(Forbidden):  # a write grant is no decision
        grants.decision_of(SECRET, grants.issue_for(SECRET, "write", 60, file_id=FILE), TXN)
    with pytest.raises(Forbidden):  # and a decision is no read or write grant
        grants.check(SECRET, token, op="read", file_id=FILE)
    with pytest.raises(Forbidden):
        grants.check(SECRET, token, op="write", file_id=FILE)
    assert grants.check(SECRET, token, op="commit").txn == TXN
    with pytest.raises(Forbidden):
        grants.check(SECRET, decision("abort"), op="commit")


# --- prepare, decide, the resolver ---------------------------------------------------------------


async def test_prepare_then_commit_through_the_participant() -> None:
    ctx = FakeContext()
    a, n = live(ctx.state, "a"), live(ctx.state, "n")
    edits = EditParticipant(ctx, clock=lambda: 5.0)  # type: ignore[arg-type]
    out = await edits.prepare(TXN, FILE, [list(a)], [*a, [GROUP, n[0]]], [list(n)])
    assert (out.state, out.duplicate) == ("prepared", False)
    assert ctx.state.txn(TXN).prepared_at_ms == 5000  # type: ignore[union-attr]
    again = await edits.prepare(TXN, FILE, [list(a)], [*a, [GROUP, n[0]]], [list(n)])
    assert again.duplicate is True
    done = await edits.decide(grants.decision_of(SECRET, decision("commit"), TXN))
    assert done.to_dict() == {"ok": True, "txn": TXN, "state": "committed", "duplicate": False}
    assert ctx.state.get(a[0]).state is SlotState.MOVED  # type: ignore[union-attr]
    assert metric(ctx, "prepared") == 1 and metric(ctx, "committed") == 1


async def test_a_decision_for_another_file_is_refused() -> None:
    ctx = FakeContext()
    a = live(ctx.state, "a")
    edits = EditParticipant(ctx)  # type: ignore[arg-type]
    await edits.prepare(TXN, FILE, [list(a)], None, [])
    other = grants.Grant("abort", int(time.time()) + 60, file_id="00" * 16, txn=TXN)
    with pytest.raises(Forbidden):
        await edits.decide(grants.decision_of(SECRET, grants.issue(SECRET, other), TXN))


async def test_the_resolver_applies_the_trackers_decisions_and_keeps_doubtful_locks() -> None:
    ctx = FakeContext()
    a, b, c = (live(ctx.state, u) for u in "abc")
    now = [100.0]
    answers = {TXN: {"decision": "commit", "token": decision("commit")}}
    answers[TXN2] = {"decision": "abort", "token": decision("abort", TXN2)}
    third = "c3" * 16
    answers[third] = {"decision": "unknown"}
    asked: list[str] = []

    async def resolve(info: TxnInfo) -> dict[str, Any]:
        asked.append(info.txn)
        return answers[info.txn]

    edits = EditParticipant(ctx, resolve=resolve, clock=lambda: now[0])  # type: ignore[arg-type]
    await edits.prepare(TXN, FILE, [list(a)], None, [])
    await edits.prepare(TXN2, FILE, [], None, [list(b)])
    await edits.prepare(third, FILE, [list(c)], None, [])
    await edits.resolve_once()
    assert asked == []  # not past edit_timeout yet
    now[0] += 3.5
    await edits.resolve_once()
    assert sorted(asked) == sorted([TXN, TXN2, third])
    assert ctx.state.txn(TXN).state == "committed"  # type: ignore[union-attr]
    assert ctx.state.txn(TXN2).state == "rolled_back"  # type: ignore[union-attr]
    assert ctx.state.get(b[0]).state is SlotState.DELETED  # type: ignore[union-attr]
    assert ctx.state.lock_of(c[0]) == third
    assert ctx.metrics.registry.get_sample_value("mydfs_storage_edits_in_doubt") == 1


async def test_a_commit_out_of_order_is_retried_by_the_resolver() -> None:
    ctx = FakeContext()
    a, b = live(ctx.state, "a"), live(ctx.state, "b")
    asked: list[str] = []

    async def resolve(info: TxnInfo) -> dict[str, Any]:
        asked.append(info.txn)
        return {"decision": "unknown"}

    edits = EditParticipant(ctx, resolve=resolve, clock=lambda: 0.0)  # type: ignore[arg-type]
    await edits.prepare(TXN, FILE, [list(a)], None, [])
    await edits.prepare(TXN2, FILE, [list(b)], None, [])
    second = grants.decision_of(SECRET, decision("commit", TXN2, ver=2, prev=1), TXN2)
    with pytest.raises(Conflict) as exc:
        await edits.decide(second)  # version 2 arrives before version 1
    assert exc.value.context["reason"] == "out_of_order"
    await edits.decide(grants.decision_of(SECRET, decision("commit", TXN, ver=1, prev=0), TXN))
    await edits.resolve_once()
    assert ctx.state.txn(TXN2).state == "committed"  # type: ignore[union-attr]
    assert ctx.state.file_version(FILE) == 2 and asked == []


async def test_the_resolver_asks_the_tracker_signed() -> None:
    seen: list[dict[str, Any]] = []

    async def resolve(request: web.Request) -> web.Response:
        body = await request.read()
        ok = verify(SECRET, "POST", request.path_qs, request.headers.get(AUTH_HEADER), body=body)
        seen.append({"path": request.path, "signed": ok, "body": orjson.loads(body)})
        txn = request.match_info["txn"]
        return web.json_response({"decision": "abort", "txn": txn, "token": decision("abort")})

    app = web.Application()
    app.router.add_post("/internal/edits/{txn}/resolve", resolve)
    async with test_utils.TestServer(app) as server, aiohttp.ClientSession() as session:
        ctx = FakeContext(tracker=str(server.make_url("")).rstrip("/"))
        ctx.session = session
        a = live(ctx.state, "a")
        edits = EditParticipant(ctx, clock=lambda: 100.0)  # type: ignore[arg-type]
        await edits.prepare(TXN, FILE, [list(a)], None, [])
        edits._clock = lambda: 200.0
        await edits.resolve_once()
    assert seen == [
        {
            "path": f"/internal/edits/{TXN}/resolve",
            "signed": True,
            "body": {"file_id": FILE, "group": GROUP, "prepared_at_ms": 100_000},
        }
    ]
    assert ctx.state.txn(TXN).state == "rolled_back"  # type: ignore[union-attr]


# --- GET /chain's version ----------------------------------------------------------------------


def _edited() -> FakeContext:
    ctx = FakeContext()
    a = live(ctx.state, "a")
    n = live(ctx.state, "n")
    ctx.group.apply(
        {
            "op": "prepare",
            "txn": TXN,
            "file_id": FILE,
            "now_ms": 1,
            "lock": [list(a)],
            "move": [*a, [GROUP, n[0]]],
            "new": [list(n)],
        }
    )
    ctx.group.apply({"op": "commit", "txn": TXN, "version": 4, "prev": 0})
    return ctx


def reads(ctx: FakeContext) -> ReadResolver:
    return ReadResolver(ctx, lambda slot, gen: True, lambda slot: None)  # type: ignore[arg-type]


async def test_chain_reports_the_file_version_and_passes_through_the_301() -> None:
    ctx = _edited()
    entries, nxt, version = await reads(ctx).walk_versioned(0, 10, (FILE, None), 4)
    assert version == 4 and [e.via for e in entries] == [((0, 1),)] and nxt is None
    assert ctx.raft.barriers == 0
    _, _, version = await reads(ctx).walk_versioned(0, 10, (FILE, None))
    assert version == 4


async def test_a_version_the_reader_does_not_expect_proves_the_node_current() -> None:
    follower = _edited()
    follower._leader = False
    with pytest.raises(Redirect):
        await reads(follower).walk_versioned(0, 10, (FILE, None), 5)
    leader = _edited()
    _, _, version = await reads(leader).walk_versioned(0, 10, (FILE, None), 3)
    assert version == 4 and leader.raft.barriers == 1  # answered as it is, after a barrier


# --- the HTTP routes (a node never started: checks of the caller come first) ------------------


@pytest.fixture
def node(tmp_path: Path) -> Iterator[StorageNode]:
    values = {opt.key: opt.default for opt in storage_config.OPTIONS}
    values.update(
        node_id="n1",
        group_id=GROUP,
        data_dir=tmp_path / "n1",
        raft="127.0.0.1:7001",
        peers=[
            "n2,127.0.0.1:7002,http://127.0.0.1:8002",
            "n3,127.0.0.1:7003,http://127.0.0.1:8003",
        ],
        secret=SECRET,
    )
    n = StorageNode(storage_config.from_values(values))
    try:
        yield n
    finally:
        n.ctx.executor.shutdown()


@pytest.fixture
async def client(node: StorageNode) -> AsyncIterator[test_utils.TestClient[Any, Any]]:
    async with test_utils.TestClient(test_utils.TestServer(make_app(node))) as c:
        yield c


async def test_edit_routes_check_the_caller_before_anything(
    client: test_utils.TestClient[Any, Any],
) -> None:
    body = {"file_id": FILE, "lock": [[0, 1]], "move": None, "new": []}
    write = {grants.GRANT_HEADER: grants.issue_for(SECRET, "write", 60, file_id=FILE)}
    read = {grants.GRANT_HEADER: grants.issue_for(SECRET, "read", 60, file_id=FILE)}
    other_group = {
        grants.GRANT_HEADER: grants.issue_for(SECRET, "write", 60, file_id=FILE, groups=(9,))
    }
    url = f"/edits/{TXN}/prepare"
    assert (await client.post(url, json=body)).status == 401
    assert (await client.post(url, json=body, headers=read)).status == 403
    assert (await client.post(url, json=body, headers=other_group)).status == 403
    assert (await client.post(url, json=body, headers=write)).status == 503  # not started
    assert (await client.post("/edits/nothex/prepare", json=body, headers=write)).status == 400
    url = f"/edits/{TXN}/commit"
    assert (await client.post(url, json={})).status == 401
    assert (await client.post(url, json={"decision": "v1.x.y"})).status == 401
    assert (await client.post(url, json={"decision": decision("commit", TXN2)})).status == 403
    assert (await client.post(url, json={"decision": decision("abort")})).status == 403
    assert (await client.post(url, json={"decision": decision("commit")})).status == 503
    url = f"/edits/{TXN}/rollback"
    assert (await client.post(url, json={"decision": decision("commit")})).status == 403
    assert (await client.post(url, json={"decision": decision("abort")})).status == 503
