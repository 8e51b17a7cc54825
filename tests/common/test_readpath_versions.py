"""The reader's rule for edited files (``common/readrules.py``, ``common/readpath.py``): a chain
run is used only from a node whose group applied exactly the version the entry expects of it
(higher: :class:`StaleEntry`, lower: the next node); an edited file's runs are checked by file
id only; a slot or slice gone from an edited file is a stale entry; the ``via`` of a walk and
the ``gv`` query parameter of ``GET /files`` are read from the wire."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from mydfs.common.errors import InvalidArgument, NotFound, StaleEntry, Unavailable
from mydfs.common.file_record import FileRecord
from mydfs.common.location import Location
from mydfs.common.readpath import (
    VERSION_HEADER,
    ChainRun,
    ReadPath,
    SliceLoc,
    expect_headers,
    fetch_chain_run,
    owner_mismatch,
    version_check,
    versions_of,
)
from mydfs.common.web import error_response, json_response
from mydfs.storage.http_files import parse_gv

FILE = "0c" * 16


def entry(slot: int, index: int, via: list[list[int]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "group": 1,
        "slot": slot,
        "generation": 2,
        "length": 10,
        "crc32c": 0,
        "file_id": FILE,
        "index": index,
        "replicas": [],
    }
    if via is not None:
        out["via"] = via
    return out


@dataclass
class VersionedNode:
    """A node answering ``/chain`` with a fixed run and the version its group applied
    (None: an old node that reports none)."""

    version: int | None
    entries: list[dict[str, Any]]
    gone: bool = False
    url: str = ""
    asked: list[dict[str, str]] = field(default_factory=list)

    async def chain(self, request: web.Request) -> web.StreamResponse:
        self.asked.append(dict(request.headers))
        if self.gone:
            return error_response(NotFound("slot deleted"))
        body: dict[str, Any] = {"entries": self.entries, "next": None}
        if self.version is not None:
            body["version"] = self.version
        return json_response(body)

    async def slice(self, request: web.Request) -> web.StreamResponse:
        return error_response(NotFound("no such slice"))


# --- pure -------------------------------------------------------------------------------------


def test_version_check_equal_later_earlier() -> None:
    assert version_check(3, 3) is None
    stale = version_check(3, 4, group=1)
    assert isinstance(stale, StaleEntry) and not stale.retryable
    assert stale.context["reason"] == "stale_entry"
    behind = version_check(3, 2)
    assert isinstance(behind, Unavailable) and behind.retryable
    assert behind.context["reason"] == "behind"


def test_an_edited_files_run_is_checked_by_file_id_only() -> None:
    locs = [SliceLoc.from_wire(entry(4, 7)), SliceLoc.from_wire(entry(5, 2))]
    assert owner_mismatch(locs, FILE, 0) is not None
    assert owner_mismatch(locs, FILE, 0, indexes=False) is None
    other = [SliceLoc.from_wire({**entry(4, 0), "file_id": "0d" * 16})]
    assert owner_mismatch(other, FILE, 0, indexes=False) is not None


def test_expect_headers_carry_the_version_and_may_omit_the_index() -> None:
    assert expect_headers(FILE, 3, "", 5) == {
        "X-Mydfs-File": FILE,
        "X-Mydfs-Index": "3",
        VERSION_HEADER: "5",
    }
    assert expect_headers(FILE, None, "g") == {"X-Mydfs-File": FILE, "X-Mydfs-Grant": "g"}
    assert expect_headers("", 0) == {}


def test_via_and_versions_come_from_the_wire() -> None:
    loc = SliceLoc.from_wire(entry(9, 0, via=[[4, 1], [6, 3]]))
    assert loc.via == ((4, 1), (6, 3))
    assert SliceLoc.from_wire(entry(9, 0)).via == ()
    assert ChainRun([], None).version == 0
    record = FileRecord.from_dict(
        {
            "path": "/a",
            "file_id": FILE,
            "size": 1,
            "slices": 1,
            "head": [1, 2],
            "version": 4,
            "versions": [[2, 4], [1, 3]],
            "layout": 3,
        }
    )
    assert record.versions == ((1, 3), (2, 4)) and record.layout == 3
    assert versions_of(record.versions) == {1: 3, 2: 4}
    assert FileRecord.from_dict(record.to_dict()) == record
    plain = FileRecord.from_dict({**record.to_dict(), "versions": None, "layout": None})
    assert plain.versions == () and plain.layout == 0
    assert "versions" not in plain.to_dict() and "layout" not in plain.to_dict()


def test_gv_parses_group_versions() -> None:
    assert parse_gv(None) == {} and parse_gv("") == {}
    assert parse_gv("1:3,2:4") == {1: 3, 2: 4}
    for bad in ("1", "1:", ":3", "a:1", "1:-2", "1:2,1:3", "1:2,,", "1:²"):
        with pytest.raises(InvalidArgument):
            parse_gv(bad)


# --- over HTTP --------------------------------------------------------------------------------


async def test_a_later_version_is_a_stale_entry_at_once(
    serve: Callable[[VersionedNode], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    ahead, exact = VersionedNode(5, [entry(4, 0)]), VersionedNode(4, [entry(4, 0)])
    urls = [await serve(ahead), await serve(exact)]
    with pytest.raises(StaleEntry):
        await fetch_chain_run(
            session, urls, Location(1, 4), 1, timeout=5, file_id=FILE, version=4, edited=True
        )
    assert exact.asked == []  # not asked: the entry is stale, whatever the others say
    assert ahead.asked[0][VERSION_HEADER] == "4"
    assert "X-Mydfs-Index" not in ahead.asked[0]  # an edited file: any index


async def test_an_earlier_version_tries_the_next_node(
    serve: Callable[[VersionedNode], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    behind, old, exact = (
        VersionedNode(3, [entry(4, 0)]),
        VersionedNode(None, [entry(4, 0)]),
        VersionedNode(4, [entry(4, 9)]),
    )
    urls = [await serve(behind), await serve(old), await serve(exact)]
    run = await fetch_chain_run(
        session, urls, Location(1, 4), 1, timeout=5, file_id=FILE, version=4, edited=True
    )
    assert run.version == 4 and run.entries[0].index == 9
    with pytest.raises(Unavailable, match="not yet 4"):
        await fetch_chain_run(session, urls[:2], Location(1, 4), 1, timeout=5, version=4)
    # A never-edited file expects 0: an old node that reports nothing is current.
    run = await fetch_chain_run(session, urls[1:2], Location(1, 4), 1, timeout=5, version=0)
    assert run.version == 0


async def test_a_gone_slot_of_an_edited_file_is_a_stale_entry(
    serve: Callable[[VersionedNode], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    node = VersionedNode(4, [], gone=True)
    url = await serve(node)
    reader = ReadPath(session, lambda group: _urls([url]))
    with pytest.raises(StaleEntry):
        await reader.chain(Location(1, 4), 1, 10, file_id=FILE, versions={1: 4})
    with pytest.raises(NotFound):
        await reader.chain(Location(1, 4), 1, 10, file_id=FILE, versions={})
    loc = SliceLoc.from_wire(entry(4, 0))
    with pytest.raises(StaleEntry):
        await reader.slice(loc, edited=True)


async def test_a_local_run_at_another_version_is_not_used(
    serve: Callable[[VersionedNode], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    node = VersionedNode(4, [entry(4, 0)])
    url = await serve(node)

    async def local_run(start: Location, limit: int) -> ChainRun:
        return ChainRun([SliceLoc.from_wire(entry(4, 0))], None, 3)

    reader = ReadPath(session, lambda group: _urls([url]), local_run=local_run)
    locs = await reader.chain(Location(1, 4), 1, 10, file_id=FILE, versions={1: 4})
    assert len(locs) == 1 and len(node.asked) == 1
    locs = await reader.chain(Location(1, 4), 1, 10, file_id=FILE, versions={1: 3})
    assert len(node.asked) == 1  # the local run was at the expected version


async def _urls(urls: list[str]) -> list[str]:
    return urls
