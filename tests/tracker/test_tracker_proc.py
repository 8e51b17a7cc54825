"""The real ``mydfs-tracker`` process over HTTP: heartbeats, liveness, placement, the namespace,
read redirects, metrics, and a kill -9 in the middle of a burst of registrations."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import orjson
import pytest
import yarl
from tracker_harness import (
    SECRET,
    TrackerFactory,
    call,
    heartbeat_body,
    heartbeat_group,
    register,
    wait_until,
)

from mydfs.common import grants
from mydfs.common.auth import AUTH_HEADER, sign
from mydfs.tracker.editlog import list_segments
from mydfs.tracker.framing import encode_frame
from mydfs.tracker.records import EditType, FileEntry, encode_path_entry


def body(fid: int, head: tuple[int, int] | None = (1, 5), size: int = 100) -> dict[str, Any]:
    return {
        "file_id": f"{fid:032x}",
        "size": size if head else 0,
        "slices": 1 if head else 0,
        "head": list(head) if head else None,
        "hash": "crc32c:0badf00d",
    }


async def test_heartbeats_must_be_signed(
    make_tracker: TrackerFactory, session: aiohttp.ClientSession
) -> None:
    tracker = make_tracker()
    await tracker.start(session)
    url = tracker.url + "/heartbeat"
    hb = heartbeat_body("g1n1", 1, 9011, "leader")
    status, data, _ = await call(session, "POST", url, hb)
    assert status == 401 and data["error"] == "unauthorized"
    status, data, _ = await call(
        session, "POST", url, hb, signed=True, secret="wrong-secret-000000"
    )
    assert status == 401
    status, data, _ = await call(session, "POST", url, {"node_id": "x"}, signed=True)
    assert status == 400 and data["context"]["field"] == "group_id"
    # The signature covers the body: a captured header does not carry another heartbeat.
    captured = sign(SECRET, "POST", "/heartbeat", body=orjson.dumps(hb))
    other = orjson.dumps(dict(hb, free_slots=0))
    async with session.post(url, data=other, headers={AUTH_HEADER: captured}) as resp:
        assert resp.status == 401
    status, data, _ = await call(session, "POST", url, hb, signed=True)
    assert status == 200
    assert data["interval"] > 0
    assert data["groups"] == {
        "1": {
            "leader": "http://127.0.0.1:9011",
            "nodes": ["http://127.0.0.1:9011"],
            "writable": False,
        }
    }


async def test_liveness_writability_and_placement(
    make_tracker: TrackerFactory, session: aiohttp.ClientSession
) -> None:
    tracker = make_tracker(heartbeat_timeout=0.6, max_consecutive=3)
    await tracker.start(session)
    t = tracker.url
    status, data, _ = await call(session, "POST", t + "/placements", {"slices": 7})
    assert status == 503 and data["error"] == "unavailable"
    # two groups join just by heartbeating
    await heartbeat_group(session, t, 1)
    await heartbeat_group(session, t, 2)
    status, cluster, _ = await call(session, "GET", t + "/cluster")
    assert cluster["k"] == 3
    assert [(g["group_id"], g["writable"], len(g["nodes"])) for g in cluster["groups"]] == [
        (1, True, 3),
        (2, True, 3),
    ]
    status, plan, _ = await call(session, "POST", t + "/placements", {"slices": 7})
    assert status == 200
    assert [(r["group"], r["count"]) for r in plan["runs"]] == [(1, 3), (2, 3), (1, 1)]
    assert plan["runs"][0]["leader"] == "http://127.0.0.1:9011"
    assert sorted(plan["runs"][1]["replicas"]) == [
        f"http://127.0.0.1:{9020 + i}" for i in (1, 2, 3)
    ]
    # the plan is remembered until the leaders report again: group 2 has more room now
    status, plan, _ = await call(session, "POST", t + "/placements", {"slices": 1})
    assert [(r["group"], r["count"]) for r in plan["runs"]] == [(2, 1)]
    for bad in ({"slices": 0}, {"slices": "7"}, {"slices": 1_000_001}, {}):
        status, data, _ = await call(session, "POST", t + "/placements", bad)
        assert status == 400, bad

    # group 1's leader goes silent; the followers keep reporting
    async def group1_leaderless() -> bool:
        await heartbeat_group(session, t, 1, skip=("g1n1",))
        await heartbeat_group(session, t, 2)
        _, c, _ = await call(session, "GET", t + "/cluster")
        g1 = c["groups"][0]
        leader = next(n for n in g1["nodes"] if n["node_id"] == "g1n1")
        noticed = "node g1n1 (group 1) is down" in tracker.logs()
        return not g1["writable"] and not leader["up"] and leader["last_seen_s"] > 0.6 and noticed

    await wait_until(group1_leaderless, timeout=10, what="group 1 to lose its leader")
    status, plan, _ = await call(session, "POST", t + "/placements", {"slices": 7})
    assert [(r["group"], r["count"]) for r in plan["runs"]] == [(2, 3), (2, 3), (2, 1)]
    # a follower is elected; the group is writable again without any restart
    await heartbeat_group(session, t, 1, skip=("g1n1",))
    hb = heartbeat_body("g1n2", 1, 9012, "leader", term=2)
    assert (await call(session, "POST", t + "/heartbeat", hb, signed=True))[0] == 200
    _, c, _ = await call(session, "GET", t + "/cluster")
    assert c["groups"][0]["writable"] and c["groups"][0]["leader"] == "http://127.0.0.1:9012"
    assert "group 1 is NOT writable" in tracker.logs()


async def test_namespace_over_http(
    make_tracker: TrackerFactory, session: aiohttp.ClientSession
) -> None:
    tracker = make_tracker()
    await tracker.start(session)
    m = tracker.url + "/meta"
    status, entry, _ = await register(session, m + "/files/docs/a%20b/c.bin", body(1))
    assert status == 201
    assert entry["path"] == "/docs/a b/c.bin" and entry["version"] == 1
    assert entry["head"] == [1, 5] and entry["hash"] == "crc32c:0badf00d"
    status, again, _ = await call(session, "PUT", m + "/files/docs/a%20b/c.bin", body(1))
    assert status == 200 and again["unchanged"] is True  # a retried registration
    status, err, _ = await register(session, m + "/files/docs/a%20b/c.bin", body(2))
    assert status == 409 and err["error"] == "already_exists"
    status, new, _ = await call(
        session, "PUT", m + "/files/docs/a%20b/c.bin?overwrite=1", body(2, head=(2, 8))
    )  # its intent was recorded by the refused registration above
    assert status == 200 and new["version"] == 2 and new["replaced"]["file_id"] == f"{1:032x}"
    assert new["ctime"] == entry["ctime"] and new["mtime"] >= entry["mtime"]
    status, err, _ = await register(session, m + "/files/docs", body(3))
    assert status == 409 and "directory" in err["message"]
    status, err, _ = await register(session, m + "/files/docs/a%20b/c.bin/x", body(3))
    assert status == 409 and "is a file" in err["message"]
    status, got, _ = await call(session, "GET", m + "/files/docs/a%20b/c.bin")
    assert status == 200 and got["file_id"] == f"{2:032x}"
    await register(session, m + "/files/docs/z.txt", body(4, head=None))
    status, listing, _ = await call(session, "GET", m + "/list/docs")
    assert listing["path"] == "/docs"
    assert [(e["name"], e["type"]) for e in listing["entries"]] == [
        ("a b", "dir"),
        ("z.txt", "file"),
    ]
    assert listing["entries"][1]["size"] == 0 and listing["entries"][1]["head"] is None
    for root in ("/list", "/list/", "/list//"):
        status, listing, _ = await call(session, "GET", m + root)
        assert status == 200 and [e["name"] for e in listing["entries"]] == ["docs"], root
    status, page, _ = await call(session, "GET", m + "/list/docs?limit=1")
    assert [e["name"] for e in page["entries"]] == ["a b"] and page["next"] == "a b"
    assert (await call(session, "GET", m + "/list/nope"))[0] == 404
    assert (await call(session, "GET", m + "/list/docs/z.txt"))[0] == 409
    status, err, _ = await call(session, "GET", m + "/files/nope")
    assert status == 404 and err["error"] == "not_found" and err["context"]["path"] == "/nope"
    # intents, trash
    status, intent, _ = await call(
        session, "POST", m + "/intents", {"file_id": f"{9:032x}", "path": "/up/big.bin"}
    )
    assert status == 201 and intent["path"] == "/up/big.bin"
    await register(session, m + "/files/up/big.bin", body(9))
    status, intents, _ = await call(session, "GET", m + "/intents")
    # cleared by the registration (fid 3's stays: its registrations were refused)
    assert [i["file_id"] for i in intents["intents"]] == [f"{3:032x}"]
    status, deleted, _ = await call(session, "DELETE", m + "/files/docs/a%20b/c.bin")
    assert status == 200 and deleted["deleted"]["file_id"] == f"{2:032x}"
    assert (await call(session, "DELETE", m + "/files/docs/a%20b/c.bin"))[0] == 404
    status, trash, _ = await call(session, "GET", m + "/trash")
    assert [(r["file_id"], r["reason"]) for r in trash["trash"]] == [
        (f"{1:032x}", "replaced"),
        (f"{2:032x}", "deleted"),
    ]
    status, dropped, _ = await call(session, "DELETE", m + f"/trash/{1:032x}")
    assert status == 200 and dropped["dropped"]["file_id"] == f"{1:032x}"
    # everything above survives a restart (clean stop: a final checkpoint)
    assert tracker.stop() == 0
    await tracker.start(session)
    status, listing, _ = await call(session, "GET", m + "/list/")
    assert [e["name"] for e in listing["entries"]] == ["docs", "up"]
    status, trash, _ = await call(session, "GET", m + "/trash")
    assert [r["file_id"] for r in trash["trash"]] == [f"{2:032x}"]


async def test_bad_input_gets_400_with_a_clear_message(
    make_tracker: TrackerFactory, session: aiohttp.ClientSession
) -> None:
    tracker = make_tracker()
    await tracker.start(session)
    t = tracker.url
    cases = {
        "/meta/files/a/../b": "'..'",
        "/meta/files/a/%2E%2E/b": "'..'",
        "/meta/files/a/./b": "'.'",
        "/meta/files/a%00b": "NUL",
        "/meta/files/a%0Ab": "U+000A",
        "/meta/files/a//b": "empty component",
        "/meta/files/a/": "trailing",
        "/meta/files/%FF": "not UTF-8",
        "/meta/files/": "root is a directory",
        "/files/a/../b": "'..'",
    }
    for raw, why in cases.items():
        url = yarl.URL(t + raw, encoded=True)  # sent exactly as written, no normalisation
        status, err, _ = await call(session, "PUT" if "meta" in raw else "GET", url, body(1))  # type: ignore[arg-type]
        assert status == 400, raw
        assert err["error"] == "invalid_path" and why in err["message"], (raw, err)
        assert "path" in err["context"]
    status, err, _ = await call(
        session, "POST", t + "/meta/intents", {"file_id": f"{1:032x}", "path": "relative/x"}
    )
    assert status == 400 and "not absolute" in err["message"]
    status, err, _ = await call(session, "PUT", t + "/meta/files/ok", dict(body(1), file_id="no"))
    assert status == 400 and err["context"]["field"] == "file_id"
    status, err, _ = await call(session, "PUT", t + "/meta/files/ok", {"file_id": f"{1:032x}"})
    assert status == 400 and err["message"] == "missing field 'size'"
    auth = tracker.auth()
    async with session.put(t + "/meta/files/ok", data=b"{not json", headers=auth) as resp:
        assert resp.status == 400 and "not valid JSON" in (await resp.json())["message"]
    async with session.put(t + "/meta/files/ok", data=b"x" * (2 << 20), headers=auth) as resp:
        assert resp.status == 413
    status, err, _ = await call(session, "PUT", t + "/meta/files/ok?overwrite=maybe", body(1))
    assert status == 400 and err["context"]["field"] == "overwrite"


async def test_reads_redirect_to_a_node_of_the_head_group(
    make_tracker: TrackerFactory, session: aiohttp.ClientSession
) -> None:
    tracker = make_tracker(heartbeat_timeout=5.0)
    await tracker.start(session)
    t = tracker.url
    await register(session, t + "/meta/files/v/a%20b%3F.bin", body(7, head=(2, 41), size=5000))
    await register(session, t + "/meta/files/v/empty", body(8, head=None))
    status, err, _ = await call(session, "GET", t + "/files/v/a%20b%3F.bin", allow_redirects=False)
    assert status == 503  # group 2 has not reported yet
    await heartbeat_group(session, t, 2)
    seen = set()
    for method in ("GET", "HEAD", "GET", "GET", "GET", "GET"):
        async with session.request(
            method, t + "/files/v/a%20b%3F.bin", allow_redirects=False, headers=tracker.auth()
        ) as resp:
            assert resp.status == 307
            location = urlsplit(resp.headers["Location"])
        seen.add(f"{location.scheme}://{location.netloc}")
        assert location.query.startswith("head=2:41&size=5000&slices=1&file=")
        assert location.path == "/files/v/a%20b%3F.bin"
        query = parse_qs(location.query)
        _, entry, _ = await call(session, "GET", t + "/meta/files/v/a%20b%3F.bin")
        # The storage node needs a read grant for the file (the grant the stat answer has too).
        grant = query.pop("grant")[0]
        assert grants.check(SECRET, grant, op="read", file_id=f"{7:032x}").op == "read"
        assert grants.check(SECRET, entry["grant"], op="read", file_id=f"{7:032x}").op == "read"
        assert {k: v[0] for k, v in query.items()} == {
            "head": "2:41",
            "size": "5000",
            "slices": "1",
            "file": f"{7:032x}",
            "mtime": repr(entry["mtime"]),
            "version": "1",
        }
    assert seen <= {f"http://127.0.0.1:{9020 + i}" for i in (1, 2, 3)}
    async with session.get(
        t + "/files/v/empty", allow_redirects=False, headers=tracker.auth()
    ) as resp:
        assert resp.status == 200 and resp.headers["Content-Length"] == "0"
        assert await resp.read() == b""
    status, err, _ = await call(session, "GET", t + "/files/v/missing", allow_redirects=False)
    assert status == 404 and err["error"] == "not_found"


async def test_health_and_metrics(
    make_tracker: TrackerFactory, session: aiohttp.ClientSession
) -> None:
    tracker = make_tracker()
    await tracker.start(session)
    t = tracker.url
    await heartbeat_group(session, t, 1)
    await register(session, t + "/meta/files/m/x", body(1, size=1234))
    status, health, _ = await call(session, "GET", t + "/health")
    assert status == 200 and health["ok"] is True and health["files"] == 1
    assert health["durable_seq"] == health["edit_seq"] == 2  # the intent, the registration
    async with session.get(t + "/metrics") as resp:
        text = await resp.text()
    for line in (
        "mydfs_tracker_groups 1.0",
        "mydfs_tracker_groups_writable 1.0",
        'mydfs_tracker_nodes{state="up"} 3.0',
        'mydfs_tracker_nodes{state="down"} 0.0',
        "mydfs_tracker_files 1.0",
        "mydfs_tracker_file_bytes 1234.0",
        'mydfs_tracker_http_requests_total{method="PUT",route="/meta/files/{path}",status="201"}',
        'mydfs_tracker_http_request_seconds_bucket{le="0.005",route="/meta/files/{path}"}',
        "mydfs_tracker_editlog_batch_records_count",
    ):
        assert line in text, line


@pytest.mark.parametrize("kill_after", [300, 1500])
async def test_kill9_during_a_burst_loses_no_acknowledged_registration(
    make_tracker: TrackerFactory, session: aiohttp.ClientSession, kill_after: int
) -> None:
    tracker = make_tracker(checkpoint_edits=150)  # checkpoints happen during the burst too
    await tracker.start(session)
    t = tracker.url
    acked: dict[str, str] = {}
    stop = asyncio.Event()

    async def writer(w: int) -> None:
        i = 0
        while not stop.is_set():
            path = f"/burst/w{w}/f{i:05d}.bin"
            fid = f"{w:08x}{i:024x}"
            try:
                intent = {"file_id": fid, "path": path}
                async with session.post(
                    t + "/meta/intents", json=intent, headers=tracker.auth()
                ) as resp:
                    if resp.status != 201:
                        i += 1
                        continue
                async with session.put(
                    t + "/meta/files" + path,
                    data=f'{{"file_id":"{fid}","size":1,"slices":1,"head":[1,{i}]}}',
                    headers=tracker.auth(),
                ) as resp:
                    if resp.status == 201:
                        acked[path] = fid
            except (TimeoutError, aiohttp.ClientError):
                return  # the tracker died under us: this one was never acknowledged
            i += 1

    writers = [asyncio.ensure_future(writer(w)) for w in range(8)]
    try:
        await wait_until(
            lambda: len(acked) >= kill_after, timeout=30, what=f"{kill_after} acknowledged writes"
        )
        tracker.kill9()
    finally:
        stop.set()
        await asyncio.gather(*writers, return_exceptions=True)
    # simulate a torn write of an unacknowledged record at the end of the log
    _, last = list_segments(tracker.data_dir)[-1]
    entry = FileEntry("ab" * 16, 1, 1, None, "", 1.0, 1.0, 1)
    torn = encode_frame(10**9, EditType.PUT_FILE, encode_path_entry("/torn", entry.pack()))
    size = last.stat().st_size
    with open(last, "ab") as f:
        f.write(torn[:-7])
    await tracker.start(session)
    assert last.stat().st_size == size  # the torn tail was cut off
    assert "cut a torn tail of" in tracker.logs()
    if kill_after > 1000:
        assert "checkpoint checkpoint-" in tracker.logs()  # checkpoints ran during the burst
    missing = []
    for path, fid in acked.items():
        status, entry_data, _ = await call(session, "GET", t + "/meta/files" + path)
        if status != 200 or entry_data["file_id"] != fid:
            missing.append(path)
    assert not missing, f"{len(missing)} acknowledged registrations lost: {missing[:5]}"
    assert (await call(session, "GET", t + "/meta/files/torn"))[0] == 404
    # and the tracker keeps working after the recovery
    status, _, _ = await register(session, t + "/meta/files/after/restart", body(1))
    assert status == 201


def test_config_errors_and_print_config(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mydfs.tracker.main", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )

    out = run("--print-config")
    assert out.returncode == 0 and "heartbeat_timeout = 3.0" in out.stdout
    assert "max_consecutive = 3" in out.stdout and "# (required)" in out.stdout
    out = run("--secret", SECRET)
    assert out.returncode == 1 and "missing config key data_dir" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    out = run("--data-dir", str(tmp_path), "--secret", "short")
    assert out.returncode == 1 and "config key secret" in out.stderr
    out = run("--data-dir", str(tmp_path), "--secret", SECRET, "--max-consecutive", "x")
    assert out.returncode == 1 and "max_consecutive" in out.stderr
    conf = tmp_path / "t.toml"
    conf.write_text('data_dir = "x"\nsecret = "0123456789abcdefg"\nlisten = "nonsense"\n')
    out = run("--config", str(conf))
    assert out.returncode == 1 and "config key listen" in out.stderr


async def test_only_a_file_id_with_an_intent_is_registered(
    make_tracker: TrackerFactory, session: aiohttp.ClientSession
) -> None:
    tracker = make_tracker()
    await tracker.start(session)
    m = tracker.url + "/meta"
    status, err, _ = await call(session, "PUT", m + "/files/no/intent", body(5))
    assert status == 403 and err["error"] == "forbidden", err
    assert (await call(session, "GET", m + "/files/no/intent"))[0] == 404
    status, intent, _ = await call(
        session, "POST", m + "/intents", {"file_id": f"{5:032x}", "path": "/no/intent"}
    )
    assert status == 201
    # The intent's answer carries the write grant for that file id, any group.
    grant = grants.check(SECRET, intent["grant"], op="write", file_id=f"{5:032x}", group=7)
    assert grant.op == "write" and grant.groups == ()
    assert (await call(session, "PUT", m + "/files/no/intent", body(5)))[0] == 201
    # A retry of the registration (its intent is gone now) is still answered, unchanged.
    status, again, _ = await call(session, "PUT", m + "/files/no/intent", body(5))
    assert status == 200 and again["unchanged"] is True
