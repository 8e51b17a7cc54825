"""Grant checks on a storage node's client routes, on a real group of 3 nodes.

Every client route refuses a request without a valid grant for the file it touches: no grant or
a forged one is 401; an expired grant, one for another file or another group, or a read grant
on a write route is 403. After every refusal the stored bytes and the group's table are as they
were. Deletes are internal only: signed with the cluster secret, and only of a slot whose owner
is the file named (409 otherwise). The pure decisions (``storage/http_grants.py``) are tested
first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from cluster import Cluster, StorageNode, request, sha256
from helpers import grant_headers, signed_headers

from mydfs.common import grants
from mydfs.common.checksum import crc32c
from mydfs.common.errors import Conflict, Forbidden, NotFound, Unauthorized
from mydfs.storage.group_records import SlotInfo
from mydfs.storage.http_grants import (
    check_file_version,
    check_slot_owner,
    delete_verdict,
    require,
)
from mydfs.storage.slot_state import SlotState

SECRET = "grant-checks-secret-0123456789"
A = "a1" * 16  # the file whose slices the tests store
B = "b2" * 16  # another file
DATA = bytes(range(256)) * 400  # 102,400 bytes


# --- pure decisions ----------------------------------------------------------------------------


def _info(file_id: str, generation: int, state: SlotState = SlotState.LIVE) -> SlotInfo:
    return SlotInfo(3, state, generation, "u", file_id, 0, 10, 1, None, ("n1",), None, 0)


def test_require_and_the_owner_checks() -> None:
    token = grants.issue_for(SECRET, "write", 60, file_id=A, groups=(1,))
    assert require(SECRET, token, "write", file_id=A, group=1).file_id == A
    assert require(SECRET, token, "read", file_id=A).op == "write"  # a write grant reads too
    with pytest.raises(Forbidden):
        require(SECRET, token, "write", file_id=A, group=2)
    with pytest.raises(Unauthorized):
        require("another-secret-0123456789", token, "write")
    shared = grants.issue_for(SECRET, "read", 60, path="/a")
    with pytest.raises(Forbidden, match="names no file id"):
        require(SECRET, shared, "read")
    grant = grants.decode(SECRET, token)
    check_slot_owner(None, grant, 3)  # no record: the write path answers for itself
    check_slot_owner(_info(A, 1), grant, 3)
    with pytest.raises(Forbidden):
        check_slot_owner(_info(B, 1), grant, 3)


def test_delete_verdict() -> None:
    assert delete_verdict(_info(A, 4), 3, 4, A) is True
    assert delete_verdict(_info(A, 4, SlotState.DELETED), 3, 4, A) is False  # a retry
    with pytest.raises(Conflict):
        delete_verdict(_info(B, 4), 3, 4, A)  # another file's slice: left alone
    with pytest.raises(Conflict):
        delete_verdict(_info(A, 5), 3, 4, A)  # reused since
    with pytest.raises(NotFound):
        delete_verdict(None, 3, 4, A)


def test_check_file_version() -> None:
    """The collector's delete condition (``fv``): no edit of the file committed since."""
    check_file_version(7, 7, 3)
    with pytest.raises(Conflict) as caught:
        check_file_version(8, 7, 3)
    assert caught.value.context["reason"] == "file_version"


# --- on a real group ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def group() -> Iterator[Cluster]:
    c = Cluster(groups=1, secret=SECRET, name="grants")
    try:
        c.start_sync()
        yield c
    finally:
        c.close()


def _bad_grants(op: str, file_id: str) -> dict[str, tuple[int, dict[str, str]]]:
    """name -> (expected status, headers) of every grant that must be refused for ``op``."""
    cases = {
        "none": (401, {}),
        "forged": (401, grant_headers("not-the-cluster-secret-0123", op, file_id)),
        "garbage": (401, {grants.GRANT_HEADER: "v1.abc.def"}),
        "expired": (403, grant_headers(SECRET, op, file_id, ttl=60, now=time.time() - 7200)),
        "other file": (403, grant_headers(SECRET, op, B)),
    }
    if op == "write":
        cases["other group"] = (403, grant_headers(SECRET, "write", file_id, groups=(2,)))
        cases["read grant"] = (403, grant_headers(SECRET, "read", file_id))
    return cases


async def _state(c: Cluster, http: aiohttp.ClientSession, leader: StorageNode) -> Any:
    """What must not change: the group's end of allocation and the stored slice's bytes."""
    status = await c.status(leader, timeout=5.0)
    assert status is not None
    reply = await request(
        http, "GET", f"{leader.url}/slices/{_stored['slot']}", headers=_read(A, 0)
    )
    assert reply.status == 200, reply
    return status["group"]["end"], reply.sha256


def _read(file_id: str, index: int) -> dict[str, str]:
    headers = grant_headers(SECRET, "read", file_id)
    headers.update({"X-Mydfs-File": file_id, "X-Mydfs-Index": str(index)})
    return headers


_stored: dict[str, Any] = {}


