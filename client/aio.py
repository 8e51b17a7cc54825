"""The asynchronous mydfs client: :class:`AsyncClient`.

How a file is stored (``put``), see ``docs/client.md``:

1. One request to the tracker records the upload's intent (refused at once if the path is
   taken and ``overwrite`` is off) and gives the first placements: runs of at most K
   consecutive slices per group.
2. The source is read one slice (4,190,208 bytes) at a time, never whole; each slice is
   reserved on its group's leader (which picks the slot through Raft), and once the *next*
   slice's location is known, the slice is written with its next pointer (``fill``): durable on
   2 of 3 nodes and sealed. Up to ``window`` slices are in flight.
3. When every slice is sealed, the file is registered at the tracker with the head location.
   Until then nothing is visible; a failed upload leaves no entry (its slices belong to an
   intent at the tracker; the tracker's collector frees them once the intent has expired).

Grants: the tracker's answer to the upload's intent carries a write grant for the new file id,
sent with every slice write (``X-Mydfs-Grant``); its ``GET /meta/files`` answer carries a read
grant, sent with every chain walk and slice read. The SDK never deletes a slice: removing or
replacing a file puts its entry in the tracker's trash, and the tracker's reclaimer frees the
slices (``tracker/reclaim.py``).

Every call runs under the transport's deadlines and retries (``client/_transport.py``); writes
find each group's leader through ``client/routing.py``, which skips a leader that went silent.

Reading (``get``, ``open``, ``read``) goes through the read path every role shares
(``common/readpath.py``), each step under the SDK's retry policy: it asks each group once for
its run of the chain (``GET /chain``), then fetches slices in parallel from replicas chosen at
random, checking every run's and slice's owner and generation against the file's entry (the
reader's rule), every slice's CRC32C and the whole file's; a read that finds its entry stale
(an edit committed since) starts again from a fresh entry. Editing in place (``write``,
``append``, ``truncate``, ``insert``, ``cut``): ``client/editor.py``, mixed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO, Literal, overload

import aiohttp

from mydfs.client import credentials
from mydfs.client._transport import RetryPolicy, Transport
from mydfs.client.editfile import BUFFER_BYTES, AsyncEditFile
from mydfs.client.editor import EditMethods
from mydfs.client.reader import STALE_RETRIES, AsyncReader, chain_of, check_hash
from mydfs.client.routing import GroupPlan, Leaders
from mydfs.client.source import SLICE, Source, chunks, source_size, source_stamp
from mydfs.client.trashops import TrashMethods
from mydfs.common.checksum import crc32c
from mydfs.common.errors import (
    Conflict,
    InvalidArgument,
    NotFound,
    NotLeader,
    SliceDeleted,
    StaleEntry,
    Unavailable,
)
from mydfs.common.file_record import FileRecord
from mydfs.common.grants import GRANT_HEADER
from mydfs.common.location import Location
from mydfs.common.paths import check_dir_path, check_file_path, url_quote
from mydfs.common.readpath import ReadPath, ReadTimeouts, SliceLoc
from mydfs.common.tls import ca_from_env, client_context
from mydfs.common.tracing import client_trace_config, traced

Progress = Callable[[int], None]


#: A file's entry in the tracker's table (the wire record every role shares).
FileInfo = FileRecord


@dataclass(frozen=True)
class DirEntry:
    name: str
    type: str  # "file" or "dir"
    info: FileInfo | None = None


@dataclass
class _Pending:
    """One slice of an upload in flight."""

    index: int
    data: bytes
    crc: int
    group: int
    upload_id: str
    grant: str = ""  # the upload's write grant
    file_id: str = ""  # the owner (else the upload id's first part: a put's file id)
    slot: int = -1
    generation: int = 0
    sealed_next: Location | str | None = "unsealed"
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def location(self) -> Location:
        return Location(self.group, self.slot)

    @property
    def grant_headers(self) -> dict[str, str]:
        return {GRANT_HEADER: self.grant} if self.grant else {}


class AsyncClient(EditMethods, TrashMethods):
    """A mydfs client. ``async with AsyncClient("http://127.0.0.1:8100") as c: ...``"""

    def __init__(
        self,
        tracker: str,
        *,
        window: int = 8,
        deadline: float = 60.0,
        retry: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        token: str | None = None,
        ca: str | os.PathLike[str] | None = None,
        secret: str | None = None,
    ) -> None:
        if not tracker.startswith(("http://", "https://")):
            raise InvalidArgument(f"tracker URL {tracker!r} must start with http:// or https://")
        if window < 2:
            # A slice is written once the next one's place is known (its header points there),
            # so an upload holds at least two slices.
            raise InvalidArgument(f"window must be at least 2, got {window}")
        self.tracker = tracker.rstrip("/")
        self.window = window
        self._own_session = session is None
        # ``ca`` (else $MYDFS_CA, else the credentials file's for this tracker): a PEM bundle
        # trusted for https:// trackers and nodes.
        ssl_context = client_context(
            ca_from_env(ca) or credentials.lookup(self.tracker).get("ca") or None
        )
        self._session = session or aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(16, 4 * window), ssl=ssl_context or True),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            trace_configs=[client_trace_config()],  # X-Request-Id on every call
        )
        # ``deadline`` bounds each operation; ``retry`` sets the per-request deadlines and the
        # backoff (docs/client.md, "Deadlines and retries").
        # The API key: ``token``, else $MYDFS_TOKEN, else the credentials file's for this tracker.
        # ``secret`` instead (a storage node acting for a caller, docs/security.md): every
        # tracker call is signed with the cluster secret and carries no key.
        self.token = None if secret else credentials.token_for(self.tracker, token)
        self._t = Transport(
            self._session,
            replace(retry or RetryPolicy(), deadline=deadline),
            ssl=ssl_context,
            tracker=self.tracker,
            token=self.token,
            secret=secret,
        )
        self._read = ReadPath(
            self._session,
            self._nodes_of,
            timeouts=ReadTimeouts(chain=30.0, slice=60.0),
            window=window,
            retry=self._t.retry,
        )
        self._leaders = Leaders(self._t, self.tracker)
        self._groups = self._leaders.groups  # the same dict: group -> (leader, up nodes)
        self._chains: dict[tuple[str, int], list[SliceLoc]] = {}

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._t.close()
        if self._own_session:
            await self._session.close()

    # --- tracker calls -------------------------------------------------------------------------

    def _meta_url(self, kind: str, path: str) -> str:
        return f"{self.tracker}/meta/{kind}{url_quote(path)}"

    async def _tracker(
        self, method: str, url: str, *, body: Any = None, path: str | None = None
    ) -> Any:
        return await self._t.retry(
            f"tracker {method}",
            lambda: self._t.json(method, url, body=body, path=path),
            path=path,
        )

    @traced
    async def status(self) -> dict[str, Any]:
        """The tracker's view of the cluster: groups, nodes, roles, free space, health."""
        result: dict[str, Any] = await self._tracker("GET", f"{self.tracker}/cluster")
        self._leaders.remember_cluster(result)
        return result

    @traced
    async def df(self) -> dict[str, Any]:
        """Space per group and for the cluster (``GET /space``, ``docs/collector.md``): slots
        and bytes free, live, 301 (``moved``), pending, of live files, of trash records and
        orphans."""
        result: dict[str, Any] = await self._tracker("GET", f"{self.tracker}/space")
        return result

    @traced
    async def stat(self, path: str) -> FileInfo:
        """The file's entry; :class:`NotFound` if there is none."""
        check_file_path(path)
        return FileInfo.from_dict(
            await self._tracker("GET", self._meta_url("files", path), path=path)
        )

    @traced
    async def exists(self, path: str) -> bool:
        try:
            await self.stat(path)
        except NotFound:
            return False
        return True

    @traced
    async def listdir(self, path: str = "/") -> list[DirEntry]:
        """The entries of a directory, sorted by name."""
        check_dir_path(path)
        body = await self._tracker("GET", self._meta_url("list", path), path=path)
        out = []
        for e in body.get("entries", []):
            info = FileInfo.from_dict(e) if e.get("type") == "file" else None
            out.append(DirEntry(str(e["name"]), str(e["type"]), info))
        return out

    @traced
    async def delete(self, path: str, *, now: bool = False) -> FileInfo:
        """Remove the file: its entry at once. It waits in the tracker's trash, where
        :meth:`undelete` can bring it back, for ``trash_retention`` seconds; then the reclaimer
        frees its slices. ``now=True`` purges it at once (freed at the reclaimer's next pass)."""
        check_file_path(path)
        url = self._meta_url("files", path) + ("?purge=1" if now else "")
        body = await self._tracker("DELETE", url, path=path)
        return FileInfo.from_dict(body.get("deleted", body))

    # --- access: share URLs and API keys ------------------------------------------------------

    @traced
    async def share(self, path: str, ttl: float = 3600) -> str:
        """A URL anyone can download ``path`` from (curl, wget, a browser) for ``ttl`` seconds."""
        check_file_path(path)
        body = await self._tracker(
            "POST", f"{self.tracker}/share", body={"path": path, "ttl": ttl}, path=path
        )
        return f"{self.tracker}{body['path_qs']}"

    @traced
    async def create_key(self, name: str, role: str) -> str:
        """A new API key (admin only); returns its token, which is shown only this once."""
        body = await self._t.json(
            "POST", f"{self.tracker}/admin/keys", body={"name": name, "role": role}
        )
        return str(body["token"])

    @traced
    async def list_keys(self) -> list[dict[str, Any]]:
        """The tracker's API keys: name, role, created (admin only; never the tokens)."""
        body = await self._tracker("GET", f"{self.tracker}/admin/keys")
        return list(body["keys"])

    @traced
    async def delete_key(self, name: str) -> None:
        """Revoke the API key ``name`` (admin only)."""
        await self._t.json("DELETE", f"{self.tracker}/admin/keys/{url_quote('/' + name)[1:]}")

    # --- group leaders -------------------------------------------------------------------------

    async def _on_leader(
        self, group: int, call: Callable[[str], Any], what: str, **ctx: Any
    ) -> Any:
        """Run ``call(leader_url)`` with retries; follows NotLeader, re-asks on failures."""

        async def attempt() -> Any:
            leader = await self._leaders.leader(group)
            try:
                return await call(leader)
            except NotLeader as exc:
                self._leaders.set(group, exc.leader)
                raise Unavailable("leader moved", group=group) from exc
            except Unavailable:
                self._leaders.set(group, None)
                raise

        return await self._t.retry(what, attempt, group=group, **ctx)

    # --- put -----------------------------------------------------------------------------------

    @traced
    async def put(
        self,
        path: str,
        src: Source,
        *,
        overwrite: bool = False,
        progress: Progress | None = None,
    ) -> FileInfo:
        """Store ``src`` (bytes, a local path, or a binary file object) at ``path``.

        Streams the source slice by slice (at most ``window`` slices in memory). Raises
        :class:`AlreadyExists` if the path is taken (unless ``overwrite``), and leaves no
        visible file if anything fails.
        """
        check_file_path(path)
        file_id = uuid.uuid4().hex
        stamp = source_stamp(src)
        size_hint = source_size(src)
        groups = GroupPlan(self._place, self._leaders, size_hint)
        # One tracker call before the data: record the upload intent (the collector spares its
        # slices), refuse at once if the path is taken (unless overwrite), and where the first
        # slices go (docs/client.md, Writing).
        ask: dict[str, Any] = {"file_id": file_id, "path": path}
        if not overwrite:
            ask["exclusive"] = True
        if size_hint != 0:
            ask["slices"] = groups.wanted()
        intent = await self._tracker("POST", f"{self.tracker}/meta/intents", body=ask, path=path)
        grant = str(intent.get("grant") or "")
        if intent.get("placement"):
            groups.add(intent["placement"])
        single = size_hint is not None and 0 < size_hint <= SLICE
        window = asyncio.Semaphore(self.window)
        fills: list[asyncio.Task[None]] = []
        pending: list[_Pending] = []
        total_crc = 0
        size = 0
        try:
            async for data in chunks(src):
                await window.acquire()
                index = len(pending)
                if single and index > 0:
                    raise InvalidArgument("the source grew while it was being read", path=path)
                s = _Pending(
                    index=index,
                    data=data,
                    crc=crc32c(data),
                    group=await groups.group_of(index),
                    upload_id=f"{file_id}.{index}",
                    grant=grant,
                )
                total_crc = crc32c(data, total_crc)
                size += len(data)
                if stamp is not None and size_hint is not None and size > size_hint:
                    raise InvalidArgument(
                        f"the local file grew while it was read (past {size_hint} bytes);"
                        " nothing was stored",
                        path=path,
                    )
                if single:  # one slice: reserve and write in one request
                    await self._put_single(s, file_id, progress)
                    pending.append(s)
                    window.release()
                    continue
                await self._reserve(s, file_id)
                if pending:
                    fills.append(asyncio.create_task(self._fill(pending[-1], s, window, progress)))
                pending.append(s)
                for task in fills:
                    failure = task.exception() if task.done() else None
                    if failure is not None:
                        raise failure
            if stamp is not None and (size != size_hint or source_stamp(src) != stamp):
                raise InvalidArgument(
                    f"the local file changed while it was read ({size_hint} bytes before,"
                    f" {size} read); nothing was stored",
                    path=path,
                )
            if pending and not single:
                fills.append(asyncio.create_task(self._fill(pending[-1], None, window, progress)))
            await asyncio.gather(*fills)
            await self._repair_links(pending)
        except BaseException:
            for task in fills:
                task.cancel()
            await asyncio.gather(*fills, return_exceptions=True)
            raise
        entry = {
            "file_id": file_id,
            "size": size,
            "slices": len(pending),
            "head": [pending[0].group, pending[0].slot] if pending else None,
            "hash": f"crc32c:{total_crc:08x}",
        }
        url = self._meta_url("files", path) + ("?overwrite=1" if overwrite else "")
        # A replaced file's entry goes to the tracker's trash; its reclaimer frees the slices.
        body = await self._tracker("PUT", url, body=entry, path=path)
        return FileInfo.from_dict(body.get("entry", body) if "entry" in body else body)

    async def _place(self, slices: int) -> dict[str, Any]:
        """The tracker's placement of ``slices`` more slices: runs of <= K per group."""
        body: dict[str, Any] = await self._tracker(
            "POST", f"{self.tracker}/placements", body={"slices": slices}
        )
        return body

    async def _put_single(self, s: _Pending, file_id: str, progress: Progress | None) -> None:
        """A one-slice file: ``PUT /slices`` reserves and writes in one request (idempotent by
        upload id, so a retry after a leader change never stores it twice)."""
        headers = {"X-Mydfs-File": file_id, "X-Mydfs-Index": "0", "X-Mydfs-Crc32c": str(s.crc)}
        headers.update(s.grant_headers)

        async def call(leader: str) -> Any:
            url = f"{leader}/slices?upload={s.upload_id}"
            return await self._t.put_bytes(url, s.data, headers=headers, slice=0)

        got = await self._on_leader(s.group, call, "slice write", slice=0)
        s.slot, s.generation = int(got["slot"]), int(got["generation"])
        s.sealed_next = None
        if progress is not None:
            progress(len(s.data))
        s.data = b""

    async def _reserve(self, s: _Pending, file_id: str) -> None:
        body = {
            "upload_id": s.upload_id,
            "file_id": file_id,
            "index": s.index,
            "length": len(s.data),
            "crc32c": s.crc,
        }

        async def call(leader: str) -> Any:
            return await self._t.json(
                "POST",
                f"{leader}/slices/reserve",
                body=body,
                headers=s.grant_headers,
                slice=s.index,
            )

        got = await self._on_leader(s.group, call, "reserve", slice=s.index)
        s.slot, s.generation = int(got["slot"]), int(got["generation"])

    async def _fill(
        self,
        s: _Pending,
        nxt: _Pending | None,
        window: asyncio.Semaphore,
        progress: Progress | None,
    ) -> None:
        try:
            for _ in range(5):
                target = None if nxt is None else nxt.location
                if target == s.location:
                    # The successor's reservation was settled away and this slice, reserved
                    # again, got that very slot: write it with no pointer for now; the
                    # successor reserves again too, and _repair_links links the two.
                    target = None
                next_text = "none" if target is None else f"{target.group}:{target.slot}"

                async def call(leader: str, next_text: str = next_text) -> Any:
                    url = (
                        f"{leader}/slices/{s.slot}?upload={s.upload_id}"
                        f"&gen={s.generation}&next={next_text}"
                    )
                    headers = {"X-Mydfs-Crc32c": str(s.crc), **s.grant_headers}
                    return await self._t.put_bytes(url, s.data, headers=headers, slice=s.index)

                try:
                    await self._on_leader(s.group, call, "slice write", slice=s.index)
                except SliceDeleted:
                    # The reservation was settled away (e.g. a leader change): reserve again.
                    # The previous slice may already point at the old slot; _repair_links fixes it.
                    await self._reserve(s, s.file_id or s.upload_id.rsplit(".", 1)[0])
                    continue
                s.sealed_next = target
                if progress is not None:
                    progress(len(s.data))
                return
            raise Unavailable("slice kept losing its reservation", slice=s.index)
        finally:
            s.data = b""
            window.release()
            s.done.set()

    async def _repair_links(self, pending: list[_Pending]) -> None:
        """Relink any slice sealed with a pointer to a slot its successor no longer has."""
        for s, nxt in itertools.pairwise(pending):
            if s.sealed_next != nxt.location:
                text = f"{nxt.group}:{nxt.slot}"

                async def call(leader: str, s: _Pending = s, text: str = text) -> Any:
                    return await self._t.json(
                        "POST",
                        f"{leader}/slices/{s.slot}/relink?gen={s.generation}&next={text}",
                        headers=s.grant_headers,
                    )

                await self._on_leader(s.group, call, "relink", slice=s.index)
                s.sealed_next = nxt.location

    # --- reading -------------------------------------------------------------------------------

    async def _nodes_of(self, group: int) -> tuple[str, ...]:
        """The up nodes of a group, asking the tracker when the group is not known yet."""
        if group not in self._groups:
            await self.status()
        return self._groups.get(group, (None, ()))[1]

    async def _chain(self, info: FileInfo) -> list[SliceLoc]:
        """Every slice location of the file (:func:`~mydfs.client.reader.chain_of`)."""
        return await chain_of(self._read, info, self._chains)

    async def _slices_in_order(
        self, seen: list[FileInfo], offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """The bytes [offset, offset+length) of the file whose entry is ``seen[-1]`` as a
        stream of pieces, fetched ``window`` slices ahead, in order. A stale entry (an edit
        committed since) starts it again from a fresh one (appended to ``seen``) while no byte
        was handed out, else is :class:`Conflict` ``reason=changed``."""
        for attempt in itertools.count():
            info, sent = seen[-1], False
            end = info.size if length is None else min(info.size, offset + length)
            if offset < 0 or offset > info.size:
                raise InvalidArgument(
                    f"offset {offset} outside file of {info.size} bytes", path=info.path
                )
            if end <= offset:
                return
            try:
                locs = await self._chain(info)
                edited = bool(info.versions)
                stream = self._read.stream(locs, offset, end, grant=info.grant, edited=edited)
                async with contextlib.aclosing(stream) as s:
                    async for piece in s:
                        sent = True
                        yield piece
                return
            except StaleEntry as exc:
                self._chains.pop((info.file_id, info.version), None)
                if sent:
                    raise Conflict(
                        "the file changed while it was read", path=info.path, reason="changed"
                    ) from exc
                if attempt >= STALE_RETRIES:
                    raise
                seen.append(await self.stat(info.path))

    @traced
    async def get(
        self, path: str, dst: str | os.PathLike[str] | BinaryIO, *, progress: Progress | None = None
    ) -> FileInfo:
        """Fetch the file at ``path`` into ``dst`` (a local path or a binary file object);
        checks every slice and the whole file's CRC32C."""
        info = await self.stat(path)
        own = isinstance(dst, str | os.PathLike)
        out: BinaryIO = open(dst, "wb") if own else dst  # type: ignore[arg-type,assignment]  # noqa: SIM115
        total = 0
        seen = [info]
        try:
            async for piece in self._slices_in_order(seen):
                total = crc32c(piece, total)
                await asyncio.to_thread(out.write, piece)
                if progress is not None:
                    progress(len(piece))
            check_hash(seen[-1], total)
        finally:
            if own:
                out.close()
        return seen[-1]

    @traced
    async def read(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes [offset, offset+length) of the file (to its end if ``length`` is None)."""
        info = await self.stat(path)
        parts = [p async for p in self._slices_in_order([info], offset, length)]
        return b"".join(parts)

    @overload
    async def open(self, path: str, mode: Literal["rb"] = "rb") -> AsyncReader: ...

    @overload
    async def open(
        self, path: str, mode: Literal["r+b"], *, buffer_bytes: int = BUFFER_BYTES
    ) -> AsyncEditFile: ...

    @traced
    async def open(
        self, path: str, mode: str = "rb", *, buffer_bytes: int = BUFFER_BYTES
    ) -> AsyncReader | AsyncEditFile:
        """``"rb"``: a streaming reader of the file (``await r.read(n)``, ``async for chunk in
        r``). ``"r+b"``: a seekable file object for editing it in place
        (``client/editfile.py``), its writes buffered up to ``buffer_bytes``."""
        if mode not in ("rb", "r+b"):
            raise InvalidArgument(f"mode must be 'rb' or 'r+b', got {mode!r}", path=path)
        info = await self.stat(path)
        if mode == "r+b":
            return AsyncEditFile(self, info, buffer_bytes)
        return AsyncReader(info, self._slices_in_order)
