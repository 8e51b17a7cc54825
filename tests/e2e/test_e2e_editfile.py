"""``open(path, "r+b")`` on a real cluster: the edit file object reads through its own
buffered writes, flushes them as edits (a file of more than one slice, a truncate among the
writes), knows the new version, and refuses to overwrite a change made by another client."""

from __future__ import annotations

import asyncio

import pytest
from e2e_helpers import SLICE, random_bytes

from mydfs.client import AsyncClient, Client, Conflict, InvalidArgument
from mydfs.client.local_cluster import LocalCluster


def test_the_blocking_edit_file_against_a_bytes_model(client: Client) -> None:
    path = "/editfile/model.bin"
    model = bytearray(random_bytes(SLICE + 3000, seed=31))
    info = client.put(path, bytes(model))
    with client.open(path, "r+b") as f:
        assert f.read(10) == model[:10]
        f.seek(SLICE - 5)
        f.write(b"across the slice boundary")
        model[SLICE - 5 : SLICE + 20] = b"across the slice boundary"
        f.seek(0, 2)
        f.write(b"tail")
        model += b"tail"
        f.seek(SLICE - 10)
        assert f.read(40) == model[SLICE - 10 : SLICE + 30]
        assert f.truncate(SLICE + 100) == SLICE + 100
        del model[SLICE + 100 :]
        f.seek(SLICE + 200)
        f.write(b"!")
        model += bytes(100) + b"!"
        f.flush()
        assert f.version > info.version
        assert client.read(path) == model
        f.seek(0)
        f.write(b"HEAD")
        model[:4] = b"HEAD"
    assert client.read(path) == model
    with pytest.raises(InvalidArgument):
        client.open(path, "w")


def test_a_change_by_another_client_makes_the_flush_conflict(cluster: LocalCluster) -> None:
    async def main() -> None:
        path = "/editfile/conflict.bin"
        async with AsyncClient(cluster.tracker_url) as a, AsyncClient(cluster.tracker_url) as b:
            await a.put(path, b"0123456789")
            f = await a.open(path, "r+b")
            await f.write(b"mine")
            await b.write(path, 5, b"theirs")
            with pytest.raises(Conflict) as err:
                await f.close()
            assert err.value.context.get("reason") == "version"
            assert await a.read(path) == b"01234theirs"
            async with await a.open(path, "r+b") as g:
                assert await g.read() == b"01234theirs"
                g.seek(0)
                await g.write(b"ok")
            assert await b.read(path) == b"ok234theirs"

    asyncio.run(main())
