"""Editing files in place: the SDK's coordinator of an edit's two-phase commit.

``write``, ``append``, ``truncate``, ``insert`` and ``cut`` (:class:`EditMethods`, mixed into
:class:`~mydfs.client.aio.AsyncClient`) each run one edit (``docs/client.md``, "Editing
files"):

1. ``POST /meta/edits``: the file's entry (with ``versions`` and ``layout``) and a write grant.
2. The chain is walked under the reader's rule (``common/readpath.py``) and the edit planned
   (``client/editplan.py``): which slices ``[i, j]`` are replaced, by what.
3. The old bytes still needed (``old_i[:a]``, ``old_j[b:]``) are read, and the new slices
   written in the home group with the upload machinery (reserve, fill; upload ids ``txn.k``),
   at most ``window`` slices in memory. They are invisible until the commit.
4. ``POST /edits/{txn}/prepare`` at every participant group's leader, in parallel (locks).
5. ``POST /meta/edits/{txn}/commit`` at the tracker: its decision record is the commit point.
   A call whose outcome is unknown is repeated with the same ``txn`` (the tracker answers the
   decision it recorded): an append is applied exactly once.
6. ``POST /edits/{txn}/commit`` at every participant in parallel, with the tracker's signed
   decision; ``out_of_order`` and unavailability are retried for up to
   :data:`COMMIT_PATIENCE` seconds, after which the participants' resolvers finish the job.

A lock held by another edit (``conflict reason=locked``), a layout changed since the entry was
read (``layout_changed``), an abort decided meanwhile or a stale entry: the attempt is
abandoned (tracker abort, participants' rollbacks, best effort), and the whole edit is planned
again with a new txn after a random backoff, at most :data:`MAX_ATTEMPTS` times and
:data:`RETRY_FOR` seconds. Any other failure before the decision abandons the attempt and is
raised. New slices written for an attempt that never reached a ``prepare`` are not reclaimed
(as with a failed ``put``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, cast

from mydfs.client.editplan import Data, Old, Op, Plan, Prepare, Segment, plan, prepares, splice_of
from mydfs.client.routing import GroupPlan
from mydfs.client.source import Source, chunks, source_size
from mydfs.common.checksum import crc32c
from mydfs.common.deliver import deliver
from mydfs.common.errors import (
    Conflict,
    InvalidArgument,
    MydfsError,
    NotFound,
    OutcomeUnknown,
    StaleEntry,
    Unavailable,
)
from mydfs.common.file_record import FileRecord
from mydfs.common.grants import GRANT_HEADER
from mydfs.common.location import Location
from mydfs.common.paths import check_file_path
from mydfs.common.readpath import SliceLoc, versions_of
from mydfs.common.tracing import traced

if TYPE_CHECKING:
    from mydfs.client.aio import AsyncClient, _Pending

log = logging.getLogger(__name__)

#: Attempts of one edit (each with a new txn) before a conflict is raised.
MAX_ATTEMPTS = 20
#: Seconds one edit keeps retrying conflicts before raising the last one.
RETRY_FOR = 60.0
#: Seconds the participants' commits are retried before they are left to their resolvers.
COMMIT_PATIENCE = 30.0
#: Reasons of a refusal after which the edit is planned again with a new txn.
RETRY_REASONS = frozenset(
    {
        "locked",
        "layout_changed",
        "aborted",
        "stale_entry",
        "stale_generation",
        "stale_chain",
        "txn_mismatch",
    }
)
#: Bytes of a data stream that cannot be re-read kept in memory before spilling to disk.
SPOOL_MEMORY = 8 * 1024 * 1024


@dataclass(frozen=True)
class _Decision:
    outcome: str  # "commit" | "abort"
    token: str


class _Retry(Exception):
    """The attempt was abandoned for a reason worth a new attempt (``cause``)."""

    def __init__(self, cause: MydfsError) -> None:
        super().__init__(cause.message)
        self.cause = cause


class _DataStream:
    """The caller's data read in order, ``take(n)`` bytes at a time."""

    def __init__(self, src: Source | None) -> None:
        self._it: AsyncIterator[bytes] | None = None if src is None else chunks(src).__aiter__()
        self._buf = b""

    async def take(self, n: int) -> bytes:
        while len(self._buf) < n:
            if self._it is None:
                raise InvalidArgument("the edit has no data source")
            try:
                chunk = await self._it.__anext__()
            except StopAsyncIteration:
                raise InvalidArgument(
                    "the data ended early (it changed while it was read); nothing was changed"
                ) from None
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    async def close(self) -> None:
        closer = getattr(self._it, "aclose", None)
        if closer is not None:
            await closer()


