"""The tracker's edit routes on a real ``mydfs-tracker`` process: decisions made once (commit,
abort, refusals that abort), decision tokens, participants' resolve calls (signed), the new
entry's versions in ``/meta/files`` and in the 307's ``gv``, and every decision surviving a
kill -9 (edit log) and a clean restart (checkpoint)."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from tracker_harness import SECRET, TrackerFactory, call, heartbeat_group, register

from mydfs.common import grants

FID = f"{7:032x}"


def txn(n: int) -> str:
    return f"{0xE0 + n:032x}"


def commit_body(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "path": "/e/f.bin",
        "file_id": FID,
        "base": 1,
        "layout_change": False,
        "size": 100,
        "slices": 1,
        "groups": [1],
        "if_version": None,
        "offset": None,
    }
    body.update(kw)
    return body


async def setup_file(session: aiohttp.ClientSession, t: str) -> None:
    body = {"file_id": FID, "size": 100, "slices": 1, "head": [1, 5], "hash": "crc32c:0badf00d"}
    status, _, _ = await register(session, t + "/meta/files/e/f.bin", body)
    assert status == 201


async def test_edit_decisions_over_http(
    make_tracker: TrackerFactory, session: aiohttp.ClientSession
) -> None:
    tracker = make_tracker(heartbeat_timeout=30.0)
    await tracker.start(session)
    t = tracker.url
    await setup_file(session, t)
    m = t + "/meta/edits"

    # begin: the entry to plan on and a write grant; nothing written
    status, begun, _ = await call(session, "POST", m, {"path": "/e/f.bin"})
    assert status == 200, begun
    assert begun["entry"]["versions"] == [] and begun["entry"]["layout"] == 0
    assert grants.check(SECRET, begun["grant"], op="write", file_id=FID, group=9).op == "write"
    status, err, _ = await call(session, "POST", m, {"path": "/e"})
    assert status == 400 and err["context"]["reason"] == "directory"
    status, err, _ = await call(session, "POST", m, {"path": "/e/none"})
    assert status == 404

    # a commit, and its retry: the same answer
    status, first, _ = await call(session, "POST", f"{m}/{txn(1)}/commit", commit_body(offset=5))
    assert status == 200, first
    assert (first["decision"], first["txn"], first["version"], first["offset"]) == (
        "commit",
        txn(1),
        2,
        5,
    )
    assert first["entry"]["versions"] == [[1, 2]] and first["entry"]["version"] == 2
    grant = grants.decision_of(SECRET, first["token"], txn(1))
    assert (grant.op, grant.file_id, grant.version, grant.prev_for(1)) == ("commit", FID, 2, 0)
    status, again, _ = await call(session, "POST", f"{m}/{txn(1)}/commit", commit_body(offset=5))
    assert status == 200 and again["version"] == 2 and again["entry"] == first["entry"]
    status, err, _ = await call(
        session, "POST", f"{m}/{txn(1)}/abort", {"path": "/e/f.bin", "file_id": FID}
    )
    assert status == 409 and err["context"]["reason"] == "committed"
    assert grants.decision_of(SECRET, err["context"]["decision"], txn(1)).op == "commit"

    # a layout-changing commit in two groups: prevs are the versions before it
    status, second, _ = await call(
        session,
        "POST",
        f"{m}/{txn(2)}/commit",
        commit_body(base=2, layout_change=True, groups=[2, 1], size=200),
    )
    assert status == 200, second
    assert second["version"] == 3 and second["prevs"] == [[2, 0], [1, 2]]
    assert second["entry"]["versions"] == [[1, 3], [2, 3]] and second["entry"]["layout"] == 3
    token = grants.decision_of(SECRET, second["token"], txn(2))
    assert token.prev_for(1) == 2 and token.prev_for(2) == 0

    # refusals record an abort, which a retry gets again
    status, err, _ = await call(session, "POST", f"{m}/{txn(3)}/commit", commit_body(base=2))
    assert status == 409 and err["context"]["reason"] == "layout_changed", err
    assert grants.decision_of(SECRET, err["context"]["decision"], txn(3)).op == "abort"
    status, err, _ = await call(session, "POST", f"{m}/{txn(3)}/commit", commit_body(base=3))
    assert status == 409 and err["context"]["reason"] == "aborted"
    status, err, _ = await call(
        session, "POST", f"{m}/{txn(4)}/commit", commit_body(base=3, if_version=2)
    )
    assert status == 409 and err["context"]["reason"] == "version"
    status, err, _ = await call(
        session, "POST", f"{m}/{txn(5)}/commit", commit_body(path="/e/gone.bin")
    )
    assert status == 404 and "decision" in err["context"]
    status, err, _ = await call(
        session, "POST", f"{m}/{txn(9)}/commit", commit_body(base=3, head=[1, 8])
    )
    assert status == 400 and err["context"]["field"] == "head"
    status, err, _ = await call(session, "POST", f"{m}/nothex/commit", commit_body())
    assert status == 400 and err["context"]["field"] == "txn"

    # an abort, twice
    for _ in range(2):
        status, aborted, _ = await call(
            session, "POST", f"{m}/{txn(6)}/abort", {"path": "/e/f.bin", "file_id": FID}
        )
        assert status == 200 and aborted["decision"] == "abort", aborted
        assert grants.decision_of(SECRET, aborted["token"], txn(6)).op == "abort"

    # GET, and a participant's resolve (signed with the cluster secret, body included)
    status, got, _ = await call(session, "GET", f"{m}/{txn(2)}")
    assert status == 200 and got["decision"] == "commit" and got["version"] == 3
    assert (await call(session, "GET", f"{m}/{txn(8)}"))[0] == 404
    r = t + "/internal/edits/{}/resolve"
    ask = {"file_id": FID, "group": 1, "prepared_at_ms": int(time.time() * 1000)}
    status, _, _ = await call(session, "POST", r.format(txn(7)), ask, anonymous=True)
    assert status == 401
    status, _, _ = await call(
        session, "POST", r.format(txn(7)), ask, signed=True, secret="another-secret-0000000"
    )
    assert status == 401
    assert (await call(session, "GET", f"{m}/{txn(7)}"))[0] == 404  # nothing recorded
    status, resolved, _ = await call(session, "POST", r.format(txn(7)), ask, signed=True)
    assert status == 200 and resolved["decision"] == "abort", resolved
    status, resolved, _ = await call(session, "POST", r.format(txn(2)), ask, signed=True)
    assert status == 200 and resolved["decision"] == "commit"
    old = dict(ask, prepared_at_ms=0)
    status, resolved, _ = await call(session, "POST", r.format(txn(8)), old, signed=True)
    assert status == 200 and resolved == {"decision": "unknown", "txn": txn(8)}
    assert (await call(session, "GET", f"{m}/{txn(8)}"))[0] == 404

    # the entry: versions in /meta/files and in the read redirect
    await heartbeat_group(session, t, 1)
    status, entry, _ = await call(session, "GET", t + "/meta/files/e/f.bin")
    assert (entry["version"], entry["versions"], entry["layout"]) == (3, [[1, 3], [2, 3]], 3)
    assert entry["size"] == 200 and entry["hash"] is None
    async with session.get(
        t + "/files/e/f.bin", allow_redirects=False, headers=tracker.auth()
    ) as resp:
        assert resp.status == 307
        location = urlsplit(resp.headers["Location"])
    assert "&gv=1:3,2:3&" in location.query
    assert parse_qs(location.query)["gv"] == ["1:3,2:3"]

    async def decisions() -> dict[str, str]:
        out = {}
        for n in (1, 2, 3, 4, 5, 6, 7):
            status, got, _ = await call(session, "GET", f"{m}/{txn(n)}")
            assert status == 200, (n, got)
            out[got["txn"]] = got["decision"]
        return out

    expected = await decisions()
    assert list(expected.values()) == ["commit", "commit"] + ["abort"] * 5
    # kill -9: the decisions come back from the edit log
    tracker.kill9()
    await tracker.start(session)
    assert await decisions() == expected
    status, entry_after, _ = await call(session, "GET", t + "/meta/files/e/f.bin")
    assert {k: entry_after[k] for k in entry if k != "grant"} == {
        k: entry[k] for k in entry if k != "grant"
    }
    # a clean stop writes a checkpoint; the decisions come back from it
    assert tracker.stop() == 0
    await tracker.start(session)
    recovered = [line for line in tracker.logs().splitlines() if "recovered" in line]
    assert "+ 0 edits" in recovered[-1], recovered[-1]  # all from the checkpoint
    assert await decisions() == expected
    status, again, _ = await call(session, "POST", f"{m}/{txn(1)}/commit", commit_body(offset=5))
    assert status == 200 and again["version"] == 2 and again["offset"] == 5


async def test_decisions_are_forgotten_after_the_retention(
    make_tracker: TrackerFactory, session: aiohttp.ClientSession
) -> None:
    tracker = make_tracker(edit_decision_retention=1.0)
    await tracker.start(session)
    t = tracker.url
    await setup_file(session, t)
    m = t + "/meta/edits"
    status, done, _ = await call(session, "POST", f"{m}/{txn(1)}/commit", commit_body())
    assert status == 200
    exp = grants.decode(SECRET, done["token"]).expires
    assert exp <= time.time() + 2
    await asyncio.sleep(1.6)
    assert (await call(session, "GET", f"{m}/{txn(1)}"))[0] == 404
    ask = {"file_id": FID, "group": 1, "prepared_at_ms": int((time.time() - 2) * 1000)}
    status, resolved, _ = await call(
        session, "POST", t + f"/internal/edits/{txn(1)}/resolve", ask, signed=True
    )
    assert status == 200 and resolved["decision"] == "unknown"
    status, entry, _ = await call(session, "GET", t + "/meta/files/e/f.bin")
    assert entry["version"] == 2 and entry["versions"] == [[1, 2]]  # the entry stays
