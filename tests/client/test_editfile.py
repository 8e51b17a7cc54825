"""The edit file object (``client/editfile.py``): its pure buffer against a bytes model
(hypothesis), and its shell against an in-memory stand-in of the SDK calls it makes (``stat``,
``write``, ``truncate`` with ``if_version``, the read stream), a concurrent change included."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mydfs.client.editfile import AsyncEditFile, Edit, EditBuffer, EditFile
from mydfs.common.errors import Conflict, InvalidArgument
from mydfs.common.file_record import FileRecord


def apply(stored: bytes, edit: Edit) -> bytes:
    """An edit on a bytes model, as the coordinator applies it."""
    if edit.kind == "truncate":
        return stored[: edit.offset] + bytes(max(0, edit.offset - len(stored)))
    padded = stored + bytes(max(0, edit.offset - len(stored)))
    return padded[: edit.offset] + edit.data + padded[edit.offset + len(edit.data) :]


def seen_by(buf: EditBuffer, stored: bytes, offset: int, n: int) -> bytes:
    out = b""
    for p in buf.pieces(offset, n):
        out += p.data if p.data is not None else stored[p.offset : p.offset + p.length]
    return out


offsets = st.integers(0, 80)
ops = st.one_of(
    st.tuples(st.just("write"), offsets, st.binary(min_size=0, max_size=24)),
    st.tuples(st.just("truncate"), offsets, st.just(b"")),
    st.tuples(st.just("read"), offsets, st.integers(-1, 40)),
    st.tuples(st.just("flush"), st.integers(0, 3), st.just(b"")),
)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=60), st.lists(ops, max_size=30))
def test_the_buffer_matches_a_bytes_model(start: bytes, script: list[tuple[str, int, Any]]) -> None:
    stored, model, buf = start, start, EditBuffer(len(start))
    for kind, a, b in script:
        if kind == "write":
            buf.write(a, b)
            if b:
                padded = model + bytes(max(0, a - len(model)))
                model = padded[:a] + b + padded[a + len(b) :]
        elif kind == "truncate":
            buf.truncate(a)
            model = model[:a] + bytes(max(0, a - len(model)))
        elif kind == "read":
            n = len(model) if b < 0 else b
            assert seen_by(buf, stored, a, n) == model[a : a + n]
        else:
            # Commit the first ``a`` edits only (a flush cut short), then check the view.
            for edit in buf.edits()[:a]:
                stored = apply(stored, edit)
                buf.committed(edit)
                assert buf.stored == len(stored)
        assert buf.size == len(model)
        exts = buf.extents()
        for (s1, d1), (s2, _) in itertools.pairwise(exts):
            assert s1 + len(d1) < s2, "extents never touch or overlap"
        assert all(d and s + len(d) <= buf.size for s, d in exts)
        assert buf.dirty_bytes == sum(len(d) for _, d in exts)
    assert seen_by(buf, stored, 0, len(model)) == model
    edits = buf.edits()
    writes = [e.offset for e in edits if e.kind == "write"]
    assert writes == sorted(writes) and len(writes) == len(buf.extents())
    for edit in edits:
        stored = apply(stored, edit)
        buf.committed(edit)
    assert stored == model
    assert not buf.dirty and buf.edits() == []


def test_merged_extents_and_the_order_of_edits() -> None:
    buf = EditBuffer(100)
    buf.write(10, b"ab")
    buf.write(12, b"cd")  # touches: merged
    buf.write(30, b"x")
    buf.write(8, b"zz")
    assert buf.extents() == [(8, b"zzabcd"), (30, b"x")]
    buf.truncate(31)
    buf.truncate(200)
    assert buf.edits() == [
        Edit("truncate", 31),
        Edit("write", 8, b"zzabcd"),
        Edit("write", 30, b"x"),
        Edit("truncate", 200),
    ]
    with pytest.raises(InvalidArgument):
        buf.committed(Edit("write", 8, b"zzabcd"))  # not the first
    with pytest.raises(InvalidArgument):
        buf.write(-1, b"a")


class FakeClient:
    """The SDK calls an edit file makes, on one in-memory file with versions."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.info = FileRecord(
            path="/f",
            file_id="F",
            size=len(data),
            slices=1,
            head=None,
            hash="",
            ctime=0.0,
            mtime=0.0,
            version=1,
        )
        self.edits: list[tuple[str, int, int]] = []

    def _commit(self, data: bytes) -> FileRecord:
        self.data = data
        self.info = replace(self.info, size=len(data), version=self.info.version + 1)
        return self.info

    def _check(self, if_version: int | None) -> None:
        if if_version is not None and if_version != self.info.version:
            raise Conflict("stale", path="/f", reason="version", version=self.info.version)

    async def stat(self, path: str) -> FileRecord:
        return self.info

    async def write(
        self, path: str, offset: int, data: bytes, *, if_version: int | None = None
    ) -> FileRecord:
        self._check(if_version)
        self.edits.append(("write", offset, len(data)))
        return self._commit(apply(self.data, Edit("write", offset, data)))

    async def truncate(self, path: str, size: int, *, if_version: int | None = None) -> FileRecord:
        self._check(if_version)
        self.edits.append(("truncate", size, 0))
        return self._commit(apply(self.data, Edit("truncate", size)))

    async def _slices_in_order(
        self, seen: list[FileRecord], offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        assert seen[-1].version == self.info.version
        end = len(self.data) if length is None else offset + length
        yield self.data[offset:end]


def open_edit(fake: FakeClient, buffer_bytes: int = 1 << 20) -> AsyncEditFile:
    return AsyncEditFile(cast(Any, fake), fake.info, buffer_bytes)


def test_the_file_object_reads_its_writes_and_flushes_them_as_edits() -> None:
    async def main() -> None:
        fake = FakeClient(b"0123456789")
        async with open_edit(fake) as f:
            assert await f.read(3) == b"012"
            assert await f.write(b"ab") == 2
            assert f.tell() == 5
            f.seek(-2, 2)
            await f.write(b"XYZ")
            f.seek(0)
            assert await f.read() == b"012ab567XYZ"
            assert fake.data == b"0123456789"  # nothing sent yet
            assert await f.truncate(4) == 4
            f.seek(0)
            assert await f.read() == b"012a"
            f.seek(6)
            await f.write(b"!")
            f.seek(0)
            assert await f.read() == b"012a\0\0!"
        assert fake.data == b"012a\0\0!"
        assert fake.edits == [("truncate", 4, 0), ("write", 3, 1), ("write", 6, 1)]
        assert f.version == fake.info.version == 4
        with pytest.raises(InvalidArgument):
            await f.read()

    asyncio.run(main())


def test_a_concurrent_change_makes_the_flush_fail_with_conflict() -> None:
    async def main() -> None:
        fake = FakeClient(b"abcdef")
        f = open_edit(fake)
        await f.write(b"XY")
        await fake.write("/f", 0, b"other")  # another client
        with pytest.raises(Conflict) as err:
            await f.flush()
        assert err.value.context["reason"] == "version"
        assert fake.data == b"otherf"  # not overwritten
        with pytest.raises(Conflict):
            await f.read()  # the stored part moved on under unflushed writes
        # A clean object follows the file: reads and writes see the newest version.
        g = open_edit(fake)
        await fake.write("/f", 6, b"!")
        assert await g.read() == b"otherf!"
        await g.write(b"?")
        await g.flush()
        assert fake.data == b"otherf!?"
        assert g.version == fake.info.version

    asyncio.run(main())


def test_writes_past_the_buffer_bound_flush() -> None:
    async def main() -> None:
        fake = FakeClient(b"")
        f = open_edit(fake, buffer_bytes=8)
        await f.write(b"12345678")
        assert fake.edits == []
        await f.write(b"9")
        assert fake.data == b"123456789" and fake.edits == [("write", 0, 9)]
        await f.close()
        assert fake.edits == [("write", 0, 9)]

    asyncio.run(main())


def test_sequential_small_writes_grow_one_extent() -> None:
    buf = EditBuffer(0)
    for k in range(20000):
        buf.write(k * 512, bytes([k % 251]) * 512)
    assert buf.dirty_bytes == buf.size == 20000 * 512
    assert [(s, len(d)) for s, d in buf.extents()] == [(0, 20000 * 512)]


def test_the_blocking_twin() -> None:
    loop = asyncio.new_event_loop()
    try:
        fake = FakeClient(b"hello")
        with EditFile(loop.run_until_complete, open_edit(fake)) as f:
            f.seek(0, 2)
            f.write(b" world")
            f.seek(0)
            assert f.read(5) == b"hello"
            assert f.truncate() == 5
        assert fake.data == b"hello"
        assert f.closed
    finally:
        loop.close()
