"""The SDK's edit coordinator (``client/editor.py``) and its reads of edited files, against an
in-process fake of the contract's routes (``fake_edit_cluster.py``): every operation's result
checked against a bytes model, chains across groups and through 301 entry points, concurrent
appends (lock conflicts retried with a new txn), refusals rolled back, ``if_version``, a read
from a stale entry starting again, bad arguments refused before anything is written."""

from __future__ import annotations

import asyncio
import io
import random
from pathlib import Path

import pytest
from fake_edit_cluster import FakeTracker

from mydfs.client import AsyncClient
from mydfs.common.errors import Conflict, InvalidArgument, NotFound
from mydfs.common.slices import PAYLOAD_CAPACITY as CAP

SIZES = [1, 7, 1000, CAP - 1, CAP, CAP + 3, 2 * CAP + 5]


def settled(tracker: FakeTracker) -> None:
    """No lock left anywhere; each group's file version is the entry's for it."""
    entry = tracker.files["/f"]
    versions = dict((g, v) for g, v in entry["versions"])
    for g in tracker.groups:
        assert g.locks == {}
        assert g.versions.get(entry["file_id"], 0) == versions.get(g.group, 0)


async def test_every_operation_matches_the_bytes_model(
    fake: tuple[FakeTracker, AsyncClient],
) -> None:
    tracker, c = fake
    rng = random.Random(11)
    model = b""
    for step in range(36):
        size = len(model)
        kind = rng.choice(["write", "append", "truncate", "insert", "cut"])
        if size > 12 * CAP:
            kind = "cut"
        data = rng.randbytes(rng.choice(SIZES))
        off = rng.randint(0, size)
        if kind == "write":
            off = rng.choice([off, size + rng.randint(0, 3000)])
            info = await c.write("/f", off, data)
            padded = model + bytes(max(0, off - size))
            model = padded[:off] + data + padded[off + len(data) :]
        elif kind == "append":
            at = await c.append("/f", data)
            assert at == size
            model += data
            info = await c.stat("/f")
        elif kind == "truncate":
            n = rng.choice([0, off, size + rng.randint(1, 5000)]) if step % 7 else 0
            info = await c.truncate("/f", n)
            model = model[:n] + bytes(max(0, n - size))
        elif kind == "insert":
            info = await c.insert("/f", off, data)
            model = model[:off] + data + model[off:]
        else:
            n = rng.randint(0, size - off)
            info = await c.cut("/f", off, n)
            model = model[:off] + model[off + n :]
        assert info.size == len(model), (step, kind)
        assert await c.read("/f") == model, (step, kind)
        settled(tracker)
    assert tracker.commits > 20


async def test_an_overwrite_keeps_the_layout_and_reads_through_301s(
    fake: tuple[FakeTracker, AsyncClient],
) -> None:
    tracker, c = fake
    model = random.Random(3).randbytes(3 * CAP + 10)
    await c.write("/f", 0, model)
    layout = tracker.files["/f"]["layout"]
    for off in (5, CAP - 2, 2 * CAP + 1, 5):  # the same slices again: 301 entry points move
        info = await c.write("/f", off, b"xyz")
        model = model[:off] + b"xyz" + model[off + 3 :]
        assert info.layout == layout and info.slices == 4
    assert await c.read("/f") == model
    assert await c.read("/f", CAP - 4, 8) == model[CAP - 4 : CAP + 4]
    settled(tracker)


async def test_concurrent_appends_each_land_once(fake: tuple[FakeTracker, AsyncClient]) -> None:
    tracker, c = fake
    await c.append("/f", b"start")
    blocks = [bytes([65 + k]) * (100 + k) for k in range(4)]
    offsets = await asyncio.gather(*(c.append("/f", b) for b in blocks))
    content = await c.read("/f")
    assert len(content) == 5 + sum(len(b) for b in blocks)
    for at, block in zip(offsets, blocks, strict=True):
        assert content[at : at + len(block)] == block
    settled(tracker)