async def test_every_client_route_refuses_a_bad_grant_and_changes_nothing(
    group: Cluster, session: aiohttp.ClientSession
) -> None:
    c, http = group, session
    leader = await c.leader(1)
    base = leader.url
    # A one-slice file A, stored with a good grant.
    good = grant_headers(SECRET, "write", A, groups=(1,))
    headers = {"X-Mydfs-File": A, "X-Mydfs-Index": "0", **good}
    reply = await request(http, "PUT", f"{base}/slices?upload=a-0", data=DATA, headers=headers)
    assert reply.status == 201, reply
    _stored.update(reply.json())
    slot, gen = _stored["slot"], _stored["generation"]
    # A reservation of A's second slice, to try fills and relinks on.
    body = {"upload_id": "a-1", "file_id": A, "index": 1, "length": 10, "crc32c": crc32c(b"x" * 10)}
    reply = await request(http, "POST", f"{base}/slices/reserve", json=body, headers=good)
    assert reply.status == 201, reply
    pending, pending_gen = reply.json()["slot"], reply.json()["generation"]
    before = await _state(c, http, leader)
    file_qs = f"head=1:{slot}&size={len(DATA)}&slices=1&file={A}&mtime=1.0&version=1"

    writes: list[tuple[str, str, dict[str, Any]]] = [
        ("PUT", f"/slices?upload=x-{time.time_ns()}", {"data": b"y" * 100}),
        ("POST", "/slices/reserve", {"data": json.dumps(dict(body, upload_id="x-r"))}),
        ("PUT", f"/slices/{pending}?upload=a-1&gen={pending_gen}&next=none", {"data": b"x" * 10}),
        ("POST", f"/slices/{slot}/relink?gen={gen}&next=1:{pending}", {}),
    ]
    reads: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"/chain/{slot}?max=5", {}),
        ("GET", f"/slices/{slot}", {}),
        ("HEAD", f"/slices/{slot}", {}),
        ("GET", f"/files/a.bin?{file_qs}", {}),
        ("HEAD", f"/files/a.bin?{file_qs}", {}),
        ("GET", f"/slices/{slot}/meta", {}),
    ]
    for op, routes in (("write", writes), ("read", reads)):
        for method, path, kw in routes:
            for name, (status, grant) in _bad_grants(op, A).items():
                if path.endswith("/meta") and name == "read grant":
                    continue
                headers = dict(grant)
                if path.startswith(("/slices?", "/chain", f"/slices/{slot}")):
                    headers["X-Mydfs-File"] = A  # the file the request names
                reply = await request(http, method, base + path, headers=headers, **kw)
                what = f"{method} {path} with grant {name!r}"
                assert reply.status == status, f"{what}: {reply!r}"
                if method != "HEAD":
                    code = "unauthorized" if status == 401 else "forbidden"
                    assert reply.json()["error"] == code, f"{what}: {reply!r}"
                assert await _state(c, http, leader) == before, f"{what} changed something"

    # A write grant for A does not name B as owner of a new slice, nor change B's slices.
    headers = {"X-Mydfs-File": B, **good}
    reply = await request(http, "PUT", f"{base}/slices?upload=b-0", data=DATA, headers=headers)
    assert reply.status == 403, reply
    b_good = grant_headers(SECRET, "write", B)
    reply = await request(
        http, "POST", f"{base}/slices/{slot}/relink?gen={gen}&next=none", headers=b_good
    )
    assert reply.status == 403, reply
    assert await _state(c, http, leader) == before

    # The grants' query parameter works like the header (curl and the tracker's 307).
    token = grant_headers(SECRET, "read", A)[grants.GRANT_HEADER]
    reply = await request(http, "GET", f"{base}/files/a.bin?{file_qs}&grant={token}")
    assert reply.status == 200 and reply.sha256 == sha256(DATA), reply
    # Signed, the slot's record is there for operators; a good read grant shows it too.
    meta_path = f"/slices/{slot}/meta"
    reply = await request(
        http, "GET", base + meta_path, headers=signed_headers(SECRET, "GET", meta_path)
    )
    assert reply.status == 200 and reply.json()["file_id"] == A, reply
    reply = await request(http, "GET", base + meta_path, headers=_read(A, 0))
    assert reply.status == 200, reply


async def test_deletes_are_internal_and_check_the_owner(
    group: Cluster, session: aiohttp.ClientSession
) -> None:
    c, http = group, session
    leader = await c.leader(1)
    base = leader.url
    headers = {"X-Mydfs-File": B, **grant_headers(SECRET, "write", B)}
    reply = await request(http, "PUT", f"{base}/slices?upload=b-del", data=DATA, headers=headers)
    assert reply.status == 201, reply
    slot, gen = reply.json()["slot"], reply.json()["generation"]

    async def served() -> int:
        got = await request(http, "GET", f"{base}/slices/{slot}", headers=_read(B, 0))
        assert got.status != 200 or got.sha256 == sha256(DATA)
        return got.status

    # The client delete of old is gone; with a write grant it is still no delete.
    for extra in ({}, grant_headers(SECRET, "write", B)):
        reply = await request(http, "DELETE", f"{base}/slices/{slot}?gen={gen}", headers=extra)
        assert reply.status == 405, reply
    path = f"/internal/slices/{slot}?gen={gen}&file={B}"
    reply = await request(http, "DELETE", base + path)  # unsigned
    assert reply.status == 401, reply
    reply = await request(
        http,
        "DELETE",
        base + path,
        headers=signed_headers("not-the-secret-0123456", "DELETE", path),
    )
    assert reply.status == 401, reply
    # Signed, but naming another file (a forged entry's id) or another generation: 409.
    for wrong in (f"/internal/slices/{slot}?gen={gen}&file={A}",
                  f"/internal/slices/{slot}?gen={gen + 1}&file={B}"):  # fmt: skip
        reply = await request(
            http, "DELETE", base + wrong, headers=signed_headers(SECRET, "DELETE", wrong)
        )
        assert reply.status == 409 and reply.json()["error"] == "conflict", reply
        assert await served() == 200
    # The owner, signed: deleted; again: answered as a duplicate.
    for duplicate in (False, True):
        reply = await request(
            http, "DELETE", base + path, headers=signed_headers(SECRET, "DELETE", path)
        )
        assert reply.status == 200 and bool(reply.json().get("duplicate")) is duplicate, reply
    assert await served() == 404
