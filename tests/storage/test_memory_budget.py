"""The node's memory budget: the pure accounting and push rule (:mod:`mydfs.storage.budget`),
the registration table's holds, the shell handing out charges and pushes
(:mod:`mydfs.storage.inflight`), the chunked push body, and the budget's config keys."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mydfs.common.config import ConfigError, add_arguments
from mydfs.common.errors import Unavailable
from mydfs.storage import allocator
from mydfs.storage import config as storage_config
from mydfs.storage.budget import Admit, MemoryBudget
from mydfs.storage.inflight import InFlight
from mydfs.storage.metrics import StorageMetrics
from mydfs.storage.peers import PUSH_CHUNK, PeerClient
from mydfs.storage.registration import RegistrationTable

MiB = 1024 * 1024


# --- the pure budget ---------------------------------------------------------------------------


def test_charges_stay_within_the_total() -> None:
    b = MemoryBudget(total=10 * MiB, per_peer=4 * MiB)
    assert b.try_charge(4 * MiB) and b.try_charge(4 * MiB)
    assert not b.try_charge(4 * MiB) and b.used == 8 * MiB
    b.release(4 * MiB)
    assert b.try_charge(4 * MiB) and b.peak == 8 * MiB


def test_a_buffer_larger_than_the_budget_fits_an_empty_node() -> None:
    b = MemoryBudget(total=1 * MiB, per_peer=1 * MiB)
    assert b.try_charge(4 * MiB)
    assert not b.try_charge(1)
    b.release(4 * MiB)
    assert b.used == 0


def test_a_follower_past_its_share_lags_then_backs_off() -> None:
    b = MemoryBudget(total=100 * MiB, per_peer=8 * MiB, backoff=2.0, max_backoff=5.0)
    assert b.admit_push("f1", 4 * MiB, now=0.0) == Admit.PUSH
    assert b.admit_push("f1", 4 * MiB, now=0.0) == Admit.PUSH
    assert b.admit_push("f2", 4 * MiB, now=0.0) == Admit.PUSH  # shares are per follower
    assert b.admit_push("f1", 4 * MiB, now=0.1) == Admit.LAGGING
    assert b.lagging(0.1) == {"f1"}
    assert b.admit_push("f1", 4 * MiB, now=1.0) == Admit.BACKING_OFF
    b.push_finished("f1", 4 * MiB, ok=False)
    b.push_finished("f1", 4 * MiB, ok=False)
    assert b.peer_bytes["f1"] == 0
    assert b.admit_push("f1", 4 * MiB, now=2.2) == Admit.PUSH  # the pause is over: a probe
    assert b.admit_push("f1", 4 * MiB, now=2.3) == Admit.PUSH
    assert b.admit_push("f1", 4 * MiB, now=2.4) == Admit.LAGGING  # again: a longer pause
    assert b.lagging(6.3) == {"f1"} and b.lagging(6.5) == set()
    assert b.dropped == {"f1": 2 + 1}


def test_a_push_the_majority_needs_is_made_whatever_the_share() -> None:
    b = MemoryBudget(total=100 * MiB, per_peer=4 * MiB)
    b.admit_push("f", 4 * MiB, now=0.0)
    assert b.admit_push("f", 4 * MiB, now=0.0) == Admit.LAGGING
    assert b.admit_push("f", 4 * MiB, now=0.1, force=True) == Admit.PUSH
    assert b.peer_bytes["f"] == 8 * MiB


def test_a_push_that_succeeds_resets_the_pause() -> None:
    b = MemoryBudget(total=100 * MiB, per_peer=4 * MiB, backoff=1.0, max_backoff=60.0)
    b.admit_push("f", 4 * MiB, now=0.0)
    assert b.admit_push("f", 4 * MiB, now=0.0) == Admit.LAGGING  # pause 1 s
    b.push_finished("f", 4 * MiB, ok=True)
    b.admit_push("f", 4 * MiB, now=1.5)
    assert b.admit_push("f", 4 * MiB, now=1.5) == Admit.LAGGING
    assert b.lagging(2.4) == {"f"} and b.lagging(2.6) == set()  # 1 s again, not 2 s


def test_budgets_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MemoryBudget(total=0, per_peer=1)


# --- the registration table's holds ----------------------------------------------------------


class Hold:
    def __init__(self) -> None:
        self.released = 0

    def release(self) -> None:
        self.released += 1


def test_registration_entries_release_their_hold_whenever_they_leave() -> None:
    table = RegistrationTable(max_bytes=100, ttl=10.0)
    holds = [Hold() for _ in range(4)]
    assert table.put(1, 1, b"a" * 10, 0.0, holds[0])
    assert table.put(2, 1, b"b" * 10, 1.0, holds[1])
    assert table.put(3, 1, b"c" * 10, 2.0, holds[2])
    assert table.put(4, 1, b"d" * 10, 3.0, holds[3])
    assert table.evict_oldest() and holds[0].released == 1 and table.get(1, 1) is None
    table.confirm(2, 1, "f1")
    table.confirm(3, 1, "f1")
    assert table.forget_for("f2") == 2  # kept only for f2, which lags
    assert holds[1].released == holds[2].released == 1
    table.confirm(4, 1, "f1", lagging={"f2"})  # f1 has it and f2 lags: nobody needs it
    assert holds[3].released == 1 and len(table) == 0 and table.bytes == 0
    assert not table.evict_oldest()
    late = Hold()
    assert table.put(5, 1, b"e" * 10, 4.0, late)
    table.clear()
    assert late.released == 1


# --- the shell: charges, waits, pushes ------------------------------------------------------


def inflight(total: int = 8 * MiB, per_peer: int = 4 * MiB, **kw: Any) -> InFlight:
    return InFlight(MemoryBudget(total, per_peer, backoff=60.0), StorageMetrics(), **kw)


async def test_a_charge_waits_for_room_and_gives_up_at_its_deadline() -> None:
    flight = inflight()
    first = await flight.charge(6 * MiB, timeout=1.0, what="a")
    waiter = asyncio.ensure_future(flight.charge(4 * MiB, timeout=5.0, what="b"))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    first.release()
    second = await asyncio.wait_for(waiter, 2.0)
    assert flight.budget.used == 4 * MiB
    with pytest.raises(Unavailable, match="memory budget"):
        await flight.charge(6 * MiB, timeout=0.1, what="c")
    second.release()
    assert flight.budget.used == 0


async def test_a_full_budget_evicts_the_registration_table_first() -> None:
    table = RegistrationTable(max_bytes=64 * MiB, ttl=60.0)
    flight = inflight(evict=table.evict_oldest)
    lease = await flight.charge(6 * MiB, timeout=1.0, what="upload")
    table.put(1, 1, b"x", 0.0, lease.hold())
    lease.release()  # the upload is over; the table still holds the buffer
    assert flight.budget.used == 6 * MiB
    again = await flight.charge(6 * MiB, timeout=0.5, what="next upload")
    assert len(table) == 0 and flight.budget.used == 6 * MiB
    again.release()


async def test_pushes_to_a_lagging_follower_are_cancelled_and_their_buffers_freed() -> None:
    lagging: list[str] = []
    flight = inflight(total=16 * MiB, per_peer=8 * MiB, on_lagging=lagging.append)
    stuck = asyncio.Event()

    async def never() -> str:
        await stuck.wait()
        return "f1"

    leases = [await flight.charge(4 * MiB, timeout=1.0, what=str(i)) for i in range(2)]
    tasks = [flight.push("f1", lease, never) for lease in leases]
    assert all(t is not None for t in tasks)
    for lease in leases:
        lease.release()  # the uploads returned; the pushes keep the buffers
    assert flight.budget.used == 8 * MiB and flight.budget.peer_bytes["f1"] == 8 * MiB
    third = await flight.charge(4 * MiB, timeout=1.0, what="third")
    assert flight.push("f1", third, never) is None  # past f1's share: f1 lags
    assert lagging == ["f1"]
    await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
    assert all(t is not None and t.cancelled() for t in tasks)
    assert flight.budget.peer_bytes["f1"] == 0
    third.release()
    assert flight.budget.used == 0
    dropped = flight._metrics.pushes_dropped.labels("f1")._value.get()
    assert dropped == 3  # two cancelled, one never made


async def test_close_cancels_every_push_left() -> None:
    flight = inflight()

    async def forever() -> str:
        await asyncio.Event().wait()
        return "x"

    lease = await flight.charge(1 * MiB, timeout=1.0, what="a")
    task = flight.push("f1", lease, forever)
    lease.release()
    await flight.close()
    assert task is not None and task.cancelled() and flight.budget.used == 0


# --- the chunked push body -------------------------------------------------------------------


async def test_a_push_is_sent_whole_in_chunks() -> None:
    got: list[bytes] = []

    async def accept(request: web.Request) -> web.Response:
        got.append(await request.read())
        return web.json_response({"durable": True})

    app = web.Application()
    app.router.add_put("/internal/slices/{slot}", accept)
    data = bytes(range(256)) * (3 * PUSH_CHUNK // 256 + 7)
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        peers = PeerClient("secret-0123456789", session, "n1")
        await peers.push(
            str(server.make_url("")).rstrip("/"),
            slot=3,
            generation=1,
            file_id="0" * 32,
            index=0,
            next=None,
            crc=0,
            data=data,
            timeout=5.0,
        )
    assert got == [data]


async def test_a_push_to_a_peer_that_does_not_read_ends_at_its_deadline() -> None:
    """The peer accepts the connection and reads nothing: the push fails at its deadline and
    its connection is aborted, so no buffered copy of the payload waits to be sent (the peer,
    reading afterwards, gets a reset or a part of the body, never the whole)."""
    go = asyncio.Event()
    received: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await go.wait()
        count = 0
        try:
            while chunk := await reader.read(1 << 20):
                count += len(chunk)
        except ConnectionError:
            pass
        received.set_result(count)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    size = 64 * MiB  # far more than the socket buffers hold
    try:
        async with aiohttp.ClientSession() as session:
            peers = PeerClient("secret-0123456789", session, "n1")
            with pytest.raises((TimeoutError, aiohttp.ClientError)):
                await peers.push(
                    f"http://127.0.0.1:{port}",
                    slot=1,
                    generation=1,
                    file_id="0" * 32,
                    index=0,
                    next=None,
                    crc=0,
                    data=b"z" * size,
                    timeout=0.5,
                )
            go.set()
            got = await asyncio.wait_for(received, 10.0)
        assert got < size
    finally:
        server.close()
        await server.wait_closed()


# --- config and allocator -------------------------------------------------------------------


BASE = [
    "--node-id", "n1", "--group-id", "1", "--data-dir", "/tmp/x", "--raft", "127.0.0.1:7001",
    "--peers", "n2,127.0.0.1:7002,http://127.0.0.1:8002",
    "--peers", "n3,127.0.0.1:7003,http://127.0.0.1:8003",
    "--secret", "0123456789abcdef",
]  # fmt: skip


def _cfg(argv: list[str]) -> storage_config.StorageConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser, storage_config.OPTIONS)
    return storage_config.from_args(parser.parse_args(argv))


def test_budget_config_defaults_and_checks() -> None:
    cfg = _cfg(BASE)
    assert cfg.memory_budget_bytes == 256 * MiB and cfg.peer_budget_bytes == 64 * MiB
    assert cfg.fetch_concurrency == 2 and cfg.registration_bytes == 64 * MiB
    with pytest.raises(ConfigError, match="peer_budget_mb"):
        _cfg(BASE + ["--memory-budget-mb", "32", "--peer-budget-mb", "64"])
    with pytest.raises(ConfigError, match="fetch_concurrency"):
        _cfg(BASE + ["--fetch-concurrency", "0"])


def test_allocator_tuning_is_harmless() -> None:
    allocator.tune()
    allocator.release_free_memory()