async def test_a_refused_prepare_is_rolled_back(fake: tuple[FakeTracker, AsyncClient]) -> None:
    tracker, c = fake
    await c.write("/f", 0, b"hello world")
    home = next(g for g in tracker.groups if g.versions)
    home.refuse_next_prepare = "locked"  # retried with a new txn
    await c.write("/f", 0, b"J")
    assert await c.read("/f") == b"Jello world"
    home.refuse_next_prepare = "disk"  # not retried: aborted, rolled back, raised
    with pytest.raises(Conflict):
        await c.write("/f", 0, b"Y")
    assert await c.read("/f") == b"Jello world"
    assert any(t.state == "rolled_back" for t in home.txns.values())
    assert sum(d["decision"] == "abort" for d in tracker.decisions.values()) == 2
    settled(tracker)


async def test_if_version(fake: tuple[FakeTracker, AsyncClient]) -> None:
    _, c = fake
    info = await c.write("/f", 0, b"abc")
    with pytest.raises(Conflict) as exc:
        await c.write("/f", 0, b"z", if_version=info.version - 1)
    assert exc.value.context["reason"] == "version"
    info = await c.insert("/f", 1, b"--", if_version=info.version)
    assert await c.read("/f") == b"a--bc"
    assert await c.append("/f", b"!", if_version=info.version) == 5


async def test_a_read_from_a_stale_entry_starts_again(
    fake: tuple[FakeTracker, AsyncClient],
) -> None:
    _, c = fake
    await c.write("/f", 0, b"first version")
    old = await c.stat("/f")
    await c.write("/f", 0, b"FIRST")
    seen = [old]
    got = b"".join([p async for p in c._slices_in_order(seen)])
    assert got == b"FIRST version" and seen[-1].version == old.version + 1


async def test_bad_arguments_are_refused_before_anything(
    fake: tuple[FakeTracker, AsyncClient],
) -> None:
    tracker, c = fake
    await c.write("/f", 0, b"0123456789")
    bad = [
        c.write("/f", -1, b"x"),
        c.insert("/f", 11, b"x"),
        c.cut("/f", 5, 6),
        c.cut("/f", -1, 1),
        c.truncate("/f", -1),
        c.write("/f", 0, b"x", if_version=-1),
        c.write("relative", 0, b"x"),
    ]
    for call in bad:
        with pytest.raises(InvalidArgument):
            await call
    with pytest.raises(NotFound):
        await c.append("/missing", b"x")
    info = await c.write("/f", 3, b"")  # no data: no edit
    assert info.version == tracker.files["/f"]["version"]
    assert await c.append("/f", b"") == 10
    assert tracker.commits == 1


async def test_a_lost_commit_answer_is_asked_again_and_appends_once(
    fake: tuple[FakeTracker, AsyncClient],
) -> None:
    tracker, c = fake
    await c.append("/f", b"a")
    tracker.lose_answers = 2  # the decision is recorded, its answer lost twice
    assert await c.append("/f", b"b") == 1
    assert await c.read("/f") == b"ab"
    assert tracker.commits == 2
    settled(tracker)


class _Pipe:
    """A stream that cannot be rewound (like standard input)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self, n: int = -1) -> bytes:
        n = len(self._data) if n < 0 else n
        out, self._data = self._data[:n], self._data[n:]
        return out


async def test_data_from_paths_file_objects_and_streams(
    fake: tuple[FakeTracker, AsyncClient], tmp_path: Path
) -> None:
    tracker, c = fake
    local = tmp_path / "part.bin"
    local.write_bytes(b"from a file")
    await c.write("/f", 0, local)
    with open(local, "rb") as f:
        f.read(5)
        assert await c.append("/f", f) == 11  # from its position: "a file"
    home = next(g for g in tracker.groups if g.versions)
    home.refuse_next_prepare = "locked"  # the retry reads the stream again
    await c.insert("/f", 0, _Pipe(b">> "))  # type: ignore[arg-type]
    await c.append("/f", io.BytesIO(b"."))
    assert await c.read("/f") == b">> from a filea file."
    settled(tracker)
