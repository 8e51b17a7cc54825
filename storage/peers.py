"""Signed HTTP calls from one storage node to the others of its group.

Three internal calls carry the data plane of replication (``docs/replication.md``):

* ``PUT /internal/slices/{slot}?gen&file&index&next&crc`` — the leader pushes a payload;
* ``GET /internal/slices/{slot}?gen`` — a node fetches a payload it lacks;
* ``GET /internal/holds/{slot}?gen`` — a new leader asks who holds a pending slice durably.

Every call is signed with the cluster secret (:mod:`mydfs.common.auth`); the slice's metadata
rides in the signed query string and the body is checked against the signed CRC32C.
"""

from __future__ import annotations

from urllib.parse import urlencode

import aiohttp
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import BytesPayload

from mydfs.common.auth import AUTH_HEADER, sign
from mydfs.common.checksum import crc32c
from mydfs.common.errors import Corrupt, MydfsError, Unavailable, error_from_dict
from mydfs.common.location import Location
from mydfs.common.tracing import HEADER as TRACE_HEADER
from mydfs.common.tracing import REQUEST_ID

#: Bytes of a pushed payload handed to the socket at a time (see :class:`SliceBody`).
PUSH_CHUNK = 256 * 1024


class SliceBody(BytesPayload):
    """A payload body written in :data:`PUSH_CHUNK` pieces, each waiting for the socket.

    Written whole, a 4 MiB body is copied into the connection's send buffer at once; when the
    peer does not read (stopped, slow), that copy outlives the request, because closing a
    connection waits for its buffer to drain. Written in pieces, a connection holds at most one
    piece, and a push that ends early (its deadline, or cancelled because the follower lags)
    aborts the connection, freeing even that.
    """

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        view = memoryview(self._value)
        if content_length is not None:
            view = view[:content_length]
        try:
            for start in range(0, len(view), PUSH_CHUNK):
                await writer.write(view[start : start + PUSH_CHUNK])
                await writer.drain()
        except BaseException:
            transport = getattr(writer, "transport", None)
            if transport is not None:
                transport.abort()
            raise


def location_text(loc: Location | None) -> str:
    return "none" if loc is None else f"{loc.group}:{loc.slot}"


class PeerClient:
    """Makes the internal calls; one instance per node, sharing one aiohttp session."""

    def __init__(self, secret: str, session: aiohttp.ClientSession, node_id: str) -> None:
        self._secret = secret
        self._session = session
        self._node_id = node_id

    def _headers(self, method: str, path_qs: str) -> dict[str, str]:
        headers = {AUTH_HEADER: sign(self._secret, method, path_qs), "X-Mydfs-Node": self._node_id}
        rid = REQUEST_ID.get()
        if rid is not None:
            headers[TRACE_HEADER] = rid
        return headers

    async def push(
        self,
        base: str,
        *,
        slot: int,
        generation: int,
        file_id: str,
        index: int,
        next: Location | None,
        crc: int,
        data: bytes,
        timeout: float,
    ) -> None:
        """Store ``data`` durably on the peer at ``base``; raises on any failure."""
        query = urlencode(
            {
                "gen": generation,
                "file": file_id,
                "index": index,
                "next": location_text(next),
                "crc": crc,
            }
        )
        path_qs = f"/internal/slices/{slot}?{query}"
        async with self._session.put(
            base + path_qs,
            data=SliceBody(data),
            headers=self._headers("PUT", path_qs),
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            if resp.status != 200:
                raise await _error(resp, base)

    async def fetch(
        self, base: str, *, slot: int, generation: int, crc: int, timeout: float
    ) -> bytes:
        """The payload of ``slot`` at ``generation`` from the peer, checked against ``crc``."""
        path_qs = f"/internal/slices/{slot}?gen={generation}"
        async with self._session.get(
            base + path_qs,
            headers=self._headers("GET", path_qs),
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            if resp.status != 200:
                raise await _error(resp, base)
            data = await resp.read()
        if crc32c(data) != crc:
            raise Corrupt("fetched slice fails its checksum", peer=base, slot=slot)
        return data

    async def holds(self, base: str, *, slot: int, generation: int, timeout: float) -> bool | None:
        """Does the peer hold ``slot`` at ``generation`` durably? None if it did not answer."""
        path_qs = f"/internal/holds/{slot}?gen={generation}"
        try:
            async with self._session.get(
                base + path_qs,
                headers=self._headers("GET", path_qs),
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                if resp.status != 200:
                    return None
                body = await resp.json()
                return bool(body.get("holds"))
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None


async def _error(resp: aiohttp.ClientResponse, base: str) -> MydfsError:
    try:
        body = await resp.json()
        if isinstance(body, dict) and "error" in body:
            err = error_from_dict(body)
            err.context.setdefault("peer", base)
            return err
    except (aiohttp.ClientError, ValueError):
        pass
    return Unavailable(f"peer answered HTTP {resp.status}", peer=base)