class _Source:
    """The caller's data, re-readable once per attempt: bytes as they are, a local path
    reopened, a seekable file object rewound, anything else spooled first."""

    def __init__(self, src: Source | None) -> None:
        self.src = src
        self._spool: IO[bytes] | None = None
        self._start = 0
        self.length = 0
        if src is None:
            return
        if isinstance(src, bytes | bytearray | memoryview | str | os.PathLike):
            size = source_size(src)
            assert size is not None
            self.length = size
            return
        seekable = getattr(src, "seekable", None)
        if seekable is not None and seekable() and source_size(src) is not None:
            self._start = src.tell()
            self.length = cast(int, source_size(src))
            return
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115
        shutil.copyfileobj(src, spool)
        self.length = spool.tell()
        spool.seek(0)
        self._spool = spool
        self.src = cast(IO[bytes], spool)

    def open(self) -> _DataStream:
        if self.src is not None and not isinstance(
            self.src, bytes | bytearray | memoryview | str | os.PathLike
        ):
            self.src.seek(self._start)
        return _DataStream(self.src)

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()


class EditMethods:
    """The edit operations of :class:`~mydfs.client.aio.AsyncClient`. ``data``: bytes, a
    local path or a binary file object (as ``put``). ``if_version``: the edit is refused
    (:class:`Conflict` ``reason=version``) unless the file is at that version."""

    @traced
    async def write(
        self, path: str, offset: int, data: Source, *, if_version: int | None = None
    ) -> FileRecord:
        """Write ``data`` at ``offset``: over the bytes there, growing the file past its end
        (a gap after the end reads as zeros). The file's new entry."""
        info, _ = await _Editor(self).run(path, "write", offset, data, if_version)
        return info

    @traced
    async def append(self, path: str, data: Source, *, if_version: int | None = None) -> int:
        """Add ``data`` at the end of the file (exactly once, even when retried); the offset
        where it landed."""
        _, offset = await _Editor(self).run(path, "append", 0, data, if_version)
        return offset

    @traced
    async def append_info(
        self, path: str, data: Source, *, if_version: int | None = None
    ) -> tuple[int, FileRecord]:
        """``append`` that also gives the file's new entry: ``(offset, entry)``; the entry's
        ``version`` is that of this append's commit."""
        info, offset = await _Editor(self).run(path, "append", 0, data, if_version)
        return offset, info

    @traced
    async def truncate(self, path: str, size: int, *, if_version: int | None = None) -> FileRecord:
        """Cut the file to ``size`` bytes, or grow it with zeros to that size."""
        info, _ = await _Editor(self).run(path, "truncate", size, None, if_version)
        return info

    @traced
    async def insert(
        self, path: str, offset: int, data: Source, *, if_version: int | None = None
    ) -> FileRecord:
        """Insert ``data`` at ``offset`` (0 to the file's size), shifting what follows."""
        info, _ = await _Editor(self).run(path, "insert", offset, data, if_version)
        return info

    @traced
    async def cut(
        self, path: str, offset: int, length: int, *, if_version: int | None = None
    ) -> FileRecord:
        """Remove ``length`` bytes at ``offset`` (within the file), shifting what follows."""
        info, _ = await _Editor(self).run(path, "cut", offset, length, if_version)
        return info


