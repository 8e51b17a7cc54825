"""Leader failures of a storage group of real processes (a fresh group per test).

* kill -9 of the leader right after acknowledgements, with uploads still in flight: every
  acknowledged slice stays readable byte for byte from the survivors, a new leader comes up,
  later uploads succeed, and the old leader rejoins as a follower and catches up;
* a leader cut off from both followers (SIGSTOP) stops acknowledging writes and steps down.

Timings are printed (``-s``) but only checked against generous deadlines: the machine is shared.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import aiohttp
import pytest
from cluster import (
    SLICE_CAPACITY,
    Cluster,
    payload,
    put_slice,
    sha256,
    upload,
    wait_served,
)
from helpers import wait_until

pytestmark = pytest.mark.timeout(240)


def _uid(tag: str) -> str:
    return f"{tag}-{os.urandom(6).hex()}"


async def test_kill_leader_right_after_acknowledgements(
    make_cluster: Any, http: aiohttp.ClientSession
) -> None:
    c: Cluster = make_cluster(name="kill-leader")
    await c.start()
    old = await c.leader()
    acked: list[tuple[dict[str, Any], bytes]] = []

    # Two full slices first, then 8 concurrent uploaders; the leader is killed the moment the
    # 20th acknowledgement arrives, while the other uploads are still in flight.
    for i in range(2):
        data = payload(SLICE_CAPACITY, seed=600 + i)
        reply = await put_slice(http, old.url, data, upload_id=_uid(f"big{i}"))
        assert reply.status == 201, reply
        acked.append((reply.json(), data))
    kill_at = 20
    killed = asyncio.Event()
    killed_at: list[float] = []

    async def uploader(t: int) -> None:
        for k in range(50):
            if killed.is_set():
                return
            data = payload(20_000 + 7_919 * ((t * 50 + k) % 40), seed=700 + t * 100 + k)
            try:
                reply = await put_slice(http, old.url, data, upload_id=_uid(f"u{t}-{k}"))
            except (aiohttp.ClientError, TimeoutError):
                return  # the leader died under this request: not acknowledged
            if reply.status != 201:
                assert killed.is_set(), reply  # only failures after the kill are expected
                return
            acked.append((reply.json(), data))
            if len(acked) >= kill_at and not killed.is_set():
                c.kill(old)  # kill -9, right after this acknowledgement
                killed_at.append(time.monotonic())
                killed.set()

    await asyncio.gather(*(uploader(t) for t in range(8)))
    assert killed.is_set() and len(acked) >= kill_at

    survivors = [n for n in c.nodes() if n is not old]
    new = await c.leader(timeout=30)
    elapsed = time.monotonic() - killed_at[0]
    print(f"new leader {new.node_id} established {elapsed:.2f}s after kill -9 of {old.node_id}")
    assert new in survivors

    # Every acknowledged slice: readable byte for byte from both survivors.
    for body, data in acked:
        for node in survivors:
            got = await wait_served(http, node, body["slot"], sha256(data))
            assert got.body == data

    # Later uploads succeed (a client retries a 503 while the new leader settles in).
    later = []
    for i in range(4):
        data = payload(150_000 + i, seed=800 + i)
        later.append((await upload(c, http, data, deadline=30), data))
    for body, data in later:
        for node in survivors:
            await wait_served(http, node, body["slot"], sha256(data))

    # The old leader comes back as a follower and catches up on everything.
    await c.restart(old)

    async def follows() -> bool:
        st = await c.status(old)
        return bool(st and st["role"] == "follower" and st["leader"] in (n.url for n in survivors))

    await wait_until(follows, timeout=30, what=f"{old.node_id} to rejoin as a follower")
    for body, data in acked + later:
        await wait_served(http, old, body["slot"], sha256(data), timeout=60)


async def test_isolated_leader_stops_acknowledging_and_steps_down(
    make_cluster: Any, http: aiohttp.ClientSession
) -> None:
    c: Cluster = make_cluster(name="isolated")
    await c.start()
    leader = await c.leader()
    base = payload(64_000, seed=900)
    first = await upload(c, http, base)

    followers = c.followers(leader)
    for node in followers:
        c.pause(node)
    cut_at = time.monotonic()
    try:

        async def steps_down() -> bool:
            st = await c.status(leader)
            return bool(st and st["role"] != "leader")

        async def try_upload(tag: str) -> tuple[int | str, float]:
            started = time.monotonic()
            try:
                reply = await put_slice(
                    http, leader.url, payload(64_000, seed=901), upload_id=_uid(tag), timeout=20
                )
                outcome: int | str = reply.status
            except TimeoutError:
                outcome = "timeout"
            return outcome, time.monotonic() - started

        # An upload started right after the cut cannot commit: it fails, never 201. Meanwhile
        # the leader notices it lost its majority and says so in /status.
        pending = asyncio.create_task(try_upload("cut"))
        await wait_until(steps_down, timeout=10, what=f"{leader.node_id} to step down")
        print(f"isolated leader reports non-leader {time.monotonic() - cut_at:.2f}s after the cut")
        outcome, took = await pending
        print(f"upload to the isolated leader: {outcome} after {took:.2f}s")
        assert outcome in (503, 504, "timeout"), outcome

        # Once it knows it is not the leader, it refuses writes at once.
        outcome, took = await try_upload("after")
        print(f"upload after the step-down: {outcome} after {took:.2f}s")
        assert outcome in (503, 307), outcome
        assert took < 5.0
    finally:
        for node in followers:
            c.resume(node)

    # Healed: one leader again, nothing half-written became live, uploads work.
    await c.leader()

    async def settled() -> bool:
        st = await c.status(await c.leader())
        return bool(st and st["group"]["pending"] == 0)

    await wait_until(settled, timeout=30, what="no pending slot left")
    st = await c.status(await c.leader())
    assert st is not None and st["group"]["live"] == 1, st["group"] if st else None
    data = payload(77_777, seed=902)
    body = await upload(c, http, data)
    for node in c.nodes():
        await wait_served(http, node, body["slot"], sha256(data))
        await wait_served(http, node, first["slot"], sha256(base))
