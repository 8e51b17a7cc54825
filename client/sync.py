"""The blocking twin of :class:`~mydfs.client.aio.AsyncClient`, with the same method names.

It runs an ``AsyncClient`` on a private event loop in a background thread, so it can be used
from ordinary code (and from threads: calls are serialised onto that loop).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, BinaryIO, Literal, TypeVar, overload

from mydfs.client._transport import RetryPolicy
from mydfs.client.aio import AsyncClient, DirEntry, FileInfo, Progress
from mydfs.client.editfile import BUFFER_BYTES, EditFile
from mydfs.client.reader import AsyncReader
from mydfs.client.source import Source
from mydfs.common.errors import InvalidArgument

T = TypeVar("T")

#: Seconds a call interrupted by Ctrl-C may take to unwind before the interrupt goes on.
CANCEL_WAIT = 10.0


async def _until(coro: Coroutine[Any, Any, T], finished: threading.Event) -> T:
    try:
        return await coro
    finally:
        finished.set()


class Client:
    """A mydfs client for blocking code. ``with Client("http://127.0.0.1:8100") as c: ...``"""

    def __init__(
        self,
        tracker: str,
        *,
        window: int = 8,
        deadline: float = 60.0,
        retry: RetryPolicy | None = None,
        token: str | None = None,
        ca: str | os.PathLike[str] | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="mydfs-client", daemon=True
        )
        self._thread.start()

        async def make() -> AsyncClient:
            return AsyncClient(
                tracker, window=window, deadline=deadline, retry=retry, token=token, ca=ca
            )

        try:
            self._aio = self._run(make())
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        finished = threading.Event()
        future = asyncio.run_coroutine_threadsafe(_until(coro, finished), self._loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            # Ctrl-C: cancel the call on the loop and let it unwind (its own cleanup runs,
            # nothing is left half-closed to print warnings at exit), then pass the interrupt on.
            future.cancel()
            finished.wait(timeout=CANCEL_WAIT)
            raise

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._aio.close())
        self._stop_loop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def tracker(self) -> str:
        return self._aio.tracker

    @property
    def token(self) -> str | None:
        return self._aio.token

    def share(self, path: str, ttl: float = 3600) -> str:
        return self._run(self._aio.share(path, ttl))

    def create_key(self, name: str, role: str) -> str:
        return self._run(self._aio.create_key(name, role))

    def list_keys(self) -> list[dict[str, Any]]:
        return self._run(self._aio.list_keys())

    def delete_key(self, name: str) -> None:
        self._run(self._aio.delete_key(name))

    def put(
        self, path: str, src: Source, *, overwrite: bool = False, progress: Progress | None = None
    ) -> FileInfo:
        return self._run(self._aio.put(path, src, overwrite=overwrite, progress=progress))

    def get(
        self, path: str, dst: str | os.PathLike[str] | BinaryIO, *, progress: Progress | None = None
    ) -> FileInfo:
        return self._run(self._aio.get(path, dst, progress=progress))

    def read(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._run(self._aio.read(path, offset, length))

    @overload
    def open(self, path: str, mode: Literal["rb"] = "rb") -> Reader: ...

    @overload
    def open(
        self, path: str, mode: Literal["r+b"], *, buffer_bytes: int = BUFFER_BYTES
    ) -> EditFile: ...

    def open(
        self, path: str, mode: str = "rb", *, buffer_bytes: int = BUFFER_BYTES
    ) -> Reader | EditFile:
        """``"rb"``: a blocking reader; ``"r+b"``: a seekable file object for editing in place
        (:class:`~mydfs.client.editfile.EditFile`)."""
        if mode == "r+b":
            f = self._run(self._aio.open(path, "r+b", buffer_bytes=buffer_bytes))
            return EditFile(self._run, f)
        if mode != "rb":
            raise InvalidArgument(f"mode must be 'rb' or 'r+b', got {mode!r}", path=path)
        return Reader(self, self._run(self._aio.open(path)))

    def stat(self, path: str) -> FileInfo:
        return self._run(self._aio.stat(path))

    def exists(self, path: str) -> bool:
        return self._run(self._aio.exists(path))

    def listdir(self, path: str = "/") -> list[DirEntry]:
        return self._run(self._aio.listdir(path))

    def delete(self, path: str, *, now: bool = False) -> FileInfo:
        return self._run(self._aio.delete(path, now=now))

    def trash(self) -> list[dict[str, Any]]:
        return self._run(self._aio.trash())

    def undelete(
        self, path: str, new_path: str | None = None, *, file_id: str | None = None
    ) -> FileInfo:
        return self._run(self._aio.undelete(path, new_path, file_id=file_id))

    def purge(
        self, path: str | None = None, *, file_id: str | None = None, everything: bool = False
    ) -> list[dict[str, Any]]:
        return self._run(self._aio.purge(path, file_id=file_id, everything=everything))

    def status(self) -> dict[str, Any]:
        return self._run(self._aio.status())

    def df(self) -> dict[str, Any]:
        return self._run(self._aio.df())

    # --- editing in place (client/editor.py) -----------------------------------------------

    def write(
        self, path: str, offset: int, data: Source, *, if_version: int | None = None
    ) -> FileInfo:
        return self._run(self._aio.write(path, offset, data, if_version=if_version))

    def append(self, path: str, data: Source, *, if_version: int | None = None) -> int:
        return self._run(self._aio.append(path, data, if_version=if_version))

    def append_info(
        self, path: str, data: Source, *, if_version: int | None = None
    ) -> tuple[int, FileInfo]:
        return self._run(self._aio.append_info(path, data, if_version=if_version))

    def truncate(self, path: str, size: int, *, if_version: int | None = None) -> FileInfo:
        return self._run(self._aio.truncate(path, size, if_version=if_version))

    def insert(
        self, path: str, offset: int, data: Source, *, if_version: int | None = None
    ) -> FileInfo:
        return self._run(self._aio.insert(path, offset, data, if_version=if_version))

    def cut(
        self, path: str, offset: int, length: int, *, if_version: int | None = None
    ) -> FileInfo:
        return self._run(self._aio.cut(path, offset, length, if_version=if_version))


class Reader:
    """Blocking reader returned by :meth:`Client.open`: ``read(n)`` and iteration."""

    def __init__(self, client: Client, reader: AsyncReader) -> None:
        self._client = client
        self._reader = reader

    @property
    def info(self) -> FileInfo:
        """The file's entry (a fresher one once a read started again after an edit)."""
        return self._reader.info

    def read(self, n: int = -1) -> bytes:
        return self._client._run(self._reader.read(n))

    def tell(self) -> int:
        return self._reader.tell()

    def __iter__(self) -> Iterator[bytes]:
        while True:
            chunk = self.read(1 << 20)
            if not chunk:
                return
            yield chunk

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        return None