class _Editor:
    """One edit operation of one client, with its retries."""

    def __init__(self, client: EditMethods) -> None:
        self.c = cast("AsyncClient", client)

    async def run(
        self, path: str, kind: str, offset: int, arg: Source | int | None, if_version: int | None
    ) -> tuple[FileRecord, int]:
        check_file_path(path)
        if if_version is not None and (isinstance(if_version, bool) or if_version < 0):
            raise InvalidArgument(f"if_version must be a version number, got {if_version!r}")
        source = _Source(None if isinstance(arg, int) else arg)
        try:
            op = _op(kind, offset, arg if isinstance(arg, int) else source.length)
            started = time.monotonic()
            for attempt in range(MAX_ATTEMPTS):
                try:
                    return await self.attempt(path, op, source, if_version)
                except _Retry as retry:
                    late = time.monotonic() - started > RETRY_FOR
                    if attempt + 1 >= MAX_ATTEMPTS or late:
                        raise retry.cause from None
                    log.info("edit of %s retried: %s", path, retry.cause)
                    await asyncio.sleep(random.uniform(0.02, 0.1) * min(2**attempt, 16))
            raise AssertionError("unreachable")
        finally:
            source.close()

    async def attempt(
        self, path: str, op: Op, source: _Source, if_version: int | None
    ) -> tuple[FileRecord, int]:
        c = self.c
        meta = await c._tracker("POST", f"{c.tracker}/meta/edits", body={"path": path}, path=path)
        info = FileRecord.from_dict(meta["entry"])
        grant = str(meta.get("grant") or "")
        if if_version is not None and info.version != if_version:
            raise Conflict(
                f"the file is at version {info.version}, not {if_version}",
                path=path,
                reason="version",
                version=info.version,
            )
        splice = splice_of(op, info.size)  # refuses bad arguments before anything is written
        if splice is None:
            return info, info.size if op.kind == "append" else 0
        try:
            locs = await self.chain(info, grant)
        except StaleEntry as exc:
            raise _Retry(exc) from None
        p = plan(locs, op)
        assert p is not None
        txn = uuid.uuid4().hex
        parts: list[Prepare] = []
        new: list[tuple[int, int, int]] = []
        try:
            new = await self.write_new(p, locs, info, txn, grant, source)
            parts = prepares(p, new)
            await asyncio.gather(*(self.prepare(txn, part, info, grant) for part in parts))
            answer = await self.decide(txn, info, p, parts, new, if_version, op)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            decision = await self.abandon(txn, info, parts)
            if decision is not None and decision.outcome == "commit":
                await self.commit_all(txn, decision.token, parts)
                try:  # the same commit again answers the recorded decision, with its entry
                    answer = await self.decide(txn, info, p, parts, new, if_version, op)
                    return _result(answer, p)
                except (MydfsError, KeyError, ValueError, TypeError):
                    return await c.stat(path), p.data_at  # a later version, maybe
            if decision is None and isinstance(exc, Unavailable) and parts:
                raise OutcomeUnknown(
                    f"the edit's outcome is not known (the tracker did not answer): {exc.message}",
                    path=path,
                    txn=txn,
                ) from exc
            # A refusal after planning may come from a plan on a stale chain (a newer edit
            # freed slots this attempt reserved again: a fill's ``self_link``, a prepare's
            # ``stale_generation``): worth a new attempt when the file moved on.
            refused = (Conflict, NotFound, InvalidArgument)
            if isinstance(exc, refused) and await self.worth_again(exc, info):
                raise _Retry(exc) from None
            raise
        await self.commit_all(txn, str(answer["token"]), parts)
        return _result(answer, p)

    async def worth_again(self, exc: MydfsError, info: FileRecord) -> bool:
        """Is a refusal worth a new attempt: a conflict with another edit, or a refusal by a
        participant whose slots changed since the chain was walked (the file's version moved
        on: a concurrent edit committed)?"""
        reason = exc.context.get("reason")
        if reason in RETRY_REASONS:
            return True
        if reason == "version":
            return False
        try:
            return (await self.c.stat(info.path)).version != info.version
        except MydfsError:
            return False

    async def chain(self, info: FileRecord, grant: str) -> list[SliceLoc]:
        """The file's chain with every slice's ``via`` (always walked: the entry point and
        generations matter)."""
        if info.head is None or info.size == 0:
            return []
        return await self.c._read.chain(
            info.head,
            info.slices,
            info.size,
            file_id=info.file_id,
            grant=grant,
            versions=versions_of(info.versions),
            path=info.path,
        )

    async def old_bytes(
        self, p: Plan, locs: Sequence[SliceLoc], grant: str, edited: bool
    ) -> dict[tuple[int, int], bytes]:
        """The old bytes the new content keeps: (slice index, offset) -> bytes."""
        olds = [s for s in p.content if isinstance(s, Old)]
        got = await asyncio.gather(
            *(
                self.c._read.slice(locs[s.index], s.offset, s.length, grant=grant, edited=edited)
                for s in olds
            )
        )
        return {(s.index, s.offset): data for s, data in zip(olds, got, strict=True)}

    async def write_new(
        self,
        p: Plan,
        locs: Sequence[SliceLoc],
        info: FileRecord,
        txn: str,
        grant: str,
        source: _Source,
    ) -> list[tuple[int, int, int]]:
        """Write the plan's new slices (reserve, then fill once the next one's slot is
        known); their ``(group, slot, generation)`` in chain order."""
        from mydfs.client.aio import _Pending

        c = self.c
        old = await self.old_bytes(p, locs, grant, bool(info.versions))
        groups = None if p.home is not None else GroupPlan(c._place, c._leaders, p.size)
        window = asyncio.Semaphore(c.window)
        pending: list[_Pending] = []
        fills: list[asyncio.Task[None]] = []
        data = source.open()
        first = max(p.i, 0)
        try:
            for k, piece in enumerate(p.pieces()):
                await window.acquire()
                body = await _bytes_of(piece, old, data)
                group = p.home if p.home is not None else await _group(groups, k)
                s = _Pending(
                    index=first + k,
                    data=body,
                    crc=crc32c(body),
                    group=group,
                    upload_id=f"{txn}.{k}",
                    grant=grant,
                    file_id=info.file_id,
                )
                await c._reserve(s, info.file_id)
                if pending:
                    fills.append(asyncio.create_task(c._fill(pending[-1], s, window, None)))
                pending.append(s)
                for task in fills:
                    failure = task.exception() if task.done() else None
                    if failure is not None:
                        raise failure
            if pending:
                after = None if p.next is None else _sentinel(p.next)
                fills.append(asyncio.create_task(c._fill(pending[-1], after, window, None)))
                await asyncio.gather(*fills)
                await c._repair_links(pending if after is None else [*pending, after])
        except BaseException:
            for task in fills:
                task.cancel()
            await asyncio.gather(*fills, return_exceptions=True)
            raise
        finally:
            await data.close()
        return [(s.group, s.slot, s.generation) for s in pending]

    async def prepare(self, txn: str, part: Prepare, info: FileRecord, grant: str) -> None:
        c = self.c
        body = part.body(info.file_id)
        headers = {GRANT_HEADER: grant} if grant else {}

        async def call(leader: str) -> Any:
            url = f"{leader}/edits/{txn}/prepare"
            return await c._t.json("POST", url, body=body, headers=headers, group=part.group)

        await c._on_leader(part.group, call, "edit prepare", txn=txn, path=info.path)

    async def decide(
        self,
        txn: str,
        info: FileRecord,
        p: Plan,
        parts: Sequence[Prepare],
        new: Sequence[tuple[int, int, int]],
        if_version: int | None,
        op: Op,
    ) -> dict[str, Any]:
        """The tracker's commit decision (repeated with the same txn when its outcome is not
        known: the tracker answers the decision it recorded)."""
        c = self.c
        body: dict[str, Any] = {
            "path": info.path,
            "file_id": info.file_id,
            "base": info.version,
            "layout_change": p.layout_change,
            "size": p.size,
            "slices": p.slices,
            "groups": [part.group for part in parts],
            "if_version": if_version,
            "offset": p.data_at if op.kind == "append" else None,
        }
        if p.head == "set":
            body["head"] = [new[0][0], new[0][1]]
        elif p.head == "clear":
            body["head"] = None
        url = f"{c.tracker}/meta/edits/{txn}/commit"
        answer: dict[str, Any] = await c._tracker("POST", url, body=body, path=info.path)
        return answer

    async def abandon(
        self, txn: str, info: FileRecord, parts: Sequence[Prepare]
    ) -> _Decision | None:
        """Abort the txn at the tracker and roll the participants back (best effort). The
        tracker's decision: a commit when it had recorded one (the caller then completes the
        edit), None when the tracker could not be asked."""
        c = self.c
        url = f"{c.tracker}/meta/edits/{txn}/abort"
        body = {"path": info.path, "file_id": info.file_id}
        try:
            answer = await c._tracker("POST", url, body=body, path=info.path)
            decision = _Decision("abort", str(answer["token"]))
        except Conflict as exc:
            token = exc.context.get("decision") or exc.context.get("token")
            if exc.context.get("reason") == "committed" and token:
                return _Decision("commit", str(token))
            log.warning("abort of edit %s refused: %s", txn, exc)
            return None
        except (MydfsError, KeyError) as exc:
            log.warning("abort of edit %s failed: %s", txn, exc)
            return None
        await asyncio.gather(*(self.finish(txn, "rollback", decision.token, g) for g in parts))
        return decision

    async def commit_all(self, txn: str, token: str, parts: Sequence[Prepare]) -> None:
        await asyncio.gather(*(self.finish(txn, "commit", token, part) for part in parts))

    async def finish(self, txn: str, step: str, token: str, part: Prepare) -> None:
        """``commit`` or ``rollback`` at one participant, retried on ``out_of_order`` and
        unavailability for up to :data:`COMMIT_PATIENCE` seconds; then left to the
        participant's resolver (logged, never raised: the decision is already made)."""
        c = self.c

        async def call(leader: str) -> Any:
            url = f"{leader}/edits/{txn}/{step}"
            return await c._t.json("POST", url, body={"decision": token}, group=part.group)

        await deliver(
            lambda: c._on_leader(part.group, call, f"edit {step}", txn=txn),
            f"edit {txn} {step} at group {part.group}",
            COMMIT_PATIENCE,
            log,
        )


def _result(answer: dict[str, Any], p: Plan) -> tuple[FileRecord, int]:
    """The committed edit's entry and where its data landed, from the tracker's decision."""
    offset = answer.get("offset")
    return FileRecord.from_dict(answer["entry"]), p.data_at if offset is None else int(offset)


def _op(kind: str, offset: int, n: int) -> Op:
    if kind == "write":
        return Op.write(offset, n)
    if kind == "append":
        return Op.append(n)
    if kind == "truncate":
        return Op.truncate(offset)
    if kind == "insert":
        return Op.insert(offset, n)
    return Op.cut(offset, n)


async def _group(groups: GroupPlan | None, k: int) -> int:
    assert groups is not None
    return await groups.group_of(k)


def _sentinel(target: Location) -> _Pending:
    """Stands for what the last new slice points at (only its location is used)."""
    from mydfs.client.aio import _Pending

    return _Pending(index=-1, data=b"", crc=0, group=target.group, upload_id="", slot=target.slot)


async def _bytes_of(
    piece: Sequence[Segment], old: dict[tuple[int, int], bytes], data: _DataStream
) -> bytes:
    """One new slice's bytes from its segments: old bytes read before, zeros, the data."""
    out: list[bytes] = []
    for seg in piece:
        if isinstance(seg, Old):
            for (index, offset), held in old.items():
                if index == seg.index and offset <= seg.offset < offset + len(held):
                    out.append(held[seg.offset - offset : seg.offset - offset + seg.length])
                    break
            else:
                raise AssertionError("old bytes of a planned segment were not read")
        elif isinstance(seg, Data):
            out.append(await data.take(seg.length))
        else:
            out.append(bytes(seg.length))
    return b"".join(out)
